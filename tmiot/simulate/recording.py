"""A simulated fleet written straight to a recording of ``sensor.readings.raw``.

The records are what ingest would have produced from the same readings: columnar
batches of one Kafka partition (the sensor id's murmur2 partition), in time order,
with the raw schema header. ``tmiot replay`` then feeds them to stream and
triggers without MQTT or ingest, at any pace, as often as wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
from pydantic_core import to_json

from ingest.sensors import partition_for
from tmiot.events import RAW_SCHEMA, SCHEMA_HEADER
from tmiot.recording import Recorded, RecordingWriter
from tmiot.simulate.fleet import Fleet
from tmiot.simulate.signals import Injection, inject, to_ms

__all__ = ["RAW_TOPIC", "record_fleet"]

RAW_TOPIC: Final = "sensor.readings.raw"


def record_fleet(  # noqa: PLR0913 - each knob is a documented keyword
    path: Path,
    fleet: Fleet,
    *,
    start: datetime,
    end: datetime,
    injections: Sequence[Injection] = (),
    partitions: int = 8,
    per_record: int = 200,
) -> int:
    """Write the fleet's readings over ``[start, end)`` as raw records; how many readings."""
    bank = fleet.bank(start)
    everyone = np.arange(len(fleet.sensors), dtype=np.int64)
    sensors, t_ms = bank.sample_times(to_ms(start), to_ms(end), everyone)
    sensors, t_ms, values = inject(bank, sensors, t_ms, bank.values(sensors, t_ms), injections)
    order = np.lexsort((sensors, t_ms))
    ids = [s.sensor_id for s in fleet.sensors]
    part_of = [partition_for(sensor_id, partitions) for sensor_id in ids]
    parts: dict[int, list[tuple[str, int, float]]] = {}
    for i in order.tolist():
        k = int(sensors[i])
        parts.setdefault(part_of[k], []).append((ids[k], int(t_ms[i]) * 1000, float(values[i])))
    with RecordingWriter(path) as out:
        for partition, rows in sorted(parts.items()):
            for offset, first in enumerate(range(0, len(rows), per_record)):
                chunk = rows[first : first + per_record]
                n = len(chunk)
                value = to_json(
                    {
                        "v": 1,
                        "sensor_id": [r[0] for r in chunk],
                        "company_id": [fleet.company_id] * n,
                        "ts_us": [r[1] for r in chunk],
                        "value": [r[2] for r in chunk],
                        "unit": [None] * n,
                        "quality_score": [None] * n,
                        "ambient_temperature": [None] * n,
                        "ambient_humidity": [None] * n,
                        "weather_conditions": [None] * n,
                        "received_us": [r[1] for r in chunk],
                    }
                )
                out.write(
                    Recorded(
                        RAW_TOPIC,
                        partition,
                        offset,
                        chunk[-1][1] // 1000,
                        None,
                        value,
                        ((SCHEMA_HEADER, RAW_SCHEMA),),
                    )
                )
    return len(t_ms)
