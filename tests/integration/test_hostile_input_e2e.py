"""Hostile identifiers and mixed batches through the whole pipeline, with secrets configured.

MQTT -> ingest -> Kafka -> stream -> PostgreSQL -> triggers -> work orders, as real
processes (tests/fix_pipeline.py), run with a database password, an MQTT password
and a Kafka SASL password in their settings and DEBUG logs. Sensor numbers, device
ids and a trigger name made of SQL and quotes travel end to end and are stored
verbatim; a gateway batch mixing good and bad readings stores exactly the good
ones; malformed triggers beside the good one do not stop it firing; and no log
line of any service holds a secret.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid

import psycopg
import pytest

from tests.fix_ingest import register_tenant
from tests.fix_pipeline import PipelineRig
from tmiot.db import conninfo

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.postgres]

DROP = "'; DROP TABLE sensor_readings; --"
NUMBER = "SENS-'); DELETE FROM companies; --"
QUOTES = "Ω \"quoted\" 'single' \\back\\slash $$ ;-- ∑"
TRIGGER = '\'; DROP TABLE automated_service_triggers; -- «trigger» "x"'


def _secrets() -> dict[str, str]:
    """Distinctive secret values, one per kind of credential."""
    tag = uuid.uuid4().hex
    return {
        "TMIOT_DATABASE__PASSWORD": f"db-secret-{tag}",
        "TMIOT_MQTT__USERNAME": "tmiot-ingest",
        "TMIOT_MQTT__PASSWORD": f"mqtt-secret-{tag}",
        "TMIOT_KAFKA__SASL_USERNAME": "tmiot",
        "TMIOT_KAFKA__SASL_PASSWORD": f"kafka-secret-{tag}",
        "TMIOT_LOG__LEVEL": "DEBUG",
    }


def _setup(rig: PipelineRig) -> tuple[str, str, str, str]:
    """Company A (two hostile sensors, triggers good and bad) and company B (one sensor)."""
    a = register_tenant(rig.db, "A; DROP", [DROP, "dev-quotes"])
    register_tenant(rig.db, "B", ["b-1"])  # its sensor b-1 is named in a batch of A
    hostile, quotes = a.sensors[DROP], a.sensors["dev-quotes"]
    with psycopg.connect(conninfo(rig.db), autocommit=True) as conn:
        conn.execute(
            "UPDATE equipment_sensors SET sensor_number = %s WHERE id = %s", (NUMBER, hostile)
        )
        conn.execute(
            "UPDATE equipment_sensors SET sensor_number = %s WHERE id = %s", (QUOTES, quotes)
        )
        insert = (
            "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
            " condition_type, trigger_conditions, notification_template, auto_create_work_order)"
            " VALUES (%s, %s, %s, 'threshold_exceeded', %s::jsonb, %s, true) RETURNING id::text"
        )
        good = conn.execute(
            insert, (a.company_id, TRIGGER, hostile, json.dumps({"above": 90}), None)
        ).fetchone()
        assert good is not None
        for conditions, template in (
            ('{"above": ' + "[" * 2000 + "]" * 2000 + "}", None),
            (json.dumps({"above": "hot"}), None),
            (json.dumps({"above": 90}), "{{" + "(" * 990 + "1" + ")" * 990 + "}}"),
            (json.dumps({"above": 90}), "{{ ''.__class__.__mro__ }}"),
        ):
            conn.execute(insert, (a.company_id, "bad", hostile, conditions, template))
    return a.company_id, hostile, quotes, good[0]


async def test_hostile_ids_stored_verbatim_good_readings_kept_and_no_secret_logged(
    pipeline_rig: PipelineRig,
) -> None:
    rig = pipeline_rig
    company, hostile, quotes, trigger = _setup(rig)
    secrets = _secrets()
    for service in ("ingest", "stream", "triggers"):
        rig.start(service, **secrets)
    rig.wait_log("ingest", "mqtt subscribed")
    rig.wait_log("triggers", "triggers started")

    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=2)
    # By device id (the SQL one) and by sensor number (the quotes one); the last two
    # readings of the hostile sensor cross the trigger's threshold.
    good = [(DROP, start + dt.timedelta(seconds=i), 70.0 + i) for i in range(20)]
    good += [(QUOTES, start + dt.timedelta(seconds=i), -1.5 * i) for i in range(20)]
    good += [(DROP, start + dt.timedelta(seconds=30 + i), 95.0 + i) for i in range(2)]
    items: list[object] = [
        {"device_id": d, "timestamp": ts.isoformat(), "value": v} for d, ts, v in good
    ]
    bad: list[object] = [
        {"device_id": DROP, "timestamp": start.isoformat(), "value": math.nan},
        {"device_id": DROP, "timestamp": start.isoformat(), "value": "95"},
        {"device_id": "b-1", "timestamp": start.isoformat(), "value": 1.0},  # B's sensor
        {"device_id": "' OR 1=1 --", "timestamp": start.isoformat(), "value": 1.0},
        {"device_id": QUOTES, "timestamp": "1999-01-01T00:00:00Z", "value": 1.0},
        {"device_id": QUOTES, "timestamp": start.isoformat(), "value": 1.0, "unit": "\x00"},
        "'; DROP TABLE companies; --",
    ]
    mixed = [x for pair in zip(items, bad, strict=False) for x in pair] + items[len(bad) :]
    await rig.publish_raw(company, json.dumps({"readings": mixed}, allow_nan=True).encode())

    rig.wait_rows("SELECT count(*) FROM sensor_readings", len(good))
    orders = await rig.read_topic("wo", expect=1)
    # ingest subscribes to every tenant on a broker other test runs share: keep ours.
    source = f"mqtt:tenants/{company}/gateways/gw-{rig.suffix}/readings"
    letters = [x for x in await rig.read_topic("dlq", expect=len(bad)) if x["source"] == source]

    stored = rig.query(
        "SELECT s.sensor_number, r.reading_timestamp, r.value::float8 FROM sensor_readings r"
        " JOIN equipment_sensors s ON s.id = r.sensor_id ORDER BY 1, 2"
    )
    by_number = {DROP: NUMBER, QUOTES: QUOTES}
    assert sorted(stored) == sorted((by_number[d], ts, v) for d, ts, v in good)
    assert rig.query("SELECT count(*) FROM companies") == [(2,)]
    assert {r[0] for r in rig.query("SELECT sensor_number FROM equipment_sensors")} >= {
        NUMBER,
        QUOTES,
    }
    assert sorted(letter["item_index"] for letter in letters) == [1, 3, 5, 7, 9, 11, 13]
    assert {letter["reason"] for letter in letters} == {
        "non_finite_value",
        "invalid_schema",
        "tenant_mismatch",
        "unknown_sensor",
        "timestamp_too_old",
    }
    # The work order of the good trigger, its name and the sensor number verbatim.
    assert [(o["trigger_id"], o["sensor_id"]) for o in orders] == [(trigger, hostile)]
    assert orders[0]["title"] == f"{TRIGGER}: {NUMBER}"[:200]
    rejected = rig.query(
        "SELECT count(*) FROM security_audit_logs WHERE action_attempted = 'trigger_rejected'"
    )
    assert rejected == [(4,)], rig.log_tail()
    assert quotes not in {o["sensor_id"] for o in orders}

    logs = "".join(p.read_text(errors="replace") for p in rig.logs.glob("*.log"))
    assert "mqtt subscribed" in logs  # the logs are there to be searched
    for name, value in secrets.items():
        if name.endswith("PASSWORD"):
            assert value not in logs, f"{name} appears in a service's log"
