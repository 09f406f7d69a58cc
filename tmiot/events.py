"""Kafka record contracts, defined once and imported by every service.

``sensor.readings.raw`` (schema ``sensor.readings.raw/1``): each record value is a
:class:`ReadingBatch`, the readings of *one partition* packed together by
ingest, in arrival order. The partition is the one Kafka's default partitioner
gives the key ``sensor_id`` (murmur2), so every reading of a sensor lands in the
same partition and keeps its order; the record key is the sensor id when the
batch holds one sensor, else None. Packing amortises the per-record cost of
Kafka clients and Faust (about 14k records/s per worker) over many readings.

``sensor.readings.deadletter`` (schema ``sensor.readings.deadletter/1``): one
:class:`DeadLetter` per rejected message or batch item.

``sensor.status`` (schema ``sensor.status/1``): one :class:`SensorStatusEvent`
per device status message, keyed by sensor id.

Every record carries the header ``tmiot-schema`` = ``<topic kind>/<version>``.
"""

from __future__ import annotations

import base64
import datetime as dt
from enum import StrEnum
from typing import Final, Literal, NotRequired
from uuid import UUID

from pydantic import BaseModel, ConfigDict, TypeAdapter
from typing_extensions import TypedDict

__all__ = [
    "BATCH_COLUMNS",
    "DEADLETTER_SCHEMA",
    "HEALTH_SCHEMA",
    "NOTIFICATION_SCHEMA",
    "OUTCOME_SCHEMA",
    "RAW_SCHEMA",
    "READING_BATCH",
    "SCHEMA_HEADER",
    "SCORED_BATCH",
    "SCORED_SCHEMA",
    "SCORE_COLUMNS",
    "STATUS_SCHEMA",
    "WORKORDER_SCHEMA",
    "WORKORDER_UPDATE_SCHEMA",
    "DeadLetter",
    "DeadLetterReason",
    "EvidenceItem",
    "ForecastItem",
    "IngestBeat",
    "NotificationRequested",
    "PipelineHealth",
    "RawReading",
    "ReadingBatch",
    "ScoredBatch",
    "SensorStatusEvent",
    "WorkOrderOutcome",
    "WorkOrderRequested",
    "WorkOrderUpdated",
    "decode_reading_batch",
    "from_us",
    "payload_text",
    "reading_rows",
    "to_us",
]

SCHEMA_HEADER: Final = "tmiot-schema"
RAW_SCHEMA: Final = b"sensor.readings.raw/1"
DEADLETTER_SCHEMA: Final = b"sensor.readings.deadletter/1"
STATUS_SCHEMA: Final = b"sensor.status/1"
SCORED_SCHEMA: Final = b"sensor.readings.scored/1"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class RawReading(TypedDict):
    """One reading of a :class:`ReadingBatch`, as a row (see :func:`reading_rows`)."""

    sensor_id: str
    company_id: str
    reading_timestamp: dt.datetime
    value: float
    unit: str | None
    quality_score: float | None
    ambient_temperature: float | None
    ambient_humidity: float | None
    weather_conditions: str | None
    received_at: dt.datetime


class IngestBeat(TypedDict):
    """An ingest heartbeat: ingest is running (``mqtt``: and receiving from MQTT)."""

    source: str  # the ingest instance (its MQTT client id)
    at_us: int  # when it was sent, ingest's clock (the clock of ``received_us``)
    mqtt: bool


class ReadingBatch(TypedDict):
    """Value of a ``sensor.readings.raw`` record: one partition's readings, in order, as columns.

    Column ``i`` of every list belongs to reading ``i``; all lists have the same
    length. Times are integer microseconds since the Unix epoch, UTC (``ts_us``:
    the reading's timestamp; ``received_us``: when ingest received its message).

    Optional: ``gateways`` maps the sensors of the batch that came through a
    gateway's topic to that gateway's id; ``beat`` marks an ingest heartbeat, a
    record with no readings that ingest sends to every partition every
    ``ingest.heartbeat_seconds`` (the stream tells its own outages from silent
    sensors by them).
    """

    v: Literal[1]
    sensor_id: list[str]
    company_id: list[str]
    ts_us: list[int]
    value: list[float]
    unit: list[str | None]
    quality_score: list[float | None]
    ambient_temperature: list[float | None]
    ambient_humidity: list[float | None]
    weather_conditions: list[str | None]
    received_us: list[int]
    gateways: NotRequired[dict[str, str]]
    beat: NotRequired[IngestBeat]


# Column order of ReadingBatch, also the order of a packed row tuple in ingest.
BATCH_COLUMNS: Final = (
    "sensor_id",
    "company_id",
    "ts_us",
    "value",
    "unit",
    "quality_score",
    "ambient_temperature",
    "ambient_humidity",
    "weather_conditions",
    "received_us",
)

