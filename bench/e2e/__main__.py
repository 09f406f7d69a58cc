"""``python -m bench.e2e``: run the end-to-end benchmark (see :mod:`bench.e2e`)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import structlog

from bench.e2e import stages
from bench.e2e.ladder import StepSpec, climb, dump
from bench.e2e.report import best_step, grouped, markdown, plot
from bench.e2e.rig import Rig, rig
from tmiot.config import DatabaseSettings, LogSettings, RuntimeSettings
from tmiot.logs import configure_logging
from tmiot.runtime import tune_process

log = structlog.get_logger("bench.e2e")
RESULTS = Path(__file__).resolve().parent.parent / "results"
_MB = 2**20
_ISSUE_RATE = 5000  # readings/s at which the issue asks for the p99 to the row
_NAIVE_SENSORS = 1000  # the naive bridge runs on the 1k fleet only


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _forms(text: str) -> list[Literal["single", "batch"]]:
    out: list[Literal["single", "batch"]] = []
    for x in text.split(","):
        if x == "single":
            out.append("single")
        elif x == "batch":
            out.append("batch")
        elif x:
            msg = f"unknown form {x!r}: single or batch"
            raise SystemExit(msg)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/tmiot_bench_e2e")
    p.add_argument("--seconds", type=float, default=60.0, help="sustained phase of each step")
    p.add_argument("--warmup", type=float, default=10.0, help="least warm-up of a step")
    p.add_argument("--sensors", type=_ints, default=[1000, 10_000, 100_000])
    p.add_argument("--forms", type=_forms, default=["batch", "single"])
    p.add_argument("--naive-forms", type=_forms, default=["single"], help="naive bridge, 1k")
    p.add_argument("--workers", type=int, default=1, help="stream workers")
    p.add_argument("--start-batch", type=float, default=5000.0)
    p.add_argument("--start-single", type=float, default=5000.0)
    p.add_argument("--start-naive", type=float, default=500.0)
    p.add_argument("--refine", type=int, default=2, help="bisections after the first failure")
    p.add_argument("--latency-limit", type=float, default=2.0, help="p99 to row, seconds")
    p.add_argument("--drain-limit", type=float, default=30.0)
    p.add_argument("--skip-stages", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="e2e", help="results file stem")
    p.add_argument("--render", type=Path, help="only rewrite the .md and .png of this .json")
    return p


def _p99(step: dict[str, Any]) -> str:
    """The step's p99 to the row and to the work order, or why there is none."""
    row = step["row_latency_ms"]["p99"]
    if row is None:
        return (
            f"**none**: no probe reading was stored during the step"
            f" ({step['backlog_at_end']:,} readings behind at its end; target < 500 ms)"
        )
    wo = step.get("workorder_latency_ms", {}).get("p99")
    return f"**{grouped(row)} ms** (target < 500); to work order {grouped(wo)} ms"


def _cost(step: dict[str, Any]) -> str:
    """What a step cost the whole machine, if measured (older results: not)."""
    us = step.get("cpu_us_per_reading")
    if not us:
        return ""
    return f" ({step['machine_cores']} cores busy: {us:,.0f} µs of CPU per reading)"


def _cores(r: dict[str, Any]) -> int:
    return int(r.get("machine", {}).get("cpus") or 1)


def _single_lines(r: dict[str, Any]) -> list[str]:
    """Single-reading messages against the naive bridge, and what 10 x it would cost."""
    steps = r["steps"]
    naive = float(best_step(steps, "naive", "single", _NAIVE_SENSORS).get("achieved", 0.0))
    mqtt_single = r.get("stages", {}).get("mqtt_single")
    out = []
    for n in sorted({s["sensors"] for s in steps if s["system"] == "pipeline"}):
        step = best_step(steps, "pipeline", "single", n)
        single = float(step.get("achieved", 0.0))
        if not (naive and single):
            continue
        line = (
            f"single-reading messages, {n:,} sensors: {single:,.0f} readings/s ="
            f" **{single / naive:.1f} x** the naive bridge's {naive:,.0f} (target 10 x)"
        )
        if mqtt_single:
            line += f"; a bare MQTT subscriber alone drains {mqtt_single:,}/s"
        line += _cost(step)
        if us := step.get("cpu_us_per_reading"):
            line += (
                f"; at that cost 10 x the naive bridge ({10 * naive:,.0f}/s) would keep"
                f" {10 * naive * us / 1e6:.1f} cores busy, of {_cores(r)}"
            )
        out.append(line)
    return out


def _path(cpu: dict[str, float], path: tuple[str, ...]) -> str:
    """``validation 3.0 + 2 x kafka 5.3 + ... = 44.2 µs``."""
    parts = []
    for k in dict.fromkeys(path):
        n = path.count(k)
        parts.append(f"{n} x {k} {cpu[k]}" if n > 1 else f"{k} {cpu[k]}")
    return f"{' + '.join(parts)} = {sum(cpu[k] for k in path):.1f} µs"


def _bound_line(r: dict[str, Any]) -> list[str]:
    """The most any pipeline through the batch path's stages could do on this machine."""
    cpu = r.get("stage_cpu_us", {})
    if not all(k in cpu for k in stages.WATCHED_PATH):
        return []
    cores = _cores(r)
    line = (
        f"machine bound: the stages every batch reading passes cost"
        f" {_path(cpu, stages.BATCH_PATH)} of CPU per reading, each alone, so on {cores}"
        f" cores no pipeline through them exceeds **{stages.bound(cpu, cores):,.0f}"
        f" readings/s**; with a trigger on every sensor (the 1k and 10k fleets),"
        f" {_path(cpu, stages.WATCHED_PATH)}: **"
        f"{stages.bound(cpu, cores, stages.WATCHED_PATH):,.0f} readings/s** (target 50,000;"
        " left out: MQTT, the services' consume and publish plumbing, the load generator)"
    )
    return [line]


