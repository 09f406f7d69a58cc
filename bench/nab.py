"""Score the stream detector on the NAB data in ../shared/nab, held out by category.

`make nab` runs ``tmiot evaluate`` over ``<nab>/data`` first (the production
configuration); this script then

* runs the detector again at each ``anomaly_threshold`` of a grid (the one constant
  chosen per fold: the threshold opens the detector's events, so each is a run of its
  own), through the same ``stream.evaluate.evaluate_file`` that ``tmiot evaluate`` uses;
* writes two reference detectors' results from the same series: a rolling z-score over
  the last 300 readings (River's rolling mean and variance), and the null detector;
* scores everything with ``nab_score.py`` (imported from ``<nab>``, read in place):
  **leave-one-category-out**: for each category the threshold is the one that
  maximises the score on the other categories, and the category is scored at it
  (``score_profile(..., threshold)``, what ``nab_score.py --threshold`` does); the five
  folds' raw scores are pooled and normalised (100 perfect, 0 the null detector);
* scores ours at the production ``anomaly_threshold`` too, and last, in sample (the
  best threshold of the grid over every file), labelled as such;
* writes ``bench/results/nab.{md,json}``.

Run: ``make nab`` (or ``python bench/nab.py --help``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from river import stats, utils

from stream import detectors
from stream.evaluate import evaluate_file
from tmiot.config import DetectorSettings

RESULTS = Path(__file__).parent / "results"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
ZSCORE_WINDOW = 300  # readings in the rolling z-score reference
ZSCORE = f"rolling z-score ({ZSCORE_WINDOW})"
OURS = "tmiot"
GRID = tuple(round(0.26 + 0.01 * i, 2) for i in range(25))  # 0.26 .. 0.50
# quiet_readings is chosen per fold too (with the threshold, on the other four categories):
# the held-out score shows whether its choice carries over.
QUIET = (10, 20, 30)
Config = tuple[int, float]  # (quiet_readings, anomaly_threshold)


def nab_score(nab: Path) -> ModuleType:
    """``<nab>/nab_score.py`` as a module (read in place, not copied)."""
    spec = importlib.util.spec_from_file_location("nab_score", nab / "nab_score.py")
    if spec is None or spec.loader is None:
        msg = f"no nab_score.py in {nab}"
        raise FileNotFoundError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nab_score"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def zscore(values: list[float], window: int = ZSCORE_WINDOW) -> list[float]:
    """Rolling z-score of each value against the previous `window` ones, as |z| / (|z| + 1).

    >>> [round(s, 3) for s in zscore([1.0, 2.0, 1.0, 2.0, 9.0], window=4)]
    [0.0, 0.0, 0.5, 0.586, 0.938]
    """
    mean = utils.Rolling(stats.Mean, window_size=window)
    var = utils.Rolling(stats.Var, window_size=window, ddof=0)
    out: list[float] = []
    for i, v in enumerate(values):
        z = 0.0
        if i >= 2:
            sd = math.sqrt(max(var.get(), 0.0))  # type: ignore[operator]
            z = abs(v - mean.get()) / sd if sd > 0.0 else 0.0  # type: ignore[operator]
        out.append(z / (z + 1.0))
        mean.update(v)
        var.update(v)
    return out


def write_references(data: Path, names: list[str], work: Path) -> dict[str, Path]:
    """Write the z-score and null detectors' results for `names`; their folders."""
    folders = {ZSCORE: work / "zscore", "null": work / "null"}
    for name in names:
        with (data / name).open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        scores = {ZSCORE: zscore([float(r["value"]) for r in rows]), "null": [0.0] * len(rows)}
        for detector, folder in folders.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(("timestamp", "value", "anomaly_score"))
                writer.writerows(
                    (r["timestamp"], r["value"], f"{s:.6f}")
                    for r, s in zip(rows, scores[detector], strict=True)
                )
    return folders


Job = tuple[Path, list[str], Path, float, dict[str, Any], dict[str, float]]


