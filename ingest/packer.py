"""Pack readings into Kafka records: one record per partition, readings in arrival order.

See :mod:`tmiot.events` for the record format downstream consumers see.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.sensors import SensorInfo, partition_for
from tmiot.events import READING_BATCH, RawReading, ReadingBatch

__all__ = ["PackedRecord", "Packer"]


@dataclass(frozen=True, slots=True)
class PackedRecord:
    """One record for ``sensor.readings.raw``."""

    partition: int
    key: bytes | None  # the sensor id when the record holds one sensor only
    value: bytes
    readings: int


class Packer:
    """Accumulates readings per partition; `drain` turns them into records.

    >>> p = Packer(partitions=4, max_readings=2)
    >>> len(p)
    0
    """

    def __init__(self, partitions: int, max_readings: int) -> None:
        """Pack for a topic of `partitions` partitions, at most `max_readings` per record."""
        self._partitions = partitions
        self._max = max_readings
        self._pending: dict[int, list[RawReading]] = {}
        self._count = 0
        # murmur2 is pure Python in aiokafka: compute it once per sensor.
        self._partition_of: dict[str, int] = {}

    def __len__(self) -> int:
        """Readings waiting to be drained."""
        return self._count

    def partition(self, info: SensorInfo) -> int:
        """The partition of a sensor's readings."""
        p = self._partition_of.get(info.sensor_id)
        if p is None:
            p = self._partition_of[info.sensor_id] = partition_for(info.sensor_id, self._partitions)
        return p

    def add(self, info: SensorInfo, reading: RawReading) -> None:
        """Queue one reading behind the earlier ones of its partition."""
        self._pending.setdefault(self.partition(info), []).append(reading)
        self._count += 1

    def drain(self) -> list[PackedRecord]:
        """All queued readings as records (split at `max_readings`), emptying the packer."""
        records = []
        for partition, readings in self._pending.items():
            for start in range(0, len(readings), self._max):
                chunk = readings[start : start + self._max]
                first = chunk[0]["sensor_id"]
                single = all(r["sensor_id"] == first for r in chunk)
                batch: ReadingBatch = {"v": 1, "readings": chunk}
                records.append(
                    PackedRecord(
                        partition=partition,
                        key=first.encode() if single else None,
                        value=READING_BATCH.dump_json(batch),
                        readings=len(chunk),
                    )
                )
        self._pending = {}
        self._count = 0
        return records
