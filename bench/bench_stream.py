"""Stream benchmark: a `tmiot stream` worker against a bare consume-and-write loop, one run.

- ``bare``: an aiokafka ``getmany`` loop that decodes each raw record and writes its
  readings with the same idempotent sink, no scoring, no Faust;
- ``worker``: one real ``tmiot stream`` process (Faust, River detectors per sensor,
  sink, scored topic, checkpoints). It drains a tenth of the readings first (start,
  group join, sensor metadata); then the rest are produced and timed from the moment
  they start to go out to their last row.

Both write the same readings into an emptied ``sensor_readings``. Progress is
watched through the table's heap size (a stat), not count(*), which would take
the database from the worker being measured.

Memory per sensor, at 10,000 and 100,000 sensors, each sensor having learned 40
readings through the worker's :class:`~stream.scoring.Scorer` (records of 1,000
readings, spread over the partitions, then a checkpoint pass as the worker makes):

- ``model`` bytes: what tracemalloc sees allocated by the scorer's models (the sensor
  ids and metadata are allocated before it starts);
- ``rss`` bytes: growth of the resident set of a fresh process (``--memory-child N``)
  from before the sensor ids exist to after the checkpoint pass, divided by N; so it
  holds the ids, the ``SensorMeta`` per sensor, the allocator's slack and whatever
  tracemalloc does not see. This is the figure to hold against the 20 KB target.

Results go to ``bench/results/stream.*``; ``--only-memory`` skips the throughput
part (which wants a quiet machine) and writes to a temporary directory instead.

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
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import NamedTuple

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic_core import to_json

from bench.fleet import add_sensors, new_equipment
from stream.scoring import Scorer, SensorMeta
from stream.sink import ReadingsSink
from tmiot.config import (
    DatabaseSettings,
    DetectorSettings,
    KafkaSettings,
    LogSettings,
    RuntimeSettings,
)
from tmiot.db import apply_schema, conninfo, create_database_if_missing
from tmiot.events import RAW_SCHEMA, SCHEMA_HEADER, decode_reading_batch
from tmiot.kafka import ensure_topics, partition_for
from tmiot.logs import configure_logging
from tmiot.runtime import tune_process
from tmiot.services import free_port, kafka_problem, start_tansu, stop_pid

RESULTS = Path(__file__).parent / "results"
_PARTIAL = Path(tempfile.gettempdir()) / "tmiot-bench-stream"
PARTITIONS = 8
_RECORD = 1000  # readings per raw record


def _register(db: DatabaseSettings, count: int) -> tuple[str, list[str]]:
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        company, equipment = new_equipment(conn)
        tag = uuid.uuid4().hex[:6]
        devices = [f"{tag}-{i}" for i in range(count)]
        ids = add_sensors(conn, equipment, devices, sensor_type="vibration", interval_seconds=60)
        return company, ids


def _records(company: str, sensors: list[str], first: int, n: int) -> list[tuple[int, bytes]]:
    """Readings [first, n), a minute apart per sensor, packed per partition, 1000 per record."""
    start = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=20)).timestamp()) * 1_000_000
    start -= start % 86_400_000_000  # the same timestamps in every call of a run
    parts: dict[int, list[tuple[str, int, float]]] = {}
    for i in range(first, n):
        s = sensors[i % len(sensors)]
        ts = start + (i // len(sensors)) * 60_000_000
        parts.setdefault(partition_for(s, PARTITIONS), []).append((s, ts, 20.0 + (i % 17) / 10))
    records = []
    for p, rows in parts.items():
        for k in range(0, len(rows), _RECORD):
            chunk = rows[k : k + _RECORD]
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
            records.append((p, to_json(value)))
    return records


async def _produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS), [topic])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=4 << 20, max_request_size=4 << 20
    )
    await producer.start()
    try:
        futs = [
            await producer.send(topic, value, partition=p, headers=[(SCHEMA_HEADER, RAW_SCHEMA)])
            for p, value in records
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def _count(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()
    return int(row[0]) if row else 0


def _heap_bytes(conn: psycopg.Connection[tuple[int]]) -> int:
    """Bytes of ``sensor_readings``' heap: a stat of its file, unlike count(*) a constant cost."""
    row = conn.execute("SELECT pg_relation_size('sensor_readings')").fetchone()
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


class _Load(NamedTuple):
    """The worker's input: warm-up records, then the measured ones (readings in each)."""

    warmup: list[tuple[int, bytes]]
    warmup_readings: int
    measured: list[tuple[int, bytes]]
    readings: int  # in all
    heap_bytes: int  # of the table holding all of them, as the bare run left it