def _run_threshold(job: Job) -> float:
    """One grid run: every series scored at `threshold` into `out` (a worker process).

    ``overrides`` change settings, ``constants`` module constants of
    ``stream.detectors`` (the ablation's, in its own worker processes).
    """
    data, names, out, threshold, overrides, constants = job
    for name, value in constants.items():
        setattr(detectors, name, value)
    settings = DetectorSettings(anomaly_threshold=threshold, **overrides)
    for name in names:
        evaluate_file(data / name, out / name, settings, name)
    return threshold


def run_grid(  # noqa: PLR0913 - the ablation's overrides ride along, keyword-only
    data: Path,
    names: list[str],
    work: Path,
    grid: tuple[float, ...],
    *,
    overrides: dict[str, Any] | None = None,
    constants: dict[str, float] | None = None,
) -> dict[float, Path]:
    """The detector at each threshold of `grid`, in parallel; each run's results folder."""
    folders = {t: work / "grid" / f"{t:.2f}" for t in grid}
    started = time.perf_counter()
    # A fresh process per run, so the ablation's module constants do not leak.
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, max_tasks_per_child=1) as pool:
        jobs = [(data, names, folders[t], t, overrides or {}, constants or {}) for t in grid]
        for done, t in enumerate(pool.map(_run_threshold, jobs), start=1):
            print(
                f"  threshold {t:.2f} scored ({done}/{len(grid)},"
                f" {time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return folders


def category(name: str) -> str:
    """The category of ``<category>/<file>.csv``."""
    return name.split("/", 1)[0]


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    files = result["files"].values()
    return {
        "threshold": result["threshold"],
        "raw": result["raw"],
        "null": result["null"],
        "perfect": result["perfect"],
        "normalized": result["normalized"],
        "windows": sum(f["windows"] for f in files),
        "detected": sum(f["windows_detected"] for f in files),
        "fp": sum(f["fp_detections"] for f in files),
    }


def _pooled(folds: list[dict[str, Any]]) -> float:
    raw = sum(f["raw"] for f in folds)
    null = sum(f["null"] for f in folds)
    perfect = sum(f["perfect"] for f in folds)
    return float(100.0 * (raw - null) / (perfect - null))


def _by_category(corpus: list[Any]) -> dict[str, list[Any]]:
    cats: dict[str, list[Any]] = {}
    for f in corpus:
        cats.setdefault(category(f.name), []).append(f)
    return dict(sorted(cats.items()))


def held_out_sweep(ns: ModuleType, corpus: list[Any], weights: object) -> dict[str, Any]:
    """Leave-one-category-out for a detector whose scores do not depend on the threshold."""
    cats = _by_category(corpus)
    folds = {}
    for cat, test in cats.items():
        train = [f for other, files in cats.items() if other != cat for f in files]
        thresholds, totals = ns.sweep(train, weights)
        threshold = float(thresholds[int(totals.argmax())])
        folds[cat] = _summary(ns.score_profile(test, weights, threshold))
    return {"pooled": _pooled(list(folds.values())), "folds": folds}


def held_out_grid(ns: ModuleType, runs: dict[Config, list[Any]], weights: object) -> dict[str, Any]:
    """Leave-one-category-out over detector runs, one per configuration, each at its threshold.

    For each category, the configuration (quiet_readings, threshold) that scores best on
    the other categories is chosen (ties: the higher threshold, then the shorter quiet).
    """
    table = {
        key: {
            cat: _summary(ns.score_profile(files, weights, key[1]))
            for cat, files in _by_category(c).items()
        }
        for key, c in runs.items()
    }
    cats = list(next(iter(table.values())))

    def rank(key: Config, score: float) -> tuple[float, float, int]:
        return (score, key[1], -key[0])

    folds = {}
    for cat in cats:
        best = max(table, key=lambda k: rank(k, sum(table[k][o]["raw"] for o in cats if o != cat)))
        folds[cat] = {**table[best][cat], "quiet_readings": best[0]}
    in_sample = {k: _pooled(list(table[k].values())) for k in table}
    best = max(in_sample, key=lambda k: rank(k, in_sample[k]))
    return {
        "pooled": _pooled(list(folds.values())),
        "folds": folds,
        "in_sample": {
            "threshold": best[1],
            "quiet_readings": best[0],
            "normalized": in_sample[best],
            "curve": {f"{q} {t:.2f}": v for (q, t), v in sorted(in_sample.items())},
        },
    }


def evaluate(
    ns: ModuleType, nab: Path, ours: Path, grid: dict[Config, Path], refs: dict[str, Path]
) -> dict[str, Any]:
    """Every detector, every profile: held out first; ours also at the production threshold."""
    data, labels = nab / "data", nab / "data" / "combined_windows.json"
    weights = ns.load_profiles(None)
    production = DetectorSettings().anomaly_threshold
    runs = {key: ns.load_corpus(data, labels, folder, None) for key, folder in grid.items()}
    corpus = ns.load_corpus(data, labels, ours, None)
    out: dict[str, Any] = {
        OURS: {},
        "production_threshold": production,
        "production_quiet_readings": DetectorSettings().quiet_readings,
        "grid": sorted({t for _, t in grid}),
        "quiet": sorted({q for q, _ in grid}),
    }
    for p in PROFILES:
        at = ns.score_profile(corpus, weights[p], production)
        out[OURS][p] = {
            "held_out": held_out_grid(ns, runs, weights[p]),
            "production": _summary(at),
            "per_category": {
                cat: _summary(ns.score_profile(files, weights[p], production))
                for cat, files in _by_category(corpus).items()
            },
            "files": at["files"],
        }
    for name, folder in refs.items():
        ref = ns.load_corpus(data, labels, folder, None)
        out[name] = {
            p: {
                "held_out": held_out_sweep(ns, ref, weights[p]),
                "in_sample": _summary(ns.score_profile(ref, weights[p], None)),
            }
            for p in PROFILES
        }
    return out


def _fold(scores: dict[str, Any], detector: str, cat: str) -> str:
    f = scores[detector]["standard"]["held_out"]["folds"][cat]
    quiet = f", q={f['quiet_readings']}" if "quiet_readings" in f else ""
    return (
        f"{f['raw']:+.2f} ({f['detected']}/{f['windows']}, {f['fp']} FP,"
        f" t={f['threshold']:.4g}{quiet})"
    )


def report(scores: dict[str, Any]) -> str:
    """The Markdown report: held out first, then the production threshold, in sample last."""
    ours = scores[OURS]
    refs = [d for d in (ZSCORE, "null") if d in scores]
    production = scores["production_threshold"]
    cats = list(ours["standard"]["held_out"]["folds"])
    grid = scores["grid"]
    below = [
        cat
        for cat in cats
        if ours["standard"]["held_out"]["folds"][cat]["raw"]
        < scores[ZSCORE]["standard"]["held_out"]["folds"][cat]["raw"]
    ]
    lines = [
        "# NAB score of the stream detector, held out by category",
        "",
        (
            "`make nab`: the detector over the 34 files of `../shared/nab/data` (read in place),"
            " scored by `nab_score.py`. **Leave-one-category-out**: each category is scored at"
            " the `anomaly_threshold` and `quiet_readings` that score best on the other four (a"
            f" detector run per threshold of the grid {grid[0]:.2f}..{grid[-1]:.2f} and per"
            f" quiet_readings of {', '.join(map(str, scores['quiet']))}: t and q below), and the"
            " five folds' raw scores are pooled and normalised (100 perfect, 0 the null"
            " detector). One"
            " configuration for every file, no labels at run time. The reference detectors run"
            " through the same harness in the same run (their threshold swept on the other four"
            " by `nab_score.py`)."
        ),
        "",
        "## Held out (pooled over the five folds)",
        "",
        "| detector | standard | reward_low_FP_rate | reward_low_FN_rate |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | "
            + " | ".join(f"{scores[name][p]['held_out']['pooled']:.2f}" for p in PROFILES)
            + " |"
            for name in [OURS, *refs]
        ),
        "",
        (
            "Per held-out category, standard profile: raw score (windows detected / all,"
            " false-positive rows, threshold chosen on the other four)."
        ),
        "",
        f"| category | {OURS} | {ZSCORE} | null |",
        "|---|---|---|---|",
        *(
            f"| {cat} | " + " | ".join(_fold(scores, d, cat) for d in [OURS, *refs]) + " |"
            for cat in cats
        ),
        "",
        (
            "Every category scores above the rolling z-score."
            if not below
            else f"Below the rolling z-score: {', '.join(below)}."
        ),
        "",
        (
            f"## At the production threshold ({production}, quiet_readings"
            f" {scores['production_quiet_readings']})"
        ),
        "",
        "| profile | normalised score | windows detected | FP rows |",
        "|---|---:|---:|---:|",
        *(
            f"| {p} | {ours[p]['production']['normalized']:.2f} |"
            f" {ours[p]['production']['detected']}/{ours[p]['production']['windows']} |"
            f" {ours[p]['production']['fp']} |"
            for p in PROFILES
        ),
        "",
        "Per category at the production threshold, standard profile:",
        "",
        "| category | raw | windows | FP rows |",
        "|---|---:|---:|---:|",
        *(
            f"| {cat} | {c['raw']:+.2f} | {c['detected']}/{c['windows']} | {c['fp']} |"
            for cat, c in ours["standard"]["per_category"].items()
        ),
        "",
        "## In sample (best threshold and quiet_readings over all 34 files: not held out)",
        "",
        "| detector | standard | reward_low_FP_rate | reward_low_FN_rate |",
        "|---|---:|---:|---:|",
        f"| {OURS} | "
        + " | ".join(
            f"{ours[p]['held_out']['in_sample']['normalized']:.2f}"
            f" (t={ours[p]['held_out']['in_sample']['threshold']:.2f},"
            f" q={ours[p]['held_out']['in_sample']['quiet_readings']})"
            for p in PROFILES
        )
        + " |",
        *(
            f"| {name} | "
            + " | ".join(
                f"{scores[name][p]['in_sample']['normalized']:.2f}"
                f" (t={scores[name][p]['in_sample']['threshold']:.4g})"
                for p in PROFILES
            )
            + " |"
            for name in refs
        ),
        "",
        "Standard profile, in sample, by quiet_readings and threshold: "
        + ", ".join(
            f"q={key.split()[0]} t={key.split()[1]}: {v:.1f}"
            for key, v in ours["standard"]["held_out"]["in_sample"]["curve"].items()
        ),
        "",
        "Per file at the production threshold, standard profile:",
        "",
        "| file | raw | windows hit | FP rows |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {f['raw']:.3f} | {f['windows_detected']}/{f['windows']} |"
            f" {f['fp_detections']} |"
            for name, f in ours["standard"]["files"].items()
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
    """Score, print the held-out figures first, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nab", type=Path, required=True, help="../shared/nab (data, nab_score.py)"
    )
    parser.add_argument("--results", type=Path, required=True, help="tmiot evaluate's --out")
    parser.add_argument("--work", type=Path, default=Path(".tmiot/nab"), help="grid and references")
    parser.add_argument("--out", type=Path, default=RESULTS / "nab.md")
    args = parser.parse_args(argv)
    ns = nab_score(args.nab)
    data = args.nab / "data"
    names = sorted(json.loads((data / "combined_windows.json").read_text(encoding="utf-8")))
    production = DetectorSettings().anomaly_threshold
    grid = tuple(sorted({*GRID, production}))
    print(f"{len(grid) * len(QUIET)} detector runs over {len(names)} files ...", flush=True)
    folders: dict[Config, Path] = {}
    for quiet in QUIET:
        print(f"quiet_readings {quiet}:", flush=True)
        runs = run_grid(
            data, names, args.work / f"quiet-{quiet}", grid, overrides={"quiet_readings": quiet}
        )
        folders.update({(quiet, t): folder for t, folder in runs.items()})
    refs = write_references(data, names, args.work)
    scores = evaluate(ns, args.nab, args.results, folders, refs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(scores), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(scores, indent=1), encoding="utf-8")
    for name in (OURS, *refs):
        held = " / ".join(f"{scores[name][p]['held_out']['pooled']:.2f}" for p in PROFILES)
        print(f"{name}: held out {held} (standard / low FP / low FN)")
    at = " / ".join(f"{scores[OURS][p]['production']['normalized']:.2f}" for p in PROFILES)
    print(f"{OURS} at the production threshold {production}: {at} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
