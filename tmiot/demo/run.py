"""The demo's script (see :mod:`tmiot.demo.command`); imports rich and matplotlib."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tmiot.config import Settings
from tmiot.db import apply_schema, conninfo, create_database_if_missing
from tmiot.demo.command import CLEAN_LEAD
from tmiot.demo.report import Reading, WorkOrder, summarise, write_pictures
from tmiot.demo.triggers import FLEET_TRIGGERS
from tmiot.errors import ServiceError
from tmiot.kafka import client_options, ensure_topics
from tmiot.services import ServiceManager
from tmiot.simulate.fleet import SENSORS_PER_EQUIPMENT, Fleet, register_fleet
from tmiot.simulate.ground_truth import ground_truth, write_ground_truth
from tmiot.simulate.publisher import PublishOptions, publish_fleet, simulated_window
from tmiot.simulate.signals import schedule_anomalies, to_ms

__all__ = ["run"]

PORTS: Final = {"ingest": 9108, "stream": 9109, "triggers": 9110}


@dataclass(slots=True)
class _Seen:
    """What the demo's own Kafka consumers saw."""

    work_orders: list[dict[str, Any]] = field(default_factory=list)
    received: list[float] = field(default_factory=list)
    missing: dict[str, list[dt.datetime]] = field(default_factory=dict)


def _register_triggers(settings: Settings, fleet: Fleet) -> None:
    by_type: dict[str, list[str]] = {}
    for s in fleet.sensors:
        by_type.setdefault(s.sensor_type.value, []).append(s.sensor_id)
    stamp = fleet.company_id[:8]
    with psycopg.connect(conninfo(settings.database), autocommit=True) as conn:
        for number, name, kind, conditions, sensor_type in FLEET_TRIGGERS:
            targets: list[str | None] = (
                [None] if sensor_type is None else list(by_type[sensor_type])
            )
            for i, sensor in enumerate(targets):
                conn.execute(
                    "INSERT INTO automated_service_triggers (company_id, trigger_number,"
                    " trigger_name, sensor_id, condition_type, trigger_conditions,"
                    " auto_create_work_order, priority_level, notify_technician)"
                    " VALUES (%s, %s, %s, %s, %s, %s, true, 'high', true)",
                    (
                        fleet.company_id,
                        f"{number}-{stamp}-{i}",
                        name,
                        sensor,
                        kind,
                        json.dumps(conditions),
                    ),
                )


def _start(out: Path, horizon_s: float) -> dict[str, subprocess.Popen[bytes]]:
    procs = {}
    for command, port in PORTS.items():
        env = {
            **os.environ,
            "TMIOT_METRICS__PORT": str(port),
            "TMIOT_LOG__FORMAT": "json",
            "TMIOT_TRIGGERS__BACKFILL_HORIZON_SECONDS": str(horizon_s),
            "TMIOT_TRIGGERS__REFRESH_SECONDS": "1",
            # No FSM here closes work orders: a visit is taken to close one within 4 hours
            # (as make bench-detect assumes), after which a new fault is a new work order.
            "TMIOT_TRIGGERS__ATTACH_SECONDS": "14400",
        }
        with (out / f"{command}.log").open("wb") as log:
            procs[command] = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "tmiot.cli", command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
            )
    return procs


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for name in ("ingest", "stream", "triggers"):
        proc = procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _started(
    out: Path, procs: dict[str, subprocess.Popen[bytes]], ready: asyncio.Event
) -> None:
    """Until ingest has subscribed, triggers have loaded and our consumer is positioned."""
    signs = {"ingest": "mqtt subscribed", "triggers": "triggers started"}
    deadline = time.monotonic() + 60
    while signs or not ready.is_set():
        for name in list(signs):
            if signs[name] in (out / f"{name}.log").read_text(errors="replace"):
                del signs[name]
        if any(p.poll() is not None for p in procs.values()):
            msg = f"a service exited during start-up; see {out}/*.log"
            raise ServiceError(msg, service="demo")
        if time.monotonic() > deadline:
            msg = f"not started after 60 s: {', '.join(signs) or 'the demo consumer'}"
            raise ServiceError(msg, service="demo")
        await asyncio.sleep(0.2)


