"""``make soak``: the whole pipeline under a steady QoS 1 load and random faults, then accounting.

Everything runs on private instances under ``.tmiot/soak/<run>/``: a PostgreSQL
cluster, a Mosquitto broker, a tansu broker, and the services as processes
(ingest, two stream workers, triggers). Services reach Kafka and PostgreSQL
through TCP proxies (tansu advertises its proxy), so links can be cut. While
the workload publishes ``--rate`` readings/s for ``--minutes``, a fault is
injected every ``--fault-every`` seconds on average (uniform 0.5x to 1.5x), its
kind drawn from a shuffled bag so that every kind comes round:

- ``kill-ingest``, ``kill-stream``, ``kill-triggers``: kill -9, restart at once;
- ``restart-postgres``: immediate (crash) stop and start of the cluster;
- ``restart-mosquitto``: SIGTERM (the broker saves its queues) and start;
- ``cut-kafka``, ``cut-postgres``: the link reset and refused for 3 to 10 s;
- ``delay-kafka``: 100 to 300 ms added to the link for 5 to 15 s.

A progress line every 30 s; at the end the run is drained and accounted
(readings published, stored, duplicates, lost; incidents, work orders and their
match; faults by kind; peak RSS per service), printed and written to
``bench/results/soak.{md,json}``. The exit code is 1 when anything was lost,
duplicated or unmatched, or a service exited by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg
import structlog

from tmiot.chaos.accounting import (
    ReadingsAccount,
    WorkOrderAccount,
    count_readings,
    match_work_orders,
    missing_by_tick,
    read_work_orders,
)
from tmiot.chaos.backends import PrivateKafka, PrivateMosquitto, PrivatePostgres
from tmiot.chaos.pipeline import Pipeline, rss_kib
from tmiot.chaos.proxy import TcpProxy
from tmiot.chaos.workload import Workload, WorkloadPublisher
from tmiot.config import DatabaseSettings, LogSettings, MqttSettings
from tmiot.db import apply_schema, conninfo, create_database_if_missing
from tmiot.logs import configure_logging
from tmiot.services import free_port

__all__ = ["main"]

log = structlog.get_logger(__name__)

RESULTS: Final = Path("bench/results")
PROGRESS_SECONDS: Final = 30.0
DRAIN_SECONDS: Final = 300.0
QUIET_TAIL_SECONDS: Final = 20.0  # no fault starts this close to the end of publishing
KINDS: Final = (
    "kill-ingest",
    "kill-stream",
    "kill-triggers",
    "restart-postgres",
    "restart-mosquitto",
    "cut-kafka",
    "cut-postgres",
    "delay-kafka",
)
SERVICES: Final = ("ingest", "stream-0", "stream-1", "triggers")


@dataclass
class _Rig:
    """Everything the faults act on."""

    pipeline: Pipeline
    postgres: PrivatePostgres
    mosquitto: PrivateMosquitto
    kafka_proxy: TcpProxy
    pg_proxy: TcpProxy
    kafka: PrivateKafka
    rng: random.Random
    faults: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (s since start, fault)
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    crashes: Counter[str] = field(default_factory=Counter)
    peaks: dict[str, int] = field(default_factory=dict)  # KiB, brokers included

    def inject(self, kind: str) -> float:
        """Inject one fault; return how long its link fault lasts (0: immediate)."""
        self.faults[kind] += 1
        self.timeline.append((round(time.monotonic() - self.started, 1), kind))
        log.info("fault", kind=kind, count=self.faults[kind])
        if kind.startswith("kill-"):
            name = kind.removeprefix("kill-")
            if name == "stream":
                name = self.rng.choice(["stream-0", "stream-1"])
            self.pipeline.kill(name)
            self.pipeline.start(name)
            return 0.0
        if kind == "restart-postgres":
            self.postgres.restart()
            return 0.0
        if kind == "restart-mosquitto":
            self.mosquitto.restart()
            return 0.0
        if kind in {"cut-kafka", "cut-postgres"}:
            (self.kafka_proxy if kind == "cut-kafka" else self.pg_proxy).cut()
            return self.rng.uniform(3.0, 10.0)
        self.kafka_proxy.delay(self.rng.uniform(0.1, 0.3))
        return self.rng.uniform(5.0, 15.0)

    def heal(self) -> None:
        """End every link fault."""
        for proxy in (self.kafka_proxy, self.pg_proxy):
            proxy.resume()
            proxy.delay(0)

    def supervise(self) -> None:
        """Restart a service that exited by itself (as its supervisor would); count it."""
        for name in self.pipeline.exited():
            self.crashes[name] += 1
            log.error("service exited by itself", service=name, tail=self.pipeline.tail(name, 1500))
            self.pipeline.start(name)

    def sample(self) -> None:
        """Keep peak RSS of the services and the brokers."""
        self.pipeline.sample_rss()
        for name, pid in (
            ("tansu", self.kafka.pid),
            ("mosquitto", self.mosquitto.pid),
            ("postgres", next(iter(self.postgres.pids()), None)),
        ):
            if pid is not None:
                self.peaks[name] = max(self.peaks.get(name, 0), *rss_kib(pid))


def _options(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(env("SOAK_MINUTES", "30")))
    parser.add_argument("--rate", type=int, default=int(env("SOAK_RATE", "200")), help="readings/s")
    parser.add_argument(
        "--fault-every",
        type=float,
        default=float(env("SOAK_FAULT_EVERY", "0")) or None,
        help="mean seconds between faults (default: the run / 12, within 10..45)",
    )
    parser.add_argument("--seed", type=int, default=int(env("SOAK_SEED", "1")))
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; the exit code."""
    args = _options(argv)
    configure_logging(LogSettings())
    seconds = max(60.0, args.minutes * 60)
    fault_every = args.fault_every or min(45.0, max(10.0, seconds / 12))
    run_dir = Path(".tmiot/soak") / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)  # noqa: S311 - a reproducible fault schedule
    started = time.monotonic()
    kafka_port = free_port()
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(PrivatePostgres())
        db = DatabaseSettings(url=postgres.url("tmiot"))
        create_database_if_missing(db)
        apply_schema(db)
        mosquitto = stack.enter_context(PrivateMosquitto(run_dir / "mosquitto"))
        kafka = stack.enter_context(
            PrivateKafka(run_dir / "tansu.log", advertised=f"127.0.0.1:{kafka_port}")
        )
        kafka_proxy = stack.enter_context(TcpProxy("127.0.0.1", kafka.port, port=kafka_port))
        pg_proxy = stack.enter_context(TcpProxy("127.0.0.1", postgres.port))
        bootstrap = f"127.0.0.1:{kafka_proxy.port}"
        pipeline = stack.enter_context(
            Pipeline(
                f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/tmiot",
                bootstrap,
                "127.0.0.1",
                mosquitto.port,
                run_dir / "logs",
                # One ingest, subscribed without $share: Mosquitto 2.0 forgets a persistent
                # session's shared subscriptions across its restarts.
                share_group="",
            )
        )
        rig = _Rig(pipeline, postgres, mosquitto, kafka_proxy, pg_proxy, kafka, rng)
        workload = Workload.register(
            db, rate=args.rate, seconds=seconds, incident_sensors=max(10, args.rate // 10),
            lead_seconds=15,
        )  # fmt: skip
        for name in SERVICES:
            pipeline.start(name, "stream" if name.startswith("stream") else name)
        pipeline.wait_log("ingest", "mqtt subscribed")
        pipeline.wait_log("triggers", "triggers started")
        publisher = WorkloadPublisher(workload, MqttSettings(host="127.0.0.1", port=mosquitto.port))
        publisher.start_thread()
        print(  # noqa: T201 - the soak's output
            f"soak: {args.rate} readings/s for {seconds / 60:.1f} min, a fault every"
            f" ~{fault_every:.0f} s; logs in {run_dir}",
            flush=True,
        )
        _run_faults(rig, publisher, db, seconds, fault_every)
        readings, orders = _drain(rig, publisher, db, bootstrap)
        rig.sample()
        lost_ticks = missing_by_tick(db, workload) if readings.lost else {}
        report = _report(
            args,
            rig=rig,
            workload=workload,
            publisher=publisher,
            readings=readings,
            orders=orders,
            wall_seconds=time.monotonic() - started,
        )
        report["lost_by_tick"] = {str(k): v for k, v in sorted(lost_ticks.items())[:50]}
        report["publish_start_s"] = round(workload.start_us / 1e6 - rig.started_wall, 1)
    _write(args.out, report)
    print(_markdown(report), flush=True)  # noqa: T201 - the soak's output
    return 0 if report["ok"] else 1


def _run_faults(
    rig: _Rig, publisher: WorkloadPublisher, db: DatabaseSettings, seconds: float, every: float
) -> None:
    """Inject faults until the publisher is done; a progress line every 30 s."""
    bag: list[str] = []
    next_fault = time.monotonic() + rig.rng.uniform(0.5, 1.5) * every
    next_progress = time.monotonic() + PROGRESS_SECONDS
    heal_at: float | None = None
    start = time.time()
    while not publisher.finished.is_set():
        if publisher.error is not None:
            raise publisher.error
        now = time.monotonic()
        rig.supervise()
        if heal_at is not None and now >= heal_at:
            rig.heal()
            heal_at = None
        quiet = time.time() - start > seconds - QUIET_TAIL_SECONDS
        if heal_at is None and now >= next_fault and not quiet:
            if not bag:
                bag = list(KINDS)
                rig.rng.shuffle(bag)
            lasts = rig.inject(bag.pop())
            heal_at = now + lasts if lasts else None
            next_fault = time.monotonic() + rig.rng.uniform(0.5, 1.5) * every
        if now >= next_progress:
            rig.sample()
            _progress(rig, publisher, db, start)
            next_progress += PROGRESS_SECONDS
        time.sleep(0.2)
    rig.heal()


def _progress(rig: _Rig, publisher: WorkloadPublisher, db: DatabaseSettings, start: float) -> None:
    stored: object = "db down"
    with contextlib.suppress(psycopg.Error), psycopg.connect(conninfo(db)) as conn:
        row = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()
        stored = row[0] if row else 0
    w = publisher.workload
    rss = {k: round(v) for k, v in rig.pipeline.last_rss_mib().items()}
    print(  # noqa: T201 - the soak's output
        f"[{(time.time() - start) / 60:5.1f} min] tick {publisher.stats.ticks}/{w.ticks},"
        f" published {publisher.stats.ticks * w.sensors}, stored {stored},"
        f" faults {sum(rig.faults.values())} {dict(rig.faults)},"
        f" crashes {sum(rig.crashes.values())}, publisher behind"
        f" {publisher.stats.behind_seconds:.1f} s, rss MiB {rss}",
        flush=True,
    )


def _drain(
    rig: _Rig, publisher: WorkloadPublisher, db: DatabaseSettings, bootstrap: str
) -> tuple[ReadingsAccount, WorkOrderAccount]:
    """Wait (deadline) for every reading and work order; the final accounts."""
    workload = publisher.workload
    excursions = workload.excursions()
    end = time.monotonic() + DRAIN_SECONDS
    readings = count_readings(db, workload)
    orders = match_work_orders(excursions, [])
    while time.monotonic() < end:
        rig.supervise()
        readings = count_readings(db, workload)
        if readings.stored >= readings.published:
            orders = match_work_orders(
                excursions, asyncio.run(read_work_orders(bootstrap, f"wo.{rig.pipeline.suffix}"))
            )
            if not orders.missing:
                break
        time.sleep(1.0)
    # A short grace for what should not be there (a late duplicate).
    time.sleep(3.0)
    orders = match_work_orders(
        excursions, asyncio.run(read_work_orders(bootstrap, f"wo.{rig.pipeline.suffix}"))
    )
    return count_readings(db, workload), orders


def _report(  # noqa: PLR0913 - one argument per part of the report
    args: argparse.Namespace,
    *,
    rig: _Rig,
    workload: Workload,
    publisher: WorkloadPublisher,
    readings: ReadingsAccount,
    orders: WorkOrderAccount,
    wall_seconds: float,
) -> dict[str, Any]:
    peaks = {k: round(v, 1) for k, v in rig.pipeline.peak_rss_mib().items()}
    peaks.update({k: round(v / 1024, 1) for k, v in rig.peaks.items()})
    ok = readings.ok() and orders.ok() and not rig.crashes
    return {
        "ok": ok,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "command": f"make soak SOAK_MINUTES={args.minutes:g} SOAK_RATE={args.rate}",
        "minutes": round(workload.ticks / 60, 2),
        "rate": args.rate,
        "wall_seconds": round(wall_seconds),
        "readings": {
            "published": readings.published,
            "stored": readings.stored,
            "duplicates": readings.duplicates,
            "lost": readings.lost,
            "unexpected": readings.outside,
        },
        "publisher": {
            "messages_acked": publisher.stats.acked,
            "messages_resent": publisher.stats.resent,
            "reconnects": publisher.stats.reconnects,
        },
        "work_orders": {
            "incidents": orders.incidents,
            "matched": orders.matched,
            "missing": len(orders.missing),
            "doubled": len(orders.doubled),
            "spurious": orders.spurious,
            "events": orders.events,
            "keys": orders.keys,
            "resent_same_key": orders.resent,
        },
        "faults": dict(sorted(rig.faults.items())),
        "fault_timeline": [f"{t:.0f}s {kind}" for t, kind in rig.timeline],
        "crashes": dict(rig.crashes),
        "process_starts": rig.pipeline.starts(),
        "peak_rss_mib": peaks,
    }


def _markdown(r: dict[str, Any]) -> str:
    rd, wo = r["readings"], r["work_orders"]
    lines = [
        "# Soak: the pipeline under random faults",
        "",
        (
            f"{r['when']} on {r['machine']}: `{r['command']}`, {r['minutes']} min of publishing"
            f" at {r['rate']} readings/s (QoS 1), {r['wall_seconds']} s wall in all."
            f" Result: **{'PASS' if r['ok'] else 'FAIL'}**."
        ),
        "",
        "| readings | count |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in rd.items()),
        "",
        "| work orders | count |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in wo.items()),
        "",
        "| fault | injected |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in r["faults"].items()),
        "",
        f"Timeline (seconds since the start of the run): {', '.join(r['fault_timeline'])}.",
        "",
        (
            f"Services that exited by themselves: {r['crashes'] or 'none'}."
            f" Processes started per service: {r['process_starts']}."
            f" Publisher: {r['publisher']}."
        ),
        "",
        "| process | peak RSS (MiB) |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in r["peak_rss_mib"].items()),
        "",
    ]
    if r.get("lost_by_tick"):
        lines += [
            f"Readings missing per tick (tick 0 at {r['publish_start_s']} s): {r['lost_by_tick']}.",
            "",
        ]
    return "\n".join(lines)


def _write(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "soak.md").write_text(_markdown(report), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
