"""The trigger service: evaluates the active triggers on the scored stream.

An aiokafka consumer group over ``sensor.readings.scored`` (partitioned like
the raw topic, so a sensor's readings stay in order on one process). Per poll:

1. decode each record (a poison record is dead-lettered and skipped);
2. feed each reading to the :class:`~triggers.evaluator.Evaluator` for every
   trigger that watches its sensor, in event time;
3. commit the poll's incidents, predictions, trigger counters and outbox
   events in one database transaction (idempotent: incident ids are stable);
4. send the outbox events and mark them sent once Kafka acknowledged them.

Evaluation states are checkpointed with the partition offsets they are current
to (``trigger_offsets``); a process that is assigned a partition restores its
states and seeks to the checkpoint, so replayed readings rebuild the same
incidents with the same keys and nothing is sent twice (at most the same
idempotency key again, if a crash fell between a send and its mark).

Other tasks: the directory refresh (triggers changed without restart), a tick
for time-driven conditions and outbox retries, and the ``workorders.outcomes``
consumer (its own consumer group) that keeps false-positive rates and closes
resolved incidents.

A lost database connection (a restart, a cut link) or a Kafka request that
failed ends the *session*, not the process: everything is closed, the in-memory
states are dropped, and after a capped, jittered backoff a new session starts
from the checkpoints, exactly as a restarted process would (same incidents, same
keys; the store ignores the replayed ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import psycopg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from tmiot.config import Settings
from tmiot.db import conninfo
from tmiot.errors import leaves
from tmiot.events import (
    DEADLETTER_SCHEMA,
    NOTIFICATION_SCHEMA,
    SCHEMA_HEADER,
    SCORED_BATCH,
    WORKORDER_SCHEMA,
    DeadLetter,
    DeadLetterReason,
    ScoredBatch,
    WorkOrderOutcome,
)
from tmiot.health import Health, database_probe, kafka_probe
from tmiot.kafka import client_options, ensure_topics, producer
from triggers.actions import IncidentEvents
from triggers.directory import Directory, audit_changes, load_directory
from triggers.evaluator import Evaluator
from triggers.metrics import TriggerMetrics
from triggers.model import Cleared, Opened, ScoredReading, Transition, TriggerSpec
from triggers.orders import Silenced
from triggers.pacing import CheckpointPacer
from triggers.store import OutboxRow, TriggerStore

__all__ = ["TriggerService"]

log = structlog.get_logger(__name__)

_PAYLOAD_LIMIT: Final = 4096
_RETRY_AFTER: Final = dt.timedelta(seconds=30)  # an unsent outbox row older than this is resent
# A lost connection ends the session; these may heal by themselves (a retry is worth it).
_RETRIABLE: Final = (psycopg.OperationalError, psycopg.InterfaceError, KafkaError)
_STEADY_SECONDS: Final = 60.0  # a session that lasted this long resets the backoff


def _now_us() -> int:
    return time.time_ns() // 1000


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: TriggerService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._service.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        try:
            await self._service.assigned({tp.partition for tp in assigned})
        except _RETRIABLE as exc:
            # aiokafka logs and swallows a listener's error, which would leave the
            # partitions consumed without their states: end the session instead.
            self._service.failure = exc


class TriggerService:
    """One trigger process: its connections, evaluator and Kafka clients."""

    def __init__(self, settings: Settings) -> None:
        """Build from settings; resources open in :meth:`run`."""
        self.settings = settings
        self.metrics = TriggerMetrics()
        cfg = settings.triggers
        self.evaluator = Evaluator(
            lateness_seconds=cfg.lateness_seconds,
            backfill_horizon_seconds=cfg.backfill_horizon_seconds,
            settle_seconds=cfg.settle_seconds,
        )
        self.directory = Directory()
        self.ready = asyncio.Event()
        self.failure: BaseException | None = None  # set by a rebalance that failed
        # False between changing the evaluator's states and committing their incidents:
        # a checkpoint then would save states whose incidents the database never got.
        self._settled = True
        self.sessions = 0
        self._topics = settings.kafka.topics
        self._lock = asyncio.Lock()
        self._partition_of: dict[str, int] = {}
        self._gateway_of: dict[str, str] = {}  # sensor -> the gateway it delivers through
        self._offsets: dict[int, int] = {}  # next offset per owned partition
        self._owned: set[int] = set()
        self._audited: set[tuple[str, str, str]] = set()
        self._resolved_watermark = dt.datetime.now(dt.UTC)
        self._pacer = CheckpointPacer(
            every=cfg.checkpoint_seconds, duty=cfg.checkpoint_duty, now=time.monotonic()
        )
        self._sensors_loaded = 0.0
        self._store: TriggerStore | None = None
        # Checkpoints are written on a connection of their own, in the background:
        # a checkpoint of 25,000 states held the consumer up for most of a second.
        self._checkpoints: TriggerStore | None = None
        self._writing: asyncio.Task[None] | None = None
        self._committing: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.health = Health(
            "triggers",
            probe_seconds=settings.metrics.probe_seconds,
            stall_seconds=settings.metrics.stall_seconds,
        )
        self.health.probe("database", database_probe(settings.database))
        self.health.probe("kafka", kafka_probe(settings.kafka))
        self.health.progress("session", self._session_ready)

    def _session_ready(self) -> str | None:
        if self.failure is not None:
            return f"session failing: {type(self.failure).__name__}"
        return None if self.ready.is_set() else "no session: connecting or restoring"

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run sessions until cancelled; a lost connection starts a new one after a backoff."""
        self.health.watch(asyncio.get_running_loop())
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except* _RETRIABLE as group:
                error = leaves(group)[0]
            self._forget()
            attempt = 1 if time.monotonic() - started >= _STEADY_SECONDS else attempt + 1
            delay = random.uniform(0, min(30.0, 1.5**attempt))  # noqa: S311 - jitter
            log.warning(
                "trigger session lost; restarting from the checkpoints",
                error=f"{type(error).__name__}: {str(error).strip()[:200]}",
                retry_in=round(delay, 2),
                attempt=attempt,
            )
            await asyncio.sleep(delay)

    def _forget(self) -> None:
        """Drop the session's in-memory state: the next one restores it from the database."""
        cfg = self.settings.triggers
        self.ready.clear()
        self.failure = None
        self._settled = True
        self.evaluator = Evaluator(
            lateness_seconds=cfg.lateness_seconds,
            backfill_horizon_seconds=cfg.backfill_horizon_seconds,
            settle_seconds=cfg.settle_seconds,
        )
        self.directory = Directory()
        self._partition_of.clear()
        self._gateway_of.clear()
        self._offsets.clear()
        self._owned.clear()
        self._sensors_loaded = 0.0
        self._store = self._checkpoints = None
        self._writing = self._committing = None
        self._producer = None
        self._consumer = None

    async def _session(self) -> None:
        """Connect, restore, consume until a connection is lost (raises) or cancelled."""
        self.sessions += 1
        kafka = self.settings.kafka
        cfg = self.settings.triggers
        await ensure_topics(
            kafka,
            [
                self._topics.readings_scored,
                self._topics.readings_deadletter,
                self._topics.workorders_requested,
                self._topics.workorders_outcomes,
                self._topics.notifications_requested,
            ],
        )
        dsn = conninfo(self.settings.database, application_name="tmiot-triggers")
        async with contextlib.AsyncExitStack() as stack:
            conn = await stack.enter_async_context(await psycopg.AsyncConnection.connect(dsn))
            dconn = await stack.enter_async_context(
                await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            )
            oconn = await stack.enter_async_context(await psycopg.AsyncConnection.connect(dsn))
            cconn = await stack.enter_async_context(await psycopg.AsyncConnection.connect(dsn))
            self._store = TriggerStore(conn, cfg.group_id, self._topics.readings_scored)
            self._checkpoints = TriggerStore(cconn, cfg.group_id, self._topics.readings_scored)
            outcome_store = TriggerStore(oconn, cfg.group_id, self._topics.readings_scored)
            self._producer = await stack.enter_async_context(
                producer(kafka, client_id=f"{cfg.group_id}-out")
            )
            await self.refresh(dconn)
            self._consumer = consumer = AIOKafkaConsumer(
                **client_options(kafka),
                group_id=cfg.group_id,
                client_id=f"{cfg.group_id}-scored",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=cfg.max_poll_records,
                fetch_max_wait_ms=kafka.fetch_max_wait_ms,
                session_timeout_ms=int(cfg.session_timeout_seconds * 1000),
                heartbeat_interval_ms=max(1000, int(cfg.session_timeout_seconds * 100)),
            )
            consumer.subscribe([self._topics.readings_scored], listener=_Rebalance(self))
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            outcomes = AIOKafkaConsumer(
                self._topics.workorders_outcomes,
                **client_options(kafka),
                group_id=f"{cfg.group_id}-outcomes",
                client_id=f"{cfg.group_id}-outcomes",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            )
            await outcomes.start()
            stack.push_async_callback(outcomes.stop)
            stack.push_async_callback(self._final_checkpoint)
            log.info("triggers started", group=cfg.group_id, triggers=len(self.directory.triggers))
            self.ready.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._consume(consumer), name="consume")
                tasks.create_task(self._outcomes(outcomes, outcome_store), name="outcomes")
                tasks.create_task(self._refresh_loop(dconn), name="refresh")
                tasks.create_task(self._tick_loop(), name="tick")

    async def _final_checkpoint(self) -> None:
        async with self._lock:
            with contextlib.suppress(psycopg.Error):
                await self._checkpoint(wait=True)

    @property
    def store(self) -> TriggerStore:
        """The database side (once open)."""
        assert self._store is not None  # noqa: S101 - set before any task runs
        return self._store

    @property
    def kafka(self) -> AIOKafkaProducer:
        """The producer (once open)."""
        assert self._producer is not None  # noqa: S101 - set before any task runs
        return self._producer

    # --- partitions --------------------------------------------------------------------

    async def assigned(self, partitions: set[int]) -> None:
        """Restore the new partitions' states and seek to their checkpoints."""
        async with self._lock:
            for partition in sorted(partitions - self._owned):
                offset, states = await self.store.load_partition(partition)
                for (trigger_id, sensor_id), state in states.items():
                    self.evaluator.restore(trigger_id, sensor_id, state)
                    self._partition_of[sensor_id] = partition
                open_keys = {
                    key: (t, s)
                    for t, s in states
                    if (key := self.evaluator.open_incident(t, s)) is not None
                }
                for key in await self.store.resolved_among(open_keys):
                    t, s = open_keys[key]
                    self.evaluator.resolve(t, s, _now_us())
                tp = TopicPartition(self._topics.readings_scored, partition)
                if offset is not None and self._consumer is not None:
                    self._consumer.seek(tp, offset)
                    self._offsets[partition] = offset
                self._owned.add(partition)
                log.info(
                    "partition restored", partition=partition, checkpoint=offset, states=len(states)
                )

    async def revoked(self, partitions: set[int]) -> None:
        """Checkpoint, then forget the states of partitions moved away."""
        async with self._lock:
            await self._checkpoint(wait=True)
            gone = {s for s, p in self._partition_of.items() if p in partitions}
            self.evaluator.drop_sensors(gone)
            for sensor in gone:
                del self._partition_of[sensor]
            for partition in partitions:
                self._offsets.pop(partition, None)
            self._owned -= partitions
            log.info("partitions released", partitions=sorted(partitions), sensors=len(gone))

    async def _checkpoint(self, *, wait: bool = False) -> None:
        """Snapshot the changed states with their offsets now (the lock is held); write later.

        One write at a time, in order: a snapshot first waits for the previous
        write, whose failure raises here, so no offset is saved past lost states.
        Skipped while the last poll's incidents are uncommitted (it failed or was
        cancelled half-way): the next session replays them from the last checkpoint.
        """
        await self._checkpoint_written()
        if not self._settled:
            log.warning("checkpoint skipped: the last poll's incidents are not committed")
            return
        states = self.evaluator.take_dirty()
        offsets = {p: o for p, o in self._offsets.items() if p in self._owned}
        partition_of = {s: p for _, s in states if (p := self._partition_of.get(s)) is not None}
        self._pacer.began(time.monotonic())
        self._writing = asyncio.create_task(
            self._write_checkpoint(offsets, states, partition_of), name="checkpoint"
        )
        if wait:
            await self._checkpoint_written()

    async def _write_checkpoint(
        self,
        offsets: Mapping[int, int],
        states: Mapping[tuple[str, str], object],
        partition_of: Mapping[str, int],
    ) -> None:
        assert self._checkpoints is not None  # noqa: S101 - set before any task runs
        started = time.monotonic()
        await self._checkpoints.checkpoint(offsets, states, partition_of)
        seconds = time.monotonic() - started
        self._pacer.wrote(seconds)
        self.metrics.checkpoint_seconds.observe(seconds)
        if seconds > self.settings.triggers.checkpoint_seconds:
            log.info(
                "slow checkpoint: the next ones are spaced out",
                states=len(states),
                seconds=round(seconds, 2),
                next_in=round(self._pacer.interval, 1),
            )

    def _checkpoint_due(self) -> bool:
        """Time for a checkpoint (see :mod:`triggers.pacing`); none while one is written."""
        writing = self._writing is not None and not self._writing.done()
        return self._pacer.due(time.monotonic(), writing=writing)

    async def _checkpoint_written(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    # --- the scored stream -------------------------------------------------------------

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        cfg = self.settings.triggers
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=cfg.max_poll_records)
            if self.failure is not None:
                raise self.failure
            if not batches:
                continue
            started = time.monotonic()
            async with self._lock:
                self._settled = False
                now_us = _now_us()
                transitions: list[Transition] = []
                received: dict[str, int] = {}
                letters: list[DeadLetter] = []
                silenced: list[Silenced] = []
                for tp, records in batches.items():
                    if tp.partition not in self._owned:
                        continue  # revoked during the poll; its new owner replays it
                    for record in records:
                        self._evaluate(record, now_us, transitions, received, letters, silenced)
                    self._offsets[tp.partition] = records[-1].offset + 1
                await self._deadletters(letters)
                await self._apply(transitions, received, silenced)
                self._settled = True
                if self._checkpoint_due():
                    await self._checkpoint()
            # Kafka offsets are for lag visibility only (the database holds the truth), so
            # the commit runs in the background, one at a time: a commit round trip took
            # up to 0.2 s of every poll.
            if self._committing is None or self._committing.done():
                offsets = {
                    TopicPartition(self._topics.readings_scored, p): o
                    for p, o in self._offsets.items()
                }
                self._committing = asyncio.create_task(_commit(consumer, offsets))
            self.metrics.poll_seconds.observe(time.monotonic() - started)

    def _evaluate(  # noqa: PLR0913, PLR0917 - the poll's accumulators
        self,
        record: ConsumerRecord[bytes, bytes],
        now_us: int,
        transitions: list[Transition],
        received: dict[str, int],
        letters: list[DeadLetter],
        silenced: list[Silenced],
    ) -> None:
        try:
            batch: ScoredBatch = SCORED_BATCH.validate_json(record.value or b"")
        except ValidationError as exc:
            letters.append(self._letter(record, str(exc.errors()[0]["msg"])))
            return
        # The hot loop: locals only, a reading built only for a watched sensor.
        by_sensor, sensors = self.directory.by_sensor, self.directory.sensors
        observe = self.evaluator.observe
        partition, partition_of = record.partition, self._partition_of
        ts, values, scores = batch["ts_us"], batch["value"], batch["anomaly_score"]
        flags, kinds, received_at = batch["is_anomaly"], batch["anomaly_type"], batch["received_us"]
        n = len(batch["sensor_id"])
        self.metrics.readings.inc(n)
        if n:
            self.metrics.lag.set(max(0.0, time.time() - max(received_at) / 1e6))
        gateways = batch.get("gateways")
        if gateways:
            self._gateway_of.update(gateways)
            companies = batch["company_id"]
            silenced.extend(
                Silenced(companies[i], gateways[sid], sid, received_at[i])
                for i, sid in enumerate(batch["sensor_id"])
                if kinds[i] == "missing" and values[i] is None and sid in gateways
            )
        evaluations = 0
        for i, sensor_id in enumerate(batch["sensor_id"]):
            partition_of[sensor_id] = partition
            watching = by_sensor.get(sensor_id)
            if not watching:
                continue
            sensor = sensors[sensor_id]
            reading = ScoredReading(
                sensor_id, ts[i], values[i], scores[i], flags[i], kinds[i], received_at[i]
            )
            for trigger in watching:
                evaluations += 1
                found = observe(trigger, sensor, reading, now_us)
                if found:
                    transitions.extend(found)
                    for t in found:
                        if isinstance(t, Opened):
                            received[t.key] = reading.received_us
        self.metrics.evaluations.inc(evaluations)

    def _letter(self, record: ConsumerRecord[bytes, bytes], detail: str) -> DeadLetter:
        letter = DeadLetter.of(
            DeadLetterReason.UNDECODABLE_RECORD,
            detail,
            f"kafka:{record.topic}/{record.partition}@{record.offset}",
            record.value,
            limit=_PAYLOAD_LIMIT,
        )
        self.metrics.deadletters.labels(letter.reason.value).inc()
        log.warning("record dead-lettered", reason=letter.reason.value, source=letter.source)
        return letter

    async def _deadletters(self, letters: list[DeadLetter]) -> None:
        futures = [
            await self.kafka.send(
                self._topics.readings_deadletter,
                letter.model_dump_json().encode(),
                headers=[
                    (SCHEMA_HEADER, DEADLETTER_SCHEMA),
                    ("reason", letter.reason.value.encode()),
                ],
            )
            for letter in letters
        ]
        await asyncio.gather(*futures)

    async def _apply(
        self,
        transitions: list[Transition],
        received: dict[str, int],
        silenced: list[Silenced] | None = None,
    ) -> None:
        """Commit transitions, then send their events (the lock is held)."""
        if not (transitions or silenced):
            return
        opened = [t for t in transitions if isinstance(t, Opened)]
        cleared = [t for t in transitions if isinstance(t, Cleared)]
        events = IncidentEvents(self.directory, self._topics, _now_us(), self._gateway_of)
        companies = {
            o.trigger_id: self._trigger(o.trigger_id).company_id
            for o in opened
            if o.trigger_id in self.directory.triggers
        }
        opened = [o for o in opened if o.trigger_id in companies]
        send, live = await self.store.commit(
            opened,
            self.directory.sensors,
            companies,
            cleared,
            events,
            silenced=silenced or (),
            attach_us=round(self.settings.triggers.attach_seconds * 1e6),
        )
        for o in opened:
            self.metrics.incidents.labels("historical" if o.historical else "live").inc()
        for c in cleared:
            self.metrics.cleared.labels(c.reason).inc()
        if live:
            log.info("incidents opened", live=live, events=len(send))
        await self._send(send, received)

    async def _send(self, rows: list[OutboxRow], received: dict[str, int] | None = None) -> None:
        if not rows:
            return
        futures = [
            await self.kafka.send(
                r.topic,
                r.payload,
                key=r.key.encode(),
                headers=[
                    (
                        SCHEMA_HEADER,
                        r.schema.encode()
                        if r.schema
                        else _schema_of(r.topic, self._topics.workorders_requested),
                    )
                ],
            )
            for r in rows
        ]
        await asyncio.gather(*futures)
        acked_us = _now_us()
        for r in rows:
            self.metrics.events.labels(r.topic).inc()
            if received and r.topic == self._topics.workorders_requested:
                start = received.get(r.incident_id)
                if start:
                    self.metrics.latency.observe((acked_us - start) / 1e6)
        await self.store.mark_sent([r.id for r in rows])

    def _trigger(self, trigger_id: str) -> TriggerSpec:
        return self.directory.triggers[trigger_id]

    # --- periodic work -----------------------------------------------------------------

    async def refresh(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Reload the triggers and sensors; audit changes; forget removed triggers."""
        before = self.directory if self.directory.versions else None
        now = time.monotonic()
        due = now - self._sensors_loaded >= self.settings.triggers.sensor_refresh_seconds
        after = await load_directory(conn, before, reload_sensors=due)
        if after.sensors is not (before.sensors if before else None):
            self._sensors_loaded = now
        written = await audit_changes(conn, before, after, self._audited)
        async with self._lock:
            self._settled = False
            self.directory = after
            removed = set(before.triggers) - set(after.triggers) if before else set()
            transitions: list[Transition] = []
            for trigger_id in removed:
                transitions.extend(self.evaluator.forget_trigger(trigger_id))
            if transitions and self._store is not None:
                await self._apply(transitions, {})
            self._settled = True
        self.metrics.active.set(len(after.triggers))
        self.metrics.rejected.set(len(after.rejected))
        if written or removed:
            log.info(
                "triggers reloaded",
                active=len(after.triggers),
                rejected=len(after.rejected),
                sensors=len(after.by_sensor),
                audited=written,
                removed=len(removed),
            )

    async def _refresh_loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            await asyncio.sleep(self.settings.triggers.refresh_seconds)
            try:
                await self.refresh(conn)
            except psycopg.Error as exc:
                log.warning("trigger reload failed; keeping the last list", error=str(exc))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.triggers.tick_seconds)
            async with self._lock:
                self._settled = False
                now_us = _now_us()
                transitions = self.evaluator.tick(
                    now_us, self.directory.triggers, self.directory.sensors
                )
                for incident, trigger_id, sensor_id, at in await self.store.resolved_since(
                    self._resolved_watermark
                ):
                    self._resolved_watermark = max(self._resolved_watermark, at)
                    if self.evaluator.open_incident(trigger_id, sensor_id) == incident:
                        found = self.evaluator.resolve(trigger_id, sensor_id, now_us)
                        if found is not None:
                            transitions.append(found)
                await self._apply(transitions, {})
                self._settled = True
                cutoff = dt.datetime.now(dt.UTC) - _RETRY_AFTER
                await self._send(await self.store.unsent(cutoff))
                if self._checkpoint_due():
                    await self._checkpoint()

    async def _outcomes(self, consumer: AIOKafkaConsumer, store: TriggerStore) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                for record in records:
                    try:
                        outcome = WorkOrderOutcome.model_validate_json(record.value or b"")
                    except ValidationError as exc:
                        await self._deadletters([self._letter(record, str(exc.errors()[0]["msg"]))])
                        continue
                    applied = await store.record_outcome(outcome)
                    self.metrics.outcomes.labels(outcome.outcome).inc()
                    log.info(
                        "work-order outcome",
                        incident=str(outcome.idempotency_key),
                        outcome=outcome.outcome,
                        known=applied is not None,
                    )
            if batches:
                await consumer.commit()


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    with contextlib.suppress(Exception):  # lag visibility only
        await consumer.commit(offsets)


def _schema_of(topic: str, workorders: str) -> bytes:
    return WORKORDER_SCHEMA if topic == workorders else NOTIFICATION_SCHEMA
