"""Replay benchmark: `tmiot replay --fast` of a 1,000,000-record recording, one run.

A recording of raw-reading records (one reading each, keyed by sensor, 8 partitions,
with the schema header, about 330 bytes a value) is written once; then, each onto a
fresh topic of a fresh broker:

- ``bare``: an aiokafka producer loop sending the same records, read back from the
  file, with the same producer settings (acks=all) - the Kafka limit here;
- ``replay``: :func:`tmiot.replay.replay` with ``speed=None`` (as ``--fast``).

Both are timed from the first send to the last acknowledgement. Results go to
``bench/results/replay.{md,json}``. Run: ``make bench-replay``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pydantic_core import to_json

from tmiot.config import KafkaSettings, LogSettings, RuntimeSettings
from tmiot.events import RAW_SCHEMA, SCHEMA_HEADER
from tmiot.kafka import ensure_topics, partition_for, producer
from tmiot.logs import configure_logging
from tmiot.recording import Recorded, RecordingWriter, read_recording
from tmiot.replay import replay
from tmiot.runtime import tune_process
from tmiot.services import free_port, kafka_problem, start_tansu, stop_pid

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 8


def _write_recording(path: Path, records: int, sensors: int) -> int:
    ids = [str(uuid.uuid4()) for _ in range(sensors)]
    company = str(uuid.uuid4())
    start_ms = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1000)
    size = 0
    with RecordingWriter(path) as out:
        for i in range(records):
            sensor = ids[i % sensors]
            ts_ms = start_ms + (i // sensors) * 60_000
            value = to_json(
                {
                    "v": 1,
                    "sensor_id": [sensor],
                    "company_id": [company],
                    "ts_us": [ts_ms * 1000],
                    "value": [20.0 + (i % 17) / 10],
                    "unit": ["mm/s"],
                    "quality_score": [0.98],
                    "ambient_temperature": [None],
                    "ambient_humidity": [None],
                    "weather_conditions": [None],
                    "received_us": [ts_ms * 1000],
                }
            )
            size += len(value)
            out.write(
                Recorded(
                    "sensor.readings.raw",
                    partition_for(sensor, PARTITIONS),
                    i,
                    ts_ms,
                    sensor.encode(),
                    value,
                    ((SCHEMA_HEADER, RAW_SCHEMA),),
                )
            )
    return size


async def _bare(kafka: KafkaSettings, path: Path, topic: str) -> tuple[int, float]:
    out = producer(kafka, client_id="bench-bare")
    await out.start()
    try:
        t0 = time.perf_counter()
        futures = []
        count = 0
        for rec in read_recording(path):
            futures.append(
                await out.send(
                    topic,
                    rec.value,
                    key=rec.key,
                    partition=rec.partition,
                    headers=[(k, v or b"") for k, v in rec.headers],
                )
            )
            count += 1
            if len(futures) >= 20_000:  # as replay bounds its in-flight sends
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return count, count / (time.perf_counter() - t0)
    finally:
        await out.stop()


async def _run(args: argparse.Namespace, path: Path, work: Path) -> dict[str, object]:
    rates: dict[str, float] = {}
    for who in ("bare", "replay"):
        port = free_port()
        broker = start_tansu("127.0.0.1", port, work / f"kafka-{who}.log")
        bootstrap = f"127.0.0.1:{port}"
        try:
            while await kafka_problem(bootstrap) is not None:  # noqa: ASYNC110 - a probe
                await asyncio.sleep(0.2)
            kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS)
            topic = f"replayed.{who}"
            await ensure_topics(kafka, [topic])
            if who == "bare":
                count, rate = await _bare(kafka, path, topic)
            else:
                count, rate = await replay(
                    kafka, path, topic_map={"sensor.readings.raw": topic}, speed=None
                )
            if count != args.records:
                msg = f"{who}: {count} records sent, {args.records} recorded"
                raise SystemExit(msg)
            rates[who] = rate
        finally:
            stop_pid(broker.pid)
    return {
        "bare_records_per_s": round(rates["bare"]),
        "replay_records_per_s": round(rates["replay"]),
        "ratio": round(rates["replay"] / rates["bare"], 3),
    }


def _markdown(r: dict[str, object]) -> str:
    return "\n".join(
        [
            "# Replay benchmark",
            "",
            f"{r['when']}, {r['machine']}, parameters {r['parameters']}",
            "",
            "| loop | records/s |",
            "|---|---:|",
            f"| bare aiokafka producer loop over the same file | {r['bare_records_per_s']:,} |",
            f"| `tmiot replay --fast` | {r['replay_records_per_s']:,} |",
            "",
            f"replay / bare: {r['ratio']}",
            "",
        ]
    )


def main() -> None:
    """Write the recording, replay it both ways, write the results files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING"))
    tune_process(RuntimeSettings())
    work = Path(tempfile.mkdtemp(prefix="tmiot-bench-replay-"))
    path = work / "raw.tmrec"
    value_bytes = _write_recording(path, args.records, args.sensors)
    result: dict[str, object] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)),
        },
        "parameters": {
            "records": args.records,
            "sensors": args.sensors,
            "partitions": PARTITIONS,
            "value_bytes_mean": round(value_bytes / args.records),
            "file_bytes": path.stat().st_size,
        },
        **asyncio.run(_run(args, path, work)),
    }
    path.unlink()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "replay.md").write_text(_markdown(result))
    sys.stdout.write(_markdown(result))


if __name__ == "__main__":
    main()