def _verdicts(r: dict[str, Any]) -> list[str]:
    """The issue's must-shows, checked against this run's figures."""
    steps = r["steps"]
    out = _single_lines(r) + _bound_line(r)
    # Gateway batches go through every stage but the single-message subscriber.
    batch_stages = {k: v for k, v in r.get("stages", {}).items() if k != "mqtt_single"}
    slowest = min(batch_stages.items(), key=lambda kv: kv[1]) if batch_stages else None
    for n in sorted({s["sensors"] for s in steps if s["form"] == "batch"}):
        step = best_step(steps, "pipeline", "batch", n)
        batch = float(step.get("achieved", 0.0))
        line = f"gateway batches, {n:,} sensors: **{batch:,.0f} readings/s** (target 50,000)"
        if slowest:
            line += (
                f", {batch / slowest[1]:.0%} of the slowest stage ({slowest[0]},"
                f" {slowest[1]:,}/s; target 60 %)"
            )
        out.append(line + _cost(step))
    out.extend(
        f"p99 publish -> row at 5,000 readings/s, {s['form']}, {s['sensors']:,} sensors: {_p99(s)}"
        for s in steps
        if s["system"] == "pipeline" and s["offered"] == _ISSUE_RATE
    )
    mem = r.get("memory")
    if mem:
        out.append(
            f"stream worker RSS per monitored sensor at {mem['sensors']:,} sensors:"
            f" **{mem['bytes_per_sensor']:,} bytes** at the first step, at most"
            f" {mem['max_bytes_per_sensor']:,} over its steps (target < 20 KB)"
        )
    return out


def _write(r: dict[str, Any], out: Path, name: str) -> None:
    r["verdicts"] = _verdicts(r)
    out.mkdir(parents=True, exist_ok=True)
    dump(out / f"{name}.json", r)
    (out / f"{name}.md").write_text(markdown(r))


async def _systems(args: argparse.Namespace, bench: Rig, r: dict[str, Any]) -> None:
    steps: list[dict[str, Any]] = r["steps"]

    def spec(system: str, form: Literal["single", "batch"], sensors: int) -> Any:  # noqa: ANN401
        def make(rate: float) -> StepSpec:
            # Warm up until every sensor has been seen about twice (first sight costs a lookup).
            warmup = min(60.0, max(args.warmup, 2 * sensors / rate))
            return StepSpec(
                system,
                form,
                sensors,
                rate,
                warmup,
                args.seconds,
                workers=args.workers,
                latency_limit=args.latency_limit,
                drain_limit=args.drain_limit,
            )

        return make

    configs = [("naive", form, _NAIVE_SENSORS) for form in args.naive_forms]
    configs += [("pipeline", form, n) for n in args.sensors for form in args.forms]
    starts = {"naive": args.start_naive, "batch": args.start_batch, "single": args.start_single}
    for system, form, sensors in configs:
        r["configs"].append({"system": system, "form": form, "sensors": sensors})
        start = starts["naive" if system == "naive" else form]
        await climb(bench, spec(system, form, sensors), start, refine=args.refine, steps_out=steps)
        _write(r, args.out, args.name)
    top = max(args.sensors)
    grown = [
        s["stream_rss_bytes_per_sensor"]
        for s in steps
        if s["sensors"] == top and "stream_rss_bytes_per_sensor" in s
    ]
    if grown:
        first = next(s for s in steps if s["sensors"] == top and "stream_rss_bytes_per_sensor" in s)
        r["memory"] = {
            "sensors": top,
            "workers": args.workers,
            "baseline_mb": first["stream_rss_baseline_mb"],
            "rss_mb": first["rss_peak_mb"].get("stream"),
            "bytes_per_sensor": first["stream_rss_bytes_per_sensor"],
            "max_bytes_per_sensor": max(grown),
        }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tmiot-bench-e2e-"))
    r: dict[str, Any] = {
        "benchmark": "e2e",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "command": "python -m bench.e2e " + shlex.join(sys.argv[1:]),
        "seconds": args.seconds,
        "latency_limit": args.latency_limit,
        "drain_limit": args.drain_limit,
        "workers": args.workers,
        "logs": str(work),
        "configs": [],
        "steps": [],
    }
    log.warning("e2e bench", logs=str(work))
    async with rig(work, DatabaseSettings(url=args.database_url), max(args.sensors)) as bench:
        if not args.skip_stages:
            limits = await stages.limits(bench)
            r["stages"] = {k: round(v.readings_per_s) for k, v in limits.items()}
            r["stage_cpu_us"] = {k: round(v.cpu_us, 2) for k, v in limits.items()}
            log.warning("stage limits", **r["stages"], cpu_us=r["stage_cpu_us"])
        await _systems(args, bench, r)
    return r


def main() -> None:
    """Parse, run, write ``<out>/<name>.{json,md,png}`` and print the table."""
    args = _parser().parse_args()
    if args.render is not None:
        r = json.loads(args.render.read_text())
        _write(r, args.render.parent, args.render.stem)
        plot(r, args.render.with_suffix(".png"))
        sys.stdout.write(markdown(r))
        return
    configure_logging(LogSettings(level="WARNING"))
    tune_process(RuntimeSettings())
    r = asyncio.run(_run(args))
    _write(r, args.out, args.name)
    plot(r, args.out / f"{args.name}.png")
    sys.stdout.write(markdown(r))


if __name__ == "__main__":
    main()
