"""The stage limits: each stage of the pipeline alone, as fast as it goes on this machine.

* ``mqtt``: a bare aiomqtt subscriber draining a preloaded backlog (QoS 1), single
  readings and gateway batches of 100 (the ingest benchmark's bare loop);
* ``kafka``: raw records of 125 readings (what ingest sends per partition and flush
  at 50,000 readings/s) produced and consumed at once, counted when consumed;
* ``db``: the stream's idempotent sink writing chunks of ``stream.write_readings``
  readings over the fleet's sensors;
* ``scoring``: the stream's :class:`~stream.scoring.Scorer` over 10,000 sensors past their
  warm-up (scored readings, not the warm-up's running means).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic_core import to_json

from bench.bench_ingest import Scenario, _bare, _payloads, _preload, _prepare_session
from bench.bench_stream import _feed, _meta
from bench.e2e.rig import Rig
from stream.scoring import Scorer
from stream.sink import ReadingsSink
from tmiot.config import DetectorSettings, MqttSettings, StreamSettings
from tmiot.events import RAW_SCHEMA, SCHEMA_HEADER

_KAFKA_RECORD = 125


def _columns(sensor_ids: list[str], ts_us: int, company: str) -> dict[str, Any]:
    n = len(sensor_ids)
    return {
        "v": 1,
        "sensor_id": sensor_ids,
        "company_id": [company] * n,
        "ts_us": [ts_us + i for i in range(n)],
        "value": [70.0 + (i % 13) / 10 for i in range(n)],
        "unit": [None] * n,
        "quality_score": [None] * n,
        "ambient_temperature": [None] * n,
        "ambient_humidity": [None] * n,
        "weather_conditions": [None] * n,
        "received_us": [ts_us] * n,
    }


async def mqtt(rig: Rig, form: str, messages: int) -> float:
    """Readings/s a bare subscriber drains, single readings or batches of 100."""
    assert rig.fleet is not None
    company, devices = next(iter(rig.fleet.devices.items()))
    batch = 1 if form == "single" else 100
    scenario = Scenario(form, 1, batch, messages)
    payloads = _payloads(scenario, company, devices[:1000])
    settings = MqttSettings(host="127.0.0.1", port=rig.mqtt_port, share_group=None)
    client_id = f"bare-{uuid.uuid4().hex[:6]}"
    await _prepare_session(settings, client_id, 1)
    await _preload(settings, payloads, 1)
    seconds = await _bare(settings, client_id, messages)
    return messages * batch / seconds


async def kafka(rig: Rig, readings: int) -> float:
    """Readings/s through bare produce and consume of raw records."""
    assert rig.fleet is not None
    topic = f"stage.{uuid.uuid4().hex[:6]}"
    ids = list(rig.fleet.sensor_id.values())[:_KAFKA_RECORD]
    records = readings // _KAFKA_RECORD
    value = to_json(_columns(ids, 0, "c"))
    producer = AIOKafkaProducer(bootstrap_servers=rig.bootstrap, linger_ms=20, acks="all")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=rig.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
    )
    await producer.start()
    await producer.send_and_wait(topic, value, headers=[(SCHEMA_HEADER, RAW_SCHEMA)])
    await consumer.start()
    try:
        t0 = time.perf_counter()

        async def produce() -> None:
            for i in range(1, records):
                await producer.send(topic, value, headers=[(SCHEMA_HEADER, RAW_SCHEMA)])
                if i % 500 == 0:
                    await asyncio.sleep(0)
            await producer.flush()

        sending = asyncio.create_task(produce())
        got = 0
        while got < records:
            batch = await consumer.getmany(timeout_ms=500)
            got += sum(len(v) for v in batch.values())
        await sending
        return records * _KAFKA_RECORD / (time.perf_counter() - t0)
    finally:
        await consumer.stop()
        await producer.stop()


async def db(rig: Rig, readings: int) -> float:
    """Readings/s the stream's sink writes in its chunks (then the table is emptied).

    A chunk is ``stream.write_readings`` readings, the fleet's sensors in turn: what
    the stream worker's writer inserts per transaction.
    """
    assert rig.fleet is not None
    ids = list(rig.fleet.sensor_id.values())
    size = StreamSettings().write_readings
    start = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).timestamp() * 1e6)
    batches = []
    for b in range(max(1, readings // size)):
        first = b * size
        cols = _columns([ids[(first + i) % len(ids)] for i in range(size)], start + first, "")
        cols |= {"anomaly_score": [0.0] * size, "is_anomaly": [False] * size}
        cols["anomaly_type"] = [None] * size
        batches.append(cols)
    async with ReadingsSink(rig.db) as sink:
        t0 = time.perf_counter()
        for cols in batches:
            await sink.write(cols)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
    await rig.truncate()
    return len(batches) * size / seconds


def scoring(sensors: int = 10_000, each: int = 30) -> float:
    """Readings/s of the stream's scorer (decode excluded), `sensors` sensors past their warm-up.

    Each sensor first learns ``2 * warmup_readings`` readings untimed: a warm-up
    reading is only a running mean, several times cheaper than a scored one, and
    the pipeline's sensors spend nearly all their readings past it.
    """
    scorer = Scorer(DetectorSettings())
    meta = _meta(sensors)
    warm = 2 * DetectorSettings().warmup_readings
    _feed(scorer, meta, warm)
    seconds = _feed(scorer, meta, each, first=warm)
    return sensors * each / seconds


async def limits(rig: Rig, *, quick: bool = False) -> dict[str, float]:
    """Every stage's limit, readings/s."""
    k = 4 if quick else 1
    await rig.start_kafka()
    try:
        out = {
            "mqtt_single": await mqtt(rig, "single", 60_000 // k),
            "mqtt_batch": await mqtt(rig, "batch", 10_000 // k),
            "kafka": await kafka(rig, 1_000_000 // k),
            "db": await db(rig, 300_000 // k),
            "scoring": await asyncio.to_thread(scoring, 10_000, 30 // k),
        }
    finally:
        rig.stop_kafka()
    return {name: round(v) for name, v in out.items()}
