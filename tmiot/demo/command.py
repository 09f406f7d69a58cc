"""`tmiot demo`: the whole pipeline on the embedded services, with a live view and a report.

1. Start the local services (Kafka, PostgreSQL, Mosquitto) and apply the schema.
2. Register a fresh demo company: equipment and sensors of every seed type, and a
   trigger of every condition type.
3. Run ingest, stream and triggers as processes (logs and Prometheus endpoints on
   ports 9108-9110), and the simulator in this process: ``--duration`` wall seconds
   of a fleet whose simulated time runs ``--time-scale`` times faster, with labelled
   anomalies of every type.
4. Meanwhile, a live view: readings/s per stage, consumer lag, anomalies by type,
   open incidents, work orders. Ctrl-C stops everything cleanly at any point.
5. At the end: the summary (detection against the ground truth, work orders per
   incident, latency) and a PNG and an HTML page per affected sensor.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

__all__ = ["CLEAN_LEAD", "configure_parser"]

# The leading share of the simulated span with no anomaly injected: the detectors learn.
CLEAN_LEAD: Final = 0.35


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of `tmiot demo`."""
    parser.add_argument("--duration", type=float, default=60.0, help="wall seconds (default 60)")
    parser.add_argument("--sensors", type=int, default=70, help="fleet size (default 70)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=720.0,
        help="simulated seconds per wall second (default 720: 12 hours in a minute)",
    )
    parser.add_argument("--anomalies", type=int, default=15, help="injected anomalies")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(".tmiot/demo"), help="logs and report")
