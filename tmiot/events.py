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

import datetime as dt
from enum import StrEnum
from typing import Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, TypeAdapter
from typing_extensions import TypedDict

__all__ = [
    "DEADLETTER_SCHEMA",
    "RAW_SCHEMA",
    "READING_BATCH",
    "SCHEMA_HEADER",
    "STATUS_SCHEMA",
    "DeadLetter",
    "DeadLetterReason",
    "RawReading",
    "ReadingBatch",
    "SensorStatusEvent",
]

SCHEMA_HEADER: Final = "tmiot-schema"
RAW_SCHEMA: Final = b"sensor.readings.raw/1"
DEADLETTER_SCHEMA: Final = b"sensor.readings.deadletter/1"
STATUS_SCHEMA: Final = b"sensor.status/1"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class RawReading(TypedDict):
    """A validated, tenant-checked reading, resolved to its sensor.

    Ids are UUIDs in canonical text form; times are RFC 3339 with offset.
    """

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


class ReadingBatch(TypedDict):
    """Value of a ``sensor.readings.raw`` record: readings of one partition, in order."""

    v: Literal[1]
    readings: list[RawReading]


# A TypedDict, not a model: records carry hundreds of readings, and
# pydantic-core then encodes and decodes them without a Python object each.
READING_BATCH: Final = TypeAdapter(ReadingBatch)


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


class SensorStatusEvent(_Event):
    """A device's status message, resolved to its sensor."""

    v: Literal[1] = 1
    sensor_id: UUID
    company_id: UUID
    timestamp: dt.datetime
    battery_level_percent: int | None = None
    heartbeat: bool = True
    received_at: dt.datetime
