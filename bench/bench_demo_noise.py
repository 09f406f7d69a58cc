"""The demo's noise faults through the detector alone, at every hour of the day.

``make demo`` injects its anomalies into a fleet at most 12 hours old, and its noise
faults are the ones a young sensor's detector misses most (#21): the careful fleet
trigger (``DEMO-ERRATIC``) wants two ``noise`` alerts within an hour, and a fault that
is alerted once gets no work order. A demo run is one draw (its signals' daily cycle
depends on the hour it ends), so this bench builds the demo's fleet and anomalies
(``tmiot demo``'s defaults: 70 sensors, seed 7, 15 anomalies over 12 simulated hours,
the first 35 % clean) with the window ending at each hour of a day, scores every
noise-faulted sensor's readings with :class:`stream.detectors.SensorDetector` (its
alert band given, as the stream does), and counts the faults alerted twice as noise
within an hour, from the fault's start to 2 h after its end (the demo's grace).

``--against FILE`` scores the same readings, in the same run, with another version of
``stream/detectors.py`` (for example ``git show 18b596f:stream/detectors.py > v6.py``).

Run: ``make bench-demo-noise`` (``python -m bench.bench_demo_noise --help``).
Nothing in the detector was chosen on this fleet.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import stream.detectors
from bench.bench_false_alarms import work_orders
from tmiot.config import DetectorSettings
from tmiot.demo.command import CLEAN_LEAD, configure_parser
from tmiot.demo.report import WORK_ORDER_GRACE
from tmiot.simulate.fleet import device_id, sensor_types
from tmiot.simulate.signals import (
    PROFILES,
    AnomalyType,
    SignalBank,
    inject,
    schedule_anomalies,
    to_ms,
)

RESULTS = Path(__file__).parent / "results"
# The demo's report: an incident up to 2 h after the fault is its own.
GRACE_MS = round(WORK_ORDER_GRACE.total_seconds() * 1000)
DAY0 = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Fault:
    """One noise fault at one hour of the day, and whether each detector caught it."""

    hour: int
    device: str
    interval_s: int
    caught: tuple[bool, ...]


def load(path: Path) -> ModuleType:
    """A ``detectors.py`` of another version, as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"detectors_{path.stem}", path)
    if spec is None or spec.loader is None:
        msg = f"not a Python module: {path}"
        raise ValueError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(hour: int, demo: argparse.Namespace, detectors: list[Any]) -> list[Fault]:
    """The demo's noise faults (`demo`: its options) with its window ending `hour` h into a day."""
    sensors, seed, count = demo.sensors, demo.seed, demo.anomalies
    span = timedelta(seconds=demo.duration * demo.time_scale)
    profiles = [PROFILES[k] for k in sensor_types(range(sensors))]
    end = DAY0 + timedelta(hours=hour, minutes=17)
    start = end - span
    bank = SignalBank.build(profiles, seed=seed, origin=start)
    planned = schedule_anomalies(
        bank, seed=seed, start=start, end=end, count=count, warmup=CLEAN_LEAD
    )
    who, t_ms = bank.sample_times(to_ms(start), to_ms(end))
    who, t_ms, values = inject(bank, who, t_ms, bank.values(who, t_ms), planned)
    settings = DetectorSettings()
    out = []
    for a in planned:
        if a.anomaly_type is not AnomalyType.NOISE:
            continue
        mine = who == a.sensor
        p = profiles[a.sensor]
        caught = []
        for module in detectors:
            det = module.SensorDetector(settings)
            noise = []
            for t, v in zip(t_ms[mine].tolist(), values[mine].tolist(), strict=True):
                verdict = det.update(t, v, None, p.alert_threshold_min, p.alert_threshold_max)
                if verdict.anomaly_type == "noise" and a.start_ms <= t <= a.end_ms + GRACE_MS:
                    noise.append(t)
            caught.append(work_orders(noise) > 0)  # two noise alerts within the hour
        device = device_id(seed, a.sensor)
        out.append(Fault(hour, device, p.sampling_interval_seconds, tuple(caught)))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the 24 hours; write bench/results/demo_noise.md."""
    demo = argparse.ArgumentParser()
    configure_parser(demo)  # tmiot demo's defaults
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.set_defaults(**{k: v for k, v in vars(demo.parse_args([])).items() if k != "out"})
    ap.add_argument("--sensors", type=int, help="default: tmiot demo's")
    ap.add_argument("--seed", type=int, help="default: tmiot demo's")
    ap.add_argument("--anomalies", type=int, help="default: tmiot demo's")
    ap.add_argument("--against", type=Path, help="another stream/detectors.py, scored beside")
    ap.add_argument("--out", type=Path, default=RESULTS / "demo_noise.md")
    args = ap.parse_args(argv)
    span = timedelta(seconds=args.duration * args.time_scale)
    detectors: list[Any] = [stream.detectors]
    names = ["this detector"]
    if args.against is not None:
        detectors.append(load(args.against))
        names.append(f"`{args.against}`")
    faults: list[Fault] = []
    for hour in range(24):
        faults += run(hour, args, detectors)
        got = [sum(f.caught[i] for f in faults) for i in range(len(detectors))]
        print(f"hour {hour + 1}/24: caught {got} of {len(faults)}", file=sys.stderr, flush=True)
    lines = [
        "# The demo's noise faults, alerted twice as noise within an hour",
        "",
        (
            f"`tmiot demo`'s fleet ({args.sensors} sensors, seed {args.seed}, {args.anomalies}"
            f" anomalies over {span.total_seconds() / 3600:g} simulated hours, the first"
            f" {CLEAN_LEAD * 100:g} % clean), its window ending at each"
            " hour of a day; each noise fault's sensor scored by the detector alone with its alert"
            " band. Caught: two `noise` alerts within an hour, from the fault's start to 2 h after"
            " its end (what `DEMO-ERRATIC` needs for a work order). `make bench-demo-noise`;"
            f" Python {platform.python_version()}, {platform.machine()}."
        ),
        "",
        "| sensor (interval) | " + " | ".join(f"{n}: caught" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for device in sorted({f.device for f in faults}, key=lambda d: int(d.rsplit("-", 1)[1])):
        mine = [f for f in faults if f.device == device]
        cells = [f"{sum(f.caught[i] for f in mine)} / {len(mine)}" for i in range(len(names))]
        lines.append(f"| {device} ({mine[0].interval_s} s) | {' | '.join(cells)} |")
    totals = [f"**{sum(f.caught[i] for f in faults)} / {len(faults)}**" for i in range(len(names))]
    lines += [f"| all | {' | '.join(totals)} |", ""]
    missed = [f for f in faults if not f.caught[0]]
    if missed:
        lines.append(
            "Missed by this detector: "
            + ", ".join(f"{f.device} at hour {f.hour}" for f in missed)
            + "."
        )
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
