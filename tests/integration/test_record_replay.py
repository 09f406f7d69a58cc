"""record and replay through the session's Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tmiot.config import KafkaSettings
from tmiot.kafka import ensure_topics
from tmiot.recording import read_recording
from tmiot.replay import record, replay

pytestmark = pytest.mark.kafka

BASE_MS = 1_750_000_000_000
Seen = tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]


async def _consume_all(bootstrap: str, topic: str, expected: int) -> dict[int, list[Seen]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: dict[int, list[Seen]] = {}
    try:
        async with asyncio.timeout(30):
            while sum(len(v) for v in got.values()) < expected:
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    got.setdefault(tp.partition, []).extend(
                        (m.key, m.value, tuple(m.headers)) for m in messages
                    )
    finally:
        await consumer.stop()
    return got


async def test_a_topic_recorded_and_replayed_elsewhere_is_the_same_per_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source, target = f"rec.src.{suffix}", f"rec.dst.{suffix}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=4)
    await ensure_topics(kafka, [source, target])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                source,
                None if i == 7 else f"value-{i}".encode(),
                key=f"sensor-{i % 13}".encode(),
                timestamp_ms=BASE_MS + i * 1000,
                headers=[("schema", b"raw/1"), ("i", str(i).encode())],
            )
            for i in range(500)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    original = await _consume_all(kafka_bootstrap, source, 500)

    path = tmp_path / "all.tmrec"
    assert await record(kafka, [source], path) == 500
    recorded = list(read_recording(path))
    for partition in original:
        offsets = [r.offset for r in recorded if r.partition == partition]
        assert offsets == sorted(offsets)
        assert len(offsets) == len(original[partition])

    count, rate = await replay(kafka, path, topic_map={source: target}, speed=None)
    assert (count, rate > 0) == (500, True)
    assert await _consume_all(kafka_bootstrap, target, 500) == original

    # A time range: records 100..199 by their timestamps; a limit.
    window = tmp_path / "window.tmrec.gz"
    since = dt.datetime.fromtimestamp((BASE_MS + 100_000) / 1000, dt.UTC)
    until = dt.datetime.fromtimestamp((BASE_MS + 199_000) / 1000, dt.UTC)
    n = await record(kafka, [source], window, since=since, until=until)
    print(sorted((r.timestamp_ms - BASE_MS) // 1000 for r in read_recording(window)))
    assert n == 100
    stamps = sorted(r.timestamp_ms for r in read_recording(window))
    assert stamps == [BASE_MS + i * 1000 for i in range(100, 200)]
    assert await record(kafka, [source], tmp_path / "few.tmrec", limit=42) == 42
