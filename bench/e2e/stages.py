"""The stage limits: each stage of the pipeline alone, as fast as it goes on this machine.

* ``mqtt``: a bare aiomqtt subscriber draining a preloaded backlog (QoS 1), single
  readings and gateway batches of 100 (the ingest benchmark's bare loop);
* ``validation``: ingest's validator alone (no MQTT, no Kafka) on gateway batches of 100
  readings, as the load generator sends them, over 10,000 registered devices;
* ``kafka``: raw records of 125 readings (what ingest sends per partition and flush
  at 50,000 readings/s) produced and consumed at once, counted when consumed;
* ``db``: the stream's idempotent sink writing chunks of ``stream.write_readings``
  readings over the fleet's sensors;
* ``scoring``: the stream's :class:`~stream.scoring.Scorer` over 10,000 sensors past their
  warm-up (scored readings, not the warm-up's running means);
* ``triggers``: the trigger service's decode and evaluation of scored records of 1,000
  readings, a threshold trigger on every sensor (as the e2e fleet's watched sensors),
  past the first sight of each (trigger, sensor).

Each stage is also charged the whole machine's busy CPU time while it runs (its own
process, the broker's or the database's, the kernel's): microseconds of CPU per
reading. A pipeline that passes a reading through several stages spends at least
their sum on it, so ``cores / sum`` bounds any such pipeline on this machine from
above (:func:`bound`), whatever its plumbing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from pydantic_core import to_json

from bench.bench_ingest import Scenario, _bare, _payloads, _preload, _prepare_session
from bench.bench_stream import _feed, _meta
from bench.bench_triggers import _records
from bench.e2e.rig import Rig
from bench.e2e.watch import machine_busy_seconds
from ingest.sensors import SensorDirectory
from ingest.sensors import SensorInfo as IngestSensor
from ingest.validation import Validator
from stream.detectors import first_scored
from stream.scoring import Scorer
from stream.sink import ReadingsSink
from tmiot.config import DetectorSettings, IngestSettings, MqttSettings, Settings, StreamSettings
from tmiot.events import RAW_SCHEMA, SCHEMA_HEADER
from triggers.conditions import parse_condition
from triggers.directory import Directory
from triggers.model import SensorInfo, Transition, TriggerSpec
from triggers.service import TriggerService

_KAFKA_RECORD = 125
# What every reading of a gateway batch passes: ingest's validation, Kafka twice (the
# raw and the scored topic), scoring, the database. Left out, so that the bound stays
# an upper one: MQTT (the stage's stock client is not ingest's), the services'
# consume and publish plumbing, and the load generator.
BATCH_PATH = ("validation", "kafka", "kafka", "scoring", "db")
# ... and where every sensor has a trigger (the 1k and 10k fleets), its evaluation.
WATCHED_PATH = (*BATCH_PATH, "triggers")


class Limit(NamedTuple):
    """A stage alone: its rate and the machine's CPU time per reading at that rate."""

    readings_per_s: float
    cpu_us: float  # busy core-microseconds of the whole machine per reading


class _Charge:
    """The machine's busy CPU time and wall time since creation."""

    def __init__(self) -> None:
        self.busy = machine_busy_seconds()
        self.t0 = time.perf_counter()

    def limit(self, readings: int) -> Limit:
        seconds = time.perf_counter() - self.t0
        cpu = machine_busy_seconds() - self.busy
        return Limit(readings / seconds, cpu * 1e6 / readings)


def bound(cpu_us: dict[str, float], cores: int, path: tuple[str, ...] = BATCH_PATH) -> float:
    """Readings/s no pipeline through the stages of `path` (repeats count) exceeds on `cores`.

    >>> cpu = {"kafka": 4.0, "scoring": 10.0, "db": 22.0}
    >>> round(bound(cpu, 2, ("kafka", "kafka", "scoring", "db")))
    50000
    """
    return cores * 1e6 / sum(cpu_us[k] for k in path)


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


async def mqtt(rig: Rig, form: str, messages: int) -> Limit:
    """A bare subscriber draining single readings or batches of 100 (the drain charged)."""
    assert rig.fleet is not None
    company, devices = next(iter(rig.fleet.devices.items()))
    batch = 1 if form == "single" else 100
    scenario = Scenario(form, 1, batch, messages)
    payloads = _payloads(scenario, company, devices[:1000])
    settings = MqttSettings(host="127.0.0.1", port=rig.mqtt_port, share_group=None)
    client_id = f"bare-{uuid.uuid4().hex[:6]}"
    await _prepare_session(settings, client_id, 1)
    await _preload(settings, payloads, 1)
    charge = _Charge()
    seconds = await _bare(settings, client_id, messages)
    cpu_us = charge.limit(messages * batch).cpu_us
    return Limit(messages * batch / seconds, cpu_us)


async def kafka(rig: Rig, readings: int) -> Limit:
    """Bare produce and consume of raw records, at once."""
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
        charge = _Charge()

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
        return charge.limit(records * _KAFKA_RECORD)
    finally:
        await consumer.stop()
        await producer.stop()


