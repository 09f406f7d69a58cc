"""Publish a simulated fleet's readings over MQTT, on the contract's topics.

Readings are generated chunk by chunk in simulated-time order and sent as single
:class:`~tmiot.payloads.ReadingPayload` messages or as gateway batches. Pacing
follows an absolute schedule (message ``k`` is due at ``t0 + readings_before / rate``,
and, with a time scale, when its simulated time comes), so sleeps never add up
to drift. Up to ``max_in_flight`` publishes are pending at once: aiomqtt waits
for each to leave (QoS 0) or be acknowledged (QoS 1), and a window keeps the
link busy meanwhile.

Simulated time ends at "now" by default, so that an accelerated run produces
timestamps in the past, as ingest accepts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import ssl
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

import aiomqtt
import numpy as np
import structlog

from tmiot.config import MqttSettings
from tmiot.errors import TmiotError
from tmiot.simulate.fleet import Fleet
from tmiot.simulate.signals import F64, I64, Injection, SignalBank, inject, to_datetime, to_ms

__all__ = [
    "FleetPublisher",
    "PublishError",
    "PublishOptions",
    "PublishResult",
    "SimWindow",
    "publish_fleet",
    "simulated_window",
]

log = structlog.get_logger(__name__)

_MIN_SLEEP: Final = 0.002  # below this, running a little early is cheaper than a sleep
_MAX_BATCH_DELAY: Final = 1.0  # wall seconds a partial gateway batch may wait


class PublishError(TmiotError):
    """The broker refused the connection or a publish; ``retriable`` if trying again may help."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        """Mark whether the caller may retry."""
        super().__init__(message)
        self.retriable = retriable


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """What to publish and how fast.

    Stops at ``readings`` readings or after ``duration_seconds`` of wall time,
    whichever comes first (at least one is required). Pacing: ``rate`` caps
    readings per wall second (None: as fast as the broker takes them);
    ``time_scale`` runs simulated time that many times faster than wall time
    (None: "backfill", the simulated range goes out as fast as ``rate`` allows).
    """

    rate: float | None = 1000.0
    time_scale: float | None = None
    duration_seconds: float | None = None
    readings: int | None = None
    batch_size: int = 1  # 1: single-reading messages; more: gateway batches
    qos: int = 0
    start: datetime | None = None  # simulated start; default: the range ends now
    status_every: int = 100  # each sensor reports its status every this many readings; 0: never
    max_in_flight: int = 1000
    progress_seconds: float = 5.0
    keys_out: Path | None = None  # "sensor_id,device_id,timestamp" of every published reading

    def __post_init__(self) -> None:
        """Refuse options that cannot describe a run."""
        paced = self.rate is not None or self.time_scale is not None
        needs = (
            (
                self.readings is not None or self.duration_seconds is not None,
                "readings or duration",
            ),
            (self.readings is not None or paced, "a rate or a time scale with a duration"),
            (self.readings is None or self.readings >= 0, "readings >= 0"),
            (self.duration_seconds is None or self.duration_seconds > 0, "duration > 0"),
            (self.rate is None or self.rate > 0, "rate > 0"),
            (self.time_scale is None or self.time_scale > 0, "time scale > 0"),
            (1 <= self.batch_size <= 10_000, "batch size within 1..10000"),  # noqa: PLR2004
            (self.qos in {0, 1, 2}, "qos 0, 1 or 2"),
            (self.max_in_flight >= 1 and self.status_every >= 0, "max_in_flight >= 1"),
        )
        problems = [need for met, need in needs if not met]
        if problems:
            raise ValueError("publish options need " + ", ".join(problems))


@dataclass(frozen=True, slots=True)
class SimWindow:
    """The simulated time range of a run."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a run published."""

    messages: int  # reading messages (singles or batches)
    readings: int
    status_messages: int
    elapsed_seconds: float
    window: SimWindow
    reached: datetime  # simulated time up to which readings went out

    @property
    def rate(self) -> float:
        """Readings per wall second."""
        return self.readings / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


