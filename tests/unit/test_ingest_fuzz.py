"""Property tests of ingest's validation over every MQTT payload form (docs/contracts.md).

Valid payloads of each form (single reading, gateway batch, status) are generated,
then mutated: a field dropped or of a wrong type, NaN and Infinity, absurd
timestamps, out-of-range values, deep or huge JSON, bytes that are not UTF-8,
truncation, oversize. Whatever comes in, the validator returns; a valid payload is
accepted whole; anything else becomes exactly one dead letter per rejected message
or batch item, with a reason of the contract, a detail, and a record that
round-trips through its JSON form.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.sensors import SensorDirectory, SensorInfo
from ingest.validation import Outcome, Validator
from tmiot.config import IngestSettings
from tmiot.events import DeadLetter, DeadLetterReason

A = str(uuid.UUID(int=1))
B = str(uuid.UUID(int=2))
SENSORS = {"dev-1": str(uuid.UUID(int=11)), "SENS-002": str(uuid.UUID(int=12))}
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
LIMITS = IngestSettings(max_payload_bytes=64 * 1024, max_age_seconds=86_400, max_future_seconds=300)
SINGLE = f"tenants/{A}/sensors/dev-1/readings"
BATCH = f"tenants/{A}/gateways/gw-1/readings"
STATUS = f"tenants/{A}/sensors/dev-1/status"

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _validator() -> Validator:
    d = SensorDirectory()
    d.upsert(SensorInfo.of(SENSORS["dev-1"], A, "dev-1", "SENS-001"))
    d.upsert(SensorInfo.of(SENSORS["SENS-002"], A, None, "SENS-002"))
    d.upsert(SensorInfo.of(str(uuid.UUID(int=21)), B, "dev-b", "SENS-003"))
    return Validator(d, LIMITS)


# --- valid payloads ------------------------------------------------------------------

_OFFSETS = st.integers(-23 * 60, 23 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
_INSTANTS = st.datetimes(
    min_value=(NOW - dt.timedelta(seconds=LIMITS.max_age_seconds - 1)).replace(tzinfo=None),
    max_value=(NOW + dt.timedelta(seconds=LIMITS.max_future_seconds - 1)).replace(tzinfo=None),
)
_TIMESTAMPS = st.one_of(
    st.builds(
        lambda at, tz: at.replace(tzinfo=dt.UTC).astimezone(tz).isoformat(), _INSTANTS, _OFFSETS
    ),
    _INSTANTS.map(lambda at: int(at.replace(tzinfo=dt.UTC).timestamp() * 1000)),
)
# Any text JSON can carry: no NUL (refused), no lone surrogate (not UTF-8, so the
# whole message is malformed_json; RAW_DAMAGE covers that).
_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=200
)
_VALUES = st.floats(-1e9, 1e9, exclude_min=True, exclude_max=True) | st.integers(-999, 999)
_OPTIONAL = {
    "v": st.just(1),
    "unit": _TEXT | st.none(),
    "quality_score": st.floats(0, 1) | st.none(),
    "ambient_temperature": st.floats(-100, 200) | st.none(),
    "ambient_humidity": st.floats(0, 100) | st.none(),
    "weather_conditions": _TEXT | st.none(),
    "firmware_extra": st.text(max_size=20),  # unknown fields are ignored
}
READINGS = st.fixed_dictionaries({"timestamp": _TIMESTAMPS, "value": _VALUES}, optional=_OPTIONAL)
ITEMS = st.builds(lambda r, d: {**r, "device_id": d}, READINGS, st.sampled_from(list(SENSORS)))
STATUSES = st.fixed_dictionaries(
    {"timestamp": _TIMESTAMPS},
    optional={
        "battery_level_percent": st.integers(0, 100) | st.none(),
        "heartbeat": st.booleans(),
        "firmware": _TEXT | st.none(),
        "rssi_dbm": st.integers(-200, 0) | st.none(),
    },
)

# --- mutations: (field, bad value, the reasons it may give) ----------------------------

_WRONG = st.one_of(
    st.none(), st.booleans(), st.lists(st.integers(), max_size=3), st.dictionaries(_TEXT, _TEXT)
)
_NOT_NULL = _WRONG.filter(lambda x: x is not None)  # optional fields may be null
_SCHEMA = {"invalid_schema"}
_TIME = {"invalid_schema", "timestamp_in_future", "timestamp_too_old"}
_ABSURD_TIMES = st.one_of(
    st.datetimes(timezones=_OFFSETS).map(lambda at: at.isoformat()),  # years 1..9999
    st.datetimes().map(lambda at: at.isoformat()),  # no offset
    st.integers().map(lambda n: n * 10 ** st_pow(n)),  # any epoch, or none at all
    st.text(max_size=30),
    _WRONG,
)


def st_pow(n: int) -> int:
    """A power of ten that makes some integers astronomically large."""
    return 30 if n % 7 == 0 else 0


FIELD_MUTATIONS = st.one_of(
    st.tuples(st.sampled_from(["timestamp", "value"]), st.just(...), st.just(_SCHEMA)),  # drop
    st.tuples(st.just("value"), _WRONG | _TEXT, st.just(_SCHEMA)),
    st.tuples(st.just("timestamp"), _ABSURD_TIMES, st.just(_TIME)),
    st.tuples(
        st.just("value"),
        st.floats(1e9, 1e300) | st.floats(-1e300, -1e9) | st.integers(10**9, 10**40),
        st.just({"value_out_of_range", "non_finite_value"}),
    ),
    st.tuples(
        st.just("quality_score"), st.floats(1.0001, 1e6) | _NOT_NULL | _TEXT, st.just(_SCHEMA)
    ),
    st.tuples(st.just("ambient_humidity"), st.floats(-1e6, -0.0001), st.just(_SCHEMA)),
    st.tuples(st.sampled_from(["unit", "weather_conditions"]), _NOT_NULL, st.just(_SCHEMA)),
    st.tuples(st.just("unit"), st.text(min_size=201, max_size=400), st.just(_SCHEMA)),
    st.tuples(st.just("unit"), st.just("nul\x00inside"), st.just(_SCHEMA)),
    st.tuples(st.just("v"), st.integers().filter(lambda v: v != 1) | _TEXT, st.just(_SCHEMA)),
    st.tuples(
        st.sampled_from(["value", "quality_score", "ambient_temperature"]),
        st.sampled_from([float("nan"), float("inf"), float("-inf")]),
        st.just({"non_finite_value"}),
    ),
    st.tuples(
        st.just("unit"),
        st.integers(1, 150).map(lambda n: json.loads("[" * n + "]" * n)),
        st.just(_SCHEMA),
    ),
)


def _mutate(reading: dict[str, Any], mutation: tuple[str, Any, set[str]]) -> dict[str, Any]:
    name, bad, _ = mutation
    out = dict(reading)
    if bad is ...:
        out.pop(name, None)
    else:
        out[name] = bad
    return out


def _dumps(body: object) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


# Whole-message damage: (payload transform, the reasons it may give).
_WHOLE_REASONS = {"malformed_json", "invalid_schema", "payload_too_large"}
RAW_DAMAGE = st.one_of(
    st.integers(0, 10_000).map(lambda i: lambda b: b[: i % max(len(b), 1)]),  # truncated
    st.binary(min_size=1, max_size=4).map(lambda junk: lambda b: b[:-1] + b"\xff" + junk),
    st.integers(200, 20_000).map(lambda n: lambda b: b"[" * n + b + b"]" * n),  # deep
    st.just(lambda b: b + b" " * LIMITS.max_payload_bytes),  # oversized
    st.just(lambda b: b.decode().encode("utf-16")),
    st.just(lambda _: b""),
    st.binary(max_size=200).map(lambda junk: lambda _: junk),
)


# --- what every outcome must satisfy ---------------------------------------------------


def _check_letters(out: Outcome, topic: str, payload: bytes) -> None:
    known = {r.value for r in DeadLetterReason}
    for letter in out.rejections:
        assert letter.reason.value in known
        assert letter.detail
        assert letter.source == f"mqtt:{topic}"
        assert letter.company_id == A
        assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
        if letter.item_index is None:
            assert letter.payload_size == len(payload)
            if not letter.truncated and not letter.payload.startswith("base64:"):
                assert letter.payload.encode() == payload


# --- single readings -----------------------------------------------------------------


@FUZZ
@given(reading=READINGS)
def test_a_valid_single_reading_is_accepted(reading: dict[str, Any]) -> None:
    out = _validator().process(SINGLE, _dumps(reading), NOW)
    assert not out.rejections
    [row] = out.readings
    assert row[0] == SENSORS["dev-1"]
    assert row[3] == reading["value"]


@FUZZ
@given(reading=READINGS, mutation=FIELD_MUTATIONS)
def test_a_damaged_single_reading_is_one_dead_letter_with_its_reason(
    reading: dict[str, Any], mutation: tuple[str, Any, set[str]]
) -> None:
    payload = _dumps(_mutate(reading, mutation))
    out = _validator().process(SINGLE, payload, NOW)
    assert not out.readings
    [letter] = out.rejections
    assert letter.reason.value in mutation[2] | {"malformed_json"}, letter.detail
    _check_letters(out, SINGLE, payload)


@FUZZ
@given(
    topic=st.sampled_from([SINGLE, BATCH, STATUS]),
    body=READINGS | ITEMS | STATUSES,
    damage=RAW_DAMAGE,
)
def test_damaged_bytes_are_one_dead_letter_of_any_form(
    topic: str, body: dict[str, Any], damage: Any
) -> None:
    payload = damage(_dumps({"readings": [body]} if topic == BATCH else body))
    out = _validator().process(topic, payload, NOW)
    assert len(out.readings) + len(out.statuses) + len(out.rejections) >= 1
    if out.rejections:
        assert not out.readings
        assert not out.statuses
        assert {r.reason.value for r in out.rejections} <= _WHOLE_REASONS | _SCHEMA
    _check_letters(out, topic, payload)


@FUZZ
@given(topic=st.text(max_size=300), payload=st.binary(max_size=100))
def test_any_topic_is_taken_or_rejected_as_invalid_topic(topic: str, payload: bytes) -> None:
    out = _validator().process(topic, payload, NOW)
    if out.kind is None:
        assert [r.reason.value for r in out.rejections] == ["invalid_topic"]


# --- gateway batches -----------------------------------------------------------------

_BAD_ITEMS = st.one_of(
    st.builds(lambda r, m: (_mutate(r, m), m[2]), ITEMS, FIELD_MUTATIONS),
    st.builds(lambda r: ({**r, "device_id": "nobody"}, {"unknown_sensor"}), ITEMS),
    st.builds(lambda r: ({**r, "device_id": "dev-b"}, {"tenant_mismatch"}), ITEMS),
    st.builds(lambda r: ({**r, "device_id": "SENS-003"}, {"tenant_mismatch"}), ITEMS),
    st.builds(lambda r: (_mutate(r, ("device_id", ..., set())), _SCHEMA), ITEMS),
    st.builds(lambda r, d: ({**r, "device_id": d}, _SCHEMA), ITEMS, _WRONG | st.just("")),
    st.tuples(_WRONG | _TEXT, st.just(_SCHEMA)),  # not an object
)


@FUZZ
@given(
    items=st.lists(
        st.tuples(st.just(True), ITEMS) | st.tuples(st.just(False), _BAD_ITEMS),  # noqa: FBT003
        min_size=1,
        max_size=30,
    )
)
def test_a_batch_keeps_its_good_items_and_dead_letters_each_bad_one(
    items: list[tuple[bool, Any]],
) -> None:
    body = [item if good else item[0] for good, item in items]
    payload = _dumps({"v": 1, "readings": body})
    out = _validator().process(BATCH, payload, NOW)
    good = [item for ok, item in items if ok]
    assert [r[3] for r in out.readings] == [item["value"] for item in good]
    assert [r[0] for r in out.readings] == [SENSORS[item["device_id"]] for item in good]
    bad = {i: item[1] for i, (ok, item) in enumerate(items) if not ok}
    assert [r.item_index for r in out.rejections] == sorted(bad)
    for letter in out.rejections:
        assert letter.item_index is not None
        assert letter.reason.value in bad[letter.item_index], letter.detail
        assert letter.detail.startswith(
            f"readings.{letter.item_index}."
        ) or letter.reason.value in {
            "unknown_sensor",
            "tenant_mismatch",
            "timestamp_in_future",
            "timestamp_too_old",
            "value_out_of_range",
        }
    tenant = [i for i, reasons in bad.items() if reasons == {"tenant_mismatch"}]
    assert len(out.violations) == len(tenant)
    _check_letters(out, BATCH, payload)


@FUZZ
@given(
    envelope=st.one_of(
        st.builds(lambda r: {"readings": r}, _WRONG.filter(lambda x: not isinstance(x, list))),
        st.just({"readings": []}),
        st.just({}),
        st.builds(lambda items: {"v": 2, "readings": items}, st.lists(ITEMS, min_size=1)),
        st.builds(lambda item: {"readings": [item] * 10_001}, st.just({})),
        _WRONG | _TEXT,
    )
)
def test_a_broken_batch_envelope_is_one_dead_letter(envelope: object) -> None:
    payload = _dumps(envelope)
    out = _validator().process(BATCH, payload, NOW)
    assert not out.readings
    [letter] = out.rejections
    assert letter.reason.value in _SCHEMA | {"payload_too_large"}
    assert letter.item_index is None
    _check_letters(out, BATCH, payload)


# --- status ---------------------------------------------------------------------------


@FUZZ
@given(status=STATUSES, damage=st.none() | FIELD_MUTATIONS)
def test_status_messages_are_accepted_or_one_dead_letter(
    status: dict[str, Any], damage: tuple[str, Any, set[str]] | None
) -> None:
    body = status if damage is None else _mutate(status, damage)
    payload = _dumps(body)
    out = _validator().process(STATUS, payload, NOW)
    if damage is None:
        assert [str(s.sensor_id) for s in out.statuses] == [SENSORS["dev-1"]]
        assert not out.rejections
    else:
        # A reading's fields are unknown (ignored) on a status topic, except the timestamp.
        assert len(out.statuses) + len(out.rejections) == 1
        for letter in out.rejections:
            assert letter.reason.value in _SCHEMA | {"malformed_json", "non_finite_value"}
    _check_letters(out, STATUS, payload)
