"""The whole pipeline on real services: simulator-style MQTT readings -> work orders on Kafka.

MQTT (Mosquitto) -> ingest -> Kafka raw -> stream (scores, TimescaleDB/PostgreSQL rows)
-> Kafka scored -> triggers -> Kafka workorders.requested / notifications.requested.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg

from tests.fix_ingest import Tenant, register_tenant
from tests.fix_pipeline import PipelineRig
from tmiot.db import conninfo

THRESHOLD = {"above": 90.0, "for_seconds": 5, "hysteresis": 5.0}


def _sensor(tenant: Tenant, device: str) -> str:
    return tenant.sensors[device]


def _setup(rig: PipelineRig) -> tuple[Tenant, dict[str, str], str]:
    """A company with six 1-second sensors, a job template and a trigger per sensor."""
    devices = ["hot", "flap", "spike", "steady", "old", "notify"]
    tenant = register_tenant(rig.db, "Acme", [f"{d}-{rig.suffix}" for d in devices])
    triggers: dict[str, str] = {}
    with psycopg.connect(conninfo(rig.db), autocommit=True) as conn:
        conn.execute(
            "UPDATE equipment_sensors SET sampling_interval_seconds = 1,"
            " alert_threshold_max = 90, unit_of_measure = 'C'"
        )
        row = conn.execute(
            "INSERT INTO job_templates (company_id, name) VALUES (%s, 'Inspect') RETURNING id",
            (tenant.company_id,),
        ).fetchone()
        assert row is not None
        template = str(row[0])
        specs = {
            "hot": ("threshold_exceeded", THRESHOLD, True, False, None),
            "flap": ("threshold_exceeded", THRESHOLD, True, False, None),
            "spike": (
                "anomaly_detected",
                {"min_score": 0.5, "anomaly_types": ["spike"]},
                True,
                False,
                None,
            ),
            "steady": ("threshold_exceeded", THRESHOLD, True, False, None),
            "old": ("threshold_exceeded", THRESHOLD, True, False, None),
            "notify": (
                "threshold_exceeded",
                THRESHOLD,
                False,
                True,
                "{{ sensor_number }} on {{ equipment_name }}: {{ summary }}",
            ),
        }
        for device, (kind, condition, work_order, tech, text) in specs.items():
            found = conn.execute(
                "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
                " condition_type, trigger_conditions, auto_create_work_order,"
                " work_order_template_id, priority_level, notify_technician,"
                " notification_template)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, 'high', %s, %s) RETURNING id",
                (
                    tenant.company_id,
                    f"{device} check",
                    _sensor(tenant, f"{device}-{rig.suffix}"),
                    kind,
                    json.dumps(condition),
                    work_order,
                    template,
                    tech,
                    text,
                ),
            ).fetchone()
            assert found is not None
            triggers[device] = str(found[0])
    return tenant, triggers, template


def _series(now: dt.datetime, rig: PipelineRig) -> list[tuple[str, dt.datetime, float]]:
    """Readings at 1 s, 200 warm ones at 70 (+-0.3) then each sensor's story, in time order."""
    start = now - dt.timedelta(seconds=300)
    old_start = now - dt.timedelta(hours=3)
    rows: list[tuple[str, dt.datetime, float]] = []
    for i in range(280):
        wobble = 0.3 if i % 2 else -0.3
        base = 70.0 + wobble
        at = start + dt.timedelta(seconds=i)
        hot = 95.0 if 200 <= i < 240 else base  # 40 s above 90: one incident
        # 8 s above, 8 s below, five times: a flapping sensor
        flap = 95.0 if i >= 200 and (i - 200) % 16 < 8 and i < 280 else base
        spike = 140.0 if i == 260 else base  # one spike (scores start at reading 230)
        for device, value in (
            ("hot", hot),
            ("flap", flap),
            ("spike", spike),
            ("steady", base),
            ("notify", hot),
        ):
            rows.append((f"{device}-{rig.suffix}", at, value))
        old = 95.0 if 200 <= i < 240 else base  # an excursion three hours ago
        rows.append((f"old-{rig.suffix}", old_start + dt.timedelta(seconds=i), old))
    return rows


