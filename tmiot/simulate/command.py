"""`tmiot simulate`: register a fleet, publish its readings with labelled anomalies.

This module is the command's output layer: it alone prints (the summary line).

Examples::

    tmiot simulate --sensors 50 --duration 60 --time-scale 1440   # a day in a minute
    tmiot simulate --sensors 1000 --readings 100000 --rate 0 --batch-size 100
    tmiot simulate --sensors 500 --readings 1000000 --record fleet.tmrec.gz  # for `tmiot replay`
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Final

import structlog

from tmiot.config import Settings
from tmiot.simulate.fleet import load_fleet, register_fleet
from tmiot.simulate.ground_truth import ground_truth, write_ground_truth
from tmiot.simulate.publisher import PublishOptions, publish_fleet, simulated_window
from tmiot.simulate.recording import record_fleet
from tmiot.simulate.signals import schedule_anomalies

__all__ = ["configure_parser", "run"]

log = structlog.get_logger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_RATE: Final = 1000.0
DEFAULT_DURATION: Final = 60.0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of `tmiot simulate` to its sub-parser."""
    add = parser.add_argument
    add("--sensors", type=int, default=100, help="fleet size (default 100)")
    add(
        "--rate",
        type=float,
        help=f"readings per second, 0 for as fast as possible (default {DEFAULT_RATE:.0f}; "
        "uncapped when --time-scale is given)",
    )
    add("--duration", type=float, help="wall seconds to publish for")
    add(
        "--readings",
        type=int,
        help=f"readings to publish (default: --duration {DEFAULT_DURATION:.0f})",
    )
    add(
        "--batch-size",
        type=int,
        default=1,
        help="readings per gateway batch; 1 publishes single-reading messages (default)",
    )
    add("--qos", type=int, choices=[0, 1, 2], help="MQTT QoS (default: mqtt.qos setting)")
    add("--seed", type=int, default=1, help="seed of the fleet, its signals and anomalies")
    add("--company", default="Simulated Co", help="company name (reused if it exists)")
    add(
        "--anomalies",
        type=int,
        help="number of anomalies to inject (default: 5%% of the sensors; 0 for none)",
    )
    add("--ground-truth", type=Path, metavar="PATH", help="write the injected anomalies as CSV")
    add(
        "--time-scale",
        type=float,
        help="simulated seconds per wall second (e.g. 1440: a day per minute); "
        "without it, the simulated range is backfilled as fast as --rate allows",
    )
    add(
        "--keys-out",
        type=Path,
        metavar="PATH",
        help="write sensor_id,device_id,timestamp of every published reading",
    )
    add("--no-register", action="store_true", help="use the fleet registered earlier")
    add(
        "--record",
        type=Path,
        metavar="PATH",
        help="write the readings as a recording of sensor.readings.raw (for `tmiot replay`) "
        "instead of publishing them over MQTT",
    )


def _options(args: argparse.Namespace, settings: Settings) -> PublishOptions:
    rate = args.rate
    if rate is None:
        rate = None if args.time_scale is not None else DEFAULT_RATE
    duration = args.duration
    if duration is None and args.readings is None:
        duration = DEFAULT_DURATION
    return PublishOptions(
        rate=rate or None,
        time_scale=args.time_scale,
        duration_seconds=duration,
        readings=args.readings,
        batch_size=args.batch_size,
        qos=settings.mqtt.qos if args.qos is None else args.qos,
        keys_out=args.keys_out,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Register (unless --no-register), publish, write the ground truth; the exit code.

    Raises:
        DatabaseError: the database is unreachable or refused the fleet.
        PublishError: the MQTT broker is unreachable or a publish failed.
    """
    try:
        options = _options(args, settings)
    except ValueError as exc:
        print(f"tmiot simulate: {exc}", file=sys.stderr)  # noqa: T201 - the command's output
        return EXIT_USAGE
    if args.no_register:
        fleet = load_fleet(settings.database, seed=args.seed, company_name=args.company)
    else:
        fleet = register_fleet(
            settings.database, sensors=args.sensors, seed=args.seed, company_name=args.company
        )
    if not fleet.sensors:
        print("tmiot simulate: the fleet has no sensors", file=sys.stderr)  # noqa: T201
        return EXIT_FAILURE
    window = simulated_window(fleet, options)
    injections = schedule_anomalies(
        fleet.bank(window.start),
        seed=fleet.seed,
        start=window.start,
        end=window.end,
        count=args.anomalies,
    )
    if args.ground_truth is not None:
        # Written first so that an interrupted run still leaves its labels.
        write_ground_truth(args.ground_truth, ground_truth(fleet, injections))
    if args.record is not None:
        readings = record_fleet(
            args.record,
            fleet,
            start=window.start,
            end=window.end,
            injections=injections,
            partitions=settings.kafka.partitions,
        )
        truth = ground_truth(fleet, injections)
        if args.ground_truth is not None:
            write_ground_truth(args.ground_truth, truth)
        print(  # noqa: T201 - the command's output
            f"recorded {readings} readings of {len(fleet.sensors)} sensors of company"
            f" {fleet.company_id} to {args.record}, simulated {window.start:%Y-%m-%d %H:%M} to"
            f" {window.end:%Y-%m-%d %H:%M} UTC, {len(truth)} anomalies"
        )
        return EXIT_OK
    result = asyncio.run(
        publish_fleet(settings.mqtt, fleet, options, window=window, injections=injections)
    )
    truth = ground_truth(fleet, injections, until=result.reached)
    if args.ground_truth is not None:
        write_ground_truth(args.ground_truth, truth)
    labels = f" -> {args.ground_truth}" if args.ground_truth is not None else ""
    print(  # noqa: T201 - the command's output
        f"published {result.readings} readings in {result.messages} messages"
        f" (+{result.status_messages} status) in {result.elapsed_seconds:.1f} s"
        f" ({result.rate:.0f} readings/s), {len(fleet.sensors)} sensors of company"
        f" {fleet.company_id}, simulated {window.start:%Y-%m-%d %H:%M} to"
        f" {result.reached:%Y-%m-%d %H:%M} UTC, {len(truth)} anomalies{labels}"
    )
    return EXIT_OK