# Columns, not a list of objects: encoding, decoding and the database's
# unnest() insert then handle a few lists per record instead of a dict per reading.
READING_BATCH: Final = TypeAdapter(ReadingBatch)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_us(when: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, no float rounding).

    >>> to_us(dt.datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=dt.UTC))
    1000005
    """
    return (when - _EPOCH) // dt.timedelta(microseconds=1)


def from_us(us: int) -> dt.datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return _EPOCH + dt.timedelta(microseconds=us)


def decode_reading_batch(data: bytes | str) -> ReadingBatch:
    """Validate a ``sensor.readings.raw`` record value.

    Raises:
        ValueError: not JSON, a wrong type, or columns of different lengths
            (:class:`pydantic.ValidationError` is a ValueError).
    """
    batch = READING_BATCH.validate_json(data)
    n = len(batch["sensor_id"])
    if any(len(batch[c]) != n for c in BATCH_COLUMNS):
        msg = "reading batch columns differ in length"
        raise ValueError(msg)
    return batch


def reading_rows(batch: ReadingBatch) -> list[RawReading]:
    """The batch as one dict per reading (convenient, slower than the columns)."""
    return [
        {
            "sensor_id": sensor,
            "company_id": company,
            "reading_timestamp": from_us(ts),
            "value": value,
            "unit": unit,
            "quality_score": quality,
            "ambient_temperature": temp,
            "ambient_humidity": humidity,
            "weather_conditions": weather,
            "received_at": from_us(received),
        }
        for sensor, company, ts, value, unit, quality, temp, humidity, weather, received in zip(
            *(batch[c] for c in BATCH_COLUMNS),
            strict=True,
        )
    ]


class ScoredBatch(TypedDict):
    """Value of a ``sensor.readings.scored`` record: a scored :class:`ReadingBatch`.

    The raw batch's columns, plus one score per reading. A ``missing`` event (a
    sensor silent for longer than 3 sampling intervals) is a row whose ``value``
    is null, ``anomaly_type`` is ``"missing"`` and ``ts_us`` the time the silence
    was established; it is not a reading and is not written to ``sensor_readings``.
    """

    v: Literal[1]
    sensor_id: list[str]
    company_id: list[str]
    ts_us: list[int]
    value: list[float | None]
    unit: list[str | None]
    quality_score: list[float | None]
    ambient_temperature: list[float | None]
    ambient_humidity: list[float | None]
    weather_conditions: list[str | None]
    received_us: list[int]
    anomaly_score: list[float]
    is_anomaly: list[bool]
    anomaly_type: list[str | None]
    gateways: NotRequired[dict[str, str]]


SCORED_BATCH: Final = TypeAdapter(ScoredBatch)
SCORE_COLUMNS: Final = ("anomaly_score", "is_anomaly", "anomaly_type")


class DeadLetterReason(StrEnum):
    """Why a message or item was rejected; counted per reason in the metrics."""

    INVALID_TOPIC = "invalid_topic"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MALFORMED_JSON = "malformed_json"
    INVALID_SCHEMA = "invalid_schema"
    NON_FINITE_VALUE = "non_finite_value"
    VALUE_OUT_OF_RANGE = "value_out_of_range"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    UNKNOWN_SENSOR = "unknown_sensor"
    TENANT_MISMATCH = "tenant_mismatch"
    UNDECODABLE_RECORD = "undecodable_record"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"


class DeadLetter(_Event):
    """A rejected message (or one item of a batch), with enough to diagnose and replay it."""

    v: Literal[1] = 1
    reason: DeadLetterReason
    detail: str
    source: str  # "mqtt:<topic>" or "kafka:<topic>/<partition>@<offset>"
    company_id: str | None = None
    item_index: int | None = None  # position in a gateway batch
    received_at: dt.datetime
    payload: str  # UTF-8 text, or base64 prefixed "base64:" for binary
    payload_size: int
    truncated: bool = False

    @classmethod
    def of(
        cls,
        reason: DeadLetterReason,
        detail: str,
        source: str,
        raw: bytes | None,
        *,
        limit: int = 4096,
    ) -> DeadLetter:
        """A dead letter for `raw`, received now (payload cut at `limit` bytes, detail at 500)."""
        data = raw or b""
        text, truncated = payload_text(data, limit)
        return cls(
            reason=reason,
            detail=detail[:500],
            source=source,
            received_at=dt.datetime.now(dt.UTC),
            payload=text,
            payload_size=len(data),
            truncated=truncated,
        )


def payload_text(raw: bytes, limit: int) -> tuple[str, bool]:
    """A dead letter's ``payload``: the first `limit` bytes as UTF-8, else ``base64:``.

    Returns (text, truncated).

    >>> payload_text(bytes([255]), 10)
    ('base64:/w==', False)
    """
    shown = raw[:limit]
    try:
        text = shown.decode()
    except UnicodeDecodeError:
        text = "base64:" + base64.b64encode(shown).decode()
    return text, len(raw) > limit


class SensorStatusEvent(_Event):
    """A device's status message, resolved to its sensor."""

    v: Literal[1] = 1
    sensor_id: UUID
    company_id: UUID
    timestamp: dt.datetime
    battery_level_percent: int | None = None
    heartbeat: bool = True
    received_at: dt.datetime


