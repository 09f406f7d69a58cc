"""Silence, outages and sensor settings through the whole pipeline, on the real services.

Ingest, stream and triggers run as processes; gateways publish over MQTT. Times are
shortened by settings (heartbeat every 1 s, outage after 5 s, sensors sampled every
2 s) so that a story takes a minute or two, not hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator

import aiomqtt
import psycopg
import pytest

from tests.fix_ingest import Tenant, register_tenant
from tests.fix_pipeline import PipelineRig
from tmiot.db import conninfo

pytestmark = pytest.mark.slow

FAST = {
    "TMIOT_INGEST__HEARTBEAT_SECONDS": "1",
    "TMIOT_STREAM__SILENCE__OUTAGE_SECONDS": "5",
    "TMIOT_STREAM__SILENCE__LEARNING_SECONDS": "30",
    "TMIOT_STREAM__SENSOR_REFRESH_SECONDS": "1",
    "TMIOT_TRIGGERS__SETTLE_SECONDS": "3",
    "TMIOT_TRIGGERS__SENSOR_REFRESH_SECONDS": "1",
}


def _setup(rig: PipelineRig, devices: list[str], triggers: dict[str, tuple[str, object]]) -> Tenant:
    """A tenant whose sensors sample every 2 s, and fleet-wide triggers that request work orders."""
    tenant = register_tenant(rig.db, f"T-{rig.suffix}", devices)
    with psycopg.connect(conninfo(rig.db), autocommit=True) as conn:
        conn.execute(
            "UPDATE equipment_sensors SET sampling_interval_seconds = 2 WHERE id = ANY(%s::uuid[])",
            (list(tenant.sensors.values()),),
        )
        for name, (kind, conditions) in triggers.items():
            conn.execute(
                "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
                " condition_type, trigger_conditions, auto_create_work_order)"
                " VALUES (%s, %s, NULL, %s, %s, true)",
                (tenant.company_id, name, kind, json.dumps(conditions)),
            )
    return tenant


class Gateway:
    """A gateway that samples its devices every 2 s and uploads every `upload_s` seconds."""

    def __init__(self, rig: PipelineRig, company: str, name: str, devices: list[str]) -> None:
        self.rig, self.company, self.name, self.devices = rig, company, name, devices
        self.upload_s = 2.0
        self.running = True

    async def run(self) -> None:
        async with aiomqtt.Client(self.rig.mqtt.host, self.rig.mqtt.port) as client:
            taken: list[dict[str, object]] = []
            last_upload = time.monotonic()
            while True:
                now = dt.datetime.now(dt.UTC)
                if self.running:
                    for i, device in enumerate(self.devices):
                        value = 20.0 + (0.2 if (now.second + i) % 2 else -0.2)
                        taken.append(
                            {"device_id": device, "timestamp": now.isoformat(), "value": value}
                        )
                if time.monotonic() - last_upload >= self.upload_s - 0.01 and taken:
                    await client.publish(
                        f"tenants/{self.company}/gateways/{self.name}/readings",
                        json.dumps({"readings": taken}),
                        qos=1,
                    )
                    taken, last_upload = [], time.monotonic()
                await asyncio.sleep(2.0)


@contextlib.asynccontextmanager
async def running(*gateways: Gateway) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        handles = [tasks.create_task(g.run()) for g in gateways]
        try:
            yield
        finally:
            for h in handles:
                h.cancel()


def _wait_changes(rig: PipelineRig, n: int, deadline_s: float = 30.0) -> None:
    """Until the stream logged `n` reloads that changed a sensor's settings."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        text = "".join(p.read_text(errors="replace") for p in rig.logs.glob("stream-*.log"))
        if text.count("sensor settings changed") >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"the stream did not log {n} sensor settings changes\n{rig.log_tail()}")


def _missing(scored: list[dict[str, object]]) -> set[str]:
    """Sensors with a `missing` row in these scored records."""
    return {
        str(s)
        for batch in scored
        for s, kind in zip(batch["sensor_id"], batch["anomaly_type"], strict=True)  # type: ignore[call-overload]
        if kind == "missing"
    }


async def test_store_and_forward_is_never_missing_and_a_gateway_gone_is_one_work_order(
    pipeline_rig: PipelineRig,
) -> None:
    rig = pipeline_rig
    saf = [f"sf{i}" for i in range(5)]
    tenant = _setup(
        rig,
        [*saf, "live"],
        {"silent": ("pattern_detected", {"pattern": "missing", "for_seconds": 10})},
    )
    for service in ("ingest", "stream", "triggers"):
        rig.start(service, **FAST)
    rig.wait_log("ingest", "mqtt subscribed")
    rig.wait_log("triggers", "triggers started")
    store = Gateway(rig, tenant.company_id, f"saf-{rig.suffix}", saf)
    store.upload_s = 16.0  # eight readings of each sensor per upload
    live = Gateway(rig, tenant.company_id, f"live-{rig.suffix}", ["live"])
    async with running(store, live):
        await asyncio.sleep(75)  # learning allowance 30 s, then the 16 s pattern learned
        scored = await rig.read_topic("scored", expect=10**9, deadline_s=3)
        assert _missing(scored) == set(), rig.log_tail()
        assert await rig.read_topic("wo", expect=0, deadline_s=1) == []
        store.running = False  # the gateway goes offline: its five sensors fall silent
        orders = await rig.read_topic("wo", expect=5, deadline_s=120)
    sensors = {tenant.sensors[d] for d in saf}
    requests = [o for o in orders if o.get("event") != "updated"]
    updates = [o for o in orders if o.get("event") == "updated"]
    assert [(r["subject"], r["gateway_id"]) for r in requests] == [
        ("gateway", f"saf-{rig.suffix}")
    ], orders
    assert {u["idempotency_key"] for u in updates} == {requests[0]["idempotency_key"]}
    assert {str(o["sensor_id"]) for o in orders} == sensors  # the five sensors' evidence
    assert tenant.sensors["live"] not in _missing(
        await rig.read_topic("scored", expect=10**9, deadline_s=3)
    )


