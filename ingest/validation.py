"""Turn one MQTT message into readings, status events and rejections (pure, no I/O).

Every rejected message, or rejected item of a gateway batch, becomes a
:class:`~tmiot.events.DeadLetter` with a reason code; the good items of a batch
go through. Nothing here raises on bad input.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Final

from pydantic import TypeAdapter, ValidationError

from ingest.ratelimit import RejectionLimiter, source_of
from ingest.sensors import Lookup, SensorDirectory, SensorInfo
from tmiot.config import IngestSettings
from tmiot.events import (
    DeadLetter,
    DeadLetterReason,
    SensorStatusEvent,
    payload_text,
    to_us,
)
from tmiot.payloads import (
    BATCH,
    BATCH_ENVELOPE,
    GATEWAY_ITEM,
    READING,
    STATUS,
    VALUE_LIMIT,
    ReadingPayload,
    TopicKind,
    parse_topic,
)

__all__ = ["Outcome", "ReadingRow", "Validator", "Violation"]

# One accepted reading, in the column order of tmiot.events.BATCH_COLUMNS:
# sensor_id, company_id, ts_us, value, unit, quality_score, ambient_temperature,
# ambient_humidity, weather_conditions, received_us.
ReadingRow = tuple[
    str, str, int, float, str | None, float | None, float | None, float | None, str | None, int
]

_ANY: Final = TypeAdapter(object)


@dataclass(frozen=True, slots=True)
class Violation:
    """A tenant's gateway addressed a sensor owned by another tenant."""

    company_id: str  # the tenant in the topic (the actor)
    ident: str  # the device id or sensor number it addressed
    owners: frozenset[str]  # the tenants that own that identifier
    topic: str


@dataclass(slots=True)
class Outcome:
    """Everything one MQTT message turned into."""

    kind: TopicKind | None = None  # None: not a contract topic
    readings: list[ReadingRow] = field(default_factory=list)
    gateway: str | None = None  # the gateway of a batch topic (carried on the raw record)
    statuses: list[SensorStatusEvent] = field(default_factory=list)
    rejections: list[DeadLetter] = field(default_factory=list)
    # Rejections past the source's dead-letter limit: counted, never dead-lettered.
    limited: list[DeadLetterReason] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)


@dataclass(slots=True)
class _Message:
    """The message being validated, and where its results go."""

    out: Outcome
    topic: str
    company: str | None
    payload: bytes
    received_at: dt.datetime
    received_us: int
    latest_us: int  # bounds computed once per message, not per reading
    earliest_us: int
    source: str | None = None  # for the rejection limit; found on the first rejection


def _reason_of(exc: ValidationError) -> tuple[DeadLetterReason, str]:
    errors = exc.errors(include_url=False, include_input=False)
    types = {e["type"] for e in errors}
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    detail = f"{where}: {first['msg']}"
    if "json_invalid" in types or "json_type" in types:
        return DeadLetterReason.MALFORMED_JSON, detail
    if "finite_number" in types:
        return DeadLetterReason.NON_FINITE_VALUE, detail
    return DeadLetterReason.INVALID_SCHEMA, detail


def _bounds(
    msg: _Message, value: float, at: dt.datetime, ts_us: int
) -> tuple[DeadLetterReason, str] | None:
    if not math.isfinite(value):  # pydantic refuses these already; belt and braces
        return DeadLetterReason.NON_FINITE_VALUE, "value is not finite"
    if abs(value) >= VALUE_LIMIT:
        return DeadLetterReason.VALUE_OUT_OF_RANGE, f"|value| >= {VALUE_LIMIT:g}"
    # The detail shows the timestamp as sent: from_us(ts_us) overflows for years 1 and
    # 9999 with an offset (a gateway could crash ingest with one such reading).
    if ts_us > msg.latest_us:
        return DeadLetterReason.TIMESTAMP_IN_FUTURE, f"{at.isoformat()} is ahead"
    if ts_us < msg.earliest_us:
        return DeadLetterReason.TIMESTAMP_TOO_OLD, f"{at.isoformat()} is too old"
    return None


def _item_bytes(item: object) -> bytes:
    """A batch item back as JSON, for its dead letter."""
    return _ANY.dump_json(item, fallback=repr)


