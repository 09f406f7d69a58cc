"""Ingest benchmark: tmiot ingest against a bare MQTT subscriber, side by side in one run.

Each scenario preloads a backlog of messages into a persistent MQTT session
while the subscriber is away, then measures how fast the subscriber drains it:

- ``bare``: an aiomqtt subscriber that only counts messages (paho acknowledges
  on receipt) - the MQTT limit on this machine;
- ``ingest``: the real IngestService (validation, tenant check, packing,
  Kafka produce with acks=all, PUBACK after Kafka acked), timed until Kafka has
  acknowledged every reading;
- ``ingest-stock-paho``: the same service with ``ingest/mqtt.py``'s three reaches into
  paho undone (property tables per packet, three reads per packet, a send per PUBACK):
  what those are worth.

The bare subscriber always runs on stock paho too (the shared property tables are
process-wide once ingest has run).

Both use the same broker configuration and the same Receive Maximum. Results
go to ``bench/results/ingest.json`` and ``bench/results/ingest.md``.

Run: ``make bench-ingest`` (or ``python bench/bench_ingest.py --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import platform
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiomqtt
import paho.mqtt._packet as paho_packet
import psycopg
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.fleet import EQUIPMENT
from ingest import mqtt as ingest_mqtt
from ingest.service import IngestService
from tmiot.config import (
    DatabaseSettings,
    IngestSettings,
    KafkaSettings,
    LogSettings,
    MetricsSettings,
    MqttSettings,
    RuntimeSettings,
    Settings,
    TopicSettings,
)
from tmiot.db import apply_schema, conninfo, create_database_if_missing
from tmiot.logs import configure_logging
from tmiot.runtime import tune_process
from tmiot.services import free_port, kafka_problem, start_mosquitto, start_tansu, stop_pid

log = structlog.get_logger("bench.ingest")

RESULTS = Path(__file__).parent / "results"
RECEIVE_MAXIMUM = 10_000


@dataclass(frozen=True)
class Scenario:
    """One kind of traffic."""

    name: str
    qos: int
    batch: int  # readings per message; 1 = single-reading messages
    messages: int


@dataclass(frozen=True)
class Result:
    """One subscriber's drain of one scenario's backlog."""

    scenario: str
    subscriber: str
    messages: int
    readings: int
    seconds: float
    messages_per_s: float
    readings_per_s: float


async def _register_sensors(db: DatabaseSettings, count: int) -> tuple[str, list[str]]:
    """A company with `count` sensors; returns (company_id, device ids)."""
    async with await psycopg.AsyncConnection.connect(conninfo(db), autocommit=True) as conn:
        cur = await conn.execute(EQUIPMENT)
        row = await cur.fetchone()
        assert row is not None
        company, equipment = str(row[0]), row[1]
        tag = uuid.uuid4().hex[:6]
        devices = [f"bench-{tag}-{i}" for i in range(count)]
        await conn.execute(
            "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, device_id)"
            " SELECT %s, 'vibration', d FROM unnest(%s::text[]) AS d",
            (equipment, devices),
        )
    return company, devices


def _payloads(scenario: Scenario, company: str, devices: list[str]) -> list[tuple[str, bytes]]:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=6)
    start_ms = int(start.timestamp() * 1000)
    out = []
    n = 0
    for m in range(scenario.messages):
        if scenario.batch == 1:
            device = devices[m % len(devices)]
            body = {
                "timestamp": start_ms + m,
                "value": (m % 1000) / 10,
                "unit": "mm/s",
                "quality_score": 0.98,
            }
            out.append((f"tenants/{company}/sensors/{device}/readings", json.dumps(body).encode()))
        else:
            items = []
            for _ in range(scenario.batch):
                items.append(
                    {
                        "device_id": devices[n % len(devices)],
                        "timestamp": start_ms + n,
                        "value": (n % 1000) / 10,
                        "unit": "mm/s",
                        "quality_score": 0.98,
                    }
                )
                n += 1
            out.append(
                (
                    f"tenants/{company}/gateways/gw-{m % 50}/readings",
                    json.dumps({"readings": items}).encode(),
                )
            )
    return out


def _connect_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return props


def _session_client(mqtt: MqttSettings, client_id: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=_connect_props(),
        max_inflight_messages=RECEIVE_MAXIMUM,
    )


FILTERS = ["tenants/+/sensors/+/readings", "tenants/+/gateways/+/readings"]


@contextlib.contextmanager
def _stock_paho() -> Iterator[None]:
    """Stock paho for the duration of the block.

    ingest/mqtt.py's buffered reads, batched PUBACKs and shared property tables undone.
    """
    # the classmethod object itself: restoring the bound method would pin cls to BufferedReads
    install = vars(ingest_mqtt.BufferedReads)["install"]
    ack_all = ingest_mqtt.Acknowledger.ack_all
    share, decoder = ingest_mqtt.share_property_tables, paho_packet.Properties  # type: ignore[attr-defined]

    def ack_each(self: ingest_mqtt.Acknowledger, messages: Sequence[aiomqtt.Message]) -> None:
        for message in messages:
            self.ack(message)

    ingest_mqtt.BufferedReads.install = classmethod(lambda _cls, _client: None)  # type: ignore[assignment,method-assign]
    ingest_mqtt.Acknowledger.ack_all = ack_each  # type: ignore[method-assign]
    ingest_mqtt.share_property_tables = lambda: None
    paho_packet.Properties = Properties  # type: ignore[attr-defined]
    try:
        yield
    finally:
        ingest_mqtt.BufferedReads.install = install  # type: ignore[method-assign]
        ingest_mqtt.Acknowledger.ack_all = ack_all  # type: ignore[method-assign]
        ingest_mqtt.share_property_tables = share
        paho_packet.Properties = decoder  # type: ignore[attr-defined]


async def _prepare_session(mqtt: MqttSettings, client_id: str, qos: int) -> None:
    """Create the persistent session and its subscriptions, then leave."""
    async with _session_client(mqtt, client_id) as c:
        for f in FILTERS:
            await c.subscribe(f, qos=qos)


async def _preload(mqtt: MqttSettings, payloads: list[tuple[str, bytes]], qos: int) -> None:
    async with aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=f"pub-{uuid.uuid4().hex[:6]}",
        max_inflight_messages=1000,
        max_queued_outgoing_messages=0,
    ) as pub:
        window = 500
        for i in range(0, len(payloads), window):
            await asyncio.gather(*(pub.publish(t, p, qos=qos) for t, p in payloads[i : i + window]))


async def _bare(mqtt: MqttSettings, client_id: str, expected: int) -> float:
    """Drain the backlog counting messages; returns seconds."""
    count = 0
    t0 = time.perf_counter()
    async with _session_client(mqtt, client_id) as c:
        async for _ in c.messages:
            count += 1
            if count >= expected:
                break
    return time.perf_counter() - t0


async def _ingest(settings: Settings, expected_readings: int) -> float:
    service = IngestService(settings)
    task = asyncio.create_task(service.run())
    await service.directory_loaded.wait()
    t0 = time.perf_counter()
    try:
        while service.metrics.readings._value.get() < expected_readings:  # noqa: SLF001
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return time.perf_counter() - t0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run(args: argparse.Namespace) -> list[Result]:
    """Start a broker and Kafka of our own, then measure every scenario both ways."""
    work = Path(tempfile.mkdtemp(prefix="tmiot-bench-ingest-"))
    mqtt_port, kafka_port = free_port(), free_port()
    broker = start_mosquitto(
        mqtt_port,
        work,
        extra_conf="queue_qos0_messages true\npersistence false\nset_tcp_nodelay true\n",
    )
    kafka = start_tansu("127.0.0.1", kafka_port, work / "kafka.log")
    bootstrap = f"127.0.0.1:{kafka_port}"
    try:
        deadline = time.monotonic() + 30
        while await kafka_problem(bootstrap) is not None:
            if time.monotonic() > deadline:
                msg = f"tansu did not start: {work / 'kafka.log'}"
                raise SystemExit(msg)
            await asyncio.sleep(0.2)
        db = DatabaseSettings(url=args.database_url)
        create_database_if_missing(db)
        apply_schema(db)
        company, devices = await _register_sensors(db, args.sensors)
        mqtt = MqttSettings(host="127.0.0.1", port=mqtt_port, share_group=None)
        scenarios = [
            Scenario("single-qos0", 0, 1, args.single_messages),
            Scenario("single-qos1", 1, 1, args.single_messages),
            Scenario("batch100-qos1", 1, 100, args.batch_messages),
        ]
        scenarios = [sc for sc in scenarios if sc.name in args.scenarios]
        results: list[Result] = []
        for sc in scenarios:
            payloads = _payloads(sc, company, devices)
            readings = sc.messages * sc.batch
            for who in ("bare", "ingest-stock-paho", "ingest"):
                client_id = f"{who}-{sc.name}-{uuid.uuid4().hex[:6]}"
                await _prepare_session(mqtt, client_id, sc.qos)
                await _preload(mqtt, payloads, sc.qos)
                stock = _stock_paho() if who != "ingest" else contextlib.nullcontext()
                if who == "bare":
                    with stock:
                        seconds = await _bare(mqtt, client_id, sc.messages)
                else:
                    suffix = uuid.uuid4().hex[:6]
                    settings = Settings(
                        mqtt=mqtt.model_copy(update={"client_id": client_id, "qos": sc.qos}),
                        kafka=KafkaSettings(
                            bootstrap_servers=bootstrap,
                            partitions=8,
                            topics=TopicSettings(
                                readings_raw=f"raw.{suffix}",
                                readings_deadletter=f"dlq.{suffix}",
                                sensor_status=f"st.{suffix}",
                            ),
                        ),
                        database=db,
                        ingest=IngestSettings(
                            max_inflight_messages=RECEIVE_MAXIMUM, progress_log_seconds=5
                        ),
                        metrics=MetricsSettings(enabled=False),
                        log=LogSettings(level="WARNING"),
                    )
                    with stock:
                        seconds = await _ingest(settings, readings)
                results.append(
                    Result(
                        sc.name,
                        who,
                        sc.messages,
                        readings,
                        round(seconds, 3),
                        round(sc.messages / seconds),
                        round(readings / seconds),
                    )
                )
                log.warning("measured", **asdict(results[-1]))
        return results
    finally:
        stop_pid(broker.pid)
        stop_pid(kafka.pid)


def _report(results: list[Result], args: argparse.Namespace) -> dict[str, object]:
    by = {(r.scenario, r.subscriber): r for r in results}
    rows = []
    for sc in dict.fromkeys(r.scenario for r in results):
        bare, ours = by[(sc, "bare")], by[(sc, "ingest")]
        stock = by[(sc, "ingest-stock-paho")]
        rows.append(
            {
                "scenario": sc,
                "bare_messages_per_s": bare.messages_per_s,
                "stock_paho_messages_per_s": stock.messages_per_s,
                "ingest_messages_per_s": ours.messages_per_s,
                "ingest_readings_per_s": ours.readings_per_s,
                "ratio_to_bare": round(ours.messages_per_s / bare.messages_per_s, 3),
                "ratio_to_stock_paho": round(ours.messages_per_s / stock.messages_per_s, 3),
            }
        )
    return {
        "benchmark": "ingest",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "parameters": {
            "sensors": args.sensors,
            "single_messages": args.single_messages,
            "batch_messages": args.batch_messages,
            "receive_maximum": RECEIVE_MAXIMUM,
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "runs": [asdict(r) for r in results],
        "summary": rows,
    }


def _markdown(report: dict[str, object]) -> str:
    lines = [
        "# Ingest benchmark",
        "",
        f"{report['when']}, {report['machine']}, parameters {report['parameters']}",
        "",
        (
            "| scenario | bare subscriber msg/s | ingest on stock paho msg/s | ingest msg/s "
            "| ingest readings/s | ingest / bare | ingest / stock paho |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {row['scenario']} | {row['bare_messages_per_s']:,} | "
        f"{row['stock_paho_messages_per_s']:,} | "
        f"{row['ingest_messages_per_s']:,} | {row['ingest_readings_per_s']:,} | "
        f"{row['ratio_to_bare']:.2f} | {row['ratio_to_stock_paho']:.2f} |"
        for row in report["summary"]  # type: ignore[attr-defined]
    )
    lines += ["", f"Peak RSS of the benchmark process: {report['peak_rss_mb']} MB", ""]
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run, write the results files and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/tmiot_bench"
    )
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--single-messages", type=int, default=60_000)
    parser.add_argument("--batch-messages", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["single-qos0", "single-qos1", "batch100-qos1"],
        help="which scenarios to run (default: all)",
    )
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING"))
    # The services tune their process at start (tmiot.runtime); the loops measured
    # in this process (bare ones included) run under the same setting.
    tune_process(RuntimeSettings())
    # aiomqtt warns once per publish beyond 10 pending ones: the preload is meant to.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    results = asyncio.run(run(args))
    report = _report(results, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "ingest.md").write_text(_markdown(report))
    sys.stdout.write(_markdown(report))


if __name__ == "__main__":
    main()
