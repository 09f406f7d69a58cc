"""Stream benchmark: a `tmiot stream` worker against a bare consume-and-write loop, one run.

- ``bare``: an aiokafka ``getmany`` loop that decodes each raw record and writes its
  readings with the same idempotent sink, no scoring, no Faust;
- ``worker``: one real ``tmiot stream`` process (Faust, River detectors per sensor,
  sink, scored topic, checkpoints), timed from its first row to its last.

Both drain the same preloaded topic into an emptied ``sensor_readings``. Memory per
sensor: resident bytes of the scorer's models after every sensor learned 40 readings,
at 10,000 and 100,000 sensors (tracemalloc). Results go to ``bench/results/stream.*``.

Run: ``make bench-stream`` (or ``python bench/bench_stream.py --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic_core import to_json

from ingest.sensors import partition_for
from stream.scoring import Scorer, SensorMeta
from stream.sink import ReadingsSink
from tmiot.config import DatabaseSettings, DetectorSettings, KafkaSettings, LogSettings
from tmiot.db import apply_schema, conninfo, create_database_if_missing
from tmiot.events import RAW_SCHEMA, SCHEMA_HEADER, decode_reading_batch
from tmiot.kafka import ensure_topics
from tmiot.logs import configure_logging
from tmiot.services import free_port, kafka_problem, start_tansu, stop_pid

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 8


def _register(db: DatabaseSettings, count: int) -> tuple[str, list[str]]:
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        row = conn.execute(
            "WITH c AS (INSERT INTO companies (name) VALUES ('bench') RETURNING id),"
            " cu AS (INSERT INTO customers (company_id, name) SELECT id, 'bench' FROM c"
            "        RETURNING id, company_id)"
            " INSERT INTO customer_equipment (company_id, customer_id, name)"
            " SELECT company_id, id, 'rig' FROM cu RETURNING company_id, id"
        ).fetchone()
        assert row is not None
        tag = uuid.uuid4().hex[:6]
        cur = conn.execute(
            "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, device_id,"
            " sampling_interval_seconds, sensor_number)"
            " SELECT %s, 'vibration', d, 60, 'B-' || d FROM unnest(%s::text[]) AS d RETURNING id",
            (row[1], [f"{tag}-{i}" for i in range(count)]),
        )
        return str(row[0]), [str(r[0]) for r in cur.fetchall()]


async def _preload(bootstrap: str, topic: str, company: str, sensors: list[str], n: int) -> None:
    """`n` readings, a minute apart per sensor, packed per partition, 1000 per record."""
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS), [topic])
    start = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=20)).timestamp()) * 1_000_000
    parts: dict[int, list[tuple[str, int, float]]] = {}
    for i in range(n):
        s = sensors[i % len(sensors)]
        ts = start + (i // len(sensors)) * 60_000_000
        parts.setdefault(partition_for(s, PARTITIONS), []).append((s, ts, 20.0 + (i % 17) / 10))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=4 << 20, max_request_size=4 << 20
    )
    await producer.start()
    try:
        futs = []
        for p, rows in parts.items():
            for k in range(0, len(rows), 1000):
                chunk = rows[k : k + 1000]
                m = len(chunk)
                value = {
                    "v": 1,
                    "sensor_id": [r[0] for r in chunk],
                    "company_id": [company] * m,
                    "ts_us": [r[1] for r in chunk],
                    "value": [r[2] for r in chunk],
                    "unit": ["mm/s"] * m,
                    "quality_score": [None] * m,
                    "ambient_temperature": [None] * m,
                    "ambient_humidity": [None] * m,
                    "weather_conditions": [None] * m,
                    "received_us": [r[1] for r in chunk],
                }
                futs.append(
                    await producer.send(
                        topic, to_json(value), partition=p, headers=[(SCHEMA_HEADER, RAW_SCHEMA)]
                    )
                )
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def _rows(db: DatabaseSettings) -> int:
    with psycopg.connect(conninfo(db)) as conn:
        row = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()
        return int(row[0]) if row else 0


def _truncate(db: DatabaseSettings) -> None:
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        conn.execute("TRUNCATE sensor_readings")


async def _bare(bootstrap: str, topic: str, db: DatabaseSettings, n: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    done = 0
    try:
        async with ReadingsSink(db) as sink:
            t0 = time.perf_counter()
            while done < n:
                batch = await consumer.getmany(timeout_ms=500, max_records=50)
                for msgs in batch.values():
                    for m in msgs:
                        raw = decode_reading_batch(m.value or b"")
                        k = len(raw["sensor_id"])
                        scored = {
                            **raw,
                            "anomaly_score": [0.0] * k,
                            "is_anomaly": [False] * k,
                            "anomaly_type": [None] * k,
                        }
                        inserted, _ = await sink.write(scored)  # type: ignore[arg-type]
                        done += inserted
            return time.perf_counter() - t0
    finally:
        await consumer.stop()


def _worker(bootstrap: str, topic: str, db: DatabaseSettings, n: int, work: Path) -> float:
    suffix = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "TMIOT_DATABASE__URL": db.url,
        "TMIOT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "TMIOT_KAFKA__PARTITIONS": str(PARTITIONS),
        "TMIOT_KAFKA__TOPICS__READINGS_RAW": topic,
        "TMIOT_KAFKA__TOPICS__READINGS_SCORED": f"scored.{suffix}",
        "TMIOT_KAFKA__TOPICS__READINGS_DEADLETTER": f"dlq.{suffix}",
        "TMIOT_KAFKA__TOPICS__SENSOR_STATUS": f"status.{suffix}",
        "TMIOT_STREAM__APP_ID": f"bench-{suffix}",
        "TMIOT_METRICS__ENABLED": "false",
        "TMIOT_LOG__LEVEL": "WARNING",
    }
    with (work / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tmiot.cli", "stream"], env=env, stdout=log, stderr=log
        )
    try:
        while (first := _rows(db)) == 0:
            if proc.poll() is not None:
                msg = f"worker died: {work / 'worker.log'}"
                raise SystemExit(msg)
            time.sleep(0.05)
        t0 = time.perf_counter()
        while (got := _rows(db)) < n:
            time.sleep(0.05)
        return (time.perf_counter() - t0) * n / max(1, got - first)
    finally:
        proc.terminate()
        proc.wait(30)


def _memory(sensors: int, readings_each: int) -> dict[str, float]:
    scorer = Scorer(DetectorSettings())
    meta = {f"s{i}": SensorMeta(None, None, 60) for i in range(sensors)}
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    for r in range(readings_each):
        ids = list(meta)
        batch = {
            "v": 1,
            "sensor_id": ids,
            "company_id": ["c"] * sensors,
            "ts_us": [r * 60_000_000] * sensors,
            "value": [20.0 + ((i * 7 + r) % 11) / 10 for i in range(sensors)],
            "unit": [None] * sensors,
            "quality_score": [None] * sensors,
            "ambient_temperature": [None] * sensors,
            "ambient_humidity": [None] * sensors,
            "weather_conditions": [None] * sensors,
            "received_us": [0] * sensors,
        }
        scorer.score(0, batch, meta)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    scorer.take_dirty(0)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {
        "sensors": sensors,
        "bytes_per_sensor": round(used / sensors),
        "scores_per_s_traced": round(sensors * readings_each / elapsed),
    }


async def _run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="tmiot-bench-stream-"))
    port = free_port()
    kafka = start_tansu("127.0.0.1", port, work / "kafka.log")
    bootstrap = f"127.0.0.1:{port}"
    try:
        while await kafka_problem(bootstrap) is not None:  # noqa: ASYNC110 - a probe, no event
            await asyncio.sleep(0.2)
        db = DatabaseSettings(url=args.database_url)
        create_database_if_missing(db)
        apply_schema(db)
        company, sensors = _register(db, args.sensors)
        topic = f"raw.bench.{uuid.uuid4().hex[:6]}"
        await _preload(bootstrap, topic, company, sensors, args.readings)
        _truncate(db)
        bare = await _bare(bootstrap, topic, db, args.readings)
        _truncate(db)
        worker = _worker(bootstrap, topic, db, args.readings, work)
        memory = [_memory(n, 40) for n in args.memory_sensors]
    finally:
        stop_pid(kafka.pid)
    return {
        "benchmark": "stream",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "parameters": {
            "sensors": args.sensors,
            "readings": args.readings,
            "partitions": PARTITIONS,
            "readings_per_record": 1000,
        },
        "bare_readings_per_s": round(args.readings / bare),
        "worker_readings_per_s": round(args.readings / worker),
        "worker_to_bare": round(bare / worker, 3),
        "memory": memory,
    }


def _markdown(r: dict[str, object]) -> str:
    mem = r["memory"]
    assert isinstance(mem, list)
    lines = [
        "# Stream benchmark",
        "",
        f"{r['when']}, {r['machine']}, parameters {r['parameters']}",
        "",
        "| loop | readings/s |",
        "|---|---:|",
        (
            "| bare consume + decode + idempotent insert (no scoring) "
            f"| {r['bare_readings_per_s']:,} |"
        ),
        (
            "| `tmiot stream` worker (Faust, scoring, insert, scored topic, checkpoints) "
            f"| {r['worker_readings_per_s']:,} |"
        ),
        "",
        f"worker / bare: {r['worker_to_bare']}",
        "",
        "| sensors | bytes per sensor (models) | scores/s under tracemalloc |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {m['sensors']:,} | {m['bytes_per_sensor']:,} | {m['scores_per_s_traced']:,} |"
        for m in mem
    ]
    return "\n".join([*lines, ""])


def main() -> None:
    """Parse the options, run, write the results files and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/tmiot_bench_stream"
    )
    parser.add_argument("--sensors", type=int, default=2000)
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--memory-sensors", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING"))
    report = asyncio.run(_run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stream.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "stream.md").write_text(_markdown(report))
    sys.stdout.write(_markdown(report))


if __name__ == "__main__":
    main()
