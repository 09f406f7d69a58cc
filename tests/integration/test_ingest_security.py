"""ingest against an authenticating, ACL-enforcing, TLS Mosquitto."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import uuid

import aiomqtt
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from ingest.mqtt import MqttAuthError
from ingest.service import IngestService
from tests.fix_ingest import consume_until, ingest_settings, register_tenant, running
from tests.fix_mosquitto import SecureBroker
from tmiot.config import DatabaseSettings
from tmiot.errors import leaves
from tmiot.events import decode_reading_batch, reading_rows

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.postgres]


async def test_wrong_credentials_stop_ingest_with_a_clear_error(
    secure_mosquitto: SecureBroker, schema_database: DatabaseSettings, kafka_bootstrap: str
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    mqtt = secure_mosquitto.mqtt_settings(secure_mosquitto.ingest).model_copy(
        update={"password": SecretStr(wrong)}
    )
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt)
    service = IngestService(settings)
    with capture_logs() as logs, pytest.raises(BaseException) as info:  # noqa: PT011 - a task group wraps it
        await service.run()
    [error] = [e for e in leaves(info.value) if isinstance(e, MqttAuthError)]
    assert "refused the connection" in str(error)
    assert "Not authorized" in str(error)
    # Audited on both sides, never with the password: ingest's error and log line name
    # the client id and username; Mosquitto 2.0 logs the refusal, but as "Client
    # <unknown>" (the id is only logged once a login succeeds).
    client_id = settings.mqtt.client_id
    assert repr(client_id) in str(error)
    assert wrong not in str(error)
    [failed] = [e for e in logs if e["event"] == "mqtt authentication failed"]
    assert (failed["client_id"], failed["username"]) == (client_id, mqtt.username)
    assert wrong not in repr(logs)
    await _broker_logged_a_refusal(secure_mosquitto)
    assert wrong not in secure_mosquitto.log_file.read_text(errors="replace")


def test_the_cli_exits_1_and_says_why(
    secure_mosquitto: SecureBroker, schema_database: DatabaseSettings, kafka_bootstrap: str
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TMIOT_")},
        "TMIOT_MQTT__HOST": secure_mosquitto.host,
        "TMIOT_MQTT__PORT": str(secure_mosquitto.port),
        "TMIOT_MQTT__USERNAME": secure_mosquitto.ingest.username,
        "TMIOT_MQTT__PASSWORD": "definitely-wrong-secret",
        "TMIOT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TMIOT_DATABASE__URL": schema_database.url,
        "TMIOT_METRICS__ENABLED": "false",
        "TMIOT_KAFKA__TOPICS__READINGS_RAW": f"raw.{uuid.uuid4().hex[:6]}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tmiot.cli", "ingest"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "MQTT broker refused the connection" in done.stderr
    assert "definitely-wrong-secret" not in done.stderr + done.stdout


async def _broker_logged_a_refusal(broker: SecureBroker) -> None:
    """Wait (with a deadline) for the broker's log line of a refused login."""
    async with asyncio.timeout(10):
        while "disconnected, not authorised" not in broker.log_file.read_text(errors="replace"):
            await asyncio.sleep(0.1)


async def test_mutual_tls_ingest_receives_its_tenants_gateway(
    secure_mosquitto: SecureBroker, schema_database: DatabaseSettings, kafka_bootstrap: str
) -> None:
    broker = secure_mosquitto
    tenant = register_tenant(schema_database, "A", ["dev-tls"], company_id=broker.company_a)
    settings = ingest_settings(
        schema_database, kafka_bootstrap, broker.mqtt_settings(broker.ingest, tls=True)
    )
    gw = broker.gateway_a
    async with running(IngestService(settings)):
        async with aiomqtt.Client(
            broker.host,
            broker.gateway_tls_port,
            username=gw.username,
            password=gw.password,
            identifier=gw.username,
            tls_context=broker.tls_context(gw),
        ) as client:
            await client.publish(
                f"tenants/{tenant.company_id}/sensors/dev-tls/readings",
                json.dumps({"timestamp": dt.datetime.now(dt.UTC).isoformat(), "value": 4.2}),
                qos=1,
            )
        records = await consume_until(
            kafka_bootstrap, settings.kafka.topics.readings_raw, lambda r: len(r) >= 1
        )
    [reading] = reading_rows(decode_reading_batch(records[0].value))
    assert reading["sensor_id"] == tenant.sensors["dev-tls"]
    assert reading["value"] == 4.2