class Validator:
    """Validates, resolves and tenant-checks messages against a sensor directory."""

    def __init__(
        self,
        directory: SensorDirectory,
        limits: IngestSettings,
        limiter: RejectionLimiter | None = None,
    ) -> None:
        """Use `directory` for resolution, `limits` for sizes and time bounds.

        With a `limiter`, a rejection gets a dead letter only while its source has
        tokens; the others are only listed in ``Outcome.limited`` (see
        :mod:`ingest.ratelimit`).
        """
        self._directory = directory
        self._limits = limits
        self._limiter = limiter
        self._future_us = round(limits.max_future_seconds * 1e6)
        self._age_us = round(limits.max_age_seconds * 1e6)

    def process(self, topic: str, payload: bytes, received_at: dt.datetime) -> Outcome:
        """Validate one message received at `received_at` (UTC)."""
        ref = parse_topic(topic)
        received_us = to_us(received_at)
        msg = _Message(
            Outcome(kind=ref.kind if ref else None),
            topic,
            ref.company_id if ref else None,
            payload,
            received_at,
            received_us,
            received_us + self._future_us,
            received_us - self._age_us,
        )
        if ref is None:
            self._reject(msg, DeadLetterReason.INVALID_TOPIC, "not a contract topic")
        elif len(payload) > self._limits.max_payload_bytes:
            limit = self._limits.max_payload_bytes
            self._reject(msg, DeadLetterReason.PAYLOAD_TOO_LARGE, f"{len(payload)} > {limit} bytes")
        elif ref.kind is TopicKind.READING:
            self._single(msg, ref.source_id)
        elif ref.kind is TopicKind.BATCH:
            msg.out.gateway = ref.source_id
            self._batch(msg)
        else:
            self._status(msg, ref.source_id)
        return msg.out

    # --- message kinds ---------------------------------------------------------------

    def _single(self, msg: _Message, ident: str) -> None:
        try:
            reading = READING.validate_json(msg.payload)
        except ValidationError as exc:
            self._reject(msg, *_reason_of(exc))
            return
        self._accept(msg, ident, reading)

    def _batch(self, msg: _Message) -> None:
        try:
            # Fast path: the whole batch in one call into pydantic-core.
            items = BATCH.validate_json(msg.payload)["readings"]
        except ValidationError as exc:
            if self._limiter is not None and self._limiter.exhausted(
                self._source(msg), msg.received_us / 1e6
            ):
                # Over its limit: not worth an item-by-item search for good readings, nor
                # listing every item's errors (errors() costs about 1 us per error).
                one = exc.error_count() == 1
                msg.out.limited.append(
                    _reason_of(exc)[0] if one else DeadLetterReason.INVALID_SCHEMA
                )
                return
            self._batch_items(msg)
            return
        # The hot loop of the service: locals only, one tuple per good reading;
        # anything unusual goes through _accept, which explains the rejection.
        company, earliest, latest = msg.company, msg.earliest_us, msg.latest_us
        received_us, find, append = msg.received_us, self._directory.find, msg.out.readings.append
        assert company is not None  # noqa: S101 - only contract topics get here
        for index, item in enumerate(items):
            value = item["value"]
            ts_us = round(item["timestamp"].timestamp() * 1_000_000)
            info = find(company, item["device_id"])
            if (
                info is None
                or not earliest <= ts_us <= latest
                or not -VALUE_LIMIT < value < VALUE_LIMIT
            ):
                self._accept(msg, item["device_id"], item, index)
                continue
            append(
                (
                    info.sensor_id,
                    info.company_id,
                    ts_us,
                    value,
                    item.get("unit"),
                    item.get("quality_score"),
                    item.get("ambient_temperature"),
                    item.get("ambient_humidity"),
                    item.get("weather_conditions"),
                    received_us,
                )
            )

    def _batch_items(self, msg: _Message) -> None:
        """Slow path for a batch with bad parts: validate item by item."""
        try:
            envelope = BATCH_ENVELOPE.validate_json(msg.payload)
        except ValidationError as exc:
            self._reject(msg, *_reason_of(exc))
            return
        for index, item in enumerate(envelope["readings"]):
            try:
                reading = GATEWAY_ITEM.validate_python(item)
            except ValidationError as exc:
                reason, detail = _reason_of(exc)
                if not self._reject(msg, reason, f"readings.{index}.{detail}", index, item):
                    return  # over the source's limit: the rest of the batch goes with it
                continue
            self._accept(msg, reading["device_id"], reading, index)

    def _status(self, msg: _Message, ident: str) -> None:
        try:
            status = STATUS.validate_json(msg.payload)
        except ValidationError as exc:
            self._reject(msg, *_reason_of(exc))
            return
        info = self._resolve(msg, ident, None, None)
        if info is None:
            return
        msg.out.statuses.append(
            SensorStatusEvent.model_construct(
                v=1,
                sensor_id=info.sensor_uuid,
                company_id=info.company_uuid,
                timestamp=status["timestamp"],
                battery_level_percent=status.get("battery_level_percent"),
                heartbeat=status.get("heartbeat", True),
                received_at=msg.received_at,
            )
        )

    # --- shared steps ----------------------------------------------------------------

    def _accept(
        self, msg: _Message, ident: str, reading: ReadingPayload, index: int | None = None
    ) -> None:
        value = reading["value"]
        # Exact to the microsecond until about 2100: the float's error stays below 0.5 us.
        ts_us = round(reading["timestamp"].timestamp() * 1_000_000)
        if not msg.earliest_us <= ts_us <= msg.latest_us or not -VALUE_LIMIT < value < VALUE_LIMIT:
            problem = _bounds(msg, value, reading["timestamp"], ts_us)
            if problem is not None:
                self._reject(msg, *problem, index, reading if index is not None else None)
                return
        assert msg.company is not None  # noqa: S101 - only contract topics get here
        info = self._directory.find(msg.company, ident) or self._resolve(msg, ident, index, reading)
        if info is None:
            return
        msg.out.readings.append(
            (
                info.sensor_id,
                info.company_id,
                ts_us,
                value,
                reading.get("unit"),
                reading.get("quality_score"),
                reading.get("ambient_temperature"),
                reading.get("ambient_humidity"),
                reading.get("weather_conditions"),
                msg.received_us,
            )
        )

    def _resolve(
        self, msg: _Message, ident: str, index: int | None, item: object
    ) -> SensorInfo | None:
        assert msg.company is not None  # noqa: S101 - only contract topics get here
        found, info = self._directory.resolve(msg.company, ident)
        if found is Lookup.FOUND:
            return info
        if found is Lookup.OTHER_TENANT:
            owners = self._directory.owners(ident)
            msg.out.violations.append(Violation(msg.company, ident, owners, msg.topic))
            detail = f"sensor {ident!r} belongs to another company"
            self._reject(msg, DeadLetterReason.TENANT_MISMATCH, detail, index, item)
        else:
            self._reject(msg, DeadLetterReason.UNKNOWN_SENSOR, f"no sensor {ident!r}", index, item)
        return None

    @staticmethod
    def _source(msg: _Message) -> str:
        if msg.source is None:
            msg.source = source_of(msg.topic)
        return msg.source

    def _reject(
        self,
        msg: _Message,
        reason: DeadLetterReason,
        detail: str,
        index: int | None = None,
        item: object = None,
    ) -> bool:
        """Dead-letter the message, or one batch item (then `item` is what is kept).

        Returns False when the source is over its limit: counted in ``limited`` only.
        """
        if self._limiter is not None and not self._limiter.take(
            self._source(msg), msg.received_us / 1e6
        ):
            msg.out.limited.append(reason)
            return False
        # Only a rejected batch item pays for serialising itself back.
        payload = _item_bytes(item) if index is not None else msg.payload
        text, truncated = payload_text(payload, self._limits.deadletter_payload_limit)
        msg.out.rejections.append(
            DeadLetter(
                reason=reason,
                detail=detail[:500],
                source=f"mqtt:{msg.topic}",
                company_id=msg.company,
                item_index=index,
                received_at=msg.received_at,
                payload=text,
                payload_size=len(payload),
                truncated=truncated,
            )
        )
        return True
