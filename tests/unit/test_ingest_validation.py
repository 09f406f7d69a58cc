from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.sensors import SensorDirectory, SensorInfo
from ingest.validation import Validator
from tmiot.config import IngestSettings
from tmiot.events import DeadLetterReason, to_us

A = str(uuid.UUID(int=1))
B = str(uuid.UUID(int=2))
S1 = str(uuid.UUID(int=11))
S2 = str(uuid.UUID(int=12))
SB = str(uuid.UUID(int=21))
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
TS = int(NOW.timestamp() * 1000) - 1000


@pytest.fixture
def validator() -> Validator:
    d = SensorDirectory()
    d.upsert(SensorInfo.of(S1, A, "dev-1", "SENS-001"))
    d.upsert(SensorInfo.of(S2, A, None, "SENS-002"))
    d.upsert(SensorInfo.of(SB, B, "dev-b", "SENS-003"))
    return Validator(d, IngestSettings(max_payload_bytes=2048, max_age_seconds=3600))


def _single(v: Validator, device: str, body: object, company: str = A) -> list[str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = v.process(f"tenants/{company}/sensors/{device}/readings", raw, NOW)
    return [r.reason.value for r in out.rejections] or ["ok"] * len(out.readings)


def test_a_good_reading_resolves_by_device_id_or_sensor_number(validator: Validator) -> None:
    out = validator.process(
        f"tenants/{A}/sensors/dev-1/readings",
        json.dumps({"timestamp": TS, "value": 3.5, "unit": "degC", "quality_score": 0.9}).encode(),
        NOW,
    )
    assert not out.rejections
    [row] = out.readings
    assert row[:4] == (S1, A, TS * 1000, 3.5)
    assert row[4:9] == ("degC", 0.9, None, None, None)
    assert row[9] == to_us(NOW)
    assert _single(validator, "SENS-002", {"timestamp": "2026-11-25T11:59:00Z", "value": 1}) == [
        "ok"
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe\x00", "malformed_json"),
        (b"[]", "invalid_schema"),
        ({"value": 1}, "invalid_schema"),
        ({"timestamp": TS}, "invalid_schema"),
        ({"timestamp": TS, "value": "warm"}, "invalid_schema"),
        ({"timestamp": TS, "value": "2.5"}, "invalid_schema"),
        ({"timestamp": TS, "value": True}, "invalid_schema"),
        ({"timestamp": TS, "value": 1, "quality_score": False}, "invalid_schema"),
        ({"timestamp": TS, "value": 1, "unit": "deg\u0000C"}, "invalid_schema"),
        ({"timestamp": TS, "value": 1, "weather_conditions": "\u0000"}, "invalid_schema"),
        ({"timestamp": "2026-11-25T11:00:00", "value": 1}, "invalid_schema"),
        ({"timestamp": TS, "value": 1, "quality_score": 1.5}, "invalid_schema"),
        ({"timestamp": TS, "value": 1, "v": 2}, "invalid_schema"),
        (b'{"timestamp": %d, "value": NaN}' % TS, "non_finite_value"),
        (b'{"timestamp": %d, "value": -Infinity}' % TS, "non_finite_value"),
        (b'{"timestamp": %d, "value": 1e999}' % TS, "non_finite_value"),
        ({"timestamp": TS, "value": 1e9}, "value_out_of_range"),
        ({"timestamp": TS, "value": -2e12}, "value_out_of_range"),
        ({"timestamp": TS + 302_000, "value": 1}, "timestamp_in_future"),
        ({"timestamp": "2001-01-01T00:00:00Z", "value": 1}, "timestamp_too_old"),
        ({"timestamp": TS, "value": 1, "unit": "x" * 3000}, "payload_too_large"),
    ],
)
def test_bad_single_readings_are_dead_lettered(
    validator: Validator, body: object, reason: str
) -> None:
    assert _single(validator, "dev-1", body) == [reason]


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("0001-01-01T00:00:00+01:00", "timestamp_too_old"),
        ("0001-01-01T00:00:00Z", "timestamp_too_old"),
        ("9999-12-31T23:59:59-23:59", "timestamp_in_future"),
        ("9999-12-31T23:59:59.999999Z", "timestamp_in_future"),
    ],
)
def test_timestamps_at_the_ends_of_the_calendar_are_rejected_not_raised(
    validator: Validator, stamp: str, reason: str
) -> None:
    # The rejection's detail once converted the microseconds back to a datetime,
    # which overflows here: one such reading stopped ingest (and, redelivered, again).
    body = {"timestamp": stamp, "value": 1}
    assert _single(validator, "dev-1", body) == [reason]
    batch = json.dumps({"readings": [{"device_id": "dev-1", **body}]}).encode()
    out = validator.process(f"tenants/{A}/gateways/g/readings", batch, NOW)
    assert [r.reason.value for r in out.rejections] == [reason]
    assert stamp[:10] in out.rejections[0].detail


