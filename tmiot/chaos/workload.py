"""The chaos workload: a simulated fleet publishing at a steady rate over QoS 1, with incidents.

Every sensor of a :class:`~tmiot.simulate.fleet.Fleet` sends one reading per
second of event time (``tick`` k at ``start + k s``), so the readings sent are
known from the tick count alone: sensor x tick, nothing else. Values come from
the simulator's signal bank. Some sensors carry *incidents*: every
``incident_period`` ticks their value jumps to :data:`EXCURSION_VALUE` for
``incident_ticks`` ticks, far past the ``threshold_exceeded`` trigger that
:func:`register_triggers` gives them (:data:`INCIDENT_CONDITION`), so each
excursion must open exactly one incident, hence one work order.

The publisher survives its broker: a publish not acknowledged (PUBACK) when the
connection drops is sent again on the next connection (QoS 1 is at least once;
the pipeline keys readings on (sensor, timestamp)). Ticks are due on an absolute
wall-clock schedule, so after an outage the backlog goes out at once and the rate
then returns to normal.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiomqtt
import numpy as np
import psycopg
import structlog

from tmiot.config import DatabaseSettings, MqttSettings
from tmiot.db import conninfo
from tmiot.simulate.fleet import Fleet, register_fleet
from tmiot.simulate.signals import SignalBank

__all__ = [
    "EXCURSION_VALUE",
    "INCIDENT_CONDITION",
    "Excursion",
    "Workload",
    "WorkloadPublisher",
]

log = structlog.get_logger(__name__)

EXCURSION_VALUE: Final = 50_000.0
# Above every simulated quantity's range; opens after 2 s above, clears at once when back,
# and a 1 s cooldown: each excursion, 20+ s apart, is one incident.
INCIDENT_CONDITION: Final = {
    "above": 10_000.0,
    "for_seconds": 2,
    "min_hold_seconds": 1,
    "cooldown_seconds": 1,
}
_US: Final = 1_000_000
_WINDOW: Final = 200  # publishes awaiting their PUBACK at once


@dataclass(frozen=True, slots=True)
class Excursion:
    """An injected incident: one sensor above the trigger's bound over ``[start_us, end_us)``."""

    sensor_id: str
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class Workload:
    """What is published: a registered fleet, its tick range and its incidents."""

    fleet: Fleet
    start_us: int  # event time of tick 0
    ticks: int
    incident_sensors: int  # the fleet's first sensors carry incidents
    incident_period: int = 30  # ticks between two excursions of a sensor
    incident_ticks: int = 6  # ticks above the bound

    @classmethod
    def register(  # noqa: PLR0913 - each knob is a keyword of the scenario
        cls,
        db: DatabaseSettings,
        *,
        rate: int,
        seconds: float,
        incident_sensors: int,
        seed: int = 7,
        company: str = "Chaos Co",
        lead_seconds: float = 2.0,
    ) -> Workload:
        """Register `rate` sensors (one reading/s each) and their triggers; ticks start soon."""
        fleet = register_fleet(db, sensors=rate, seed=seed, company_name=company)
        register_triggers(db, fleet, incident_sensors)
        start = (time.time() + lead_seconds) * _US
        return cls(fleet, int(start // _US * _US), int(seconds), min(incident_sensors, rate))

    @property
    def sensors(self) -> int:
        """Fleet size."""
        return len(self.fleet.sensors)

    @property
    def readings(self) -> int:
        """Readings the whole run publishes."""
        return self.ticks * self.sensors

    def excursion_at(self, sensor: int, tick: int) -> bool:
        """Whether sensor `sensor` is above the bound at `tick`."""
        if sensor >= self.incident_sensors:
            return False
        phase = (tick + sensor * 7) % self.incident_period
        first = tick - phase
        return (
            first >= self.incident_period // 2  # a quiet lead-in
            and first + self.incident_ticks <= self.ticks  # only whole excursions
            and phase < self.incident_ticks
        )

    def excursions(self, until_tick: int | None = None) -> list[Excursion]:
        """Every whole excursion of the run (or of its first `until_tick` ticks)."""
        last = self.ticks if until_tick is None else min(until_tick, self.ticks)
        found = []
        for s in range(self.incident_sensors):
            sensor_id = self.fleet.sensors[s].sensor_id
            for tick in range(last):
                if self.excursion_at(s, tick) and not self.excursion_at(s, tick - 1):
                    if tick + self.incident_ticks > last:
                        break
                    found.append(
                        Excursion(
                            sensor_id,
                            self.start_us + tick * _US,
                            self.start_us + (tick + self.incident_ticks) * _US,
                        )
                    )
        return found

    def sensor_ids(self) -> list[str]:
        """Every sensor id of the fleet."""
        return [s.sensor_id for s in self.fleet.sensors]


def register_triggers(db: DatabaseSettings, fleet: Fleet, incident_sensors: int) -> None:
    """One-second sampling for every sensor, an incident trigger on the first ones."""
    ids = [s.sensor_id for s in fleet.sensors]
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        conn.execute(
            "UPDATE equipment_sensors SET sampling_interval_seconds = 1 WHERE id = ANY(%s::uuid[])",
            (ids,),
        )
        for sensor_id in ids[:incident_sensors]:
            conn.execute(
                "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
                " condition_type, trigger_conditions, auto_create_work_order, priority_level)"
                " VALUES (%s, %s, %s, 'threshold_exceeded', %s, true, 'high')",
                (fleet.company_id, f"chaos {sensor_id[:8]}", sensor_id,
                 json.dumps(INCIDENT_CONDITION)),
            )  # fmt: skip


@dataclass(slots=True)
class _Message:
    seq: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class _Stats:
    ticks: int = 0  # ticks handed to the publisher
    acked: int = 0  # messages acknowledged
    resent: int = 0  # messages sent again after a lost connection
    reconnects: int = 0
    behind_seconds: float = 0.0


@dataclass
class WorkloadPublisher:
    """Publishes a :class:`Workload` in real time over QoS 1, reconnecting; run :meth:`run`."""

    workload: Workload
    mqtt: MqttSettings
    batch_size: int = 50
    stats: _Stats = field(default_factory=_Stats)
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    _unacked: dict[int, _Message] = field(default_factory=dict)
    _taken: int = 0  # messages below this sequence number have left the queue
    _generated: bool = False
    _all_acked: asyncio.Event = field(default_factory=asyncio.Event)
    _queue: asyncio.Queue[_Message] = field(default_factory=lambda: asyncio.Queue(5000))

    def acked(self, seq: int) -> None:
        """The broker acknowledged message `seq`."""
        self._unacked.pop(seq, None)
        self.stats.acked += 1
        if self._generated and not self._unacked:
            self._all_acked.set()

    def start_thread(self) -> threading.Thread:
        """Run :meth:`run` on an event loop of its own in a thread (the caller may block)."""

        def main() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:
                self.error = exc
                raise

        thread = threading.Thread(target=main, name="chaos-publisher", daemon=True)
        thread.start()
        return thread

    async def run(self) -> None:
        """Generate every tick on schedule and publish it; returns once all are acknowledged."""
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(self._send_forever())
            await self._generate()
            self._generated = True
            if self._unacked:
                self._all_acked.clear()
                await self._all_acked.wait()
            sender.cancel()
        self.finished.set()

    async def _generate(self) -> None:
        w = self.workload
        bank: SignalBank = w.fleet.bank(datetime.fromtimestamp(w.start_us / _US, UTC))
        idx = np.arange(w.sensors, dtype=np.int64)
        base = f"tenants/{w.fleet.company_id}/gateways/chaos-{w.fleet.seed}-gw-"
        devices = [json.dumps(s.device_id) for s in w.fleet.sensors]
        units = [json.dumps(s.profile.unit_of_measure) for s in w.fleet.sensors]
        seq = 0
        for tick in range(w.ticks):
            due = w.start_us / _US + tick
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.stats.behind_seconds = max(0.0, -wait)
            t_ms = (w.start_us // 1000) + tick * 1000
            values = bank.clip(idx, bank.values(idx, np.full(w.sensors, t_ms, np.int64)))
            stamp = (datetime.fromtimestamp(t_ms / 1000, UTC)).isoformat(timespec="milliseconds")
            items = []
            for s in range(w.sensors):
                value = EXCURSION_VALUE if w.excursion_at(s, tick) else round(float(values[s]), 4)
                items.append(
                    f'{{"device_id":{devices[s]},"unit":{units[s]},'
                    f'"timestamp":"{stamp}","value":{value}}}'
                )
            for g, i in enumerate(range(0, len(items), self.batch_size)):
                payload = '{"v":1,"readings":[' + ",".join(items[i : i + self.batch_size]) + "]}"
                message = _Message(seq, f"{base}{g}/readings", payload.encode())
                seq += 1
                self._unacked[message.seq] = message
                await self._queue.put(message)
            self.stats.ticks = tick + 1

    async def _send_forever(self) -> None:
        attempt = 0
        while True:
            client = aiomqtt.Client(
                self.mqtt.host,
                self.mqtt.port,
                identifier=f"chaos-pub-{uuid.uuid4().hex[:8]}",
                max_inflight_messages=_WINDOW,
            )
            client.pending_calls_threshold = _WINDOW + 1
            try:
                async with client:
                    attempt = 0
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                attempt += 1
                self.stats.reconnects += 1
                delay = random.uniform(0, min(5.0, 0.2 * 1.5**attempt))  # noqa: S311 - jitter
                log.info("publisher reconnecting", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Resend what earlier connections left unacknowledged, then follow the queue.

        Raises MqttError when the connection is lost; publishes still pending then
        are cancelled and stay unacknowledged, for the next connection.
        """
        link = _Link(self, client)
        follower = asyncio.create_task(link.follow())
        # aiomqtt fails a pending publish only at its timeout: watch the connection too.
        gone: asyncio.Future[None] = asyncio.ensure_future(
            asyncio.shield(client._disconnected)  # noqa: SLF001 - see above
        )
        lost = asyncio.create_task(link.lost.wait())
        first: set[asyncio.Future[Any]] = {follower, gone, lost}
        try:
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting: list[asyncio.Future[Any]] = [*first, *link.pending]
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
        raise link.failure or aiomqtt.MqttError("connection lost")


class _Link:
    """One connection's publishing: a window of publishes awaiting their PUBACK."""

    def __init__(self, publisher: WorkloadPublisher, client: aiomqtt.Client) -> None:
        self.publisher = publisher
        self.client = client
        self.slots = asyncio.Semaphore(_WINDOW)
        self.lost = asyncio.Event()
        self.failure: aiomqtt.MqttError | None = None
        self.pending: set[asyncio.Task[None]] = set()

    async def follow(self) -> None:
        """The previous connections' unacknowledged messages first, then the queue."""
        p = self.publisher
        for seq in sorted(s for s in p._unacked if s < p._taken):  # noqa: SLF001 - its helper
            message = p._unacked.get(seq)  # noqa: SLF001
            if message is not None:
                p.stats.resent += 1
                if not await self._send(message):
                    return
        while True:
            message = await p._queue.get()  # noqa: SLF001
            p._taken = message.seq + 1  # noqa: SLF001
            if not await self._send(message):
                return

    async def _send(self, message: _Message) -> bool:
        await self.slots.acquire()
        if self.lost.is_set():
            return False
        task = asyncio.create_task(self._publish(message))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        return True

    async def _publish(self, message: _Message) -> None:
        try:
            await self.client.publish(message.topic, message.payload, qos=1, timeout=20)
        except aiomqtt.MqttError as exc:
            self.failure = exc
            self.lost.set()
            return
        finally:
            self.slots.release()
        self.publisher.acked(message.seq)