async def test_an_ingest_outage_is_one_health_event_and_no_sensor_work_order(
    pipeline_rig: PipelineRig,
) -> None:
    rig = pipeline_rig
    devices = [f"d{i}" for i in range(4)]
    _setup(
        rig,
        devices,
        {
            "silent": ("pattern_detected", {"pattern": "missing", "for_seconds": 4}),
            "anomaly": ("anomaly_detected", {}),
        },
    )
    tenant_company = rig.query("SELECT company_id::text FROM automated_service_triggers LIMIT 1")[
        0
    ][0]
    for service in ("ingest", "stream", "triggers"):
        rig.start(service, **FAST)
    rig.wait_log("ingest", "mqtt subscribed")
    rig.wait_log("triggers", "triggers started")
    gateway = Gateway(rig, tenant_company, f"gw-{rig.suffix}", devices)
    async with running(gateway):
        await asyncio.sleep(45)  # patterns learned: a delivery every 2 s
        rig.kill("ingest")  # our outage: 20 s, ten sampling intervals
        await asyncio.sleep(20)
        rig.start("ingest", **FAST)
        rig.wait_log("ingest", "mqtt subscribed")
        await asyncio.sleep(40)  # past every allowance after the recovery
        # Read while the gateway still publishes (stopping it is a real silence).
        health = await rig.read_topic("health", expect=2, deadline_s=5)
        orders = await rig.read_topic("wo", expect=1, deadline_s=3)
        scored = await rig.read_topic("scored", expect=10**9, deadline_s=3)
    assert len(health) == 1, rig.log_tail()
    assert health[0]["cause"] == "no_heartbeat"
    assert health[0]["until"] is None  # declared while it lasted
    assert orders == [], rig.log_tail()
    assert _missing(scored) == set()


async def test_a_sensor_in_maintenance_is_muted_and_scored_again_once_back(
    pipeline_rig: PipelineRig,
) -> None:
    rig = pipeline_rig
    tenant = _setup(rig, ["m"], {"anomaly": ("anomaly_detected", {})})
    sensor = tenant.sensors["m"]
    for service in ("ingest", "stream", "triggers"):
        rig.start(service, **FAST)
    rig.wait_log("ingest", "mqtt subscribed")
    rig.wait_log("triggers", "triggers started")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    t0 = now - dt.timedelta(seconds=2 * 560)

    def calm(start: int, n: int) -> list[tuple[str, dt.datetime, float]]:
        return [
            ("m", t0 + dt.timedelta(seconds=2 * i), 20.0 + (0.2 if i % 2 else -0.2))
            for i in range(start, start + n)
        ]

    await rig.publish(tenant.company_id, calm(0, 300))  # the detector learns the sensor
    rig.wait_rows("SELECT count(*) FROM sensor_readings", 300)
    with psycopg.connect(conninfo(rig.db), autocommit=True) as conn:
        conn.execute("UPDATE equipment_sensors SET status = 'maintenance' WHERE id = %s", (sensor,))
    _wait_changes(rig, 1)  # the stream reloaded it
    await asyncio.sleep(2)  # the triggers reload sensors every second too (they log no change)
    muted_at = t0 + dt.timedelta(seconds=2 * 300)
    # After an alert the detector holds off (one event, one alert) for up to 200 readings.
    await rig.publish(tenant.company_id, [("m", muted_at, 80.0), *calm(301, 219)])
    rig.wait_rows("SELECT count(*) FROM sensor_readings", 520)
    with psycopg.connect(conninfo(rig.db), autocommit=True) as conn:
        conn.execute("UPDATE equipment_sensors SET status = 'active' WHERE id = %s", (sensor,))
    _wait_changes(rig, 2)
    await asyncio.sleep(2)
    flagged_at = t0 + dt.timedelta(seconds=2 * 520)
    await rig.publish(tenant.company_id, [("m", flagged_at, 80.0), *calm(521, 5)])
    rig.wait_rows("SELECT count(*) FROM sensor_readings", 526)
    scored = await rig.read_topic("scored", expect=10**9, deadline_s=3)
    flags = {
        ts: flag
        for batch in scored
        for ts, flag in zip(batch["ts_us"], batch["is_anomaly"], strict=True)
    }
    assert flags[round(muted_at.timestamp() * 1e6)] is False  # in maintenance: muted
    assert flags[round(flagged_at.timestamp() * 1e6)] is True, rig.log_tail()  # back: scored
    orders = await rig.read_topic("wo", expect=1, deadline_s=30)
    assert len(orders) == 1
    evidence = [dt.datetime.fromisoformat(e["reading_timestamp"]) for e in orders[0]["evidence"]]
    assert evidence == [flagged_at]
