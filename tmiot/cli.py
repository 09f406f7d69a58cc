"""The `tmiot` command line: one entry point for every service and tool.

Exit codes: 0 success; 1 a runtime failure (a service or the database refused);
2 a usage or configuration error; 3 a subcommand whose issue has not landed yet;
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Final

import structlog
from prometheus_client import CollectorRegistry

from stream import evaluate as evaluate_command
from tmiot.config import SERVICE_PORTS, Settings, load_settings
from tmiot.db import apply_schema, create_database_if_missing
from tmiot.demo import command as demo_command
from tmiot.errors import ConfigError, TmiotError, leaves
from tmiot.health import Health
from tmiot.health import serve as serve_health
from tmiot.kafka import KafkaUnavailableError, check_connection
from tmiot.logs import configure_logging
from tmiot.replay import configure_parsers as configure_replay_parsers
from tmiot.runtime import tune_process
from tmiot.services import ServiceManager
from tmiot.simulate import command as simulate_command

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

Handler = Callable[[argparse.Namespace, Settings], int]


def _db_init(args: argparse.Namespace, settings: Settings) -> int:
    if not args.no_create_database and create_database_if_missing(settings.database):
        print("database created")
    report = apply_schema(settings.database)
    engine = (
        f"TimescaleDB {report.timescaledb_version}"
        if report.timescaledb_version
        else "plain PostgreSQL (no timescaledb extension)"
    )
    print(f"schema applied on PostgreSQL {report.server_version}, {engine}")
    print(f"tables: {len(report.tables)}; hypertables: {', '.join(report.hypertables) or 'none'}")
    if report.missing_tables:
        print(f"missing Phase 4 tables: {', '.join(report.missing_tables)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _services(args: argparse.Namespace, settings: Settings) -> int:
    manager = ServiceManager(settings)
    if args.action == "down":
        stopped = manager.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing of ours was running"))
        return EXIT_OK
    statuses = asyncio.run(manager.up() if args.action == "up" else manager.status())
    for status in statuses:
        print(status.line())
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_FAILURE


def _kpis(args: argparse.Namespace, settings: Settings) -> int:
    from tmiot import kpis  # noqa: PLC0415 - only this command needs it

    day = args.date or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    for company, values in kpis.run(settings.database, day, args.company).items():
        shown = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in values.items())
        print(f"{day} {company}: {shown}")
    return EXIT_OK


def _schemas(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    from tmiot import schemas  # noqa: PLC0415 - only this command needs it

    for path in schemas.write(args.out or schemas.DOCS):
        print(path)
    return EXIT_OK


def _probe(args: argparse.Namespace, settings: Settings) -> int:
    """GET the service's /readyz or /healthz (compose healthchecks); its JSON on stdout."""
    host = settings.metrics.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - listening everywhere: ask loopback
        host = "127.0.0.1"
    url = f"http://{host}:{settings.metrics.port_for(args.service)}"
    url += "/healthz" if args.live else "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - http, our own
            print(answer.read().decode())
    except urllib.error.HTTPError as exc:
        print(exc.read().decode())
        return EXIT_FAILURE
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _check_kafka(settings: Settings) -> None:
    """Refuse to start on Kafka security settings the cluster refuses (KafkaSecurityError).

    An unreachable cluster is only logged: the services wait for it and reconnect.
    """
    try:
        asyncio.run(check_connection(settings.kafka))
    except KafkaUnavailableError as exc:
        structlog.get_logger("tmiot.cli").warning("kafka not reachable yet", error=str(exc))


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    del args
    from ingest.service import IngestService  # noqa: PLC0415 - only this command needs it

    service = IngestService(settings)
    _serve_metrics(settings, "ingest", service.metrics.registry, service.health)
    return asyncio.run(_until_signalled(service.run()))


async def _until_signalled(main: Coroutine[object, object, None]) -> int:
    """Run a service until it ends or SIGTERM/SIGINT cancels it (a clean shutdown)."""
    task = asyncio.create_task(main, name="service")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        structlog.get_logger("tmiot.cli").info("stopped by signal")
        return EXIT_OK
    return EXIT_OK


def _serve_metrics(
    settings: Settings, service: str, registry: CollectorRegistry, health: Health
) -> None:
    """/metrics, /healthz and /readyz on the service's port (tmiot.health)."""
    if settings.metrics.enabled:
        serve_health(settings.metrics.host, settings.metrics.port_for(service), registry, health)
        health.start()


def _stream(args: argparse.Namespace, settings: Settings) -> int:
    del args
    # Imported here: Faust is heavy, and only this command needs it.
    from stream.service import run_worker  # noqa: PLC0415

    return run_worker(settings)


def _triggers(args: argparse.Namespace, settings: Settings) -> int:
    del args
    from triggers.service import TriggerService  # noqa: PLC0415 - only this command needs it

    service = TriggerService(settings)
    _serve_metrics(settings, "triggers", service.metrics.registry, service.health)
    return asyncio.run(_until_signalled(service.run()))


def _backtest(args: argparse.Namespace, settings: Settings) -> int:
    from triggers.backtest import backtest  # noqa: PLC0415 - only this command needs it

    reports = asyncio.run(
        backtest(
            settings,
            company=args.company,
            since=args.since,
            until=args.until,
            numbers=args.trigger,
            rescore=args.rescore,
            warmup=dt.timedelta(hours=args.warmup_hours),
        )
    )
    print(
        f"backtest {args.since:%Y-%m-%d %H:%M} to {args.until:%Y-%m-%d %H:%M} UTC, nothing written:"
    )
    for report in reports:
        print("  " + report.line())
        for first in report.first:
            print("      " + first)
    if not reports:
        print("  no trigger of this company matches")
    return EXIT_OK


