"""Fixtures for stream tests: a `tmiot stream` worker process, raw records, DB reads."""

from __future__ import annotations

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

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tmiot.config import DatabaseSettings, KafkaSettings
from tmiot.db import conninfo
from tmiot.events import RAW_SCHEMA, SCHEMA_HEADER, ReadingBatch
from tmiot.kafka import ensure_topics, partition_for

PARTITIONS = 4


@dataclass
class StreamRig:
    """Topics, consumer group and database of one test, and its worker processes."""

    db: DatabaseSettings
    bootstrap: str
    logs: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def group(self) -> str:
        """The workers' Faust app id: their consumer group."""
        return f"stream-{self.suffix}"

    @property
    def raw(self) -> str:
        return f"raw.{self.suffix}"

    @property
    def scored(self) -> str:
        return f"scored.{self.suffix}"

    @property
    def deadletter(self) -> str:
        return f"dlq.{self.suffix}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "TMIOT_DATABASE__URL": self.db.url,
            "TMIOT_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "TMIOT_KAFKA__PARTITIONS": str(PARTITIONS),
            "TMIOT_KAFKA__TOPICS__READINGS_RAW": self.raw,
            "TMIOT_KAFKA__TOPICS__READINGS_SCORED": self.scored,
            "TMIOT_KAFKA__TOPICS__READINGS_DEADLETTER": self.deadletter,
            "TMIOT_KAFKA__TOPICS__SENSOR_STATUS": f"status.{self.suffix}",
            "TMIOT_STREAM__APP_ID": self.group,
            "TMIOT_STREAM__SESSION_TIMEOUT_SECONDS": "6",
            "TMIOT_STREAM__CHECKPOINT_SECONDS": "1",
            "TMIOT_STREAM__SENSOR_FLUSH_SECONDS": "0.5",
            "TMIOT_STREAM__TICK_SECONDS": "0.5",
            "TMIOT_METRICS__ENABLED": "false",
            "TMIOT_LOG__FORMAT": "json",
        }
        env.update(extra)
        return env

    def start(self, **extra: str) -> subprocess.Popen[bytes]:
        """Start a worker process (logs under the test's tmp dir)."""
        n = len(self.procs)
        with (self.logs / f"stream-{n}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tmiot.cli", "stream"],
                env=self.env(**extra),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.logs.glob("stream-*.log"))
        )

    def events(self, n: int) -> list[dict[str, object]]:
        """The JSON log lines of worker `n`, in order (other output skipped)."""
        path = self.logs / f"stream-{n}.log"
        out = []
        for line in path.read_text(errors="replace").splitlines():
            # Faust's spinner may leave a terminal escape in front of a line.
            start = line.find("{")
            if start < 0:
                continue
            try:
                event = json.loads(line[start:])
            except ValueError:
                continue  # a line cut by the process being killed
            if isinstance(event, dict):
                out.append(event)
        return out

    def held(self, n: int) -> set[int]:
        """Partitions worker `n` holds by its log: restored and not released since."""
        mine: set[int] = set()
        for event in self.events(n):
            partition = event.get("partition")
            if not isinstance(partition, int):
                continue
            if event.get("event") == "partition restored":
                mine.add(partition)
            elif event.get("event") == "partition released":
                mine.discard(partition)
        return mine

    def checkpoints(self) -> dict[int, int]:
        """Checkpointed next offset per raw partition of this test's consumer group."""
        with psycopg.connect(conninfo(self.db)) as conn:
            found = conn.execute(
                "SELECT kafka_partition, next_offset FROM stream_checkpoints"
                " WHERE consumer_group = %s AND topic = %s",
                (self.group, self.raw),
            ).fetchall()
        return {int(p): int(o) for p, o in found}

    def rows(self) -> int:
        with psycopg.connect(conninfo(self.db)) as conn:
            row = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()
            assert row is not None
            return int(row[0])

    def wait_rows(self, n: int, deadline_s: float = 90.0) -> None:
        """Poll the table until it holds `n` rows; fail with the workers' logs."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.rows() >= n:
                return
            if all(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.3)
        pytest.fail(f"{self.rows()} rows, expected {n}\n{self.log_tail()}")


@pytest.fixture
def stream_rig(
    schema_database: DatabaseSettings, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[StreamRig]:
    rig = StreamRig(schema_database, kafka_bootstrap, tmp_path)
    try:
        yield rig
    finally:
        for proc in rig.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


def batch_of(company: str, rows: list[tuple[str, int, float]]) -> ReadingBatch:
    """A raw record's value: rows of (sensor_id, ts_us, value)."""
    n = len(rows)
    return {
        "v": 1,
        "sensor_id": [r[0] for r in rows],
        "company_id": [company] * n,
        "ts_us": [r[1] for r in rows],
        "value": [r[2] for r in rows],
        "unit": [None] * n,
        "quality_score": [None] * n,
        "ambient_temperature": [None] * n,
        "ambient_humidity": [None] * n,
        "weather_conditions": [None] * n,
        "received_us": [r[1] for r in rows],
    }


async def produce_raw(
    bootstrap: str, topic: str, company: str, rows: list[tuple[str, int, float]], per_record: int
) -> None:
    """Pack rows per partition (in order) into raw records, as ingest does."""
    from pydantic_core import to_json

    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS), [topic])
    by_partition: dict[int, list[tuple[str, int, float]]] = {}
    for row in rows:
        by_partition.setdefault(partition_for(row[0], PARTITIONS), []).append(row)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, mine in by_partition.items():
            for i in range(0, len(mine), per_record):
                await producer.send_and_wait(
                    topic,
                    to_json(batch_of(company, mine[i : i + per_record])),
                    partition=partition,
                    headers=[(SCHEMA_HEADER, RAW_SCHEMA)],
                )
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of each of the topic's partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: int(offset) for tp, offset in ends.items()}


async def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """The consumer group's committed offset of each of the topic's partitions (0: none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        found = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()
    return {p: 0 if offset is None else int(offset) for p, offset in found.items()}


async def produce_bytes(bootstrap: str, topic: str, partition: int, value: bytes) -> None:
    """One record of arbitrary bytes (poison)."""
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS), [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()
