"""Pack readings into Kafka records: one record per partition, readings in arrival order.

See :mod:`tmiot.events` for the record format downstream consumers see.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_core import to_json

from ingest.validation import ReadingRow
from tmiot.events import BATCH_COLUMNS
from tmiot.kafka import partition_for

__all__ = ["PackedRecord", "Packer"]


@dataclass(frozen=True, slots=True)
class PackedRecord:
    """One record for ``sensor.readings.raw``."""

    partition: int
    key: bytes | None  # the sensor id when the record holds one sensor only
    value: bytes
    readings: int


class Packer:
    """Accumulates reading rows per partition; `drain` turns them into columnar records.

    >>> p = Packer(partitions=4, max_readings=2)
    >>> len(p)
    0
    """

    def __init__(self, partitions: int, max_readings: int) -> None:
        """Pack for a topic of `partitions` partitions, at most `max_readings` per record."""
        self._partitions = partitions
        self._max = max_readings
        self._pending: dict[int, list[ReadingRow]] = {}
        self._gateways: dict[int, dict[str, str]] = {}  # partition -> sensor -> gateway
        self._count = 0
        # murmur2 is pure Python in aiokafka: compute it once per sensor.
        self._partition_of: dict[str, int] = {}

    def __len__(self) -> int:
        """Readings waiting to be drained."""
        return self._count

    def partition(self, sensor_id: str) -> int:
        """The partition of a sensor's readings."""
        p = self._partition_of.get(sensor_id)
        if p is None:
            p = self._partition_of[sensor_id] = partition_for(sensor_id, self._partitions)
        return p

    def add(self, rows: list[ReadingRow], gateway: str | None = None) -> None:
        """Queue rows (in order) behind the earlier ones of their partitions.

        `gateway`: the gateway they came through, if any (the record's ``gateways``).
        """
        pending, partition_of = self._pending, self._partition_of
        for row in rows:
            p = partition_of.get(row[0])
            if p is None:
                p = self.partition(row[0])
            queue = pending.get(p)
            if queue is None:
                queue = pending[p] = []
            queue.append(row)
            if gateway is not None:
                self._gateways.setdefault(p, {})[row[0]] = gateway
        self._count += len(rows)

    def drain(self) -> list[PackedRecord]:
        """All queued readings as records (split at `max_readings`), emptying the packer."""
        records = []
        for partition, rows in self._pending.items():
            gateways = self._gateways.get(partition)
            for start in range(0, len(rows), self._max):
                chunk = rows[start : start + self._max]
                columns: dict[str, object] = dict(
                    zip(BATCH_COLUMNS, zip(*chunk, strict=True), strict=True)
                )
                sensors: tuple[str, ...] = columns["sensor_id"]  # type: ignore[assignment]
                single = sensors.count(sensors[0]) == len(sensors)
                if gateways:
                    mine = {s: gateways[s] for s in set(sensors) if s in gateways}
                    if mine:
                        columns["gateways"] = mine
                records.append(
                    PackedRecord(
                        partition=partition,
                        key=sensors[0].encode() if single else None,
                        value=to_json({"v": 1, **columns}),
                        readings=len(chunk),
                    )
                )
        self._pending = {}
        self._gateways = {}
        self._count = 0
        return records