async def _worker(bootstrap: str, db: DatabaseSettings, load: _Load, work: Path) -> float:
    """Seconds the worker takes for the measured readings, from a warm, idle start.

    The worker drains the warm-up records first (process start, group join, the
    first sensors' metadata); then the measured records are produced and timed from
    the moment they start to go out to the moment their last row is committed. (A
    preloaded topic timed from the first row would miss the first buffer's scoring,
    which can be most of the topic.)
    """
    suffix = uuid.uuid4().hex[:6]
    topic = f"raw.worker.{suffix}"
    await _produce(bootstrap, topic, load.warmup)
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
        "TMIOT_LOG__LEVEL": "INFO",  # progress lines every 10 s in worker.log
    }
    with (work / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tmiot.cli", "stream"], env=env, stdout=log, stderr=log
        )

    def alive() -> None:
        if proc.poll() is not None:
            msg = f"worker died: {work / 'worker.log'}"
            raise SystemExit(msg)

    try:
        # Progress is watched through the heap's size, which the bare run left at
        # `heap_bytes` for the same rows (scores and types make the worker's rows a
        # little different); count(*) runs only near the end. (A count(*) every
        # 50 ms, on a fresh connection, took about half a core of the database
        # from the worker being measured.)
        with psycopg.connect(conninfo(db), autocommit=True) as conn:
            while _count(conn) < load.warmup_readings:
                alive()
                await asyncio.sleep(0.1)
            t0 = time.perf_counter()
            await _produce(bootstrap, topic, load.measured)
            while not (
                _heap_bytes(conn) >= 0.98 * load.heap_bytes and _count(conn) >= load.readings
            ):
                alive()
                await asyncio.sleep(0.01)
            return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)


def _feed(scorer: Scorer, meta: dict[str, SensorMeta], readings_each: int, first: int = 0) -> float:
    """Each sensor learns `readings_each` readings, 1,000 per record; the seconds it took.

    Readings are a minute apart, from minute `first` on (a second call continues a
    first one with ``first`` = its ``readings_each``).

    A record's sensors share a partition (a sensor keeps its partition), and a
    checkpoint pass takes the changed states at the end, as the worker does.
    """
    ids = list(meta)
    t0 = time.perf_counter()
    for r in range(first, first + readings_each):
        for k in range(0, len(ids), _RECORD):
            chunk = ids[k : k + _RECORD]
            m = len(chunk)
            batch = {
                "v": 1,
                "sensor_id": chunk,
                "company_id": ["c"] * m,
                "ts_us": [r * 60_000_000] * m,
                "value": [20.0 + ((i * 7 + r) % 11) / 10 for i in range(k, k + m)],
                "unit": [None] * m,
                "quality_score": [None] * m,
                "ambient_temperature": [None] * m,
                "ambient_humidity": [None] * m,
                "weather_conditions": [None] * m,
                "received_us": [0] * m,
            }
            scorer.score(k // _RECORD % PARTITIONS, batch, meta)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    for partition in scorer.dirty_partitions():
        scorer.take_dirty(partition)
    return elapsed


def _meta(sensors: int) -> dict[str, SensorMeta]:
    """Sensor ids as the worker sees them (UUID text) with their metadata."""
    return {str(uuid.uuid4()): SensorMeta(None, None, 60) for _ in range(sensors)}


def _memory(sensors: int, readings_each: int) -> dict[str, int]:
    """Bytes tracemalloc sees the scorer's models take per sensor (ids and meta excluded)."""
    scorer = Scorer(DetectorSettings())
    meta = _meta(sensors)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    elapsed = _feed(scorer, meta, readings_each)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(scorer) == sensors
    return {
        "sensors": sensors,
        "model_bytes_per_sensor_traced": round(used / sensors),
        "scores_per_s_traced": round(sensors * readings_each / elapsed),
    }


def _resident() -> int:
    """This process's resident set size, bytes (Linux: /proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _memory_child(sensors: int, readings_each: int) -> dict[str, int]:
    """In this (fresh) process: resident bytes per sensor of ids, meta and models."""
    gc.collect()
    before = _resident()
    scorer = Scorer(DetectorSettings())
    meta = _meta(sensors)
    elapsed = _feed(scorer, meta, readings_each)
    gc.collect()
    after = _resident()
    assert len(scorer) == sensors
    return {
        "sensors": sensors,
        "rss_before": before,
        "rss_after": after,
        "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_bytes_per_sensor": round((after - before) / sensors),
        "scores_per_s": round(sensors * readings_each / elapsed),
    }


def _rss(sensors: int, readings_each: int) -> dict[str, int]:
    """Run :func:`_memory_child` in a fresh interpreter (nothing else on its heap)."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-child",
            str(sensors),
            "--memory-readings",
            str(readings_each),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    child: dict[str, int] = json.loads(out.stdout)
    return child


def _memory_rows(sensor_counts: list[int], readings_each: int) -> list[dict[str, int]]:
    """Both measures per fleet size, one row each."""
    rows = []
    for n in sensor_counts:
        rss = _rss(n, readings_each)
        traced = _memory(n, readings_each)
        rows.append({**traced, **{k: v for k, v in rss.items() if k != "sensors"}})
    return rows


async def _throughput(args: argparse.Namespace) -> dict[str, object]:
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
        n, warm = args.readings, args.readings // 10
        await _produce(bootstrap, topic, _records(company, sensors, 0, n))
        _truncate(db)
        bare = await _bare(bootstrap, topic, db, n)
        with psycopg.connect(conninfo(db)) as conn:
            heap = _heap_bytes(conn)
        _truncate(db)
        load = _Load(
            _records(company, sensors, 0, warm),
            warm,
            _records(company, sensors, warm, n),
            n,
            heap,
        )
        worker = await _worker(bootstrap, db, load, work)
    finally:
        stop_pid(kafka.pid)
    return {
        "bare_readings_per_s": round(n / bare),
        "worker_readings_per_s": round((n - warm) / worker),
        "worker_to_bare": round((n - warm) / worker / (n / bare), 3),
    }


def _run(args: argparse.Namespace) -> dict[str, object]:
    report: dict[str, object] = {
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
            "readings_per_record": _RECORD,
            "memory_readings_per_sensor": args.memory_readings,
        },
    }
    if args.only_memory:
        report["partial"] = "memory only (--only-memory): no throughput figures"
    else:
        report.update(asyncio.run(_throughput(args)))
    report["memory"] = _memory_rows(args.memory_sensors, args.memory_readings)
    return report


