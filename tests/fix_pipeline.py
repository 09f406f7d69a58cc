"""Fixtures for whole-pipeline tests: ingest, stream and triggers as real processes.

Each test gets its own topics, consumer groups, MQTT client id and database, so
tests can run in any order against the shared broker processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from jsonschema import Draft202012Validator

from tmiot.chaos.pipeline import topics_env
from tmiot.config import DatabaseSettings, KafkaSettings, MqttSettings, TopicSettings
from tmiot.db import conninfo
from tmiot.kafka import client_options, ensure_topics
from tmiot.replay import replay
from tmiot.schemas import DOCS as SCHEMAS

PARTITIONS = 4


@dataclass
class PipelineRig:
    """Topics, groups and database of one test, and its service processes."""

    db: DatabaseSettings
    bootstrap: str
    mqtt: MqttSettings
    logs: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: int = 0
    # Kafka security of the services and of the rig's own clients (None: PLAINTEXT).
    kafka_security: KafkaSettings | None = None
    kafka_env: dict[str, str] = field(default_factory=dict)

    def kafka(self) -> KafkaSettings:
        """The rig's Kafka settings (the services' security, the test's bootstrap)."""
        if self.kafka_security is not None:
            return self.kafka_security.model_copy(
                update={"bootstrap_servers": self.bootstrap, "partitions": PARTITIONS}
            )
        return KafkaSettings(bootstrap_servers=self.bootstrap, partitions=PARTITIONS)

    def topic(self, kind: str) -> str:
        return f"{kind}.{self.suffix}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "TMIOT_DATABASE__URL": self.db.url,
            "TMIOT_MQTT__HOST": self.mqtt.host,
            "TMIOT_MQTT__PORT": str(self.mqtt.port),
            "TMIOT_MQTT__CLIENT_ID": f"ingest-{self.suffix}",
            "TMIOT_MQTT__SHARE_GROUP": f"g{self.suffix}",
            "TMIOT_INGEST__SESSION_EXPIRY_SECONDS": "300",
            "TMIOT_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "TMIOT_KAFKA__PARTITIONS": str(PARTITIONS),
            **topics_env(self.suffix),
            "TMIOT_STREAM__APP_ID": f"stream-{self.suffix}",
            "TMIOT_STREAM__SESSION_TIMEOUT_SECONDS": "6",
            "TMIOT_STREAM__CHECKPOINT_SECONDS": "1",
            "TMIOT_STREAM__SENSOR_FLUSH_SECONDS": "0.5",
            "TMIOT_STREAM__TICK_SECONDS": "0.5",
            "TMIOT_TRIGGERS__GROUP_ID": f"triggers-{self.suffix}",
            "TMIOT_TRIGGERS__REFRESH_SECONDS": "1",
            "TMIOT_TRIGGERS__CHECKPOINT_SECONDS": "1",
            "TMIOT_TRIGGERS__TICK_SECONDS": "0.5",
            "TMIOT_TRIGGERS__SESSION_TIMEOUT_SECONDS": "6",
            "TMIOT_METRICS__ENABLED": "false",
            "TMIOT_LOG__FORMAT": "json",
        }
        env.update(self.kafka_env)
        env.update(extra)
        return env

    def start(self, command: str, **extra: str) -> subprocess.Popen[bytes]:
        """Start `tmiot <command>` (ingest, stream, triggers); logs under the test's tmp dir."""
        self.starts += 1
        with (self.logs / f"{command}-{self.starts}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tmiot.cli", command],
                env=self.env(**extra),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs[command] = proc
        return proc

    def kill(self, command: str) -> None:
        """kill -9 a service process."""
        proc = self.procs[command]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def wait_log(self, command: str, text: str, deadline_s: float = 60.0) -> None:
        """Poll the newest log of `command` until it holds `text`."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            logs = sorted(self.logs.glob(f"{command}-*.log"), key=lambda p: p.stat().st_mtime)
            if logs and text in logs[-1].read_text(errors="replace"):
                return
            proc = self.procs.get(command)
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"{command} never logged {text!r}\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(conninfo(self.db)) as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def wait_rows(self, sql: str, n: int, *params: object, deadline_s: float = 90.0) -> None:
        """Poll a count(*) query until it reaches `n`."""
        end = time.monotonic() + deadline_s
        got = -1
        while time.monotonic() < end:
            got = int(self.query(sql, *params)[0][0])
            if got >= n:
                return
            time.sleep(0.3)
        pytest.fail(f"{sql}: {got}, expected {n}\n{self.log_tail()}")

    async def publish(self, company: str, readings: list[tuple[str, dt.datetime, float]]) -> None:
        """Publish (device_id, timestamp, value) readings as gateway batches of 50, QoS 1."""
        async with aiomqtt.Client(self.mqtt.host, self.mqtt.port) as client:
            for i in range(0, len(readings), 50):
                chunk = readings[i : i + 50]
                payload = {
                    "readings": [
                        {"device_id": d, "timestamp": ts.isoformat(), "value": v}
                        for d, ts, v in chunk
                    ]
                }
                await client.publish(
                    f"tenants/{company}/gateways/gw-{self.suffix}/readings",
                    json.dumps(payload),
                    qos=1,
                )

    async def publish_raw(self, company: str, payload: bytes) -> None:
        """Publish one payload as it is on the test's gateway topic, QoS 1."""
        async with aiomqtt.Client(self.mqtt.host, self.mqtt.port) as client:
            await client.publish(
                f"tenants/{company}/gateways/gw-{self.suffix}/readings", payload, qos=1
            )

    async def read_topic(self, kind: str, *, expect: int, deadline_s: float = 60.0) -> list[Any]:
        """Every record value (JSON) of a topic from the start; waits for `expect` of them."""
        consumer = AIOKafkaConsumer(
            self.topic(kind),
            **client_options(self.kafka()),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        values: list[Any] = []
        try:
            end = time.monotonic() + deadline_s
            while time.monotonic() < end and len(values) < expect:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    values.extend(json.loads(r.value or b"null") for r in records)
            # A short grace for records that should NOT be there (duplicates).
            batch = await consumer.getmany(timeout_ms=1500)
            for records in batch.values():
                values.extend(json.loads(r.value or b"null") for r in records)
        finally:
            await consumer.stop()
        return values

    async def replay(self, recording: Path) -> int:
        """Replay a recording of ``sensor.readings.raw`` onto the test's raw topic, at once."""
        kafka = self.kafka()
        await ensure_topics(kafka, [self.topic("raw")])
        count, _ = await replay(
            kafka, recording, topic_map={"sensor.readings.raw": self.topic("raw")}, speed=None
        )
        return count

    async def send(self, kind: str, value: bytes, key: bytes | None = None) -> None:
        """Produce one record to one of the test's topics."""
        producer = AIOKafkaProducer(**client_options(self.kafka()), acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(self.topic(kind), value, key=key)
        finally:
            await producer.stop()


# The rig's topic kinds (tmiot.chaos.pipeline.topics_env) -> their schema (tmiot.schemas).
CONTRACTS = {
    "raw": "readings_raw",
    "scored": "readings_scored",
    "dlq": "readings_deadletter",
    "status": "sensor_status",
    "wo": "workorders_requested",
    "outcomes": "workorders_outcomes",
    "notify": "notifications_requested",
    "health": "pipeline_health",
}


async def read_all(kafka: KafkaSettings, topic: str) -> list[bytes]:
    """Every record value of `topic` up to its end offsets now ([] if it does not exist)."""
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.topics()  # a fresh metadata request
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                break
            batch = await consumer.getmany(*behind, timeout_ms=500)
            values.extend(r.value or b"" for records in batch.values() for r in records)
        return values
    finally:
        await consumer.stop()


async def check_contracts(rig: PipelineRig) -> dict[str, int]:
    """Validate every record on the rig's topics against docs/schemas; records per topic.

    Raises:
        AssertionError: a record does not validate (the first few, with the reason).
    """
    topics = TopicSettings()
    counts: dict[str, int] = {}
    failures: list[str] = []
    for kind, field_name in CONTRACTS.items():
        path = SCHEMAS / f"{getattr(topics, field_name)}.schema.json"
        validator = Draft202012Validator(
            json.loads(path.read_text()), format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        values = await read_all(rig.kafka(), rig.topic(kind))
        counts[kind] = len(values)
        for value in values:
            errors = sorted(validator.iter_errors(json.loads(value)), key=str)
            if errors:
                failures.append(f"{rig.topic(kind)}: {errors[0].message} in {value[:300]!r}")
    assert not failures, f"{len(failures)} records break their schema: {failures[:5]}"
    return counts


@pytest.fixture
def pipeline_rig(
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
    tmp_path: Path,
) -> Iterator[PipelineRig]:
    rig = PipelineRig(schema_database, kafka_bootstrap, mqtt_settings, tmp_path)
    try:
        yield rig
    finally:
        for proc in rig.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
    # Every record the test's pipeline produced keeps its published contract.
    asyncio.run(check_contracts(rig))
