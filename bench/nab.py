"""Write the NAB scores of `make nab` to bench/results/nab.md, ranked among the published detectors.

Reads the JSON that ``nab_score.py --json`` wrote and the "Shared subset" table
of NAB's SCOREBOARD.md (the published detectors on the same 18 files), prints
the three normalised scores and writes a Markdown report.

Run: ``make nab`` (or ``python bench/nab.py --help``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from tmiot.config import DetectorSettings

RESULTS = Path(__file__).parent / "results"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
NAME = "tmiot (this detector)"


def shared_subset(scoreboard: Path) -> list[tuple[str, tuple[float, float, float]]]:
    """The rows of SCOREBOARD.md's "Shared subset" table: detector and its three scores."""
    text = scoreboard.read_text(encoding="utf-8")
    section = text.split("## Shared subset", 1)[1]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*([\w-]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            rows.append((m[1], (float(m[2]), float(m[3]), float(m[4]))))
    return rows


def report(scores: dict[str, Any], board: list[tuple[str, tuple[float, float, float]]]) -> str:
    """The Markdown report."""
    ours = tuple(round(float(scores[p]["normalized"]), 1) for p in PROFILES)
    ranked = sorted([*board, (NAME, ours)], key=lambda row: -row[1][0])
    lines = [
        "# NAB score of the stream detector",
        "",
        (
            "`make nab`: `tmiot evaluate` over the 18-file NAB subset (read in place), scored by"
            " `nab_score.py` (threshold swept per profile over the whole corpus). One"
            " configuration for every file: the `DetectorSettings` defaults; no labels used at"
            " run time."
        ),
        "",
        "| profile | normalised score | best threshold |",
        "|---|---:|---:|",
        *(f"| {p} | {scores[p]['normalized']:.2f} | {scores[p]['threshold']} |" for p in PROFILES),
        "",
        'Among the published detectors on the same subset (SCOREBOARD.md, "Shared subset"):',
        "",
        "| detector | standard | reward_low_FP_rate | reward_low_FN_rate |",
        "|---|---:|---:|---:|",
        *(
            f"| {f'**{name}**' if name == NAME else name} | {a:.1f} | {b:.1f} | {c:.1f} |"
            for name, (a, b, c) in ranked
        ),
        "",
        "Per file, standard profile:",
        "",
        "| file | raw | windows hit | FP rows |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {f['raw']:.3f} | {f['windows_detected']}/{f['windows']} |"
            f" {f['fp_detections']} |"
            for name, f in scores["standard"]["files"].items()
        ),
        "",
        "Configuration (`DetectorSettings` defaults):",
        "",
        "```",
        *(f"{k} = {v}" for k, v in DetectorSettings().model_dump().items()),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the three scores and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=Path, required=True, help="nab_score.py --json output")
    parser.add_argument("--scoreboard", type=Path, required=True, help="NAB's SCOREBOARD.md")
    parser.add_argument("--out", type=Path, default=RESULTS / "nab.md")
    args = parser.parse_args(argv)
    scores = json.loads(args.scores.read_text(encoding="utf-8"))
    text = report(scores, shared_subset(args.scoreboard))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(" / ".join(f"{p} {scores[p]['normalized']:.2f}" for p in PROFILES), f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
