"""One gateway flooding garbage must not hold up another tenant's readings.

On the broker configured like production (tests/fix_mosquitto.py: passwords,
ACLs, 100 messages in flight per client), gateway A publishes batches whose
every item is invalid (each would be a dead letter) through ``mosquitto_pub`` in
a process of its own, while gateway B publishes readings at a steady pace. B's
latency is each reading's Kafka timestamp (set by ingest's producer) minus the
publish time in its payload, compared between a quiet phase and the flood phase
of the same test: a ratio, plus a slack for a shared machine, never an absolute
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import statistics
import subprocess
import time
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from aiokafka import AIOKafkaConsumer

from ingest.service import IngestService
from tests.fix_ingest import ingest_settings, register_tenant, running
from tests.fix_mosquitto import MqttAccount, SecureBroker, tool
from tmiot.config import DatabaseSettings
from tmiot.events import decode_reading_batch, reading_rows

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.postgres]

B_READINGS = 150  # per phase
B_INTERVAL = 0.02  # seconds between B's readings: 50/s
FLOOD_MESSAGES = 300  # A's batches (4.5 MB), published as fast as the broker takes them ...
FLOOD_ITEMS = 200  # ... of invalid items each: 60,000 rejections
RATE, BURST = 50.0, 200  # A's dead letters per second after a burst
# B's latency under the flood against the quiet phase: median and 90th percentile at
# most RATIO times the quiet one plus a slack (seconds). Without the limit, this
# machine measured B's p90 at 2.2 s (5-14 s with 600 batches); with it, 0.03-0.1 s
# (the flood's bytes, which the broker delivers ahead of B's, cost the tail a little).
RATIO, MEDIAN_SLACK, P90_SLACK = 3.0, 0.25, 1.0
DEADLINE_SECONDS = 120.0


def _garbage_line() -> bytes:
    item = {"device_id": "no-such-device", "timestamp": "yesterday", "value": "hot"}
    return json.dumps({"readings": [item] * FLOOD_ITEMS}).encode() + b"\n"


async def _publish_b(broker: SecureBroker, device: str, phase: int) -> None:
    """B's readings at a steady pace; the payload carries the publish time."""
    gw = broker.gateway_b
    topic = f"tenants/{broker.company_b}/gateways/{gw.username}/readings"
    async with aiomqtt.Client(
        broker.host, broker.port, username=gw.username, password=gw.password
    ) as c:
        for i in range(B_READINGS):
            now = dt.datetime.now(dt.UTC)
            item = {"device_id": device, "timestamp": now.isoformat(), "value": phase * 1000 + i}
            await c.publish(topic, json.dumps({"readings": [item]}), qos=1)
            await asyncio.sleep(B_INTERVAL)


class _Latencies:
    """B's readings off the raw topic: value -> Kafka timestamp minus publish time (s)."""

    def __init__(self, bootstrap: str, topic: str, sensor: str) -> None:
        self.seen: dict[float, float] = {}
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        self._sensor = sensor

    async def follow(self) -> None:
        await self._consumer.start()
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for r in records:
                        for row in reading_rows(decode_reading_batch(r.value)):
                            if row["sensor_id"] != self._sensor:
                                continue
                            sent = row["reading_timestamp"].timestamp()
                            self.seen[row["value"]] = r.timestamp / 1000 - sent
        finally:
            await self._consumer.stop()

    async def wait_for(self, phase: int) -> list[float]:
        """The phase's latencies once all its readings arrived."""
        wanted = [float(phase * 1000 + i) for i in range(B_READINGS)]
        async with asyncio.timeout(DEADLINE_SECONDS):
            while not all(v in self.seen for v in wanted):
                await asyncio.sleep(0.1)
        return [self.seen[v] for v in wanted]


@contextlib.asynccontextmanager
async def _following(latencies: _Latencies) -> AsyncIterator[None]:
    task = asyncio.create_task(latencies.follow())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def _flood_command(broker: SecureBroker, gw: MqttAccount) -> list[str]:
    """mosquitto_pub sending each line of its stdin as one QoS 1 message of gateway `gw`."""
    topic = f"tenants/{gw.company_id}/gateways/{gw.username}/readings"
    return [
        tool("mosquitto_pub"),
        *("-h", broker.host, "-p", str(broker.port), "-u", gw.username, "-P", gw.password),
        *("-q", "1", "-t", topic, "-l"),
    ]


async def test_a_garbage_flood_from_one_gateway_does_not_hold_up_another(
    secure_mosquitto: SecureBroker, schema_database: DatabaseSettings, kafka_bootstrap: str
) -> None:
    broker = secure_mosquitto
    register_tenant(schema_database, "A", ["a-1"], company_id=broker.company_a)
    b = register_tenant(schema_database, "B", ["b-1"], company_id=broker.company_b)
    settings = ingest_settings(
        schema_database,
        kafka_bootstrap,
        broker.mqtt_settings(broker.ingest),
        rejection_rate_per_source=RATE,
        rejection_burst_per_source=BURST,
    )
    service = IngestService(settings)
    latencies = _Latencies(kafka_bootstrap, settings.kafka.topics.readings_raw, b.sensors["b-1"])
    async with running(service), _following(latencies):
        await _publish_b(broker, "b-1", phase=1)
        quiet = await latencies.wait_for(1)

        flood = subprocess.Popen(
            _flood_command(broker, broker.gateway_a),
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert flood.stdin is not None
        started = time.monotonic()
        try:
            writer = asyncio.to_thread(flood.stdin.write, _garbage_line() * FLOOD_MESSAGES)
            await asyncio.gather(writer, _publish_b(broker, "b-1", phase=2))
            flood.stdin.close()
            await asyncio.to_thread(flood.wait, DEADLINE_SECONDS)
            flooded = await latencies.wait_for(2)
            # Every batch (B's and A's) has been taken once all were counted.
            batches = FLOOD_MESSAGES + 2 * B_READINGS
            async with asyncio.timeout(DEADLINE_SECONDS):
                while _total(service.metrics.messages) < batches:
                    await asyncio.sleep(0.1)
            elapsed = time.monotonic() - started
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
            if flood.stderr is not None:
                flood.stderr.close()

    dead_lettered = _total(service.metrics.deadletters)
    limited = _total(service.metrics.rate_limited)
    print(
        f"\nB p50/p90 latency quiet {statistics.median(quiet):.3f}/{_p90(quiet):.3f} s, "
        f"flooded {statistics.median(flooded):.3f}/{_p90(flooded):.3f} s; "
        f"A: {dead_lettered:.0f} dead-lettered, {limited:.0f} rate-limited in {elapsed:.1f} s"
    )
    # Each of A's items was dead-lettered, or counted as rate-limited alone or with its
    # whole batch (once A was over its limit).
    assert limited > 0
    assert dead_lettered + limited * FLOOD_ITEMS >= FLOOD_MESSAGES * FLOOD_ITEMS
    # A's dead letters stay within its bucket: the burst plus the rate over the flood.
    assert dead_lettered <= BURST + RATE * elapsed + FLOOD_ITEMS
    assert statistics.median(flooded) <= RATIO * statistics.median(quiet) + MEDIAN_SLACK
    assert _p90(flooded) <= RATIO * _p90(quiet) + P90_SLACK


def _total(counter: object) -> float:
    """The sum of a labelled prometheus counter over its labels."""
    return sum(
        sample.value
        for metric in counter.collect()  # type: ignore[attr-defined]
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