HEALTH_SCHEMA: Final = b"pipeline.health/1"


class PipelineHealth(_Event):
    """Value of a ``pipeline.health`` record: the pipeline itself was down, not the sensors.

    One per outage (ingest down or cut from MQTT, Kafka unreachable, the stream
    stopped long enough to miss ingest's heartbeats), sent by the stream worker
    that holds partition 0 of ``sensor.readings.raw``. No sensor is judged
    ``missing`` between ``since`` and ``until`` plus each sensor's allowance, so
    the outage opens no sensor work order. ``until`` is None when the outage was
    declared while it lasted (``live``); the record key is ``outage_id``.
    """

    v: Literal[1] = 1
    outage_id: UUID  # uuid5 of (reporter, since): a resend carries the same id
    cause: Literal["no_heartbeat", "mqtt_disconnected"]
    since: dt.datetime  # the last ingest heartbeat before it
    until: dt.datetime | None
    live: bool
    partitions: list[int]  # of sensor.readings.raw, held by the reporter
    reporter: str
    detected_at: dt.datetime


WORKORDER_SCHEMA: Final = b"workorders.requested/1"
WORKORDER_UPDATE_SCHEMA: Final = b"workorders.updated/1"
NOTIFICATION_SCHEMA: Final = b"notifications.requested/1"
OUTCOME_SCHEMA: Final = b"workorders.outcomes/1"


class EvidenceItem(_Event):
    """A reading behind a work order; ``(sensor_id, reading_timestamp)`` is its row key."""

    sensor_id: UUID
    reading_timestamp: dt.datetime
    value: float | None
    anomaly_score: float
    anomaly_type: str | None


class ForecastItem(_Event):
    """A predicted threshold crossing (``maintenance_due`` triggers)."""

    prediction_id: UUID  # the maintenance_predictions row
    predicted_crossing_at: dt.datetime
    threshold: float
    slope_per_hour: float
    confidence_score: float
    severity: str
    recommended_action: str


class _WorkOrderEvent(_Event):
    """What a work-order request and an update both say: the incident and its evidence."""

    v: Literal[1] = 1
    idempotency_key: UUID
    incident_id: UUID
    company_id: UUID
    customer_equipment_id: UUID
    sensor_id: UUID
    trigger_id: UUID
    trigger_number: str
    opened_at: dt.datetime
    requested_at: dt.datetime
    evidence: list[EvidenceItem]


class WorkOrderRequested(_WorkOrderEvent):
    """Value of a ``workorders.requested`` record: the FSM should open one work order.

    ``idempotency_key`` is the incident's key: the same incident always carries
    the same key (a restart or a replay may send it again; the FSM keeps one).
    The record key is ``idempotency_key``.
    """

    work_order_template_id: UUID | None
    priority_level: str
    title: str
    description: str
    forecast: ForecastItem | None = None
    # What the technician visits: the equipment (default), or a gateway gone offline
    # (``gateway_id``; its silent sensors arrive as updates).
    subject: Literal["equipment", "gateway"] = "equipment"
    gateway_id: str | None = None


class WorkOrderUpdated(_WorkOrderEvent):
    """On ``workorders.requested``, header ``workorders.updated/1``: evidence for an open order.

    An incident on the same equipment (or behind the same offline gateway) while
    its work order is open joins that work order instead of requesting another.
    The record key is the work order's ``idempotency_key`` (the order's, not this
    incident's), so the update follows its request on the same partition;
    ``update_id`` is stable across resends.
    """

    event: Literal["updated"] = "updated"
    update_id: UUID  # uuid5(work order, incident)
    summary: str


class NotificationRequested(_Event):
    """Value of a ``notifications.requested`` record: tell a customer or a technician."""

    v: Literal[1] = 1
    idempotency_key: UUID  # uuid5(incident, audience)
    incident_id: UUID
    company_id: UUID
    customer_equipment_id: UUID
    sensor_id: UUID
    trigger_id: UUID
    audience: Literal["customer", "technician"]
    message: str
    requested_at: dt.datetime


class WorkOrderOutcome(_Event):
    """Value of a ``workorders.outcomes`` record, sent by the FSM when a work order ends.

    ``resolved``: the problem was real and fixed (closes the incident);
    ``false_positive``: nothing was wrong (counts against the trigger's
    ``false_positive_rate``). ``actual_failure_date`` marks a prediction's accuracy.
    """

    v: Literal[1] = 1
    idempotency_key: UUID  # of the WorkOrderRequested
    outcome: Literal["resolved", "false_positive"]
    work_order_id: UUID | None = None
    actual_failure_date: dt.date | None = None
    at: dt.datetime