def simulated_window(
    fleet: Fleet, options: PublishOptions, now: datetime | None = None
) -> SimWindow:
    """The simulated range a run covers; it ends at ``now`` unless a start is given."""
    per_second = sum(1.0 / s.profile.sampling_interval_seconds for s in fleet.sensors) or 1.0
    if options.readings is not None:
        longest = max((s.profile.sampling_interval_seconds for s in fleet.sensors), default=1)
        # Two sampling intervals of slack: each sensor may miss one sample at each end.
        span = options.readings / per_second + 2 * longest
    elif options.time_scale is not None:
        span = (options.duration_seconds or 0.0) * options.time_scale
    else:
        span = (options.duration_seconds or 0.0) * (options.rate or 0.0) / per_second
    now = now or datetime.now(UTC)
    start = options.start or now - timedelta(seconds=span)
    return SimWindow(start=start, end=start + timedelta(seconds=span))


def _tls(settings: MqttSettings) -> aiomqtt.TLSParameters | None:
    if settings.tls is None:
        return None
    tls = settings.tls
    return aiomqtt.TLSParameters(
        ca_certs=str(tls.ca_file) if tls.ca_file else None,
        certfile=str(tls.cert_file) if tls.cert_file else None,
        keyfile=str(tls.key_file) if tls.key_file else None,
        cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
    )


class FleetPublisher:
    """An MQTT connection that publishes simulated readings; an async context manager."""

    def __init__(
        self, mqtt: MqttSettings, *, client_id: str | None = None, max_in_flight: int = 1000
    ) -> None:
        """Prepare the client (connected on ``__aenter__``)."""
        self._client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=client_id or f"tmiot-sim-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password else None,
            keepalive=mqtt.keepalive_seconds,
            tls_params=_tls(mqtt),
            tls_insecure=True if mqtt.tls and mqtt.tls.insecure_skip_verify else None,
            max_inflight_messages=min(max_in_flight, 65_535),
        )
        # Our window bounds pending publishes; aiomqtt would warn above 10.
        self._client.pending_calls_threshold = max_in_flight + 1
        self._target = f"{mqtt.host}:{mqtt.port}"

    async def __aenter__(self) -> Self:
        """Connect to the broker.

        Raises:
            PublishError: the broker is unreachable or refused us.
        """
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            msg = f"cannot connect to the MQTT broker at {self._target}: {exc}"
            raise PublishError(msg) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect."""
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(exc_type, exc, tb)

    async def publish(
        self,
        fleet: Fleet,
        options: PublishOptions,
        *,
        window: SimWindow | None = None,
        injections: Sequence[Injection] = (),
    ) -> PublishResult:
        """Publish the fleet's readings over ``window`` (default :func:`simulated_window`).

        Raises:
            PublishError: a publish failed (the connection dropped or timed out).
        """
        window = window or simulated_window(fleet, options)
        run = _Run(self._client, fleet, options, window, injections)
        with contextlib.ExitStack() as stack:
            if options.keys_out is not None:
                run.keys = stack.enter_context(options.keys_out.open("w", encoding="utf-8"))
            async with asyncio.TaskGroup() as tg:
                await run.produce(tg)
            run.finished = asyncio.get_running_loop().time()  # every publish has completed
        result = run.result()
        log.info(
            "published",
            readings=result.readings,
            messages=result.messages,
            status_messages=result.status_messages,
            rate=round(result.rate),
            seconds=round(result.elapsed_seconds, 2),
        )
        return result


async def publish_fleet(
    mqtt: MqttSettings,
    fleet: Fleet,
    options: PublishOptions,
    *,
    window: SimWindow | None = None,
    injections: Sequence[Injection] = (),
) -> PublishResult:
    """Connect, publish the fleet's readings, disconnect: :class:`FleetPublisher` in one call."""
    async with FleetPublisher(mqtt, max_in_flight=options.max_in_flight) as publisher:
        return await publisher.publish(fleet, options, window=window, injections=injections)