async def db(rig: Rig, readings: int) -> Limit:
    """The stream's sink writing its chunks (then the table is emptied).

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
        charge = _Charge()
        for cols in batches:
            await sink.write(cols)  # type: ignore[arg-type]
        out = charge.limit(len(batches) * size)
    await rig.truncate()
    return out


def scoring(sensors: int = 10_000, each: int = 30) -> Limit:
    """The stream's scorer (decode excluded), `sensors` sensors past their warm-up.

    Each sensor first learns its warm-up and the readings that locate its tails
    untimed, and a few more: a warm-up reading is only a running mean, cheaper than a
    scored one, and the pipeline's sensors spend nearly all their readings past it.
    """
    settings = DetectorSettings()
    scorer = Scorer(settings)
    meta = _meta(sensors)
    warm = first_scored(settings) + 30
    _feed(scorer, meta, warm)
    charge = _Charge()
    seconds = _feed(scorer, meta, each, first=warm)
    return Limit(sensors * each / seconds, charge.limit(sensors * each).cpu_us)


def validation(devices: int = 10_000, readings: int = 300_000) -> Limit:
    """Ingest's validator alone on gateway batches of 100 (see the module docstring)."""
    company = str(uuid.uuid4())
    directory = SensorDirectory()
    names = [f"dev-{i}" for i in range(devices)]
    for i, name in enumerate(names):
        directory.upsert(IngestSensor.of(str(uuid.uuid4()), company, name, f"S-{i}"))
    validator = Validator(directory, IngestSettings())
    topic = f"tenants/{company}/gateways/gw-1/readings"
    now = dt.datetime.now(dt.UTC)
    ms = int(now.timestamp() * 1000) - 60_000
    payloads = [  # {"v": 1, "readings": [{"device_id", "timestamp", "value"}, ...]}
        to_json(
            {
                "v": 1,
                "readings": [
                    {
                        "device_id": names[(b * 100 + i) % devices],
                        "timestamp": ms + b,
                        "value": 70.5,
                    }
                    for i in range(100)
                ],
            }
        )
        for b in range(readings // 100)
    ]
    charge = _Charge()
    good = sum(len(validator.process(topic, p, now).readings) for p in payloads)
    out = charge.limit(len(payloads) * 100)
    if good != len(payloads) * 100:
        msg = f"validation stage: {good} of {len(payloads) * 100} readings accepted"
        raise RuntimeError(msg)
    return out


def _watched(sensors: int) -> Directory:
    """A directory of `sensors` sensors, each with the e2e fleet's threshold trigger."""
    d = Directory()
    company = str(uuid.uuid4())
    condition = parse_condition("threshold_exceeded", {"above": 90, "for_seconds": 0})
    for i in range(sensors):
        sid = str(uuid.uuid4())
        d.sensors[sid] = SensorInfo(
            sensor_id=sid,
            company_id=company,
            customer_equipment_id=str(uuid.uuid4()),
            sensor_number=f"S-{i}",
            sensor_type="temperature",
            sampling_interval_seconds=20,
            alert_threshold_min=None,
            alert_threshold_max=None,
            unit="C",
            status="active",
        )
        spec = TriggerSpec(
            trigger_id=str(uuid.uuid4()),
            company_id=company,
            trigger_number=f"T-{i}",
            trigger_name=f"hot {i}",
            sensor_id=sid,
            condition_type="threshold_exceeded",
            condition=condition,
            auto_create_work_order=True,
        )
        d.triggers[spec.trigger_id] = spec
        d.by_sensor[sid] = (spec,)
    return d


def triggers(sensors: int = 10_000, readings: int = 200_000) -> Limit:
    """The trigger service's decode-and-evaluate path alone (see the module docstring)."""
    service = TriggerService(Settings())
    service.directory = _watched(sensors)
    records = [
        ConsumerRecord("scored", 0, i, 0, 0, None, v, None, len(v), 0, ())
        for i, v in enumerate(_records(list(service.directory.sensors), 2 * readings, 1000))
    ]
    now_us = time.time_ns() // 1000
    transitions: list[Transition] = []
    # The first half (untimed) creates every (trigger, sensor) state, as a running
    # service has; the second half is timed.
    half = len(records) // 2
    for rec in records[:half]:
        service._evaluate(rec, now_us, transitions, {}, [], [])  # noqa: SLF001 - the real hot path
    charge = _Charge()
    for rec in records[half:]:
        service._evaluate(rec, now_us, transitions, {}, [], [])  # noqa: SLF001
    return charge.limit((len(records) - half) * 1000)


async def limits(rig: Rig, *, quick: bool = False) -> dict[str, Limit]:
    """Every stage's limit and CPU cost."""
    k = 4 if quick else 1
    await rig.start_kafka()
    try:
        out = {
            "mqtt_single": await mqtt(rig, "single", 60_000 // k),
            "mqtt_batch": await mqtt(rig, "batch", 10_000 // k),
            "validation": await asyncio.to_thread(validation, 10_000, 300_000 // k),
            "kafka": await kafka(rig, 1_000_000 // k),
            "db": await db(rig, 300_000 // k),
            "scoring": await asyncio.to_thread(scoring, 10_000, 30 // k),
            "triggers": await asyncio.to_thread(triggers, 10_000, 200_000 // k),
        }
    finally:
        rig.stop_kafka()
    return out
