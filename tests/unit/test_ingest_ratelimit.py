from __future__ import annotations

import datetime as dt
import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.ratelimit import RejectionLimiter, source_of
from ingest.sensors import SensorDirectory, SensorInfo
from ingest.validation import Validator
from tmiot.config import IngestSettings
from tmiot.events import DeadLetterReason

A = str(uuid.UUID(int=1))
B = str(uuid.UUID(int=2))
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
TS = int(NOW.timestamp() * 1000) - 1000


def test_sources_are_gateways_or_a_tenants_sensor_topics() -> None:
    assert source_of(f"tenants/{A}/gateways/gw-1/readings") == f"{A}/gateways/gw-1"
    # Device ids are the publisher's to invent: they share one source per tenant.
    assert source_of(f"tenants/{A}/sensors/x/readings") == source_of(
        f"tenants/{A}/sensors/y/status"
    )
    assert source_of("spam") == source_of("a/b/c/d/e/f") == "(other)"
    assert len(source_of("tenants/" + "x" * 10_000 + "/gateways/" + "y" * 10_000)) < 300


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    steps=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 50)), min_size=1, max_size=30),
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 100),
)
def test_a_bucket_never_grants_more_than_its_burst_plus_its_rate(
    steps: list[tuple[float, int]], rate: float, burst: int
) -> None:
    limiter = RejectionLimiter(rate=rate, burst=burst, max_sources=10)
    now, granted = 0.0, 0
    for pause, wanted in steps:
        now += pause
        granted += sum(limiter.take("s", now) for _ in range(wanted))
    assert granted <= burst + rate * now
    assert granted >= min(burst, sum(w for _, w in steps[:1]))  # the first burst is whole


def test_a_clock_stepping_back_refills_nothing() -> None:
    limiter = RejectionLimiter(rate=10, burst=1, max_sources=10)
    assert limiter.take("s", now=100.0)
    assert not limiter.take("s", now=50.0)
    assert not limiter.exhausted("s", now=101.0)


def test_sources_past_the_cap_share_one_bucket_and_refilled_ones_are_forgotten() -> None:
    limiter = RejectionLimiter(rate=1, burst=1, max_sources=3)
    for i in range(3):
        assert limiter.take(f"s{i}", now=0.0)
    # Three full-spent buckets: the fourth and fifth sources share the overflow bucket.
    assert limiter.take("s3", now=0.0)
    assert not limiter.take("s4", now=0.0)
    assert len(limiter) == 4
    # Once the buckets have refilled they are dropped for newcomers.
    assert limiter.take("s5", now=10.0)
    assert len(limiter) <= 2


def _validator(rate: float, burst: int) -> Validator:
    d = SensorDirectory()
    d.upsert(SensorInfo.of(str(uuid.UUID(int=11)), A, "dev-1", "SENS-001"))
    d.upsert(SensorInfo.of(str(uuid.UUID(int=21)), B, "dev-b", "SENS-002"))
    limiter = RejectionLimiter(rate=rate, burst=burst, max_sources=100)
    return Validator(d, IngestSettings(), limiter)


def _batch(*items: object) -> bytes:
    return json.dumps({"readings": list(items)}).encode()


def test_past_the_limit_rejections_are_counted_not_dead_lettered() -> None:
    v = _validator(rate=0.001, burst=3)
    gw = f"tenants/{A}/gateways/gw/readings"
    bad = {"device_id": "dev-1", "timestamp": TS, "value": "hot"}
    good = {"device_id": "dev-1", "timestamp": TS, "value": 1.0}
    first = v.process(gw, _batch(bad, good, bad, bad, good, bad, good), NOW)
    # Three dead letters, then the bucket is empty: the search for good items stops
    # there, the rest of the batch is one limited rejection.
    assert [r.item_index for r in first.rejections] == [0, 2, 3]
    assert [r[3] for r in first.readings] == [1.0, 1.0]
    assert first.limited == [DeadLetterReason.INVALID_SCHEMA]
    # An empty bucket: a batch that fails as a whole is dropped whole, counted once ...
    second = v.process(gw, _batch(good, bad), NOW)
    assert (second.readings, second.rejections) == ([], [])
    assert second.limited == [DeadLetterReason.INVALID_SCHEMA]
    assert v.process(gw, b"{not json", NOW).limited == [DeadLetterReason.MALFORMED_JSON]
    # ... a good batch still goes through, and a tenant violation is still recorded.
    assert len(v.process(gw, _batch(good, good), NOW).readings) == 2
    foreign = v.process(gw, _batch({**good, "device_id": "dev-b"}), NOW)
    assert foreign.limited == [DeadLetterReason.TENANT_MISMATCH]
    assert [x.ident for x in foreign.violations] == ["dev-b"]
    # Another gateway, and the tenant's single-sensor topics, have buckets of their own.
    other = v.process(f"tenants/{A}/gateways/gw-2/readings", _batch(bad), NOW)
    assert [r.reason.value for r in other.rejections] == ["invalid_schema"]
    single = v.process(f"tenants/{A}/sensors/dev-1/readings", b"[]", NOW)
    assert [r.reason.value for r in single.rejections] == ["invalid_schema"]


def test_the_bucket_refills_with_time() -> None:
    v = _validator(rate=1.0, burst=1)
    topic = f"tenants/{A}/sensors/dev-1/readings"
    assert len(v.process(topic, b"x", NOW).rejections) == 1
    assert v.process(topic, b"x", NOW).limited == [DeadLetterReason.MALFORMED_JSON]
    later = NOW + dt.timedelta(seconds=1.5)
    assert len(v.process(topic, b"x", later).rejections) == 1