def _markdown(r: dict[str, object]) -> str:
    mem = r["memory"]
    assert isinstance(mem, list)
    lines = [
        "# Stream benchmark",
        "",
        f"{r['when']}, {r['machine']}, parameters {r['parameters']}",
        "",
    ]
    if "partial" in r:
        lines += [f"Partial run: {r['partial']}.", ""]
    else:
        lines += [
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
        ]
    lines += [
        "Memory per sensor after 40 readings each: the models as tracemalloc counts them, and",
        "the resident set growth of a fresh process (sensor ids, `SensorMeta` and models,",
        "allocator slack included).",
        "",
        (
            "| sensors | model bytes per sensor (tracemalloc) | RSS bytes per sensor "
            "| scores/s (traced) | scores/s |"
        ),
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {m['sensors']:,} | {m['model_bytes_per_sensor_traced']:,} "
        f"| {m['rss_bytes_per_sensor']:,} | {m['scores_per_s_traced']:,} | {m['scores_per_s']:,} |"
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
    parser.add_argument("--memory-readings", type=int, default=40, help="learned per sensor")
    parser.add_argument(
        "--only-memory", action="store_true", help="skip the throughput part (partial run)"
    )
    parser.add_argument(
        "--memory-child",
        type=int,
        metavar="N",
        help="internal: measure the RSS of N sensors in this process, print JSON",
    )
    parser.add_argument(
        "--out", type=Path, help=f"results directory (default {RESULTS}; partial runs: {_PARTIAL})"
    )
    args = parser.parse_args()
    if args.memory_child is not None:
        sys.stdout.write(json.dumps(_memory_child(args.memory_child, args.memory_readings)))
        return
    out = args.out or (_PARTIAL if args.only_memory else RESULTS)
    if args.only_memory and out.resolve() == RESULTS.resolve():
        parser.error(f"a partial run does not overwrite {RESULTS}: pick another --out")
    configure_logging(LogSettings(level="WARNING"))
    # The services tune their process at start (tmiot.runtime); the loops measured
    # in this process (bare ones included) run under the same setting.
    tune_process(RuntimeSettings())
    report = _run(args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stream.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "stream.md").write_text(_markdown(report))
    sys.stdout.write(_markdown(report))
    sys.stdout.write(f"\nwritten to {out}/stream.{{json,md}}\n")


if __name__ == "__main__":
    main()
