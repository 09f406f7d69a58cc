"""The whole pipeline through a Kafka broker that demands mutual TLS (tests/fix_kafka_secure).

MQTT -> ingest -> Kafka (TLS, client certificate) -> stream (Faust's consumer and
producer, the replay consumer) -> triggers -> a work order on Kafka, every client
configured from the one settings model; the test reads the work order over TLS too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fix_ingest import register_tenant
from tests.fix_kafka_secure import SecureKafka
from tests.fix_pipeline import PipelineRig, check_contracts
from tmiot.config import DatabaseSettings, MqttSettings
from tmiot.db import conninfo


@pytest.fixture
def secure_rig(
    schema_database: DatabaseSettings,
    secure_kafka: SecureKafka,
    mqtt_settings: MqttSettings,
    tmp_path: Path,
) -> Iterator[PipelineRig]:
    settings = secure_kafka.settings()
    rig = PipelineRig(
        schema_database,
        secure_kafka.bootstrap,
        mqtt_settings,
        tmp_path,
        kafka_security=settings,
        kafka_env=secure_kafka.env(settings),
    )
    try:
        yield rig
    finally:
        for command in list(rig.procs):
            if rig.procs[command].poll() is None:
                rig.kill(command)
    asyncio.run(check_contracts(rig))


async def test_a_reading_in_a_work_order_out_over_mutual_tls(secure_rig: PipelineRig) -> None:
    rig = secure_rig
    device = f"boiler-{rig.suffix}"
    tenant = register_tenant(rig.db, "Secure Co", [device])
    with psycopg.connect(conninfo(rig.db), autocommit=True) as conn:
        conn.execute("UPDATE equipment_sensors SET sampling_interval_seconds = 1")
        conn.execute(
            "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
            " condition_type, trigger_conditions, auto_create_work_order)"
            " VALUES (%s, 'too hot', %s, 'threshold_exceeded', %s, true)",
            (
                tenant.company_id,
                tenant.sensors[device],
                json.dumps({"above": 90.0, "for_seconds": 5}),
            ),
        )
    for command in ("ingest", "stream", "triggers"):
        rig.start(command)
    rig.wait_log("ingest", "mqtt subscribed")
    rig.wait_log("triggers", "triggers started")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    readings = [
        (device, now - dt.timedelta(seconds=60 - i), 95.0 if i >= 40 else 70.0) for i in range(60)
    ]
    await rig.publish(tenant.company_id, readings)
    rig.wait_rows("SELECT count(*) FROM sensor_readings", 60)
    orders = await rig.read_topic("wo", expect=1)
    assert len(orders) == 1, rig.log_tail()
    assert orders[0]["sensor_id"] == tenant.sensors[device]
    assert orders[0]["company_id"] == tenant.company_id
    for command in ("ingest", "stream", "triggers"):
        assert rig.procs[command].poll() is None, rig.log_tail()
