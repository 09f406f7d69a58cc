"""A simulated fleet written straight to a recording of ``sensor.readings.raw``.

The records are what ingest would have produced from the same readings, packed by
ingest's own :class:`~ingest.packer.Packer`: columnar batches of one Kafka partition
(the sensor id's murmur2 partition), in time order, with the raw schema header.
``tmiot replay`` then feeds them to stream and triggers without MQTT or ingest, at
any pace, as often as wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np

from ingest.packer import Packer
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
    linger: timedelta = timedelta(minutes=1),
) -> int:
    """Write the fleet's readings over ``[start, end)`` as raw records; how many readings.

    Ingest's own :class:`~ingest.packer.Packer` packs them: what arrives within one
    `linger` of simulated time goes into the same records (at most `per_record`
    readings each), stamped with the linger's end.
    """
    bank = fleet.bank(start)
    everyone = np.arange(len(fleet.sensors), dtype=np.int64)
    sensors, t_ms = bank.sample_times(to_ms(start), to_ms(end), everyone)
    sensors, t_ms, values = inject(bank, sensors, t_ms, bank.values(sensors, t_ms), injections)
    order = np.lexsort((sensors, t_ms))
    ids = [s.sensor_id for s in fleet.sensors]
    packer = Packer(partitions, per_record)
    offsets: dict[int, int] = {}
    step_ms = int(linger.total_seconds() * 1000)
    with RecordingWriter(path) as out:

        def flush(stamp_ms: int) -> None:
            for record in packer.drain():
                offset = offsets.get(record.partition, 0)
                offsets[record.partition] = offset + 1
                out.write(
                    Recorded(
                        RAW_TOPIC,
                        record.partition,
                        offset,
                        stamp_ms,
                        record.key,
                        record.value,
                        ((SCHEMA_HEADER, RAW_SCHEMA),),
                    )
                )

        due = to_ms(start) + step_ms
        for i in order.tolist():
            ts = int(t_ms[i])
            while ts >= due:
                flush(due)
                due += step_ms
            ts_us = ts * 1000
            row = (ids[int(sensors[i])], fleet.company_id, ts_us, float(values[i]))
            packer.add([(*row, None, None, None, None, None, ts_us)])
        flush(due)
    return len(t_ms)
