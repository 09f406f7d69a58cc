"""The stream worker: a Faust app that scores raw reading batches and writes them out.

Per batch of Kafka records (``take_events``, acked by Faust only after the body
has run, so offsets are committed after the database commit):

1. decode each record; a poison record (undecodable, unknown schema version) is
   dead-lettered and skipped, never a crash;
2. on the first record of a partition since it was assigned, restore the
   partition's detector states from the last checkpoint and replay the records
   between the checkpoint and this record into them (learning only), so scoring
   continues the same state it had, not a cold model;
3. in chunks of about ``write_readings`` readings: score, publish the scored
   batches (triggers need not wait for the database), and hand the rows to the
   writer thread (:mod:`stream.writer`): a chunk's idempotent insert runs while
   the next chunk is scored, so this process and the database work at once. At
   most one chunk is in flight (the next waits for it: backpressure). The last
   chunk's writer acks the buffer's records to Faust once its rows are committed
   and its scored records and dead letters delivered, so offsets are still
   committed after the database commit;
4. every ``checkpoint_seconds``, save the changed detector states with the
   partition's next offset; a snapshot begins only with no write in flight, so
   the offset it records covers exactly the rows committed.

A timer marks sensors that have not delivered for clearly longer than they
usually do ``offline`` and publishes a ``missing`` event (:mod:`stream.silence`);
their next reading sets them back to ``active``. Ingest's heartbeats (empty raw
records with a ``beat``) move each partition's delivery clock; a gap in them is an
outage of the pipeline: no sensor is judged meanwhile, and the worker holding
partition 0 publishes one ``pipeline.health`` event per outage. Sensor settings
(interval, thresholds, status) are reloaded every ``sensor_refresh_seconds``, with
the registered sensors of the held partitions (judged even if they never report).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import faust
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json

from stream.metrics import StreamMetrics
from stream.scoring import Outage, Scored, Scorer, SensorMeta, Silence, Snapshot
from stream.silence import health_event, missing_batch
from stream.sink import ReadingsSink
from stream.transport import StreamApp
from stream.writer import RowWriter
from tmiot.config import Settings
from tmiot.events import (
    BATCH_COLUMNS,
    DEADLETTER_SCHEMA,
    HEALTH_SCHEMA,
    SCHEMA_HEADER,
    SCORED_SCHEMA,
    DeadLetter,
    DeadLetterReason,
    ReadingBatch,
    ScoredBatch,
    SensorStatusEvent,
    decode_reading_batch,
    from_us,
)
from tmiot.health import Health, database_probe, kafka_probe
from tmiot.health import serve as health_http
from tmiot.kafka import client_options, ensure_topics, faust_credentials, partition_for, producer

__all__ = ["StreamWorker", "build_app", "run_worker"]

log = structlog.get_logger(__name__)

Ack = Callable[[faust.types.EventT[Any]], Awaitable[bool]]

_PAYLOAD_LIMIT: Final = 4096
# Readings per merged record: a scored reading is about 250 bytes of JSON, so a merged
# scored record stays near 1 MB, well under kafka.max_request_bytes (4 MB by default).
_MERGE_READINGS: Final = 4000
_ANY: Final = TypeAdapter(object)
# Detector states serialised per buffer (and per tick) while a checkpoint is open:
# about 20 us each, so a 12,500-sensor partition takes a few dozen buffers.
_SNAPSHOT_STEP: Final = 1000


@dataclass(slots=True)
class _Record:
    partition: int
    offset: int
    batch: ReadingBatch


@dataclass(slots=True)
class _Pending:
    """Per-sensor bookkeeping written in batches, not per reading."""

    last_seen: dict[str, int] = field(default_factory=dict)
    battery: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Progress:
    """Throughput since the last progress line (logged every 10 s, not per reading)."""

    records: int = 0
    readings: int = 0
    buffers: int = 0
    busy: float = 0.0
    # Where the time went: scoring; waiting for the previous buffer's write (stalls);
    # the writer's own time (insert and deliveries, overlapping the next buffer).
    scoring: float = 0.0
    stalled: float = 0.0
    writer: float = 0.0
    since: float = field(default_factory=time.monotonic)

    def timed(self, scoring: float, stalled: float) -> None:
        self.scoring += scoring
        self.stalled += stalled

    def note(self, records: int, readings: int, seconds: float) -> None:
        self.records += records
        self.readings += readings
        self.buffers += 1
        self.busy += seconds

    def maybe_log(self, sensors: int, queued_writes: int) -> None:
        elapsed = time.monotonic() - self.since
        if elapsed < 10.0:  # noqa: PLR2004 - the progress period
            return
        log.info(
            "stream progress",
            readings_per_s=round(self.readings / elapsed),
            records_per_s=round(self.records / elapsed),
            buffers=self.buffers,
            busy_share=round(self.busy / elapsed, 2),
            scoring_share=round(self.scoring / elapsed, 2),
            stalled_share=round(self.stalled / elapsed, 2),
            writer_share=round(self.writer / elapsed, 2),
            sensors=sensors,
            queued_writes=queued_writes,
        )
        self.records = self.readings = self.buffers = 0
        self.busy = self.scoring = self.stalled = self.writer = 0.0
        self.since = time.monotonic()


class StreamWorker:
    """Everything one worker process holds; the Faust agents call into it."""

    def __init__(self, settings: Settings) -> None:
        """Build from settings; resources open in :meth:`open`."""
        self.settings = settings
        self.metrics = StreamMetrics()
        self.scorer = Scorer(settings.stream.detector, settings.stream.silence)
        self.meta: dict[str, SensorMeta] = {}
        self.ready = asyncio.Event()
        self._topics = settings.kafka.topics
        self._group = settings.stream.app_id
        self._restored: set[int] = set()
        self._next_offset: dict[int, int] = {}  # after the last record handled
        self._floor: dict[int, int] = {}  # the restored checkpoint's offset
        self._pending = _Pending()
        self._checkpointed_at: dict[int, float] = {}
        self._open: tuple[Snapshot, int] | None = None  # the snapshot being serialised
        self._last_flush = time.monotonic()
        self._lock = asyncio.Lock()
        self._sink: ReadingsSink | None = None
        # Readings are inserted by a writer thread on a connection of its own, one chunk
        # at a time, so that the next chunk is scored meanwhile; one chunk in flight.
        self._rows: RowWriter | None = None
        self._inflight: asyncio.Task[None] | None = None
        # Bookkeeping (checkpoints, last_reading_at, battery) is written by one background
        # task on a connection of its own, so scoring never waits for it; a bounded queue
        # keeps it from falling behind unnoticed (a full queue waits, i.e. backpressure).
        self._side: ReadingsSink | None = None
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(maxsize=4)
        self._writer: asyncio.Task[None] | None = None
        self._scored_count: int | None = None
        self._meta_loaded = 0.0  # monotonic time of the last full reload of sensor settings
        self._partition_of: dict[str, int] = {}  # registered sensor -> its raw partition
        self._progress = _Progress()
        self._saved_at = time.monotonic()  # the last checkpoint saved (or the start)
        self.metrics.checkpoint_age.set_function(lambda: time.monotonic() - self._saved_at)
        self.failure: BaseException | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._opening = asyncio.Lock()

    async def start(self) -> None:
        """Open the database connection and the producer, once (idempotent).

        Called from the agents, not from a Faust task: Faust starts its tasks only
        after the first rebalance, which waits for the agents.
        """
        async with self._opening:
            if self._stack is not None:
                return
            stack = contextlib.AsyncExitStack()
            try:
                kafka = self.settings.kafka
                await ensure_topics(
                    kafka,
                    [
                        kafka.topics.readings_raw,
                        kafka.topics.readings_scored,
                        kafka.topics.readings_deadletter,
                        kafka.topics.sensor_status,
                        kafka.topics.pipeline_health,
                    ],
                )
                self._sink = await stack.enter_async_context(ReadingsSink(self.settings.database))
                self._rows = await stack.enter_async_context(RowWriter(self.settings.database))
                self._side = await stack.enter_async_context(ReadingsSink(self.settings.database))
                self._writer = asyncio.create_task(self._write_jobs(), name="stream-bookkeeping")
                stack.push_async_callback(self._stop_writer)
                self._producer = await stack.enter_async_context(
                    producer(kafka, client_id=f"{self._group}-out")
                )
            except BaseException:
                await stack.aclose()
                raise
            self._stack = stack
            self.ready.set()

    async def close(self) -> None:
        """Final flush and checkpoint, then close the connections."""
        if self._stack is None:
            return
        async with self._lock:
            if self.failure is None:
                await self._maybe_flush(force=True)
                await self._maybe_checkpoint(force=True)
            else:  # no checkpoint: a failed buffer's rows may not all be committed
                with contextlib.suppress(Exception):
                    await self._settle()
            stack, self._stack = self._stack, None
            self.ready.clear()
            await stack.aclose()
            self._sink = self._rows = self._side = self._producer = None

    async def _write_jobs(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except Exception:
                log.exception("bookkeeping write failed")
            finally:
                self._jobs.task_done()

    async def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    @property
    def side(self) -> ReadingsSink:
        """The bookkeeping connection (once open)."""
        assert self._side is not None  # noqa: S101 - agents wait for `ready`
        return self._side

    @property
    def rows(self) -> RowWriter:
        """The connection the readings are inserted on (once open)."""
        assert self._rows is not None  # noqa: S101 - agents wait for `ready`
        return self._rows

    @property
    def sink(self) -> ReadingsSink:
        """The database side (once open)."""
        assert self._sink is not None  # noqa: S101 - agents wait for `ready`
        return self._sink

    @property
    def kafka(self) -> AIOKafkaProducer:
        """The producer (once open)."""
        assert self._producer is not None  # noqa: S101 - agents wait for `ready`
        return self._producer

    # --- the raw readings agent --------------------------------------------------------

    async def handle(self, events: Sequence[faust.types.EventT[Any]], ack: Ack) -> None:
        """Score one buffer of raw records and hand it to the writer (the agent's body).

        The records are acked (``ack``) by the writer once their rows are committed.
        """
        await self.start()
        started = time.monotonic()
        records: list[_Record] = []
        letters: list[DeadLetter] = []
        for event in events:
            message = event.message
            record = self._decode(message.partition, message.offset, message.value, letters)
            if record is not None:
                records.append(record)
        async with self._lock:
            await self._restore_partitions(records)
            # Records the checkpoint already holds were written before it was taken.
            records = [r for r in records if r.offset >= self._floor.get(r.partition, 0)]
            records = [r for r in records if self._readings_of(r.partition, r.batch)]
            gone = await self._load_meta(records)
            if gone:
                records = self._drop_sensors(records, gone, letters)
            deliveries = [await self._deadletter(letter) for letter in letters]
            # One scored record per partition per chunk, one database transaction per
            # chunk (not per record: with small records, a quiet fleet's, a transaction
            # each would cap the worker at a few thousand rows/s). A chunk's scored
            # records go out before its rows are written (triggers need not wait for
            # the database); its insert runs while the next chunk is scored. The last
            # chunk's writer acks the buffer: the chunks before it are committed by then.
            chunks = _chunks(_merge(records), self.settings.stream.write_readings)
            for i, chunk in enumerate(chunks):
                t0 = time.monotonic()
                scored = [(r, self.scorer.score(r.partition, r.batch, self.meta)) for r in chunk]
                t1 = time.monotonic()
                for record, result in scored:
                    deliveries.append(await self._publish(record.partition, result.batch))
                await self._settle()  # the previous chunk's insert ran while this one scored
                self._progress.timed(t1 - t0, time.monotonic() - t1)
                done = events if i == len(chunks) - 1 else ()
                self._inflight = asyncio.create_task(
                    self._commit(done, scored, deliveries, ack), name="stream-commit"
                )
                deliveries = []
                await asyncio.sleep(0)  # let it hand the chunk to the writer thread now
            await self._maybe_checkpoint(force=False)
            await self._maybe_flush()
        newest = max((max(r.batch["received_us"], default=0) for r in records), default=0)
        if newest:
            self.metrics.lag.set(max(0.0, time.time() - newest / 1e6))
        spent = time.monotonic() - started
        self.metrics.batch_seconds.observe(spent)
        self._progress.note(len(events), sum(len(r.batch["sensor_id"]) for r in records), spent)

    async def _commit(
        self,
        events: Sequence[faust.types.EventT[Any]],
        scored: list[tuple[_Record, Scored]],
        deliveries: list[asyncio.Future[Any]],
        ack: Ack,
    ) -> None:
        """Insert a chunk's rows, wait for its deliveries, then ack `events` (the last chunk's)."""
        try:
            t0 = time.monotonic()
            deliveries.extend(await self._write(scored))
            await asyncio.gather(*deliveries)
            self._progress.writer += time.monotonic() - t0
            for event in events:  # poison records move the partition on too
                tp, offset = event.message.partition, event.message.offset
                self._next_offset[tp] = max(self._next_offset.get(tp, 0), offset + 1)
                await ack(event)
        except Exception as exc:
            _stop(self, exc, "writing a chunk failed; stopping the worker")
            raise

    async def _settle(self) -> None:
        """Wait for the chunk in flight, if any, to be committed (and its buffer acked)."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    def _decode(
        self, partition: int, offset: int, value: bytes | None, letters: list[DeadLetter]
    ) -> _Record | None:
        source = f"kafka:{self._topics.readings_raw}/{partition}@{offset}"
        try:
            batch = decode_reading_batch(value or b"")
        except ValidationError as exc:
            version = _version(value)
            reason = (
                DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION
                if version not in (None, 1)
                else DeadLetterReason.UNDECODABLE_RECORD
            )
            letters.append(_letter(reason, str(exc.errors()[0]["msg"]), source, value))
        except ValueError as exc:
            letters.append(_letter(DeadLetterReason.UNDECODABLE_RECORD, str(exc), source, value))
        else:
            return _Record(partition, offset, batch)
        self.metrics.poison.inc()
        return None

    async def _restore_partitions(self, records: list[_Record]) -> None:
        """Restore (checkpoint + replay) partitions seen for the first time since assignment."""
        first: dict[int, int] = {}
        for r in records:
            if r.partition not in self._restored:
                first.setdefault(r.partition, r.offset)
        for partition, offset in first.items():
            saved, states = await self.sink.load_checkpoint(
                self._group, self._topics.readings_raw, partition
            )
            refused = self.scorer.load(partition, states)
            if refused:
                # A detector version bump: those sensors learn again from a cold start.
                self.metrics.states_refused.inc(len(refused))
                log.warning(
                    "detector states refused, cold start",
                    partition=partition,
                    sensors=len(refused),
                    reason=next(iter(refused.values())),
                )
            replayed = 0
            if saved is not None and saved < offset:
                replayed = await self._replay(partition, saved, offset)
            self._floor[partition] = saved or 0
            self._restored.add(partition)
            log.info(
                "partition restored",
                partition=partition,
                checkpoint=saved,
                first_offset=offset,
                sensors=len(states),
                replayed_records=replayed,
            )

    async def _replay(self, partition: int, start: int, stop: int) -> int:
        """Learn records [start, stop) of a partition into the restored models."""
        tp = TopicPartition(self._topics.readings_raw, partition)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings.kafka),
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        count = 0
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                messages = batch.get(tp, [])
                for m in messages:
                    if m.offset >= stop:
                        return count
                    with contextlib.suppress(ValueError):
                        decoded = decode_reading_batch(m.value or b"")
                        if not self._readings_of(partition, decoded):
                            continue
                        await self._load_meta([_Record(partition, m.offset, decoded)])
                        self.scorer.learn(partition, decoded, self.meta)
                        count += 1
                if not messages and await consumer.position(tp) >= stop:
                    return count
        finally:
            await consumer.stop()

    def _readings_of(self, partition: int, batch: ReadingBatch) -> int:
        """Take an ingest heartbeat the record carries; how many readings it holds."""
        beat = batch.get("beat")
        if beat is not None:
            self.scorer.silence.beat(partition, beat["at_us"], time.monotonic(), mqtt=beat["mqtt"])
        return len(batch["sensor_id"])

    async def _load_meta(self, records: list[_Record]) -> set[str]:
        """Look up the sensors not seen yet; return those ``equipment_sensors`` lacks."""
        unknown = {s for r in records for s in r.batch["sensor_id"] if s not in self.meta}
        if unknown:
            self.meta.update(await self.sink.sensor_meta(sorted(unknown)))
        return {s for s in unknown if s not in self.meta}

    def _drop_sensors(
        self, records: list[_Record], gone: set[str], letters: list[DeadLetter]
    ) -> list[_Record]:
        """Dead-letter the readings of sensors `gone` from ``equipment_sensors``.

        Ingest admits only registered sensors, so these were deleted after ingest
        took their readings. The insert has no join to filter them: a join costs a
        scan of ``equipment_sensors`` per chunk (a fifth of the insert at 100k sensors).
        """
        kept = []
        for r in records:
            ids = r.batch["sensor_id"]
            drop = [i for i, s in enumerate(ids) if s in gone]
            if not drop:
                kept.append(r)
                continue
            source = f"kafka:{self._topics.readings_raw}/{r.partition}@{r.offset}"
            for i in drop:
                detail = f"sensor {ids[i]} is not in equipment_sensors (deleted?)"
                row = to_json(_row(r.batch, i))
                letters.append(_letter(DeadLetterReason.UNKNOWN_SENSOR, detail, source, row))
            keep = [i for i, s in enumerate(ids) if s not in gone]
            if keep:
                batch: dict[str, Any] = {"v": 1}
                for column in BATCH_COLUMNS:
                    values = r.batch[column]
                    batch[column] = [values[i] for i in keep]
                kept.append(_Record(r.partition, r.offset, cast("ReadingBatch", batch)))
        return kept

    async def _write(self, scored: list[tuple[_Record, Scored]]) -> list[asyncio.Future[Any]]:
        """Write a buffer's scored readings in one transaction; dead-letter refused rows.

        One statement and one commit for every partition of the buffer: a commit
        waits for the WAL flush, so a commit per partition cost more than the rows.
        """
        if not scored:
            return []
        if len(scored) == 1:
            batch = scored[0][1].batch
        else:
            joined: dict[str, Any] = {"v": 1}
            for column, values in scored[0][1].batch.items():
                if isinstance(values, list):
                    joined[column] = [x for _, s in scored for x in s.batch[column]]  # type: ignore[literal-required]
            batch = cast("ScoredBatch", joined)
        t0 = time.monotonic()
        inserted, refused = await self.rows.write(batch)
        self.metrics.db_write_seconds.observe(time.monotonic() - t0)
        self.metrics.rows.inc(inserted)
        starts = []  # (first row of a record in the joined batch, the record)
        at = 0
        for record, result in scored:
            starts.append((at, record))
            at += len(result.batch["sensor_id"])
            self._note(record, result)
        deliveries: list[asyncio.Future[Any]] = []
        for rejected in refused:
            record = next(r for a, r in reversed(starts) if a <= rejected.index)
            row = _row(batch, rejected.index)
            # Looked up again when next seen: a sensor deleted since is dropped before the insert.
            self.meta.pop(str(row["sensor_id"]), None)
            source = f"kafka:{self._topics.readings_raw}/{record.partition}@{record.offset}"
            letter = _letter(DeadLetterReason.INVALID_SCHEMA, rejected.reason, source, to_json(row))
            deliveries.append(await self._deadletter(letter))
        return deliveries

    def _note(self, record: _Record, scored: Scored) -> None:
        last_seen = self._pending.last_seen
        for sensor_id, ts_us in zip(record.batch["sensor_id"], record.batch["ts_us"], strict=True):
            if ts_us > last_seen.get(sensor_id, 0):
                last_seen[sensor_id] = ts_us
        n = len(record.batch["sensor_id"])
        self.metrics.readings.inc(n)
        self.metrics.batch_readings.observe(n)
        for kind in scored.batch["anomaly_type"]:
            if kind is not None:
                self.metrics.anomalies.labels(kind).inc()
        if scored.back_online:
            log.info("sensors back online", sensors=len(scored.back_online))

    async def _scored_partition(self, partition: int) -> int:
        """The scored topic's partition for a raw partition: the same one when it exists.

        A scored topic created with fewer partitions (by hand, or auto-created by a
        consumer that came first) still gets every sensor on one fixed partition
        (``partition % n``), with a warning, rather than a crashed agent.
        """
        if self._scored_count is None:
            found = await self.kafka.partitions_for(self._topics.readings_scored)
            self._scored_count = len(found or ()) or 1
            if self._scored_count < self.settings.kafka.partitions:
                log.warning(
                    "scored topic has fewer partitions than configured; folding",
                    topic=self._topics.readings_scored,
                    partitions=self._scored_count,
                    configured=self.settings.kafka.partitions,
                )
        return partition % self._scored_count

    async def _publish(self, partition: int, batch: ScoredBatch) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await self.kafka.send(
            self._topics.readings_scored,
            to_json(batch),
            partition=await self._scored_partition(partition),
            headers=[(SCHEMA_HEADER, SCORED_SCHEMA)],
        )
        return fut

    async def _deadletter(self, letter: DeadLetter) -> asyncio.Future[Any]:
        self.metrics.deadletters.labels(letter.reason.value).inc()
        log.warning("record dead-lettered", reason=letter.reason.value, source=letter.source)
        fut: asyncio.Future[Any] = await self.kafka.send(
            self._topics.readings_deadletter,
            letter.model_dump_json().encode(),
            headers=[(SCHEMA_HEADER, DEADLETTER_SCHEMA), ("reason", letter.reason.value.encode())],
        )
        return fut

    # --- periodic work -----------------------------------------------------------------

    async def _maybe_checkpoint(self, *, force: bool) -> None:
        """Checkpoint changed detector states with their partition's next offset.

        Normally one partition at a time, the most overdue: its snapshot begins
        between two buffers (with the offset of that moment), is serialised
        ``_SNAPSHOT_STEP`` states per call, copy on write (see
        :class:`~stream.scoring.Snapshot`), and is written in the background once
        complete; serialising 12,500 states at once stalled scoring for a third of
        a second. ``force`` (revocation, shutdown) finishes the open snapshot,
        waits for queued writes, then saves every partition before returning.
        """
        if force:
            await self._settle()
            if self._open is not None:
                snapshot, offset = self._open
                self._open = None
                self.scorer.serialise(snapshot)
                await self._jobs.join()
                await self._save(snapshot, offset, self.sink)
            await self._jobs.join()
            for partition in self.scorer.dirty_partitions():
                if partition in self._next_offset:
                    snapshot = self.scorer.begin_snapshot(partition)
                    self.scorer.serialise(snapshot)
                    await self._save(snapshot, self._next_offset[partition], self.sink)
            return
        if self._open is None:
            now = time.monotonic()
            every = self.settings.stream.checkpoint_seconds
            due = [
                p
                for p in self.scorer.dirty_partitions()
                if p in self._next_offset and now - self._checkpointed_at.get(p, 0.0) >= every
            ]
            if not due:
                return
            partition = min(due, key=lambda p: self._checkpointed_at.get(p, 0.0))
            self._checkpointed_at[partition] = now
            await self._settle()  # so that the offset covers exactly the committed rows
            self._open = (self.scorer.begin_snapshot(partition), self._next_offset[partition])
        snapshot, offset = self._open
        if self.scorer.serialise(snapshot, _SNAPSHOT_STEP):
            self._open = None
            await self._jobs.put(lambda: self._save(snapshot, offset, self.side))

    async def _save(self, snapshot: Snapshot, offset: int, sink: ReadingsSink) -> None:
        await sink.save_checkpoint(
            self._group, self._topics.readings_raw, snapshot.partition, offset, snapshot.states
        )
        self.metrics.checkpointed.inc(len(snapshot.states))
        self._saved_at = time.monotonic()

    async def _maybe_flush(self, *, force: bool = False) -> None:
        """last_reading_at and battery levels, in the background unless `force`."""
        due = time.monotonic() - self._last_flush >= self.settings.stream.sensor_flush_seconds
        if not (force or due):
            return
        if not force and self._jobs.full():
            return  # the writer is behind: keep collecting, try on the next call
        pending, self._pending = self._pending, _Pending()
        self._last_flush = time.monotonic()

        async def flush(sink: ReadingsSink) -> None:
            await sink.touch(pending.last_seen)
            await sink.battery(pending.battery)

        if force:
            await self._jobs.join()
            await flush(self.sink)
        else:
            await self._jobs.put(lambda: flush(self.side))

    async def tick(self) -> None:
        """Timer body: reload sensor settings, find silent sensors, report outages, checkpoint."""
        await self._refresh_meta()
        async with self._lock:
            silent = self.scorer.find_silent(self.meta)
            if silent:
                await self.sink.mark_offline([s.sensor_id for s in silent])
                by_partition: dict[int, list[Silence]] = {}
                for s in silent:
                    by_partition.setdefault(s.partition, []).append(s)
                await asyncio.gather(
                    *[await self._publish_missing(g) for g in by_partition.values()]
                )
                self.metrics.anomalies.labels("missing").inc(len(silent))
                log.info("sensors missing", sensors=len(silent))
            await self._report_outages(self.scorer.take_outages())
            await self._maybe_flush()
            await self._maybe_checkpoint(force=False)
            self.metrics.sensors.set(len(self.scorer))
        self._progress.maybe_log(len(self.scorer), self._jobs.qsize())

    async def _refresh_meta(self) -> None:
        """Reload every held sensor's settings, and learn the registered ones never heard from.

        A sensor set to ``maintenance`` is muted, and scored again once back, within
        ``sensor_refresh_seconds``: no restart.
        """
        now = time.monotonic()
        if (
            now - self._meta_loaded < self.settings.stream.sensor_refresh_seconds
            or not self._restored
        ):
            return
        self._meta_loaded = now
        partitions = self.settings.kafka.partitions
        part = self._partition_of  # murmur2 is pure Python: once per sensor, not per reload
        async with self._lock:
            held = set(self._restored)
            mine: dict[str, tuple[str, int]] = {}
            for sensor_id, company_id in (await self.sink.registered_sensors()).items():
                p = part.get(sensor_id)
                if p is None:
                    p = part[sensor_id] = partition_for(sensor_id, partitions)
                if p in held:
                    mine[sensor_id] = (company_id, p)
            meta = await self.sink.sensor_meta(sorted(set(self.meta) | set(mine)))
            changed = sum(1 for sensor_id, m in meta.items() if self.meta.get(sensor_id, m) != m)
            self.meta = meta
            for sensor_id, (company_id, p) in mine.items():
                self.scorer.silence.expect(p, sensor_id, company_id)
        if changed:
            log.info("sensor settings changed", sensors=changed)

    async def _report_outages(self, outages: list[Outage]) -> None:
        """Log and count each outage; the holder of partition 0 publishes it, once."""
        self.metrics.pipeline_down.set(1 if self.scorer.silence.outage is not None else 0)
        for outage in outages:
            self.metrics.outages.labels(outage.cause).inc()
            since = from_us(outage.since_us)
            log.warning(
                "pipeline outage: no ingest heartbeat; no sensor judged missing meanwhile",
                cause=outage.cause,
                since=since.isoformat(),
                until=from_us(outage.until_us).isoformat() if outage.until_us else None,
                partitions=sorted(outage.partitions),
                live=outage.live,
            )
            if 0 not in self._restored:
                continue
            event = health_event(outage, self._group)
            # Not awaited: Kafka may be the outage; the producer delivers it when it can.
            fut = await self.kafka.send(
                self._topics.pipeline_health,
                event.model_dump_json().encode(),
                key=str(event.outage_id).encode(),
                headers=[(SCHEMA_HEADER, HEALTH_SCHEMA)],
            )
            fut.add_done_callback(_health_sent)

    async def _publish_missing(self, silent: list[Silence]) -> asyncio.Future[Any]:
        """One scored record of `missing` rows, on the sensors' own partition.

        ``received_us`` is the sensor's last delivery (when its silence began), and
        ``gateways`` names the gateway of the sensors that delivered through one.
        """
        batch = missing_batch(silent)
        fut: asyncio.Future[Any] = await self.kafka.send(
            self._topics.readings_scored,
            to_json(batch),
            partition=await self._scored_partition(silent[0].partition),
            headers=[(SCHEMA_HEADER, SCORED_SCHEMA)],
        )
        return fut

    async def on_status(self, values: Sequence[bytes]) -> None:
        """Status events: remember battery levels (written with the next flush)."""
        for value in values:
            try:
                event = SensorStatusEvent.model_validate_json(value)
            except ValidationError:
                self.metrics.poison.inc()
                continue
            if event.battery_level_percent is not None:
                self._pending.battery[str(event.sensor_id)] = event.battery_level_percent

    async def revoked(self, partitions: set[int]) -> None:
        """Partitions moved away: checkpoint them and free their models."""
        async with self._lock:
            await self._maybe_checkpoint(force=True)
            for partition in partitions:
                dropped = self.scorer.drop(partition)
                self._restored.discard(partition)
                self._next_offset.pop(partition, None)
                self._floor.pop(partition, None)
                log.info("partition released", partition=partition, sensors=dropped)