def _metrics(port: int) -> dict[str, float]:
    """Counters and gauges of one service's /metrics, summed over labels but `type`."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = sample.name + (f":{sample.labels['type']}" if "type" in sample.labels else "")
            out[key] = out.get(key, 0.0) + sample.value
    return out


@dataclass(slots=True)
class _Rates:
    last: dict[str, float] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    def per_second(self, now: dict[str, float]) -> dict[str, float]:
        t = time.monotonic()
        span = max(t - self.at, 1e-6)
        rates = {k: (v - self.last.get(k, 0.0)) / span for k, v in now.items()}
        self.last, self.at = dict(now), t
        return rates


def _view(
    metrics: dict[str, float], rates: dict[str, float], seen: _Seen, incidents: int, phase: str
) -> Table:
    table = Table(title=f"tmiot demo - {phase} (Ctrl-C stops)", expand=False)
    table.add_column("stage")
    table.add_column("readings/s", justify="right")
    table.add_column("total", justify="right")
    ingest = "tmiot_ingest_readings_produced_total"
    scored = "tmiot_stream_readings_scored_total"
    evaluated = "tmiot_triggers_readings_total"
    for label, key in (
        ("ingest -> Kafka", ingest),
        ("stream scored", scored),
        ("triggers evaluated", evaluated),
    ):
        table.add_row(label, f"{rates.get(key, 0):,.0f}", f"{metrics.get(key, 0):,.0f}")
    # Triggers also count the stream's `missing` rows, which are not readings: clamped at 0.
    lag_stream = max(0.0, metrics.get(ingest, 0) - metrics.get(scored, 0))
    lag_triggers = max(0.0, metrics.get(scored, 0) - metrics.get(evaluated, 0))
    table.add_row("lag (readings)", "", f"stream {lag_stream:,.0f} / triggers {lag_triggers:,.0f}")
    kinds = {
        k.split(":", 1)[1]: v
        for k, v in metrics.items()
        if k.startswith("tmiot_stream_anomalies_total:")
    }
    table.add_row(
        "anomalies", "", ", ".join(f"{k} {v:,.0f}" for k, v in sorted(kinds.items())) or "none yet"
    )
    table.add_row("open incidents", "", f"{incidents:,}")
    table.add_row("work orders", "", f"{len(seen.work_orders):,}")
    return table


async def _consume(
    settings: Settings, company: str, seen: _Seen, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    topics = settings.kafka.topics
    consumer = AIOKafkaConsumer(
        topics.workorders_requested,
        topics.readings_scored,
        **client_options(settings.kafka),
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        for tp in consumer.assignment():
            await consumer.position(tp)  # "latest" is resolved now, before anything is published
        ready.set()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for tp, records in batch.items():
                for r in records:
                    if tp.topic == topics.workorders_requested:
                        order = json.loads(r.value or b"{}")
                        if order.get("company_id") == company:  # not an earlier demo's
                            seen.work_orders.append(order)
                            seen.received.append(now)
                    elif r.value and b'"missing"' in r.value:
                        v = json.loads(r.value)
                        for sensor, ts, kind in zip(
                            v["sensor_id"], v["ts_us"], v["anomaly_type"], strict=True
                        ):
                            if kind == "missing":
                                at = dt.datetime.fromtimestamp(ts / 1e6, dt.UTC)
                                seen.missing.setdefault(sensor, []).append(at)
    finally:
        await consumer.stop()


def _open_incidents(settings: Settings, company: str) -> int:
    with psycopg.connect(conninfo(settings.database)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM trigger_incidents WHERE company_id = %s AND cleared_at IS NULL",
            (company,),
        ).fetchone()
    return int(row[0]) if row else 0


def _readings(settings: Settings, fleet: Fleet) -> dict[str, list[Reading]]:
    with psycopg.connect(conninfo(settings.database)) as conn:
        rows = conn.execute(
            "SELECT sensor_id::text, reading_timestamp, value::float8, anomaly_score::float8,"
            " is_anomaly, anomaly_type::text FROM sensor_readings"
            " WHERE sensor_id = ANY(%s::uuid[]) ORDER BY sensor_id, reading_timestamp",
            ([s.sensor_id for s in fleet.sensors],),
        ).fetchall()
    out: dict[str, list[Reading]] = {}
    for sensor, at, value, score, flag, kind in rows:
        out.setdefault(sensor, []).append(Reading(at, value, score or 0.0, bool(flag), kind))
    return out


async def _demo(args: argparse.Namespace, settings: Settings, console: Console) -> int:  # noqa: C901, PLR0915 - the demo's script, step by step
    out: Path = args.out
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    console.print("[bold]1/5[/] starting the local services and applying the schema")
    for status in await ServiceManager(settings).up():
        console.print("    " + status.line())
    create_database_if_missing(settings.database)
    apply_schema(settings.database)
    await ensure_topics(settings.kafka, settings.kafka.topics.names())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    fleet = register_fleet(
        settings.database, sensors=args.sensors, seed=args.seed, company_name=f"Demo Co {stamp}"
    )
    _register_triggers(settings, fleet)
    console.print(
        f"[bold]2/5[/] company Demo Co {stamp}: {len(fleet.sensors)} sensors of"
        f" {len({s.sensor_type for s in fleet.sensors})} types, triggers of every condition type"
    )
    options = PublishOptions(
        rate=None,
        time_scale=args.time_scale,
        duration_seconds=args.duration,
        batch_size=50,
        qos=1,
    )
    window = simulated_window(fleet, options)
    injections = schedule_anomalies(
        fleet.bank(window.start),
        seed=fleet.seed,
        start=window.start,
        end=window.end,
        count=args.anomalies,
        warmup=CLEAN_LEAD,
    )
    truth = ground_truth(fleet, injections)
    write_ground_truth(out / "ground_truth.csv", truth)
    span = (window.end - window.start).total_seconds()
    procs = _start(out, horizon_s=span + 3600)
    seen = _Seen()
    stop = asyncio.Event()
    ready = asyncio.Event()
    consumer = asyncio.create_task(_consume(settings, fleet.company_id, seen, ready, stop))
    published = 0
    try:
        console.print(f"[bold]3/5[/] ingest, stream, triggers started (logs in {out}/)")
        await _started(out, procs, ready)
        started = time.time()
        logging.getLogger("tmiot.simulate.publisher").setLevel(logging.WARNING)  # the view shows it
        publisher = asyncio.create_task(
            publish_fleet(settings.mqtt, fleet, options, window=window, injections=injections)
        )
        rates = _Rates()
        phase = "publishing"
        settle_until: float | None = None
        with Live(console=console, refresh_per_second=2) as live:
            while True:
                await asyncio.sleep(1)
                metrics: dict[str, float] = {}
                for port in PORTS.values():
                    metrics.update(_metrics(port))
                incidents = await asyncio.to_thread(_open_incidents, settings, fleet.company_id)
                live.update(_view(metrics, rates.per_second(metrics), seen, incidents, phase))
                if publisher.done() and settle_until is None:
                    published = publisher.result().readings
                    phase = "draining"
                    settle_until = time.monotonic() + 60
                if settle_until is not None:
                    caught_up = metrics.get("tmiot_triggers_readings_total", 0) >= published
                    if caught_up and phase == "draining":
                        phase = "settling"
                        settle_until = min(settle_until, time.monotonic() + 5)
                    if time.monotonic() >= settle_until:
                        break
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        console.print(
                            f"[red]{name} exited ({proc.returncode}); see {out}/{name}.log"
                        )
                        return 1
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await consumer
        _stop(procs)
    console.print("[bold]4/5[/] summary")
    readings = await asyncio.to_thread(_readings, settings, fleet)
    with psycopg.connect(conninfo(settings.database)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM trigger_incidents WHERE company_id = %s AND NOT historical",
            (fleet.company_id,),
        ).fetchone()
    incidents = int(row[0]) if row else 0
    scale = args.time_scale
    orders = [
        WorkOrder(
            sensor_id=w["sensor_id"],
            trigger_number=w["trigger_number"],
            opened_at=(opened := dt.datetime.fromisoformat(w["opened_at"])),
            received_at=dt.datetime.fromtimestamp(received, dt.UTC),
            published_at=dt.datetime.fromtimestamp(
                started + (to_ms(opened) - to_ms(window.start)) / 1000 / scale, dt.UTC
            ),
            update=w.get("event") == "updated",
        )
        for w, received in zip(seen.work_orders, seen.received, strict=True)
    ]
    # Latency is publish -> work order for the triggers a reading opens at once; silence
    # and forecast triggers open later by design.
    reading_driven = [
        o
        for o in orders
        if o.trigger_number.startswith(("DEMO-BAND", "DEMO-ERRATIC")) and not o.update
    ]
    equipment = {s.sensor_id: str(s.index // SENSORS_PER_EQUIPMENT) for s in fleet.sensors}
    days = (window.end - window.start).total_seconds() / 86_400
    summary = summarise(
        truth,
        readings,
        missing=seen.missing,
        work_orders=orders,
        timed=reading_driven,
        incidents=incidents,
        published=published,
        equipment=equipment,
        sensor_days=len(fleet.sensors) * days,
    )
    lines = summary.lines()
    for line in lines:
        console.print("    " + line)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    names = {s.sensor_id: s.sensor_number for s in fleet.sensors}
    files = write_pictures(
        out / "report",
        names=names,
        truth=truth,
        readings=readings,
        work_orders=orders,
        threshold=settings.stream.detector.anomaly_threshold,
    )
    console.print(
        f"[bold]5/5[/] pictures: {len(files) - 1} files, open {out / 'report/index.html'}"
    )
    for f in files:
        console.print(f"    {f}")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the demo; the exit code (130 when stopped by Ctrl-C)."""
    console = Console()
    try:
        return asyncio.run(_demo(args, settings, console))
    except KeyboardInterrupt:
        console.print("stopped: services of the demo shut down")
        return 130