@dataclass(slots=True)
class _Run:
    """The state of one publishing run."""

    client: aiomqtt.Client
    fleet: Fleet
    options: PublishOptions
    window: SimWindow
    injections: Sequence[Injection]
    keys: IO[str] | None = None
    messages: int = 0
    readings: int = 0  # handed to a publish task (published once the tasks are done)
    status_messages: int = 0
    reached_ms: int = 0
    started: float = 0.0
    finished: float = 0.0
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.options.max_in_flight)
        self.reached_ms = to_ms(self.window.start)

    def result(self) -> PublishResult:
        return PublishResult(
            messages=self.messages,
            readings=self.readings,
            status_messages=self.status_messages,
            elapsed_seconds=self.finished - self.started,
            window=self.window,
            reached=to_datetime(self.reached_ms),
        )

    async def produce(self, tg: asyncio.TaskGroup) -> None:
        """Generate, encode, pace and hand messages to publish tasks."""
        opts, loop = self.options, asyncio.get_running_loop()
        bank = self.fleet.bank(self.window.start)
        start_ms, end_ms = to_ms(self.window.start), to_ms(self.window.end)
        encoder = _Encoder(self.fleet, bank, opts, _expected_rate(bank, opts))
        starts = np.array([a.start_ms for a in self.injections], dtype=np.int64)
        ends = np.array([a.end_ms for a in self.injections], dtype=np.int64)
        # About 0.2 s of readings per chunk: small enough to start at once,
        # large enough that numpy, not Python, does the generating.
        per_chunk = min(max(_expected_rate(bank, opts) * 0.2, 500.0), 50_000.0)
        chunk_ms = max(1, math.ceil(per_chunk / max(bank.readings_per_second, 1e-9) * 1000))
        limit = math.inf if opts.readings is None else opts.readings
        deadline = math.inf if opts.duration_seconds is None else opts.duration_seconds
        self.started = next_progress = loop.time()
        next_progress += opts.progress_seconds
        t, taken = start_ms, 0
        while t < end_ms and taken < limit:
            hi = min(t + chunk_ms, end_ms)
            sensors, times = bank.sample_times(t, hi)
            hits = np.nonzero((ends > t) & (starts < hi))[0]
            sensors, times, values = inject(
                bank,
                sensors,
                times,
                bank.values(sensors, times),
                [self.injections[int(i)] for i in hits],
            )
            if taken + len(times) > limit:
                keep = int(limit - taken)
                sensors, times, values = sensors[:keep], times[:keep], values[:keep]
                hi = int(times[-1]) + 1 if keep else t
            taken += len(times)
            last = hi >= end_ms or taken >= limit
            for message in encoder.encode(sensors, times, values, flush=last, now=loop.time()):
                due = self.started
                if opts.rate is not None:
                    due += self.readings / opts.rate
                if opts.time_scale is not None:
                    due = max(
                        due, self.started + (message.sim_ms - start_ms) / 1000 / opts.time_scale
                    )
                if max(due, loop.time()) - self.started >= deadline:
                    return
                if due - loop.time() > _MIN_SLEEP:
                    await asyncio.sleep(due - loop.time())
                await self.slots.acquire()
                tg.create_task(self._send(message))
                self.readings += message.readings
                self.messages += message.readings > 0
                self.status_messages += message.readings == 0
                self.reached_ms = max(self.reached_ms, message.sim_ms + 1)
                if loop.time() >= next_progress:
                    next_progress = self._progress(loop.time(), next_progress)
            t = hi

    def _progress(self, now: float, due: float) -> float:
        elapsed = max(now - self.started, 1e-9)
        log.info(
            "publishing",
            readings=self.readings,
            messages=self.messages,
            rate=round(self.readings / elapsed),
            simulated=to_datetime(self.reached_ms).isoformat(timespec="seconds"),
        )
        return due + self.options.progress_seconds

    async def _send(self, message: _Message) -> None:
        try:
            await self.client.publish(message.topic, message.payload, qos=self.options.qos)
        except aiomqtt.MqttError as exc:
            msg = f"publishing to {message.topic} failed: {exc}"
            raise PublishError(msg) from exc
        finally:
            self.slots.release()
        if self.keys is not None and message.keys:
            self.keys.write(message.keys)


def _expected_rate(bank: SignalBank, options: PublishOptions) -> float:
    """Readings per wall second the run aims at (for chunk and gateway sizing)."""
    rates = [options.rate] if options.rate is not None else []
    if options.time_scale is not None:
        rates.append(bank.readings_per_second * options.time_scale)
    return min(rates) if rates else 50_000.0


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    readings: int  # 0: a status message
    sim_ms: int  # latest simulated time in it
    keys: str  # "sensor_id,device_id,timestamp" lines; empty unless recording keys


