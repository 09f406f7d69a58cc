"""What the orchestrator watches during a step: rows committed, work orders, processes.

* :class:`RowProbe` polls ``sensor_readings`` for the rows of a few probe sensors
  every ``interval`` seconds. A row seen by a poll was committed before that poll's
  snapshot, so ``poll start - reading timestamp`` bounds its publish-to-row latency
  from above (by at most one interval).
* :class:`OrderProbe` reads ``workorders.requested``: latency = arrival - the
  excursion's reading timestamp.
* :class:`ProcSampler` reads CPU time and resident memory of named processes from
  ``/proc`` once a second, and the whole machine's busy time over its window;
* :func:`machine_busy_seconds` is that busy time (every process, kernel work
  included), which is what a rate costs the machine: the stage limits and the steps
  are both charged with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaConsumer

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

_PROBE_SQL = """
SELECT r.sensor_id::text, (extract(epoch FROM r.reading_timestamp) * 1000)::bigint
FROM unnest(%s::uuid[], %s::timestamptz[]) AS p(sid, after)
JOIN LATERAL (
    SELECT sensor_id, reading_timestamp FROM sensor_readings
    WHERE sensor_id = p.sid AND reading_timestamp > p.after
) AS r ON true
"""


def quantile_ms(values: list[float], q: float) -> int | None:
    """The q-quantile of `values` (seconds), in milliseconds; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def percentiles(values: list[float]) -> dict[str, int | None]:
    """p50, p95, p99 and max, milliseconds."""
    return {
        "p50": quantile_ms(values, 0.5),
        "p95": quantile_ms(values, 0.95),
        "p99": quantile_ms(values, 0.99),
        "max": quantile_ms(values, 1.0),
        "n": len(values),
    }


@dataclass
class RowProbe:
    """Publish-to-row latency of the probe sensors' readings from `since_ms` on."""

    url: str
    sensors: list[str]
    since_ms: int
    interval: float = 0.05
    latencies: list[float] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Poll until :meth:`stop`."""
        after = [dt.datetime.fromtimestamp(self.since_ms / 1000, dt.UTC)] * len(self.sensors)
        where = {s: i for i, s in enumerate(self.sensors)}
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            # The table was emptied before the step, so its statistics say "empty" and the
            # planner would scan it whole on every poll; the primary key serves the probe.
            await conn.execute("SET enable_seqscan = off")
            while not self._stop.is_set():
                started = time.time()
                cur = await conn.execute(_PROBE_SQL, (self.sensors, after))
                for sid, ts_ms in await cur.fetchall():
                    self.latencies.append(started - ts_ms / 1000)
                    i = where[sid]
                    after[i] = max(after[i], dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)

    def stop(self) -> None:
        """End the polling loop."""
        self._stop.set()


@dataclass
class OrderProbe:
    """Publish-to-work-order latency of the excursions (matched by sensor and reading time)."""

    bootstrap: str
    topic: str = "workorders.requested"
    arrived: dict[tuple[str, int], float] = field(default_factory=dict)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Position at the end of the topic, then read in the background."""
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=20,
        )
        await self._consumer.start()
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                for r in records:
                    event = json.loads(r.value or b"{}")
                    opened = dt.datetime.fromisoformat(event["opened_at"])
                    key = (str(event["sensor_id"]), round(opened.timestamp() * 1000))
                    self.arrived.setdefault(key, now)

    def latencies(self, excursions: list[tuple[str, int]]) -> tuple[list[float], int]:
        """Latencies of the excursions (sensor id, reading ms) that got a work order.

        Also returns how many got none.
        """
        out = []
        missing = 0
        for sensor, ts in excursions:
            got = self.arrived.get((sensor, ts))
            if got is None:
                missing += 1
            else:
                out.append(got - ts / 1000)
        return out, missing

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


def machine_busy_seconds() -> float:
    """Core-seconds all CPUs have spent busy since boot: ``/proc/stat`` less idle, iowait, steal.

    Steal (time the hypervisor gave to other guests) is no work of this machine's.
    """
    with Path("/proc/stat").open() as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, _steal = ticks
    return (user + nice + system + irq + softirq) / _TICKS


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _rss(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (FileNotFoundError, ProcessLookupError):
        return None


@dataclass
class ProcSampler:
    """CPU share and resident memory of named process groups, sampled once a second.

    ``pids`` is called at each sample: a name maps to the pids it covers then (the
    database's backends come and go).
    """

    pids: Callable[[], dict[str, list[int]]]
    cpu: dict[str, float] = field(default_factory=dict)  # name -> cores (mean)
    machine_cores: float = 0.0  # the whole machine's busy cores (mean)
    rss_peak: dict[str, int] = field(default_factory=dict)
    rss_last: dict[str, int] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _started: float = 0.0
    _busy: float = 0.0
    _first: dict[int, float] = field(default_factory=dict)
    _latest: dict[int, float] = field(default_factory=dict)
    _owner: dict[int, str] = field(default_factory=dict)

    def _sample(self) -> None:
        rss: dict[str, int] = {}
        for name, pids in self.pids().items():
            for pid in pids:
                cpu = _cpu_seconds(pid)
                if cpu is None:
                    continue
                self._first.setdefault(pid, cpu)
                self._latest[pid] = cpu
                self._owner[pid] = name
                rss[name] = rss.get(name, 0) + (_rss(pid) or 0)
        for name, value in rss.items():
            self.rss_peak[name] = max(self.rss_peak.get(name, 0), value)
            self.rss_last[name] = value

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(1.0)

    def start(self) -> None:
        """Take the first sample and go on in the background."""
        self._started = time.monotonic()
        self._busy = machine_busy_seconds()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Take the last sample; fill :attr:`cpu` and :attr:`machine_cores` with mean cores."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()
        wall = max(1e-9, time.monotonic() - self._started)
        self.machine_cores = round((machine_busy_seconds() - self._busy) / wall, 2)
        cpu: dict[str, float] = {}
        for pid, name in self._owner.items():
            cpu[name] = cpu.get(name, 0.0) + (self._latest[pid] - self._first[pid]) / wall
        self.cpu = {k: round(v, 2) for k, v in cpu.items()}
