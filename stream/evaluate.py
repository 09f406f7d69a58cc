"""`tmiot evaluate`: run the stream detector offline over NAB-style CSV series.

Every ``<category>/<file>.csv`` under ``--data`` (header ``timestamp,value``,
timestamps ``YYYY-MM-DD HH:MM:SS`` read as UTC) is scored in file order from a
fresh :class:`~stream.detectors.SensorDetector`; ``--out`` receives
``<category>/<file>.csv`` with columns ``timestamp,value,anomaly_score``, the
layout NAB's scorer reads as ``--results``. This module is the command's output
layer: it alone prints (the summary line).

Example::

    tmiot evaluate --data ../shared/nab/data --out .tmiot/nab/results
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import structlog

from stream.detectors import SensorDetector
from tmiot.config import DetectorSettings, Settings

__all__ = ["SeriesResult", "configure_parser", "evaluate_file", "run"]

log = structlog.get_logger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
COLUMNS: Final = ("timestamp", "value", "anomaly_score")


@dataclass(frozen=True, slots=True)
class SeriesResult:
    """What scoring one file gave."""

    name: str  # "<category>/<file>.csv"
    rows: int
    anomalies: int  # readings with is_anomaly


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of `tmiot evaluate` to its sub-parser."""
    add = parser.add_argument
    add("--data", type=Path, required=True, help="folder of <category>/<file>.csv series")
    add("--out", type=Path, required=True, help="folder to write the scored series to")


def _epoch_ms(text: str) -> int:
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


def evaluate_file(
    source: Path, target: Path, settings: DetectorSettings, name: str
) -> SeriesResult:
    """Score one series from a fresh detector and write its results file.

    Raises:
        ValueError: a row has no readable timestamp or value (the message names it).
    """
    detector = SensorDetector(settings)
    rows = anomalies = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        source.open(newline="", encoding="utf-8") as src,
        target.open("w", newline="", encoding="utf-8") as dst,
    ):
        reader = csv.DictReader(src)
        writer = csv.writer(dst)
        writer.writerow(COLUMNS)
        for line, row in enumerate(reader, start=2):
            try:
                stamp, value = row["timestamp"], float(row["value"])
                verdict = detector.update(_epoch_ms(stamp), value)
            except (KeyError, TypeError, ValueError) as exc:
                msg = f"{source}:{line}: unreadable row ({exc})"
                raise ValueError(msg) from exc
            writer.writerow((stamp, row["value"], f"{verdict.score:.4f}"))
            rows += 1
            anomalies += verdict.is_anomaly
    return SeriesResult(name, rows, anomalies)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Score every series under --data into --out; the exit code."""
    data: Path = args.data
    files = sorted(p for p in data.glob("*/*.csv") if p.is_file())
    if not files:
        print(f"tmiot evaluate: no <category>/<file>.csv under {data}", file=sys.stderr)  # noqa: T201 - the command's output
        return EXIT_FAILURE
    started = time.perf_counter()
    results = []
    for i, path in enumerate(files, start=1):
        name = path.relative_to(data).as_posix()
        try:
            result = evaluate_file(path, args.out / name, settings.stream.detector, name)
        except (OSError, ValueError) as exc:
            print(f"tmiot evaluate: {exc}", file=sys.stderr)  # noqa: T201
            return EXIT_FAILURE
        results.append(result)
        log.info("series scored", file=name, done=i, of=len(files), rows=result.rows)
    elapsed = time.perf_counter() - started
    rows = sum(r.rows for r in results)
    print(  # noqa: T201 - the command's output
        f"scored {rows} readings of {len(results)} series in {elapsed:.1f} s"
        f" ({rows / max(elapsed, 1e-9):.0f} readings/s),"
        f" {sum(r.anomalies for r in results)} anomalies -> {args.out}"
    )
    return EXIT_OK