@dataclass(slots=True)
class _Batch:
    items: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    since: float = 0.0
    sim_ms: int = 0


class _Encoder:
    """Turns generated samples into contract messages (JSON built from pre-encoded parts)."""

    def __init__(
        self, fleet: Fleet, bank: SignalBank, options: PublishOptions, rate: float
    ) -> None:
        base = f"tenants/{fleet.company_id}"
        self._bank, self._batch, self._every = bank, options.batch_size, options.status_every
        self._record = options.keys_out is not None
        self._reading_topic, self._status_topic, self._head, self._key = [], [], [], []
        for s in fleet.sensors:
            unit = json.dumps(s.profile.unit_of_measure)
            self._reading_topic.append(f"{base}/sensors/{s.device_id}/readings")
            self._status_topic.append(f"{base}/sensors/{s.device_id}/status")
            device = f'"device_id":{json.dumps(s.device_id)},' if self._batch > 1 else ""
            self._head.append(f'{{"v":1,{device}"unit":{unit},"timestamp":"')
            self._key.append(f"{s.sensor_id},{s.device_id},")
        # Enough gateways that each fills a batch about once a second at the
        # target rate, never fewer sensors per gateway than a batch holds.
        n = max(1, len(fleet.sensors))
        gateways = max(1, min(-(-n // self._batch), round(rate / self._batch)))
        self._gateway = (np.arange(n) * gateways // n).tolist()
        self._gateway_topic = [
            f"{base}/gateways/sim-{fleet.seed}-gw-{g}/readings" for g in range(gateways)
        ]
        self._pending: dict[int, _Batch] = {}

    def encode(
        self, sensors: I64, times: I64, values: F64, *, flush: bool, now: float
    ) -> Iterator[_Message]:
        """Messages for these samples in time order; partial batches wait unless flushing."""
        stamps = np.datetime_as_string(times.astype("datetime64[ms]"), unit="ms", timezone="UTC")
        status = np.zeros(len(times), dtype=bool)
        if self._every:
            k = (times - self._bank.phase_ms[sensors]) // self._bank.interval_ms[sensors]
            status = (k + sensors) % self._every == 0
        rows = zip(
            sensors.tolist(), times.tolist(), stamps.tolist(), np.round(values, 4).tolist(),
            status.tolist(), strict=True,
        )  # fmt: skip
        for i, t, stamp, value, report in rows:
            item = f'{self._head[i]}{stamp}","value":{value}}}'
            key = f"{self._key[i]}{stamp}\n" if self._record else ""
            if self._batch == 1:
                yield _Message(self._reading_topic[i], item.encode(), 1, t, key)
            else:
                batch = self._pending.setdefault(self._gateway[i], _Batch(since=now))
                batch.items.append(item)
                batch.keys.append(key)
                batch.sim_ms = t
                if len(batch.items) >= self._batch:
                    yield self._close(self._gateway[i])
            if report:
                yield self._status(i, t, stamp)
        for g in [g for g, b in self._pending.items() if flush or now - b.since > _MAX_BATCH_DELAY]:
            yield self._close(g)

    def _close(self, gateway: int) -> _Message:
        batch = self._pending.pop(gateway)
        payload = '{"v":1,"readings":[' + ",".join(batch.items) + "]}"
        return _Message(
            self._gateway_topic[gateway], payload.encode(), len(batch.items), batch.sim_ms,
            "".join(batch.keys),
        )  # fmt: skip

    def _status(self, i: int, t: int, stamp: str) -> _Message:
        days = (t - self._bank.origin_ms) / 86_400_000
        battery = int(min(100.0, max(0.0, 100.0 - (i * 37) % 30 - 0.2 * days)))
        payload = (
            f'{{"v":1,"timestamp":"{stamp}","battery_level_percent":{battery},'
            f'"heartbeat":true,"firmware":"sim-1.0","rssi_dbm":{-55 - i % 30}}}'
        )
        return _Message(self._status_topic[i], payload.encode(), 0, t, "")
