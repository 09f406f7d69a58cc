"""kill -9 of the ingest process while QoS 1 readings flow loses nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiomqtt
import pytest

from tests.fix_ingest import Record, Tenants, consume_until, ingest_settings
from tmiot.config import DatabaseSettings, MqttSettings, Settings
from tmiot.events import decode_reading_batch, reading_rows

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.slow]


def _env(settings: Settings) -> dict[str, str]:
    s = settings
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TMIOT_")},
        "TMIOT_MQTT__HOST": s.mqtt.host,
        "TMIOT_MQTT__PORT": str(s.mqtt.port),
        "TMIOT_MQTT__CLIENT_ID": s.mqtt.client_id,
        "TMIOT_MQTT__SHARE_GROUP": s.mqtt.share_group or "",
        "TMIOT_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "TMIOT_KAFKA__PARTITIONS": str(s.kafka.partitions),
        "TMIOT_KAFKA__TOPICS__READINGS_RAW": s.kafka.topics.readings_raw,
        "TMIOT_KAFKA__TOPICS__READINGS_DEADLETTER": s.kafka.topics.readings_deadletter,
        "TMIOT_KAFKA__TOPICS__SENSOR_STATUS": s.kafka.topics.sensor_status,
        "TMIOT_DATABASE__URL": s.database.url,
        "TMIOT_METRICS__ENABLED": "false",
        "TMIOT_LOG__FORMAT": "json",
        "TMIOT_INGEST__SESSION_EXPIRY_SECONDS": "300",
    }


async def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `tmiot ingest` and wait (deadline) until its log says it subscribed."""
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tmiot.cli", "ingest"], env=env, stdout=out, stderr=out
        )
    async with asyncio.timeout(30):
        while b"mqtt subscribed" not in log.read_bytes()[start:]:
            if proc.poll() is not None:
                pytest.fail(f"ingest exited {proc.returncode}: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)
    return proc


def _keys(records: list[Record]) -> list[tuple[str, dt.datetime]]:
    return [
        (r["sensor_id"], r["reading_timestamp"])
        for rec in records
        for r in reading_rows(decode_reading_batch(rec.value))
    ]


async def test_kill_9_mid_stream_loses_no_reading(
    tenants: Tenants,
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
    tmp_path: Path,
) -> None:
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt_settings)
    env = _env(settings)
    log = tmp_path / "ingest.log"
    devices = list(tenants.a.sensors)
    messages, per_message = 400, 10
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    sent: set[tuple[str, dt.datetime]] = set()
    topic = f"tenants/{tenants.a.company_id}/gateways/gw-crash/readings"

    proc = await _start(env, log)
    published = asyncio.Event()
    halfway = asyncio.Event()

    async def publish() -> None:
        async with aiomqtt.Client(
            mqtt_settings.host, mqtt_settings.port, identifier=f"gw-{uuid.uuid4().hex[:6]}"
        ) as gw:
            for m in range(messages):
                items = []
                for j in range(per_message):
                    n = m * per_message + j
                    device = devices[n % len(devices)]
                    ts = base + dt.timedelta(seconds=n)
                    sent.add((tenants.a.sensors[device], ts))
                    items.append(
                        {"device_id": device, "timestamp": ts.isoformat(), "value": float(n)}
                    )
                await gw.publish(topic, json.dumps({"readings": items}), qos=1)
                if m == messages // 3:
                    halfway.set()
                # A steady stream, with a burst around the kill so that work is in flight.
                if not messages // 3 <= m < messages // 3 + 60:
                    await asyncio.sleep(0.005)
        published.set()

    publisher = asyncio.create_task(publish())
    await halfway.wait()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    restarted = await _start(env, log)
    try:
        await publisher
        records = await consume_until(
            kafka_bootstrap,
            settings.kafka.topics.readings_raw,
            lambda recs: set(_keys(recs)) >= sent,
            deadline_s=60,
        )
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=20)
    received = _keys(records)
    assert set(received) == sent  # nothing lost, nothing invented
    # Duplicates after the crash are allowed (the sink is idempotent); report them.
    print(f"readings {len(sent)}, records {len(records)}, duplicates {len(received) - len(sent)}")
