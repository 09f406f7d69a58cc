"""stream workers (Faust processes) against the Kafka broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable

import psycopg
import pytest

from ingest.sensors import partition_for
from stream.detectors import SensorDetector
from tests.fix_ingest import Record, consume_until, register_tenant
from tests.fix_stream import PARTITIONS, StreamRig, produce_bytes, produce_raw
from tmiot.config import DetectorSettings
from tmiot.db import conninfo
from tmiot.events import SCORED_BATCH, DeadLetter

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

MINUTE_US = 60_000_000


def _series(sensors: list[str], start_us: int, count: int) -> list[tuple[str, int, float]]:
    """`count` readings a minute apart per sensor, a daily-ish wave with a spike now and then."""
    rows = []
    for i in range(count):
        for k, sensor in enumerate(sensors):
            value = 20 + 3 * math.sin(i / 90 + k) + (0.1 * ((i * 7 + k) % 5))
            if i % 250 == 199:
                value += 25
            rows.append((sensor, start_us + i * MINUTE_US, round(value, 4)))
    return rows


def _scored(records: list[Record]) -> dict[tuple[str, int], float]:
    """Last score seen per (sensor, ts_us) on the scored topic."""
    out: dict[tuple[str, int], float] = {}
    for rec in records:
        batch = SCORED_BATCH.validate_json(rec.value)
        for s, t, v, score in zip(
            batch["sensor_id"], batch["ts_us"], batch["value"], batch["anomaly_score"], strict=True
        ):
            if v is not None:
                out[(s, t)] = score
    return out


def _count_scored(n: int) -> Callable[[list[Record]], bool]:
    return lambda records: len(_scored(records)) >= n


async def test_rows_once_on_redelivery_and_poison_dead_lettered(stream_rig: StreamRig) -> None:
    tenant = register_tenant(stream_rig.db, "S", [f"d{i}" for i in range(4)])
    sensors = list(tenant.sensors.values())
    start = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).timestamp()) * 1_000_000
    rows = _series(sensors, start, 300)  # 1200 readings
    await produce_raw(stream_rig.bootstrap, stream_rig.raw, tenant.company_id, rows[:600], 50)
    await produce_bytes(stream_rig.bootstrap, stream_rig.raw, 0, b"\x00not json")
    await produce_bytes(stream_rig.bootstrap, stream_rig.raw, 1, b'{"v": 2, "sensor_id": []}')
    await produce_raw(stream_rig.bootstrap, stream_rig.raw, tenant.company_id, rows[600:], 50)
    stream_rig.start()
    stream_rig.wait_rows(len(rows))

    letters = await consume_until(
        stream_rig.bootstrap, stream_rig.deadletter, lambda recs: len(recs) >= 2
    )
    reasons = sorted(DeadLetter.model_validate_json(r.value).reason.value for r in letters)
    assert reasons == ["undecodable_record", "unsupported_schema_version"]

    # Redelivery of every record: the table does not grow, the worker keeps going.
    await produce_raw(stream_rig.bootstrap, stream_rig.raw, tenant.company_id, rows, 50)
    scored = await consume_until(
        stream_rig.bootstrap,
        stream_rig.scored,
        lambda recs: (
            sum(len(SCORED_BATCH.validate_json(r.value)["ts_us"]) for r in recs) >= 2 * len(rows)
        ),
        deadline_s=60,
    )
    assert stream_rig.rows() == len(rows)
    assert len(_scored(scored)) == len(rows)
    with psycopg.connect(conninfo(stream_rig.db)) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE processed AND processed_at IS NOT NULL),"
            " count(*) FILTER (WHERE is_anomaly), count(DISTINCT sensor_id)"
            " FROM sensor_readings"
        ).fetchone()
    assert row is not None
    assert row[0] == len(rows)
    assert row[1] > 0, "the injected spikes were not flagged"
    assert row[2] == len(sensors)


async def test_killed_worker_resumes_the_same_model_state(stream_rig: StreamRig) -> None:
    tenant = register_tenant(stream_rig.db, "K", [f"k{i}" for i in range(4)])
    sensors = list(tenant.sensors.values())
    start = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).timestamp()) * 1_000_000
    rows = _series(sensors, start, 1000)
    first, second = rows[:2400], rows[2400:]
    await produce_raw(stream_rig.bootstrap, stream_rig.raw, tenant.company_id, first, 40)
    worker = stream_rig.start()
    stream_rig.wait_rows(len(first))
    await asyncio.sleep(1.5)  # let a checkpoint land, then die mid-stream
    await produce_raw(stream_rig.bootstrap, stream_rig.raw, tenant.company_id, second[:800], 40)
    await asyncio.sleep(0.3)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    await produce_raw(stream_rig.bootstrap, stream_rig.raw, tenant.company_id, second[800:], 40)
    stream_rig.start()
    stream_rig.wait_rows(len(rows), deadline_s=120)
    assert stream_rig.rows() == len(rows)

    records = await consume_until(stream_rig.bootstrap, stream_rig.scored, _count_scored(len(rows)))
    got = _scored(records)
    # The same readings through one uninterrupted detector per sensor, in partition order.
    settings = DetectorSettings()
    warm: dict[str, SensorDetector] = defaultdict(lambda: SensorDetector(settings))
    cold: dict[str, SensorDetector] = defaultdict(lambda: SensorDetector(settings))
    expected, cold_scores = {}, {}
    for sensor, ts, value in rows:
        expected[(sensor, ts)] = warm[sensor].update(ts // 1000, value).score
    for sensor, ts, value in second[800:]:
        cold_scores[(sensor, ts)] = cold[sensor].update(ts // 1000, value).score
    after = [k for sensor, ts, _ in second[800:] for k in [(sensor, ts)]]
    assert [got[k] for k in after] == [expected[k] for k in after]
    assert [got[k] for k in after] != [cold_scores[k] for k in after], "test cannot tell cold"
    assert {partition_for(s, PARTITIONS) for s in sensors}  # sensors spread over partitions


async def test_silent_sensor_goes_offline_and_back(stream_rig: StreamRig) -> None:
    tenant = register_tenant(stream_rig.db, "M", ["m0"])
    [sensor] = tenant.sensors.values()
    with psycopg.connect(conninfo(stream_rig.db), autocommit=True) as conn:
        conn.execute(
            "UPDATE equipment_sensors SET sampling_interval_seconds = 1 WHERE id = %s", (sensor,)
        )
    now = int(time.time()) * 1_000_000
    rows = [(sensor, now - (40 - i) * 1_000_000, 20.0 + i % 3) for i in range(40)]
    await produce_raw(stream_rig.bootstrap, stream_rig.raw, tenant.company_id, rows, 10)
    stream_rig.start()
    stream_rig.wait_rows(len(rows))

    def status() -> str:
        with psycopg.connect(conninfo(stream_rig.db)) as conn:
            row = conn.execute(
                "SELECT status::text FROM equipment_sensors WHERE id = %s", (sensor,)
            ).fetchone()
            assert row is not None
            return str(row[0])

    def wait_status(want: str) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end and status() != want:
            time.sleep(0.2)
        assert status() == want, stream_rig.log_tail()

    wait_status("offline")
    missing = await consume_until(
        stream_rig.bootstrap,
        stream_rig.scored,
        lambda recs: any(
            "missing" in SCORED_BATCH.validate_json(r.value)["anomaly_type"] for r in recs
        ),
    )
    assert missing
    back = int(time.time()) * 1_000_000
    await produce_raw(
        stream_rig.bootstrap, stream_rig.raw, tenant.company_id, [(sensor, back, 21.0)], 1
    )
    wait_status("active")
    with psycopg.connect(conninfo(stream_rig.db)) as conn:
        row = conn.execute(
            "SELECT last_reading_at FROM equipment_sensors WHERE id = %s", (sensor,)
        ).fetchone()
    assert row is not None
    assert row[0] == dt.datetime.fromtimestamp(back / 1e6, dt.UTC)
