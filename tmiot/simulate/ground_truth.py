"""Ground truth of the injected anomalies, as CSV: what evaluation compares detections to.

Columns: ``sensor_id, device_id, anomaly_type, start, end`` (RFC 3339, UTC,
milliseconds); the window is ``[start, end)``.

Example:
    >>> import tempfile
    >>> from datetime import UTC, datetime
    >>> t = datetime(2025, 1, 1, tzinfo=UTC)
    >>> rec = GroundTruth("4c5e...", "sim-7-3", AnomalyType.SPIKE, t, t)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = Path(d) / "truth.csv"
    ...     write_ground_truth(path, [rec])
    ...     read_ground_truth(path) == [rec]
    1
    True
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from tmiot.simulate.fleet import Fleet
from tmiot.simulate.signals import AnomalyType, Injection, to_datetime, to_ms

__all__ = ["COLUMNS", "GroundTruth", "ground_truth", "read_ground_truth", "write_ground_truth"]

COLUMNS: Final = ("sensor_id", "device_id", "anomaly_type", "start", "end")


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """One injected anomaly: which sensor, what kind, over ``[start, end)``."""

    sensor_id: str
    device_id: str
    anomaly_type: AnomalyType
    start: datetime
    end: datetime


def ground_truth(
    fleet: Fleet, injections: Sequence[Injection], *, until: datetime | None = None
) -> list[GroundTruth]:
    """Name the injections' sensors; keep those that began before ``until`` (if given)."""
    limit = None if until is None else to_ms(until)
    records = []
    for a in sorted(injections, key=lambda a: (a.start_ms, a.sensor)):
        if limit is not None and a.start_ms >= limit:
            continue
        sensor = fleet.sensors[a.sensor]
        records.append(
            GroundTruth(
                sensor.sensor_id,
                sensor.device_id,
                a.anomaly_type,
                to_datetime(a.start_ms),
                to_datetime(a.end_ms),
            )
        )
    return records


def write_ground_truth(path: Path, records: Iterable[GroundTruth]) -> int:
    """Write the records as CSV with a header; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for r in records:
            writer.writerow(
                (
                    r.sensor_id,
                    r.device_id,
                    r.anomaly_type.value,
                    r.start.isoformat(timespec="milliseconds"),
                    r.end.isoformat(timespec="milliseconds"),
                )
            )
            count += 1
    return count


def read_ground_truth(path: Path) -> list[GroundTruth]:
    """Read records written by :func:`write_ground_truth`.

    Raises:
        ValueError: the file lacks a column or holds an unknown anomaly type.
    """
    with path.open(encoding="utf-8", newline="") as src:
        reader = csv.DictReader(src)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            msg = f"{path}: missing columns {', '.join(sorted(missing))}"
            raise ValueError(msg)
        return [
            GroundTruth(
                row["sensor_id"],
                row["device_id"],
                AnomalyType(row["anomaly_type"]),
                datetime.fromisoformat(row["start"]),
                datetime.fromisoformat(row["end"]),
            )
            for row in reader
        ]
