"""The ingest service: MQTT in, Kafka out, at least once.

Flow per MQTT connection::

    receive ─▶ validate ─▶ pack per partition ─┐  every linger_ms or max_record_readings
                                               ▼
           flush: send records, dead letters, status events ─▶ epoch (messages + futures)
                                               ▼
           acker: await the epoch's Kafka acks, then PUBACK its messages in receive order

A message is acknowledged to the broker only after every record it fed is
acknowledged by Kafka, and PUBACKs go out in the order PUBLISHes came in (as
MQTT requires). When Kafka slows down, epochs wait, unacknowledged messages
reach ``max_inflight_messages`` and receiving pauses: the broker keeps the rest
(its Receive Maximum window is full), so memory stays flat. A lost connection
drops unacknowledged work; the broker redelivers it to the persistent session.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import aiomqtt
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from pydantic_core import to_json

from ingest.audit import ViolationAuditor
from ingest.metrics import IngestMetrics
from ingest.mqtt import Acknowledger, connect_error, ingest_client
from ingest.packer import PackedRecord, Packer
from ingest.ratelimit import RejectionLimiter, source_of
from ingest.sensors import SensorDirectory, watch_sensors
from ingest.validation import Outcome, Validator
from tmiot.config import Settings
from tmiot.errors import leaves
from tmiot.events import (
    BATCH_COLUMNS,
    DEADLETTER_SCHEMA,
    RAW_SCHEMA,
    SCHEMA_HEADER,
    STATUS_SCHEMA,
    DeadLetter,
    SensorStatusEvent,
)
from tmiot.health import Health, database_probe
from tmiot.kafka import ensure_topics, producer
from tmiot.payloads import TopicKind, subscription_filters

__all__ = ["IngestService"]

log = structlog.get_logger(__name__)

_EPOCH_QUEUE: Final = 64
_SUBSCRIBE_TIMEOUT: Final = 120.0  # seconds; the backlog is served meanwhile
_LIMITED_SOURCES_SHOWN: Final = 100  # rate-limited sources tallied by name per progress log


class _Reconnect(Exception):  # noqa: N818 - control flow, not an error
    """Kafka failed a delivery: drop unacknowledged work and let the broker redeliver."""


@dataclass(slots=True)
class _Epoch:
    generation: int
    messages: list[aiomqtt.Message]
    opened: float  # monotonic receipt time of the first (oldest) message
    deliveries: list[asyncio.Future[object]] = field(default_factory=list)
    readings: int = 0


class IngestService:
    """MQTT gateways -> validated, tenant-checked, packed records on Kafka."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Build from the settings; nothing connects until `run`."""
        self._s = settings
        self._limits = settings.ingest
        self._topics = settings.kafka.topics
        self.metrics = IngestMetrics(registry or CollectorRegistry())
        self.directory = SensorDirectory()
        self.directory_loaded = asyncio.Event()
        self.subscribed = asyncio.Event()
        limiter = (
            RejectionLimiter(
                rate=self._limits.rejection_rate_per_source,
                burst=self._limits.rejection_burst_per_source,
                max_sources=self._limits.rejection_max_sources,
            )
            if self._limits.rejection_rate_per_source > 0
            else None
        )
        self._validator = Validator(self.directory, self._limits, limiter)
        self._auditor = ViolationAuditor()
        self._limited: Counter[str] = Counter()  # source -> rejections dropped since last log
        self._generation = 0
        self._inflight = 0
        self._room = asyncio.Event()
        self._room.set()
        # Labelled children resolved once: .labels() per message costs a lookup and a lock.
        self._received = {
            kind: self.metrics.messages.labels(kind.value if kind else "invalid")
            for kind in (*TopicKind, None)
        }
        self._kinds: dict[TopicKind | None, int] = dict.fromkeys(self._received, 0)
        self.last_beat: float | None = None  # monotonic time heartbeats last reached Kafka
        self.health = Health(
            "ingest",
            probe_seconds=settings.metrics.probe_seconds,
            stall_seconds=settings.metrics.stall_seconds,
        )
        self.health.probe("database", database_probe(settings.database))
        self.health.progress("mqtt", self._mqtt_ready)
        self.health.progress("kafka", self._kafka_ready)

    def _mqtt_ready(self) -> str | None:
        return None if self.subscribed.is_set() else "not subscribed to MQTT (connecting)"

    def _kafka_ready(self) -> str | None:
        """Heartbeats go to Kafka every heartbeat_seconds: the produce path works."""
        limit = max(15.0, 3 * self._limits.heartbeat_seconds)
        if self.last_beat is None:
            return "no heartbeat delivered to Kafka yet"
        age = time.monotonic() - self.last_beat
        return None if age <= limit else f"no heartbeat delivered to Kafka for {age:.0f} s"

    async def run(self) -> None:
        """Run until cancelled. Raises MqttAuthError when the broker refuses our credentials."""
        topics = [
            self._topics.readings_raw,
            self._topics.readings_deadletter,
            self._topics.sensor_status,
        ]
        self.health.watch(asyncio.get_running_loop())
        await ensure_topics(self._s.kafka, topics)
        kafka = producer(self._s.kafka, client_id=self._s.mqtt.client_id)
        await kafka.start()
        try:
            partitions = len(await kafka.partitions_for(self._topics.readings_raw))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    watch_sensors(
                        self._s.database,
                        self.directory,
                        reload_seconds=self._limits.sensor_reload_seconds,
                        loaded=self.directory_loaded,
                    ),
                    name="sensor-directory",
                )
                tg.create_task(self._audit_loop(), name="audit")
                tg.create_task(self._progress_loop(), name="progress")
                tg.create_task(self._beat_loop(kafka, partitions), name="heartbeat")
                await self.directory_loaded.wait()
                tg.create_task(self._mqtt_loop(kafka, partitions), name="mqtt")
        finally:
            await kafka.stop()

    # --- MQTT connection, with reconnects ------------------------------------------

    async def _mqtt_loop(self, kafka: AIOKafkaProducer, partitions: int) -> None:
        attempt = 0
        while True:
            client = ingest_client(self._s.mqtt, self._limits)
            self._generation += 1
            reason = "connection closed"
            try:
                async with client, asyncio.TaskGroup() as tasks:
                    # Serve before subscribing: a resumed session's backlog arrives right
                    # after CONNACK, ahead of the SUBACK; reading it only after the
                    # SUBACK made a large backlog time the subscription out, forever.
                    tasks.create_task(self._connection(client, kafka, partitions))
                    for topic_filter in subscription_filters(self._s.mqtt.share_group):
                        await client.subscribe(
                            topic_filter, qos=self._s.mqtt.qos, timeout=_SUBSCRIBE_TIMEOUT
                        )
                    log.info(
                        "mqtt subscribed",
                        broker=f"{self._s.mqtt.host}:{self._s.mqtt.port}",
                        share_group=self._s.mqtt.share_group,
                    )
                    self.subscribed.set()
                    attempt = 0
            except* aiomqtt.MqttError as group:  # refused, or lost (except* also takes bare ones)
                reason = self._retriable(leaves(group)[0])
            except* _Reconnect as group:
                reason = str(leaves(group)[0])
            self.subscribed.clear()
            self._forget_inflight()
            attempt += 1
            delay = random.uniform(0, 1.5 ** min(10, attempt))  # noqa: S311 - jitter
            log.warning(
                "mqtt connection lost; reconnecting", error=reason, retry_in=round(delay, 2)
            )
            await asyncio.sleep(delay)

    def _retriable(self, exc: BaseException) -> str:
        """The error's text if reconnecting may help; raise MqttAuthError if not."""
        if isinstance(exc, aiomqtt.MqttError):
            auth = connect_error(exc, self._s.mqtt)
            if auth is not None:
                log.error(
                    "mqtt authentication failed",
                    broker=f"{self._s.mqtt.host}:{self._s.mqtt.port}",
                    client_id=self._s.mqtt.client_id,
                    username=self._s.mqtt.username,
                    error=str(exc),
                )
                raise auth from exc
        return str(exc) or type(exc).__name__

    def _forget_inflight(self) -> None:
        self._inflight = 0
        self.metrics.inflight.set(0)
        self._room.set()

    async def _connection(
        self, client: aiomqtt.Client, kafka: AIOKafkaProducer, partitions: int
    ) -> None:
        """Serve one connection: receive, flush on linger, ack in order."""
        acker = Acknowledger(client)
        epochs: asyncio.Queue[_Epoch] = asyncio.Queue(maxsize=_EPOCH_QUEUE)
        batch = _Batch(Packer(partitions, self._limits.max_record_readings))
        lock = asyncio.Lock()
        generation = self._generation

        async def flush() -> None:
            async with lock:
                self.metrics.inflight.set(self._inflight)
                self._count_kinds()
                drained = batch.take(generation)
                if drained is not None:
                    await self._send(kafka, drained)
                    await epochs.put(drained.epoch)

        async def linger() -> None:
            while True:
                await asyncio.sleep(self._limits.linger_ms / 1000)
                await flush()

        async def receive() -> None:
            async for message in client.messages:
                if self._inflight >= self._limits.max_inflight_messages:
                    await flush()
                    self._room.clear()
                    await self._room.wait()
                self._take(message, batch)
                if len(batch.packer) >= self._limits.max_record_readings:
                    await flush()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(receive(), name="mqtt-receive")
            tg.create_task(linger(), name="linger")
            tg.create_task(self._ack_loop(epochs, acker, generation), name="acker")

    def _take(self, message: aiomqtt.Message, batch: _Batch) -> None:
        """Validate one message into the open batch."""
        now = time.monotonic()
        received_at = dt.datetime.now(dt.UTC)
        topic = message.topic.value
        payload = (
            message.payload
            if isinstance(message.payload, bytes)
            else (str(message.payload).encode())
        )
        outcome = self._validator.process(topic, payload, received_at)
        self._kinds[outcome.kind] += 1  # added to the counters per flush
        self._count(outcome, received_at)
        if outcome.limited:
            self._count_limited(topic, outcome)
        batch.add(message, now, outcome)
        self._inflight += 1  # the gauge is set per flush and per ack, not per message

    def _count_limited(self, topic: str, outcome: Outcome) -> None:
        """Count the rejections over their source's limit (logged per progress interval)."""
        for reason in outcome.limited:
            self.metrics.rate_limited.labels(reason.value).inc()
        source = source_of(topic)
        if source not in self._limited and len(self._limited) >= _LIMITED_SOURCES_SHOWN:
            source = "(more sources)"  # a bounded report, however many sources flood
        self._limited[source] += len(outcome.limited)

    def _count_kinds(self) -> None:
        for kind, n in self._kinds.items():
            if n:
                self._received[kind].inc(n)
                self._kinds[kind] = 0

    def _count(self, outcome: Outcome, at: dt.datetime) -> None:
        for rejection in outcome.rejections:
            self.metrics.deadletters.labels(rejection.reason.value).inc()
        for violation in outcome.violations:
            self.metrics.violations.inc()
            self._auditor.record(violation, at)

    async def _send(self, kafka: AIOKafkaProducer, drained: _Drained) -> None:
        """Hand the epoch's records to the producer (in order) and keep their futures."""
        epoch = drained.epoch
        raw_headers = [(SCHEMA_HEADER, RAW_SCHEMA)]
        for record in drained.records:
            fut = await kafka.send(
                self._topics.readings_raw,
                record.value,
                key=record.key,
                partition=record.partition,
                headers=raw_headers,
            )
            epoch.deliveries.append(fut)
            epoch.readings += record.readings
        self.metrics.records.labels(self._topics.readings_raw).inc(len(epoch.deliveries))
        for letter in drained.deadletters:
            epoch.deliveries.append(
                await kafka.send(
                    self._topics.readings_deadletter,
                    letter.model_dump_json().encode(),
                    key=letter.company_id.encode() if letter.company_id else None,
                    headers=[
                        (SCHEMA_HEADER, DEADLETTER_SCHEMA),
                        ("reason", letter.reason.value.encode()),
                    ],
                )
            )
        for status in drained.statuses:
            epoch.deliveries.append(
                await kafka.send(
                    self._topics.sensor_status,
                    status.model_dump_json().encode(),
                    key=str(status.sensor_id).encode(),
                    headers=[(SCHEMA_HEADER, STATUS_SCHEMA)],
                )
            )

    async def _ack_loop(
        self, epochs: asyncio.Queue[_Epoch], acker: Acknowledger, generation: int
    ) -> None:
        while True:
            epoch = await epochs.get()
            try:
                await asyncio.gather(*epoch.deliveries)
            except KafkaError as exc:
                self.metrics.kafka_failures.inc()
                msg = f"Kafka delivery failed: {exc}"
                raise _Reconnect(msg) from exc
            if generation != self._generation:
                return  # a newer connection owns the session now
            acker.ack_all(epoch.messages)
            # One observation per epoch, its oldest message's: the worst case, at a
            # fraction of the cost of one per message.
            self.metrics.ack_latency.observe(time.monotonic() - epoch.opened)
            self.metrics.readings.inc(epoch.readings)
            self._inflight -= len(epoch.messages)
            self.metrics.inflight.set(self._inflight)
            if self._inflight < self._limits.max_inflight_messages:
                self._room.set()

    # --- side loops ----------------------------------------------------------------

    async def _beat_loop(self, kafka: AIOKafkaProducer, partitions: int) -> None:
        """A heartbeat on every raw partition each ``heartbeat_seconds`` (see tmiot.events).

        ``mqtt`` says whether readings can flow (subscribed); the stream judges no
        sensor silent on a partition whose heartbeats stopped or say False.
        """
        source = self._s.mqtt.client_id
        while True:
            beat = to_json(
                {
                    "v": 1,
                    **{column: [] for column in BATCH_COLUMNS},
                    "beat": {
                        "source": source,
                        "at_us": time.time_ns() // 1000,
                        "mqtt": self.subscribed.is_set(),
                    },
                }
            )
            try:
                sent = [
                    await kafka.send(
                        self._topics.readings_raw,
                        beat,
                        partition=p,
                        headers=[(SCHEMA_HEADER, RAW_SCHEMA)],
                    )
                    for p in range(partitions)
                ]
                await asyncio.gather(*sent)
                self.last_beat = time.monotonic()
                self.metrics.heartbeats.inc()
            except KafkaError as exc:
                log.warning("heartbeat not delivered", error=str(exc))
            await asyncio.sleep(self._limits.heartbeat_seconds)

    async def _audit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._limits.audit_flush_seconds)
            await self._auditor.flush(self._s.database)

    async def flush_audit(self) -> int:
        """Write pending violation rows now (tests and shutdown)."""
        return await self._auditor.flush(self._s.database)

    async def _progress_loop(self) -> None:
        last = 0.0
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(self._limits.progress_log_seconds)
            total = self.metrics.readings._value.get()  # noqa: SLF001 - prometheus has no public read
            now = time.monotonic()
            log.info(
                "ingest progress",
                readings=int(total),
                readings_per_s=round((total - last) / (now - last_t)),
                inflight=self._inflight,
                sensors=len(self.directory),
            )
            last, last_t = total, now
            if self._limited:
                log.warning(
                    "rejections over their source's limit were not dead-lettered",
                    dropped=sum(self._limited.values()),
                    top_sources=dict(self._limited.most_common(5)),
                )
                self._limited.clear()


@dataclass(slots=True)
class _Drained:
    """Everything one flush sends."""

    epoch: _Epoch
    records: list[PackedRecord]
    deadletters: list[DeadLetter]
    statuses: list[SensorStatusEvent]


class _Batch:
    """What the open epoch has gathered since the last flush."""

    def __init__(self, packer: Packer) -> None:
        self.packer = packer
        self._messages: list[aiomqtt.Message] = []
        self._opened = 0.0
        self._deadletters: list[DeadLetter] = []
        self._statuses: list[SensorStatusEvent] = []

    def add(self, message: aiomqtt.Message, received: float, outcome: Outcome) -> None:
        if not self._messages:
            self._opened = received
        self._messages.append(message)
        self.packer.add(outcome.readings, outcome.gateway)
        self._deadletters.extend(outcome.rejections)
        self._statuses.extend(outcome.statuses)

    def take(self, generation: int) -> _Drained | None:
        """Swap everything out at once (no await), so an epoch is exactly its messages."""
        if not self._messages:
            return None
        drained = _Drained(
            _Epoch(generation, self._messages, self._opened),
            self.packer.drain(),
            self._deadletters,
            self._statuses,
        )
        self._messages, self._deadletters, self._statuses = [], [], []
        return drained