def _utc(text: str) -> dt.datetime:
    at = dt.datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: matplotlib and rich are only needed by this command.
    from tmiot.demo import run as demo_run  # noqa: PLC0415

    return demo_run.run(args, settings)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmiot",
        description="TradesMate Pro IoT pipeline: MQTT ingest, anomaly scoring, service triggers.",
        epilog="Settings come from TMIOT_* environment variables and an optional TOML file.",
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (env TMIOT_* wins)")
    parser.add_argument("--log-format", choices=["json", "console"], help="override log.format")
    parser.add_argument("--log-level", help="override log.level (DEBUG, INFO, ...)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    init = db_sub.add_parser("init", help="apply schema.sql (idempotent; safe at every start)")
    init.add_argument(
        "--no-create-database",
        action="store_true",
        help="fail instead of creating the configured database when it is missing",
    )
    init.set_defaults(handler=_db_init)

    kpis = sub.add_parser(
        "kpis", help="compute the IoT KPIs of a day per company into kpi_values (idempotent)"
    )
    kpis.add_argument(
        "--date", type=dt.date.fromisoformat, default=None, help="UTC day (default: yesterday)"
    )
    kpis.add_argument("--company", action="append", help="company id (repeat; default: all)")
    kpis.set_defaults(handler=_kpis)

    schemas_cmd = sub.add_parser(
        "schemas", help="write the JSON Schema of every topic's record (docs/schemas)"
    )
    schemas_cmd.add_argument("--out", type=Path, default=None, help="directory (docs/schemas)")
    schemas_cmd.set_defaults(handler=_schemas)

    probe = sub.add_parser(
        "probe", help="ask a running service's /readyz (or /healthz) on this host; exit 0 if ok"
    )
    probe.add_argument("service", choices=sorted(SERVICE_PORTS))
    probe.add_argument("--live", action="store_true", help="/healthz instead of /readyz")
    probe.set_defaults(handler=_probe)

    services = sub.add_parser("services", help="local embedded services (Kafka, PostgreSQL, MQTT)")
    services.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start what is not running and wait; down: stop what tmiot started; "
        "status: probe each",
    )
    services.set_defaults(handler=_services)

    ingest = sub.add_parser("ingest", help="bridge MQTT gateways into Kafka (runs until stopped)")
    ingest.set_defaults(handler=_ingest, kafka_check=True)

    simulate = sub.add_parser(
        "simulate",
        help="register a demo fleet and publish realistic readings with labelled anomalies",
        description=simulate_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate_command.configure_parser(simulate)
    simulate.set_defaults(handler=simulate_command.run)

    evaluate = sub.add_parser(
        "evaluate",
        help="run the detectors offline over NAB-style CSV series",
        description=evaluate_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate_command.configure_parser(evaluate)
    evaluate.set_defaults(handler=evaluate_command.run)

    stream = sub.add_parser(
        "stream",
        help="score readings for anomalies and write them to the database (runs until stopped)",
    )
    stream.set_defaults(handler=_stream, kafka_check=True)

    triggers = sub.add_parser(
        "triggers",
        help="evaluate automated_service_triggers on the scored stream and emit work orders "
        "(runs until stopped)",
    )
    triggers.set_defaults(handler=_triggers, kafka_check=True)

    configure_replay_parsers(sub)

    backtest = sub.add_parser(
        "backtest",
        help="what a company's triggers would have done over stored readings (writes nothing)",
    )
    backtest.add_argument("--company", required=True, help="company id")
    backtest.add_argument("--since", type=_utc, required=True, help="range start (ISO 8601)")
    backtest.add_argument("--until", type=_utc, required=True, help="range end (ISO 8601)")
    backtest.add_argument(
        "--trigger", action="append", metavar="NUMBER", help="only these trigger numbers (repeat)"
    )
    backtest.add_argument(
        "--rescore", action="store_true", help="score the readings again with the detectors first"
    )
    backtest.add_argument(
        "--warmup-hours", type=float, default=24.0, help="detector warm-up before --since"
    )
    backtest.set_defaults(handler=_backtest)

    demo = sub.add_parser(
        "demo",
        help="the whole pipeline on the local services: live view, summary, pictures",
        description=demo_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_command.configure_parser(demo)
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = _parser().parse_args(argv)
    log_overrides = {
        k: v for k, v in (("format", args.log_format), ("level", args.log_level)) if v is not None
    }
    try:
        settings = load_settings(args.config)
        if log_overrides:
            log_settings = {**settings.log.model_dump(), **log_overrides}
            settings = load_settings(args.config, log=log_settings)
    except ConfigError as exc:
        print(f"tmiot: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log)
    tune_process(settings.runtime)
    handler: Handler = args.handler
    try:
        if getattr(args, "kafka_check", False):
            _check_kafka(settings)
        return handler(args, settings)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:
        ours = [e for e in leaves(exc) if isinstance(e, TmiotError)]
        if not ours:
            raise
        structlog.get_logger("tmiot.cli").debug("command failed", exc_info=exc)
        print(f"tmiot: {ours[0]}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
