"""A produce/consume round trip through the session's Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.kafka


async def test_keyed_records_round_trip_in_order_per_key(kafka_bootstrap: str) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()

    keys = [f"sensor-{i}".encode() for i in range(8)]
    sent = [(keys[i % 8], f"{i}".encode()) for i in range(400)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        metas = await asyncio.gather(*[await producer.send(topic, v, key=k) for k, v in sent])
    finally:
        await producer.stop()
    partition_of_key: dict[bytes, int] = {}
    for (key, _), meta in zip(sent, metas, strict=True):
        assert partition_of_key.setdefault(key, meta.partition) == meta.partition
    assert len(set(partition_of_key.values())) > 1

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[bytes, bytes, int]] = []
    try:
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    received.extend((r.key, r.value, tp.partition) for r in records)
        await consumer.commit()
    finally:
        await consumer.stop()

    assert sorted(received) == sorted((k, v, partition_of_key[k]) for k, v in sent)
    for key in keys:
        values = [int(v) for k, v, _ in received if k == key]
        assert values == sorted(values), "per-key order lost"
