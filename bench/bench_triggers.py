"""Trigger benchmark: evaluation rate per process, and latency from MQTT publish to work order.

1. **Evaluation rate** (one process, no I/O): 10,000 active triggers over 100,000
   sensors (10 companies of 10,000 sensors; 9,990 per-sensor triggers of every
   condition type and one fleet-wide anomaly trigger per company, so every reading
   meets at least one trigger). Scored records of 1,000 readings go through the
   service's own decode-and-evaluate code; side by side with a bare loop that only
   decodes the records and looks the sensors up.
2. **Latency through the whole pipeline**: ingest, stream and triggers as real
   processes on a fresh broker; 100,000 sensors publish 5,000 readings/s as gateway
   batches of 100 (QoS 1). After a warm-up, sensors with a threshold trigger get an
   excursion now and then; latency = work-order event received - the reading's
   timestamp (set at publish). The raw and scored hops are measured on the same
   readings: the Kafka timestamp (CreateTime: when ingest, or stream, sent the
   record) - the reading's timestamp.

Results: ``bench/results/triggers.{md,json}``. Run: ``make bench-triggers``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic_core import to_json

from bench.fleet import add_sensors, add_threshold_triggers, new_equipment
from tmiot.config import DatabaseSettings, KafkaSettings, LogSettings, RuntimeSettings, Settings
from tmiot.db import apply_schema, conninfo, create_database_if_missing
from tmiot.events import SCORED_BATCH, ScoredBatch
from tmiot.kafka import ensure_topics
from tmiot.logs import configure_logging
from tmiot.runtime import tune_process
from tmiot.services import free_port, kafka_problem, start_tansu, stop_pid
from triggers.conditions import parse_condition
from triggers.directory import Directory
from triggers.model import SensorInfo, Transition, TriggerSpec
from triggers.service import TriggerService

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 8
COMPANIES = 10

_CONDITIONS: list[tuple[str, dict[str, object]]] = [
    ("threshold_exceeded", {"above": 90.0, "for_seconds": 0}),
    ("threshold_exceeded", {"above": 90.0, "count": 3, "of": 5}),
    ("anomaly_detected", {"min_score": 0.7, "count": 2, "window_seconds": 600}),
    ("pattern_detected", {"pattern": "slope", "min_slope_per_hour": 30, "window_seconds": 1800}),
    ("maintenance_due", {"mode": "forecast", "horizon_hours": 24, "window_seconds": 3600}),
]


def _directory(sensors: int, triggers: int) -> Directory:
    """The in-memory directory of the evaluation part (as load_directory builds it)."""
    d = Directory()
    per = sensors // COMPANIES
    companies = [str(uuid.uuid4()) for _ in range(COMPANIES)]
    for i in range(sensors):
        sid = str(uuid.uuid4())
        d.sensors[sid] = SensorInfo(
            sensor_id=sid,
            company_id=companies[i // per],
            customer_equipment_id=str(uuid.uuid4()),
            sensor_number=f"S-{i}",
            sensor_type="temperature",
            sampling_interval_seconds=20,
            alert_threshold_min=0.0,
            alert_threshold_max=100.0,
            unit="C",
            status="active",
        )
    ids = list(d.sensors)
    fleet: dict[str, TriggerSpec] = {}
    for c in companies:
        spec = TriggerSpec(
            trigger_id=str(uuid.uuid4()),
            company_id=c,
            trigger_number=f"F-{c[:4]}",
            trigger_name="fleet anomalies",
            sensor_id=None,
            condition_type="anomaly_detected",
            condition=parse_condition("anomaly_detected", {"min_score": 0.9}),
        )
        fleet[c] = spec
        d.triggers[spec.trigger_id] = spec
    step = sensors // (triggers - COMPANIES)
    own: dict[str, TriggerSpec] = {}
    for k in range(triggers - COMPANIES):
        sid = ids[k * step]
        kind, cond = _CONDITIONS[k % len(_CONDITIONS)]
        spec = TriggerSpec(
            trigger_id=str(uuid.uuid4()),
            company_id=d.sensors[sid].company_id,
            trigger_number=f"T-{k}",
            trigger_name=f"trigger {k}",
            sensor_id=sid,
            condition_type=kind,
            condition=parse_condition(kind, cond),
            auto_create_work_order=True,
        )
        own[sid] = spec
        d.triggers[spec.trigger_id] = spec
    for sid, info in d.sensors.items():
        mine = (own[sid],) if sid in own else ()
        d.by_sensor[sid] = (*mine, fleet[info.company_id])
    return d


def _records(sensor_ids: list[str], readings: int, per_record: int) -> list[bytes]:
    rng = random.Random(7)
    start = (int(time.time()) - 3 * 3600) * 1_000_000
    out = []
    for r in range(readings // per_record):
        ids = [sensor_ids[rng.randrange(len(sensor_ids))] for _ in range(per_record)]
        ts = [start + (r * per_record + i) * 20_000 for i in range(per_record)]
        values = [70.0 + rng.gauss(0, 1) + (25 if rng.random() < 0.001 else 0) for _ in ids]
        n = per_record
        batch: ScoredBatch = {
            "v": 1,
            "sensor_id": ids,
            "company_id": [""] * n,
            "ts_us": ts,
            "value": list[float | None](values),
            "unit": ["C"] * n,
            "quality_score": [None] * n,
            "ambient_temperature": [None] * n,
            "ambient_humidity": [None] * n,
            "weather_conditions": [None] * n,
            "received_us": ts,
            "anomaly_score": [min(1.0, abs(v - 70) / 30) for v in values],
            "is_anomaly": [abs(v - 70) > 15 for v in values],
            "anomaly_type": ["spike" if abs(v - 70) > 15 else None for v in values],
        }
        out.append(to_json(batch))
    return out


def _evaluation(sensors: int, triggers: int, readings: int) -> dict[str, float]:
    directory = _directory(sensors, triggers)
    # Twice the readings: the first half (untimed) creates every (trigger, sensor)
    # state, the second half is the steady state a long-running process sees.
    both = _records(list(directory.sensors), 2 * readings, 1000)
    warm, records = both[: len(both) // 2], both[len(both) // 2 :]
    consumer_records = [
        ConsumerRecord("scored", 0, i, 0, 0, None, v, None, len(v), 0, ())
        for i, v in enumerate(records)
    ]
    # Bare: decode and look every sensor's triggers up, evaluate nothing.
    t0 = time.perf_counter()
    looked = 0
    for v in records:
        batch = SCORED_BATCH.validate_json(v)
        for sid in batch["sensor_id"]:
            looked += len(directory.for_sensor(sid))
    bare = time.perf_counter() - t0
    service = TriggerService(Settings())
    service.directory = directory
    now_us = time.time_ns() // 1000
    transitions: list[Transition] = []
    for i, v in enumerate(warm):
        warm_record = ConsumerRecord("scored", 0, i, 0, 0, None, v, None, len(v), 0, ())
        service._evaluate(warm_record, now_us, transitions, {}, [], [])  # noqa: SLF001
    transitions.clear()
    t0 = time.perf_counter()
    for rec in consumer_records:
        service._evaluate(rec, now_us, transitions, {}, [], [])  # noqa: SLF001 - the real hot path
    evaluated = time.perf_counter() - t0
    return {
        "sensors": sensors,
        "triggers": triggers,
        "readings": readings,
        "evaluations_per_reading": round(looked / readings, 3),
        "bare_readings_per_s": round(readings / bare),
        "service_readings_per_s": round(readings / evaluated),
        "service_evaluations_per_s": round(looked / evaluated),
        "transitions": len(transitions),
        "states": len(service.evaluator),
    }


# --- part 2: the whole pipeline --------------------------------------------------------


def _register(
    db: DatabaseSettings, sensors: int, triggers: int
) -> tuple[list[str], dict[str, list[str]], set[str]]:
    """Companies, sensors and triggers in the database.

    Returns (companies, devices per company, devices with a threshold trigger).
    """
    per = sensors // COMPANIES
    tag = uuid.uuid4().hex[:6]
    companies: list[str] = []
    devices: dict[str, list[str]] = {}
    watched: set[str] = set()
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        for c in range(COMPANIES):
            company, equipment = new_equipment(conn)
            companies.append(company)
            names = [f"{tag}-{c}-{i}" for i in range(per)]
            devices[company] = names
            add_sensors(
                conn,
                equipment,
                names,
                sensor_type="temperature",
                interval_seconds=120,
                threshold_max=100,
            )
            conn.execute(
                "INSERT INTO automated_service_triggers (company_id, trigger_name,"
                " condition_type, trigger_conditions)"
                " VALUES (%s, 'fleet anomalies', 'anomaly_detected', '{\"min_score\": 0.99}')",
                (company,),
            )
        own = triggers - COMPANIES
        step = sensors // own
        all_devices = [d for c in companies for d in devices[c]]
        chosen = [all_devices[k * step] for k in range(own)]
        watched = set(chosen)
        add_threshold_triggers(conn, chosen)
    return companies, devices, watched


def _env(db: DatabaseSettings, bootstrap: str, mqtt_port: int, suffix: str) -> dict[str, str]:
    return {
        **os.environ,
        "TMIOT_DATABASE__URL": db.url,
        "TMIOT_MQTT__PORT": str(mqtt_port),
        "TMIOT_MQTT__CLIENT_ID": f"bench-{suffix}",
        "TMIOT_MQTT__SHARE_GROUP": f"b{suffix}",
        "TMIOT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "TMIOT_KAFKA__PARTITIONS": str(PARTITIONS),
        "TMIOT_STREAM__APP_ID": f"stream-{suffix}",
        "TMIOT_TRIGGERS__GROUP_ID": f"triggers-{suffix}",
        "TMIOT_METRICS__ENABLED": "false",
        "TMIOT_LOG__LEVEL": "INFO",  # progress lines, every 10 s
        "TMIOT_LOG__FORMAT": "json",
    }


def _ms(values: list[float], q: float) -> int | None:
    """The q-quantile of `values` (seconds) in milliseconds; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))])


