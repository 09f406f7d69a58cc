"""What a fault run delivered, against what it published: readings, incidents, work orders.

- **Readings**: the workload publishes every (sensor, tick) once or more (QoS 1
  resends); ``sensor_readings`` must hold each exactly once: ``stored`` distinct
  keys, ``duplicates`` rows beyond them (the primary key keeps this 0), ``lost``
  published keys missing.
- **Work orders**: every excursion must have exactly one work-order incident
  (distinct idempotency keys whose ``opened_at`` falls in it); ``spurious`` are
  incidents no excursion explains; ``resent`` counts events repeating a key
  (allowed by the contract: consumers keep one work order per key).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from tmiot.chaos.workload import Excursion, Workload
from tmiot.config import DatabaseSettings
from tmiot.db import conninfo

__all__ = [
    "ReadingsAccount",
    "WorkOrderAccount",
    "count_readings",
    "missing_by_tick",
    "read_work_orders",
    "wait_drained",
]

_US: Final = 1_000_000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class ReadingsAccount:
    """Readings published against rows stored."""

    published: int
    stored: int  # distinct (sensor, timestamp) keys of the workload in sensor_readings
    rows: int
    outside: int  # stored rows of the fleet at a time the workload never published

    @property
    def duplicates(self) -> int:
        """Rows beyond one per key."""
        return self.rows - self.stored

    @property
    def lost(self) -> int:
        """Published readings not stored."""
        return self.published - (self.stored - self.outside)

    def ok(self) -> bool:
        """Every reading once, nothing else."""
        return self.lost == 0 and self.duplicates == 0 and self.outside == 0


def count_readings(
    db: DatabaseSettings, workload: Workload, ticks: int | None = None
) -> ReadingsAccount:
    """Count the workload's rows in ``sensor_readings`` (the first `ticks` ticks' worth)."""
    ticks = workload.ticks if ticks is None else ticks
    start = _EPOCH + dt.timedelta(microseconds=workload.start_us)
    end = start + dt.timedelta(seconds=ticks)
    with psycopg.connect(conninfo(db)) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, reading_timestamp)),"
            " count(*) FILTER (WHERE reading_timestamp < %s OR reading_timestamp >= %s"
            "   OR extract(microseconds FROM reading_timestamp - %s)::bigint %% 1000000 <> 0)"
            " FROM sensor_readings WHERE sensor_id = ANY(%s::uuid[])"
            " AND reading_timestamp >= %s - interval '1 hour'",
            (start, end, start, workload.sensor_ids(), start),
        ).fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns a row
    return ReadingsAccount(ticks * workload.sensors, int(row[1]), int(row[0]), int(row[2]))


def missing_by_tick(db: DatabaseSettings, workload: Workload) -> dict[int, int]:
    """Readings missing per tick (ticks with every sensor's reading left out), for diagnosis."""
    start = _EPOCH + dt.timedelta(microseconds=workload.start_us)
    with psycopg.connect(conninfo(db)) as conn:
        rows = conn.execute(
            "SELECT reading_timestamp, count(*) FROM sensor_readings"
            " WHERE sensor_id = ANY(%s::uuid[]) AND reading_timestamp >= %s GROUP BY 1",
            (workload.sensor_ids(), start),
        ).fetchall()
    stored = {round((ts - start).total_seconds()): int(n) for ts, n in rows}
    return {
        tick: workload.sensors - stored.get(tick, 0)
        for tick in range(workload.ticks)
        if stored.get(tick, 0) < workload.sensors
    }


@dataclass(slots=True)
class WorkOrderAccount:
    """Work-order events against the excursions."""

    incidents: int = 0  # excursions injected
    matched: int = 0  # excursions with exactly one work-order incident
    missing: list[Excursion] = field(default_factory=list)  # excursions with none
    doubled: list[Excursion] = field(default_factory=list)  # excursions with more than one
    spurious: int = 0  # incidents in no excursion
    events: int = 0  # work-order events read
    keys: int = 0  # distinct idempotency keys
    resent: int = 0  # events repeating a key

    def ok(self) -> bool:
        """Every excursion one work order, nothing else."""
        return self.matched == self.incidents and self.spurious == 0

    def summary(self) -> dict[str, Any]:
        """Plain figures (for JSON)."""
        out = asdict(self)
        out["missing"] = [asdict(e) for e in self.missing]
        out["doubled"] = [asdict(e) for e in self.doubled]
        return out


def match_work_orders(
    excursions: list[Excursion], orders: list[dict[str, Any]]
) -> WorkOrderAccount:
    """Match work-order events to excursions by sensor and opening time."""
    account = WorkOrderAccount(incidents=len(excursions), events=len(orders))
    per_key = Counter(str(o["idempotency_key"]) for o in orders)
    account.keys = len(per_key)
    account.resent = sum(n - 1 for n in per_key.values())
    by_sensor: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for o in orders:
        opened = dt.datetime.fromisoformat(str(o["opened_at"]))
        by_sensor[str(o["sensor_id"])].add(
            (str(o["idempotency_key"]), (opened - _EPOCH) // dt.timedelta(microseconds=1))
        )
    explained: set[str] = set()
    for e in excursions:
        keys = {k for k, at in by_sensor.get(e.sensor_id, ()) if e.start_us <= at < e.end_us}
        explained |= keys
        if len(keys) == 1:
            account.matched += 1
        elif not keys:
            account.missing.append(e)
        else:
            account.doubled.append(e)
    account.spurious = len(per_key.keys() - explained)
    return account


async def read_work_orders(
    bootstrap: str, topic: str, *, wait_s: float = 5.0
) -> list[dict[str, Any]]:
    """Every work-order event on `topic` up to its end offsets (the topic may take `wait_s`)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        parts = consumer.partitions_for_topic(topic)
        end_wait = time.monotonic() + wait_s
        while not parts and time.monotonic() < end_wait:
            await consumer.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await asyncio.sleep(0.2)
        if not parts:
            return out
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + max(wait_s, 30.0)
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(json.loads(r.value or b"null") for r in records)
    finally:
        await consumer.stop()
    return out


def wait_drained(
    db: DatabaseSettings,
    workload: Workload,
    deadline_s: float,
    *,
    check: Callable[[], None] | None = None,
) -> ReadingsAccount:
    """Poll until every published reading is stored or the deadline passes; the last count."""
    end = time.monotonic() + deadline_s
    while True:
        account = count_readings(db, workload)
        if account.stored >= account.published or time.monotonic() > end:
            return account
        if check is not None:
            check()
        time.sleep(0.5)