def test_unknown_and_foreign_sensors(validator: Validator) -> None:
    assert _single(validator, "dev-404", {"timestamp": TS, "value": 1}) == ["unknown_sensor"]
    out = validator.process(
        f"tenants/{A}/sensors/dev-b/readings", b'{"timestamp": %d, "value": 1}' % TS, NOW
    )
    assert [r.reason for r in out.rejections] == [DeadLetterReason.TENANT_MISMATCH]
    [violation] = out.violations
    assert violation.company_id == A
    assert violation.owners == frozenset({B})
    assert not out.readings


def test_invalid_topics(validator: Validator) -> None:
    for topic in ("tenants/not-a-uuid/sensors/dev-1/readings", f"tenants/{A}/sensors/dev-1/x"):
        out = validator.process(topic, b"{}", NOW)
        assert [r.reason for r in out.rejections] == [DeadLetterReason.INVALID_TOPIC]


def test_a_batch_keeps_its_good_items(validator: Validator) -> None:
    items = [
        {"device_id": "dev-1", "timestamp": TS, "value": 1.0},
        {"device_id": "dev-1", "timestamp": TS, "value": float("nan")},
        {"device_id": "SENS-002", "timestamp": TS, "value": 2.0},
        {"timestamp": TS, "value": 3.0},
        {"device_id": "dev-b", "timestamp": TS, "value": 4.0},
        {"device_id": "dev-1", "timestamp": TS + 10_000_000, "value": 5.0},
        "garbage",
        {"device_id": "SENS-002", "timestamp": TS + 1, "value": 6.0},
    ]
    body = json.dumps({"readings": items}, allow_nan=True).encode()
    out = validator.process(f"tenants/{A}/gateways/gw-1/readings", body, NOW)
    assert [r[3] for r in out.readings] == [1.0, 2.0, 6.0]
    assert [(r.item_index, r.reason.value) for r in out.rejections] == [
        (1, "non_finite_value"),
        (3, "invalid_schema"),
        (4, "tenant_mismatch"),
        (5, "timestamp_in_future"),
        (6, "invalid_schema"),
    ]
    assert json.loads(out.rejections[1].payload) == {"timestamp": TS, "value": 3.0}


def test_dead_letter_payloads_are_truncated_and_binary_safe(validator: Validator) -> None:
    v = Validator(validator._directory, IngestSettings(deadletter_payload_limit=64))  # noqa: SLF001
    out = v.process(f"tenants/{A}/sensors/dev-1/readings", b"\x80" * 1000, NOW)
    [letter] = out.rejections
    assert letter.truncated
    assert letter.payload_size == 1000
    assert letter.payload.startswith("base64:")


def test_status_messages_become_status_events(validator: Validator) -> None:
    out = validator.process(
        f"tenants/{A}/sensors/dev-1/status",
        b'{"timestamp": %d, "battery_level_percent": 42}' % TS,
        NOW,
    )
    [status] = out.statuses
    assert str(status.sensor_id) == S1
    assert status.battery_level_percent == 42
    bad = validator.process(
        f"tenants/{A}/sensors/dev-1/status", b'{"timestamp": 1, "battery_level_percent": 420}', NOW
    )
    assert [r.reason.value for r in bad.rejections] == ["invalid_schema"]


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from(
        [
            f"tenants/{A}/sensors/dev-1/readings",
            f"tenants/{A}/gateways/g/readings",
            f"tenants/{A}/sensors/dev-1/status",
        ]
    ),
    payload=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda c: (
                st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=12), c, max_size=6)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_no_input_makes_the_validator_raise(topic: str, payload: bytes) -> None:
    d = SensorDirectory()
    d.upsert(SensorInfo.of(S1, A, "dev-1", "SENS-001"))
    out = Validator(d, IngestSettings()).process(topic, payload, NOW)
    # Every message is accounted for: accepted, or each problem dead-lettered.
    assert out.readings or out.rejections or out.statuses


def test_directory_patches() -> None:
    d = SensorDirectory()
    d.upsert(SensorInfo.of(S1, A, "dev-1", "SENS-001"))
    d.upsert(SensorInfo.of(S1, B, "dev-9", "SENS-001"))  # moved to B, new device id
    assert d.resolve(A, "dev-1")[0].value == "unknown"
    assert d.resolve(B, "dev-9")[0].value == "found"
    assert d.resolve(A, "SENS-001")[0].value == "other_tenant"
    d.remove(S1)
    assert len(d) == 0
    assert d.resolve(B, "SENS-001")[0].value == "unknown"
