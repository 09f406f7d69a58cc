"""One work order per equipment fault, through the whole pipeline with two trigger processes."""

from __future__ import annotations

import datetime as dt
import json
import signal

import psycopg
import pytest

from tests.fix_ingest import register_tenant
from tests.fix_pipeline import PipelineRig
from tmiot.db import conninfo
from tmiot.kafka import partition_for

pytestmark = pytest.mark.slow


async def test_five_sensors_of_one_equipment_are_one_work_order_across_kill_9_and_two_processes(
    pipeline_rig: PipelineRig,
) -> None:
    rig = pipeline_rig
    devices = [f"p{i}" for i in range(5)]
    tenant = register_tenant(rig.db, f"Pump-{rig.suffix}", devices)  # one pump, five sensors
    sensors = {tenant.sensors[d] for d in devices}
    assert len({partition_for(s, 4) for s in sensors}) > 1  # the two processes share them
    with psycopg.connect(conninfo(rig.db), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
            " condition_type, trigger_conditions, auto_create_work_order)"
            " VALUES (%s, 'pump hot', NULL, 'threshold_exceeded', %s, true)",
            (tenant.company_id, json.dumps({"above": 90})),
        )
    rig.start("ingest")
    rig.start("stream")
    first = rig.start("triggers")
    rig.wait_log("triggers", "triggers started")
    second = rig.start("triggers")  # same consumer group: the partitions are split
    try:
        rig.wait_log("triggers", "triggers started")
        rig.wait_log("ingest", "mqtt subscribed")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        start = now - dt.timedelta(seconds=120)
        readings = [
            (d, start + dt.timedelta(seconds=i), 95.0 if i >= 100 else 70.0)
            for i in range(110)
            for d in devices
        ]
        await rig.publish(tenant.company_id, readings)
        rig.wait_rows("SELECT count(*) FROM sensor_readings", len(readings))
        orders = await rig.read_topic("wo", expect=5, deadline_s=60)
        requests = [o for o in orders if o.get("event") != "updated"]
        assert len(requests) == 1, orders
        key = requests[0]["idempotency_key"]
        assert {o["idempotency_key"] for o in orders} == {key}
        assert {str(e["sensor_id"]) for o in orders for e in o["evidence"]} == sensors
        # kill -9 one trigger process, start it again, and let the excursion go on.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        first = rig.start("triggers")
        rig.wait_log("triggers", "triggers started")
        later = start + dt.timedelta(seconds=110)
        more = [(d, later + dt.timedelta(seconds=i), 96.0) for i in range(5) for d in devices]
        await rig.publish(tenant.company_id, more)
        rig.wait_rows("SELECT count(*) FROM sensor_readings", len(readings) + len(more))
        again = await rig.read_topic("wo", expect=6, deadline_s=15)
        requests = [o for o in again if o.get("event") != "updated"]
        # A replay after the kill may resend an event; never a new work order or update.
        assert {o["idempotency_key"] for o in requests} == {key}, again
        assert len({o["update_id"] for o in again if o.get("event") == "updated"}) == 4
        rows = rig.query(
            "SELECT count(*), count(DISTINCT work_order_id) FROM trigger_incidents"
            " WHERE company_id = %s",
            tenant.company_id,
        )
        assert rows == [(5, 1)]
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