async def test_each_incident_yields_one_work_order_and_restart_adds_none(  # noqa: PLR0915 - one story
    pipeline_rig: PipelineRig,
) -> None:
    rig = pipeline_rig
    tenant, triggers, template = _setup(rig)
    rig.start("ingest")
    rig.start("stream")
    rig.start("triggers")
    rig.wait_log("ingest", "mqtt subscribed")
    rig.wait_log("triggers", "triggers started")

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    await rig.publish(tenant.company_id, _series(now, rig))
    rig.wait_rows("SELECT count(*) FROM sensor_readings", 6 * 280)

    orders = await rig.read_topic("wo", expect=3)
    by_trigger: dict[str, list[dict[str, object]]] = {}
    for order in orders:
        by_trigger.setdefault(str(order["trigger_id"]), []).append(order)
    # hot, flap and spike: one incident each; steady and old: none.
    assert {t: len(v) for t, v in by_trigger.items()} == {
        triggers["hot"]: 1,
        triggers["flap"]: 1,
        triggers["spike"]: 1,
    }, rig.log_tail()
    # Their sensors are on one piece of equipment (the tenant's boiler): one work order,
    # the first incident's; the other two join it as updates keyed by its idempotency key.
    requests = [o for o in orders if o.get("event") != "updated"]
    updates = [o for o in orders if o.get("event") == "updated"]
    assert len(requests) == 1, orders
    assert len(updates) == 2, orders
    assert {o["idempotency_key"] for o in orders} == {requests[0]["idempotency_key"]}
    assert {str(u["update_id"]) for u in updates} != {None}
    hot = by_trigger[triggers["hot"]][0]
    assert hot["sensor_id"] == _sensor(tenant, f"hot-{rig.suffix}")
    assert hot["company_id"] == tenant.company_id
    if hot is requests[0]:
        assert hot["work_order_template_id"] == template
        assert hot["priority_level"] == "high"
        assert hot["idempotency_key"] == hot["incident_id"]
    evidence = hot["evidence"]
    assert isinstance(evidence, list)
    assert evidence
    assert all(e["value"] is not None and e["value"] > 90 for e in evidence)
    # Every piece of evidence is a row of sensor_readings (traceable by its key).
    for e in evidence:
        found = rig.query(
            "SELECT value FROM sensor_readings WHERE sensor_id = %s AND reading_timestamp = %s",
            e["sensor_id"],
            dt.datetime.fromisoformat(e["reading_timestamp"]),
        )
        assert found
        assert float(found[0][0]) == e["value"]
    spike = by_trigger[triggers["spike"]][0]
    assert any(e["anomaly_type"] == "spike" for e in spike["evidence"])  # type: ignore[attr-defined]

    # The old excursion is recorded as a historical incident, without a work order.
    historical = rig.query(
        "SELECT historical FROM trigger_incidents WHERE trigger_id = %s", triggers["old"]
    )
    assert historical == [(True,)], rig.log_tail()
    counts = dict(rig.query("SELECT id::text, times_triggered FROM automated_service_triggers"))
    assert counts[triggers["hot"]] == 1
    assert counts[triggers["old"]] == 0
    assert counts[triggers["steady"]] == 0

    # The notification trigger: a rendered message for the technician, no work order.
    notes = await rig.read_topic("notify", expect=1)
    assert len(notes) == 1
    assert notes[0]["audience"] == "technician"
    number = rig.query(
        "SELECT sensor_number FROM equipment_sensors WHERE id = %s",
        _sensor(tenant, f"notify-{rig.suffix}"),
    )[0][0]
    assert notes[0]["message"].startswith(f"{number} on Boiler: value above 90")

    # kill -9 the trigger service, restart it, send more of the same excursion:
    # no work order with a new key appears.
    rig.kill("triggers")
    rig.start("triggers")
    rig.wait_log("triggers", "partition restored")
    later = now + dt.timedelta(seconds=1)
    await rig.publish(
        tenant.company_id,
        [(f"hot-{rig.suffix}", later + dt.timedelta(seconds=i), 96.0) for i in range(20)],
    )
    rig.wait_rows("SELECT count(*) FROM sensor_readings", 6 * 280 + 20)
    again = await rig.read_topic("wo", expect=4, deadline_s=8)
    assert {o["idempotency_key"] for o in again} == {o["idempotency_key"] for o in orders}

    # Feedback: the work order was resolved: its outcome is every gathered incident's.
    await rig.send(
        "outcomes",
        json.dumps(
            {
                "idempotency_key": requests[0]["idempotency_key"],
                "outcome": "resolved",
                "at": dt.datetime.now(dt.UTC).isoformat(),
            }
        ).encode(),
    )
    rig.wait_rows(
        "SELECT count(*) FROM trigger_incidents WHERE outcome = 'resolved'", 3, deadline_s=30
    )
    rates = dict(rig.query("SELECT id::text, false_positive_rate FROM automated_service_triggers"))
    assert float(rates[requests[0]["trigger_id"]]) == 0.0
    closed = rig.query(
        "SELECT clear_reason FROM trigger_incidents WHERE id = %s",
        uuid.UUID(str(hot["incident_id"])),
    )
    # Still above 90 within its minimum hold: only the resolution can have closed it.
    assert closed == [("work_order_resolved",)]
