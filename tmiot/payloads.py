"""MQTT payload contract, version 1: what gateways and sensors publish.

Topics (``company_id`` is the tenant's UUID, ``device_id`` the sensor's
``equipment_sensors.device_id``, or its ``sensor_number``):

- ``tenants/{company_id}/sensors/{device_id}/readings``: one :class:`ReadingPayload`;
- ``tenants/{company_id}/gateways/{gateway_id}/readings``: one :class:`GatewayBatch`;
- ``tenants/{company_id}/sensors/{device_id}/status``: one :class:`StatusPayload`.

JSON, UTF-8. Field names follow ``sensor_readings``. ``timestamp`` is RFC 3339
with a UTC offset, or epoch milliseconds. See docs/contracts.md.

Example:
    >>> r = READING.validate_json(b'{"timestamp": 1764057600000, "value": 21.5}')
    >>> r["timestamp"].isoformat(), r["value"]
    ('2025-11-25T08:00:00+00:00', 21.5)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final, Literal, NotRequired

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    with_config,
)
from typing_extensions import TypedDict

__all__ = [
    "BATCH",
    "BATCH_ENVELOPE",
    "CONTRACT_VERSION",
    "GATEWAY_ITEM",
    "READING",
    "STATUS",
    "GatewayBatch",
    "GatewayEnvelope",
    "GatewayReading",
    "ReadingPayload",
    "StatusPayload",
    "TopicKind",
    "TopicRef",
    "parse_topic",
    "subscription_filters",
]

CONTRACT_VERSION: Final = 1

# NUMERIC(15,6) holds magnitudes below 10**9.
VALUE_LIMIT: Final = 1e9

# PostgreSQL text cannot hold NUL: refused here (invalid_schema) rather than by the
# stream's insert, after the reading was already scored and published.
Text = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")]
# A JSON number, nothing else: lax mode would take `true` as 1.0 and "2.5" as 2.5.
Number = Annotated[float, Strict()]
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=128)]

# TypedDicts rather than models: validation and serialisation then run in
# pydantic-core (Rust) without building Python objects per reading, which the
# batch path needs (a model_construct costs more than the whole validation).
# NaN and Infinity are refused at parse time (reason `non_finite_value`).
_CONFIG: Final = ConfigDict(allow_inf_nan=False, extra="ignore")


@with_config(_CONFIG)
class ReadingPayload(TypedDict):
    """One reading of one sensor."""

    v: NotRequired[Literal[1]]
    timestamp: AwareDatetime
    value: Number
    unit: NotRequired[Text | None]
    quality_score: NotRequired[Annotated[Number, Field(ge=0, le=1)] | None]
    ambient_temperature: NotRequired[Annotated[Number, Field(ge=-100, le=200)] | None]
    ambient_humidity: NotRequired[Annotated[Number, Field(ge=0, le=100)] | None]
    weather_conditions: NotRequired[Text | None]


@with_config(_CONFIG)
class GatewayReading(ReadingPayload):
    """One item of a gateway batch: a reading plus the sensor it belongs to."""

    device_id: DeviceId


@with_config(_CONFIG)
class GatewayBatch(TypedDict):
    """Readings of many sensors behind one gateway, in one message."""

    v: NotRequired[Literal[1]]
    readings: Annotated[list[GatewayReading], Field(min_length=1, max_length=10_000)]


@with_config(_CONFIG)
class GatewayEnvelope(TypedDict):
    """A gateway batch with its items unchecked: the fallback that validates item by item."""

    v: NotRequired[Literal[1]]
    readings: Annotated[list[object], Field(min_length=1, max_length=10_000)]


@with_config(_CONFIG)
class StatusPayload(TypedDict):
    """Device status: battery level and heartbeat."""

    v: NotRequired[Literal[1]]
    timestamp: AwareDatetime
    battery_level_percent: NotRequired[Annotated[int, Field(ge=0, le=100)] | None]
    heartbeat: NotRequired[bool]
    firmware: NotRequired[Text | None]
    rssi_dbm: NotRequired[Annotated[int, Field(ge=-200, le=0)] | None]


READING: Final = TypeAdapter(ReadingPayload)
GATEWAY_ITEM: Final = TypeAdapter(GatewayReading)
BATCH: Final = TypeAdapter(GatewayBatch)
BATCH_ENVELOPE: Final = TypeAdapter(GatewayEnvelope)
STATUS: Final = TypeAdapter(StatusPayload)


class TopicKind(StrEnum):
    """What a topic carries."""

    READING = "reading"
    BATCH = "batch"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class TopicRef:
    """A parsed MQTT topic: tenant, what it carries, and the device or gateway."""

    company_id: str
    kind: TopicKind
    source_id: str  # device_id for READING/STATUS, gateway_id for BATCH


_UUID_LEN: Final = 36


def parse_topic(topic: str) -> TopicRef | None:
    """Parse a topic of the contract; None when it is not one.

    >>> parse_topic("tenants/6f1c1f9e-8b4e-4c1e-9d3a-1a2b3c4d5e6f/sensors/dev-7/status").kind
    <TopicKind.STATUS: 'status'>
    >>> parse_topic("tenants/x/sensors/dev-7/readings") is None
    True
    """
    # str.split beats a regex here, and this runs once per message.
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "tenants" or not parts[3] or len(parts[3]) > 128:  # noqa: PLR2004
        return None
    company = parts[1]
    if len(company) != _UUID_LEN or not _is_uuid(company):
        return None
    if parts[2] == "sensors":
        if parts[4] == "readings":
            return TopicRef(company.lower(), TopicKind.READING, parts[3])
        if parts[4] == "status":
            return TopicRef(company.lower(), TopicKind.STATUS, parts[3])
    elif parts[2] == "gateways" and parts[4] == "readings":
        return TopicRef(company.lower(), TopicKind.BATCH, parts[3])
    return None


_HEX: Final = frozenset("0123456789abcdefABCDEF")


@functools.lru_cache(maxsize=4096)  # companies are few; this runs once per message
def _is_uuid(text: str) -> bool:
    digits = text.replace("-", "")
    return (
        text[8] == text[13] == text[18] == text[23] == "-"
        and len(digits) == 32  # noqa: PLR2004
        and _HEX.issuperset(digits)
    )


def subscription_filters(share_group: str | None) -> list[str]:
    """The MQTT topic filters ingest subscribes to (shared when a group is set)."""
    filters = [
        "tenants/+/sensors/+/readings",
        "tenants/+/gateways/+/readings",
        "tenants/+/sensors/+/status",
    ]
    if share_group:
        return [f"$share/{share_group}/{f}" for f in filters]
    return filters