def _health_sent(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("pipeline.health event not delivered", error=str(fut.exception()))


def _merge(records: list[_Record]) -> list[_Record]:
    """Each partition's consecutive records concatenated in offset order.

    A merged record holds at most ``_MERGE_READINGS`` readings (a larger record is
    kept whole), so that its scored record stays far below Kafka's request size.
    """
    groups: list[list[_Record]] = []
    open_group: dict[int, list[_Record]] = {}
    sizes: dict[int, int] = {}
    for r in records:
        n = len(r.batch["sensor_id"])
        group = open_group.get(r.partition)
        if group is None or sizes[r.partition] + n > _MERGE_READINGS:
            group = open_group[r.partition] = []
            groups.append(group)
            sizes[r.partition] = 0
        group.append(r)
        sizes[r.partition] += n
    merged = []
    for group in groups:
        partition = group[0].partition
        if len(group) == 1:
            merged.append(group[0])
            continue
        batch: dict[str, Any] = {"v": 1}
        for column in BATCH_COLUMNS:
            batch[column] = [x for r in group for x in r.batch[column]]
        gateways = {k: v for r in group for k, v in (r.batch.get("gateways") or {}).items()}
        if gateways:
            batch["gateways"] = gateways
        merged.append(_Record(partition, group[-1].offset, cast("ReadingBatch", batch)))
    return merged


def _chunks(records: list[_Record], readings: int) -> list[list[_Record]]:
    """Consecutive records in groups of at least `readings` readings (the last: the rest).

    Always at least one group (empty for a buffer of poison records only), so that
    every buffer has a writer to ack it.
    """
    chunks: list[list[_Record]] = [[]]
    size = 0
    for r in records:
        if size >= readings:
            chunks.append([])
            size = 0
        chunks[-1].append(r)
        size += len(r.batch["sensor_id"])
    return chunks


def _row(batch: Mapping[str, object], i: int) -> dict[str, object]:
    """Reading `i` of a columnar batch, as a dead letter carries it."""
    return {k: v[i] for k, v in batch.items() if isinstance(v, list)}


def _version(value: bytes | None) -> object:
    with contextlib.suppress(ValueError):
        parsed = _ANY.validate_json(value or b"")
        if isinstance(parsed, dict):
            return parsed.get("v")
    return None


def _letter(reason: DeadLetterReason, detail: str, source: str, value: bytes | None) -> DeadLetter:
    return DeadLetter.of(reason, detail, source, value, limit=_PAYLOAD_LIMIT)


def _failing(worker: StreamWorker) -> str | None:
    """Readiness: the worker has not stopped on a failure."""
    failure = worker.failure
    return None if failure is None else f"stopped: {type(failure).__name__}: {failure}"


def _stop(worker: StreamWorker, exc: BaseException, why: str) -> None:
    """Stop the worker process after a failure, once.

    A crashed Faust agent would leave its partitions stalled while the process
    lives on: stop the worker instead, so that its supervisor restarts it from the
    committed offsets (nothing acked is lost). Faust's App.crash leaves the worker
    process idle; a SIGTERM makes it shut down cleanly, and run_worker then exits 1.
    """
    if worker.failure is not None:
        return
    log.error(why, exc_info=exc)
    worker.failure = exc
    os.kill(os.getpid(), signal.SIGTERM)


async def _handle_or_crash(
    worker: StreamWorker, events: Sequence[faust.types.EventT[Any]], ack: Ack
) -> None:
    try:
        await worker.handle(events, ack)
    except Exception as exc:
        _stop(worker, exc, "scoring failed; stopping the worker")
        raise


def build_app(settings: Settings, worker: StreamWorker) -> faust.App:
    """The Faust app: agents over the raw readings and status topics, a timer."""
    kafka = settings.kafka
    stream = settings.stream
    app = StreamApp(
        stream.app_id,
        broker=[f"kafka://{h.strip()}" for h in kafka.bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        # Faust makes its data directory even for in-memory tables; not in the working
        # directory (a read-only root in a container; the repository, under tests).
        datadir=Path(tempfile.gettempdir()) / f"{stream.app_id}-data",
        web_enabled=False,
        autodiscover=False,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        broker_credentials=faust_credentials(kafka),
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=stream.commit_seconds,
        broker_session_timeout=stream.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, stream.session_timeout_seconds / 10),
        broker_rebalance_timeout=stream.session_timeout_seconds,
        producer_acks=-1,
        stream_buffer_maxsize=stream.buffer_records * 4,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
    )
    raw = app.topic(kafka.topics.readings_raw, value_type=bytes, key_type=bytes)
    status = app.topic(kafka.topics.sensor_status, value_type=bytes, key_type=bytes)

    @app.agent(raw)
    async def score(events_stream: faust.StreamT[bytes]) -> None:
        # noack_take: the worker acks each buffer itself, once its rows are committed
        # (after this body has returned, while the next buffer is scored).
        buffers = events_stream.noack_take(  # type: ignore[attr-defined]
            stream.buffer_records, within=stream.buffer_seconds
        )
        async for events in buffers:
            await _handle_or_crash(worker, events, events_stream.ack)

    @app.agent(status)
    async def statuses(values: faust.StreamT[bytes]) -> None:
        async for batch in values.take(1000, within=1.0):
            await worker.on_status(batch)

    @app.timer(stream.tick_seconds)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        if worker.ready.is_set():
            await worker.tick()

    async def on_revoked(_sender: object, revoked: set[TopicPartition], **_: object) -> None:
        mine = {tp.partition for tp in revoked if tp.topic == kafka.topics.readings_raw}
        if mine and worker.ready.is_set():
            await worker.revoked(mine)

    async def on_shutdown(_sender: object, **_: object) -> None:
        await worker.close()

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(on_shutdown)  # type: ignore[arg-type]
    del score, statuses, tick
    return app


def run_worker(settings: Settings) -> int:
    """Run one stream worker until SIGTERM/SIGINT; the exit code."""
    worker = StreamWorker(settings)
    app = build_app(settings, worker)
    loop = app.loop
    health = Health(
        "stream",
        probe_seconds=settings.metrics.probe_seconds,
        stall_seconds=settings.metrics.stall_seconds,
    )
    health.probe("database", database_probe(settings.database))
    health.probe("kafka", kafka_probe(settings.kafka))
    health.progress("scoring", lambda: _failing(worker))
    health.watch(loop)
    if settings.metrics.enabled:
        health_http(
            settings.metrics.host,
            settings.metrics.port_for("stream"),
            worker.metrics.registry,
            health,
        )
        health.start()
    runner = faust.Worker(
        app, loop=loop, loglevel=settings.log.level.lower(), override_logging=False, quiet=True
    )
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0) if isinstance(exc.code, int | None) else 1
        return 1 if worker.failure is not None else code
    return 1 if worker.failure is not None else 0