async def _pipeline(  # noqa: C901, PLR0915 - one linear scenario, read top to bottom
    args: argparse.Namespace, db: DatabaseSettings, work: Path
) -> dict[str, Any]:
    port = free_port()
    kafka = start_tansu("127.0.0.1", port, work / "kafka.log")
    bootstrap = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        while await kafka_problem(bootstrap) is not None:  # noqa: ASYNC110 - a probe, no event
            await asyncio.sleep(0.2)
        # Topics first, with their partitions: a consumer that came first would
        # auto-create one with the broker's default instead.
        kafka_settings = KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS)
        await ensure_topics(kafka_settings, kafka_settings.topics.names())
        companies, devices, watched = _register(db, args.sensors, args.triggers)
        suffix = uuid.uuid4().hex[:6]
        env = _env(db, bootstrap, args.mqtt_port, suffix)
        for command in ("ingest", "stream", "triggers"):
            with (work / f"{command}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "tmiot.cli", command],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        await asyncio.sleep(8)  # subscriptions and group joins
        latencies: list[float] = []
        scored_hop: list[float] = []
        raw_hop: list[float] = []
        excursions: dict[tuple[str, int], float] = {}
        stop = asyncio.Event()
        # Work orders: read as they come (a small topic). The raw and scored hops are
        # read off the records' Kafka timestamps (CreateTime, set by ingest and stream
        # when they send, on this machine's clock), so their reader can fetch in large,
        # lazy batches: every fetch costs tansu a scan of the partition, and a tight
        # reader of the two busiest topics loaded the broker more than the pipeline did.
        orders = AIOKafkaConsumer(
            "workorders.requested",
            bootstrap_servers=bootstrap,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=20,
        )
        hops = AIOKafkaConsumer(
            "sensor.readings.scored",
            "sensor.readings.raw",
            bootstrap_servers=bootstrap,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=1000,
            fetch_min_bytes=4 << 20,
            max_partition_fetch_bytes=16 << 20,
        )
        await orders.start()
        await hops.start()

        async def consume_orders() -> None:
            while not stop.is_set():
                batch = await orders.getmany(timeout_ms=200)
                received = time.time()
                for records in batch.values():
                    for r in records:
                        value = json.loads(r.value or b"{}")
                        opened = dt.datetime.fromisoformat(value["opened_at"]).timestamp()
                        if value["trigger_number"] and opened >= measure_from:
                            latencies.append(received - opened)

        async def consume_hops() -> None:
            while not stop.is_set():
                batch = await hops.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    hop = scored_hop if tp.topic == "sensor.readings.scored" else raw_hop
                    for r in records:
                        if not r.value or b"95.0" not in r.value:  # no excursion in it
                            continue
                        value = json.loads(r.value)
                        sent = r.timestamp / 1000
                        for ts, v in zip(value["ts_us"], value["value"], strict=True):
                            if v is not None and v > 90 and ts / 1e6 >= measure_from:
                                hop.append(sent - ts / 1e6)

        measure_from = time.time() + args.warmup_seconds
        readers = [asyncio.create_task(consume_orders()), asyncio.create_task(consume_hops())]
        rng = random.Random(11)
        flat = [(c, d) for c in companies for d in devices[c]]
        hot_pool = [(c, d) for c, d in flat if d in watched]
        rng.shuffle(hot_pool)
        per_message = 100
        interval = per_message / args.rate
        total_seconds = args.warmup_seconds + args.measure_seconds
        sent = 0
        async with aiomqtt.Client("127.0.0.1", args.mqtt_port) as client:
            t0 = time.perf_counter()
            next_at = t0
            i = 0
            while time.perf_counter() - t0 < total_seconds:
                now = time.time()
                now_ms = int(now * 1000)  # the payload's epoch-milliseconds form
                by_company: dict[str, list[dict[str, object]]] = {}
                hot = None
                if now >= measure_from and hot_pool and i % args.excursion_every == 0:
                    hot = hot_pool.pop()
                for k in range(per_message):
                    c, d = flat[(i * per_message + k) % len(flat)]
                    by_company.setdefault(c, []).append(
                        {"device_id": d, "timestamp": now_ms, "value": 70.0 + rng.gauss(0, 1)}
                    )
                if hot is not None:
                    by_company.setdefault(hot[0], []).append(
                        {"device_id": hot[1], "timestamp": now_ms, "value": 95.0}
                    )
                    excursions[(hot[1], int(now * 1e6))] = now
                for c, items in by_company.items():
                    await client.publish(
                        f"tenants/{c}/gateways/bench/readings",
                        json.dumps({"readings": items}),
                        qos=1,
                    )
                    sent += len(items)
                i += 1
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            elapsed = time.perf_counter() - t0
        await asyncio.sleep(5)  # the last work orders
        stop.set()
        await asyncio.gather(*readers)
        await orders.stop()
        await hops.stop()
        return {
            "sensors": args.sensors,
            "triggers": args.triggers,
            "target_rate": args.rate,
            "achieved_rate": round(sent / elapsed),
            "warmup_seconds": args.warmup_seconds,
            "measure_seconds": args.measure_seconds,
            "excursions": len(excursions),
            "work_orders": len(latencies),
            "latency_ms": {
                "p50": _ms(latencies, 0.5),
                "p95": _ms(latencies, 0.95),
                "p99": _ms(latencies, 0.99),
                "max": _ms(latencies, 1.0),
                "mean": round(1000 * statistics.fmean(latencies)) if latencies else None,
            },
            "raw_hop_ms": {
                "p50": _ms(raw_hop, 0.5),
                "p99": _ms(raw_hop, 0.99),
            },
            "scored_hop_ms": {
                "p50": _ms(scored_hop, 0.5),
                "p99": _ms(scored_hop, 0.99),
            },
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        stop_pid(kafka.pid)


def _markdown(r: dict[str, Any]) -> str:
    e = r["evaluation"]
    lines = [
        "# Trigger benchmark",
        "",
        f"{r['when']}, {r['machine']}",
        "",
        (
            f"## Evaluation rate ({e['triggers']:,} triggers over {e['sensors']:,} sensors,"
            f" {e['evaluations_per_reading']} evaluations per reading)"
        ),
        "",
        (
            f"Steady state: {e.get('states', 0):,} (trigger, sensor) states already in memory;"
            f" {e['readings']:,} readings in records of 1,000."
        ),
        "",
        "| loop | scored readings/s |",
        "|---|---:|",
        f"| bare: decode + look up the sensor's triggers | {e['bare_readings_per_s']:,} |",
        f"| trigger service: decode + evaluate every trigger | {e['service_readings_per_s']:,} |",
        "",
        (
            f"service / bare: {e['service_readings_per_s'] / e['bare_readings_per_s']:.3f};"
            f" {e['service_evaluations_per_s']:,} (trigger, reading) evaluations/s"
        ),
        "",
    ]
    p = r.get("pipeline")
    if p:
        lat = p["latency_ms"]
        hop = p["scored_hop_ms"]
        raw = p["raw_hop_ms"]
        lines += [
            (
                f"## Latency, MQTT publish -> work-order event ({p['sensors']:,} sensors,"
                f" {p['triggers']:,} triggers, {p['achieved_rate']:,} readings/s of"
                f" {p['target_rate']:,} asked)"
            ),
            "",
            (
                f"{p['work_orders']} work orders from {p['excursions']} excursions over"
                f" {p['measure_seconds']} s after a {p['warmup_seconds']} s warm-up."
            ),
            "",
            "| | p50 | p95 | p99 | max |",
            "|---|---:|---:|---:|---:|",
            (
                f"| publish -> work order (ms) | {lat['p50']} | {lat['p95']} | {lat['p99']} |"
                f" {lat['max']} |"
            ),
            f"| publish -> raw record sent by ingest (ms) | {raw['p50']} | | {raw['p99']} | |",
            f"| publish -> scored record sent by stream (ms) | {hop['p50']} | | {hop['p99']} | |",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run, write the results files and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/tmiot_bench_triggers"
    )
    parser.add_argument("--sensors", type=int, default=100_000)
    parser.add_argument("--triggers", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=300_000, help="evaluation part")
    parser.add_argument("--rate", type=int, default=5000, help="readings/s through the pipeline")
    parser.add_argument("--warmup-seconds", type=float, default=40)
    parser.add_argument("--measure-seconds", type=float, default=60)
    parser.add_argument("--excursion-every", type=int, default=5, help="one per N messages")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="triggers", help="results file stem")
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING"))
    # The services tune their process at start (tmiot.runtime); the loops measured
    # in this process (bare ones included) run under the same setting.
    tune_process(RuntimeSettings())
    report: dict[str, Any] = {
        "benchmark": "triggers",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "evaluation": _evaluation(args.sensors, args.triggers, args.readings),
    }
    sys.stdout.write(_markdown(report))
    if not args.skip_pipeline:
        db = DatabaseSettings(url=args.database_url)
        name = conninfo_to_dict(db.url).get("dbname")
        with psycopg.connect(conninfo(db, dbname="postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
            )
        create_database_if_missing(db)
        apply_schema(db)
        work = Path(tempfile.mkdtemp(prefix="tmiot-bench-triggers-"))
        report["pipeline"] = asyncio.run(_pipeline(args, db, work))
        report["logs"] = str(work)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(_markdown(report))
    sys.stdout.write(_markdown(report))


if __name__ == "__main__":
    main()
