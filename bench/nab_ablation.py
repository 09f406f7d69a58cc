"""Does every constant of the detector earn its place? Held-out NAB score with each moved.

For each setting of ``DetectorSettings`` and each module constant of
``stream.detectors`` that shapes a score, the detector runs again with that one
value halved and doubled (or the alternative named below), over the same
threshold grid, and is scored leave-one-category-out exactly as ``make nab``
scores it (``bench/nab.py``). A constant earns its place when moving it either
way lowers the held-out score. Writes ``bench/results/nab_ablation.{md,json}``.

Run: ``make nab-ablation`` (``python -m bench.nab_ablation``; about 15 minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from bench import nab
from stream import detectors
from tmiot.config import DetectorSettings

GRID = tuple(round(0.28 + 0.01 * i, 2) for i in range(17))  # 0.28 .. 0.44

Change = tuple[str, dict[str, Any], dict[str, float]]


def changes() -> list[Change]:
    """Each constant moved down and up, one at a time (the defaults first)."""
    s = DetectorSettings()
    out: list[Change] = [("defaults", {}, {})]
    for name in (
        "season_gamma",
        "level_alpha",
        "scale_alpha",
        "scale_floor",
        "drift_alpha",
        "noise_short_alpha",
        "noise_long_alpha",
        "tail_quantile",
        "tail_window",
        "quiet_readings",
    ):
        value = getattr(s, name)
        for factor in (0.5, 2.0):
            moved = type(value)(value * factor)
            if name.endswith("alpha") or name in {"season_gamma", "tail_quantile"}:
                moved = min(moved, 1.0 if name != "tail_quantile" else 0.4)
            out.append((f"{name} = {moved:g}", {name: moved}, {}))
    out.append(("season_bins = 48", {"season_bins": 48}, {}))
    out.append(("season_bins = 1 (no daily profile)", {"season_bins": 1}, {}))
    out.append(("mean_alphas = (1.0, 0.25, 0.0625)", {"mean_alphas": (1.0, 0.25, 0.0625)}, {}))
    out.append(("mean_alphas = (0.25,)", {"mean_alphas": (0.25,)}, {}))
    out.append(("mean_alphas = (0.0625,)", {"mean_alphas": (0.0625,)}, {}))
    out.append(("holdoff_readings = 50", {"holdoff_readings": 50}, {}))
    for name in (
        "_HISTORY",
        "_CLIP",
        "_NOISE_CLIP",
        "_QUANTILE_STEP",
        "_ESCALATE",
        "_SUDDEN",
        "_LASTING",
        "_LASTING_MS",
        "_SWING",
    ):
        value = getattr(detectors, name)
        out.extend((f"{name} = {value * f:g}", {}, {name: value * f}) for f in (0.5, 2.0))
    out.append(("_HISTORY = 0 (no history term)", {}, {"_HISTORY": 0.0}))
    out.append(("_XI_MAX = 0 (exponential tails)", {}, {"_XI_MAX": 0.0}))
    out.append(("_REPEAT_RATE = 0 (no stuck test)", {}, {"_REPEAT_RATE": 0.0}))
    out.append(("_SWING = inf (no erratic noise, v6)", {}, {"_SWING": math.inf}))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run every change, print each held-out score, write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path(".tmiot/nab-ablation"))
    parser.add_argument("--out", type=Path, default=nab.RESULTS / "nab_ablation.md")
    parser.add_argument(
        "--only",
        help="comma-separated names: run only the changes that move these (the defaults too)",
    )
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    ns = nab.nab_score(args.nab)
    data, labels = args.nab / "data", args.nab / "data" / "combined_windows.json"
    names = sorted(json.loads(labels.read_text(encoding="utf-8")))
    weights = ns.load_profiles(None)
    rows = []
    for label, overrides, constants in changes():
        if wanted and label != "defaults" and not any(label.startswith(w) for w in wanted):
            continue
        shutil.rmtree(args.work, ignore_errors=True)
        print(f"{label} ...", flush=True)
        folders = nab.run_grid(
            data, names, args.work, GRID, overrides=overrides, constants=constants
        )
        quiet = overrides.get("quiet_readings", DetectorSettings().quiet_readings)
        runs = {(quiet, t): ns.load_corpus(data, labels, f, None) for t, f in folders.items()}
        held = {p: nab.held_out_grid(ns, runs, weights[p]) for p in nab.PROFILES[:2]}
        row = {
            "change": label,
            "standard": held["standard"]["pooled"],
            "low_fp": held["reward_low_FP_rate"]["pooled"],
            "in_sample": held["standard"]["in_sample"]["normalized"],
        }
        rows.append(row)
        print(f"  held out {row['standard']:.2f} / {row['low_fp']:.2f}", flush=True)
    base = rows[0]
    lines = [
        "# Does every constant earn its place? (`make nab-ablation`)",
        "",
        (
            "Each constant moved alone, the detector run again over the threshold grid"
            f" {GRID[0]:.2f}..{GRID[-1]:.2f}, and scored leave-one-category-out on the 34 files"
            " of `../shared/nab` exactly as `make nab` scores it (threshold chosen on the other"
            " four categories, folds pooled). Differences are to the defaults, first row."
        ),
        "",
        (
            "| change | held out, standard | vs defaults | held out, low FP | vs defaults |"
            " in sample, standard |"
        ),
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['change']} | {r['standard']:.2f} | {r['standard'] - base['standard']:+.2f} |"
            f" {r['low_fp']:.2f} | {r['low_fp'] - base['low_fp']:+.2f} | {r['in_sample']:.2f} |"
            for r in rows
        ),
        "",
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
