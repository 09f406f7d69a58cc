"""Steps at increasing offered rates, until latency or backlog runs away.

A step: empty ``sensor_readings``, run the load generator for ``warmup + seconds``,
watch the rows of the probe sensors, the work orders and the processes, then wait
for the backlog to drain. The step is *sustained* when

* the generator published at least 97 % of the offered rate,
* every reading it sent is in ``sensor_readings`` within ``drain_limit`` seconds
  of the end of publishing, and
* the p99 latency from publish to committed row is under ``latency_limit``.

:func:`climb` doubles the rate while steps hold, then bisects between the last
sustained rate and the first that was not.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from bench.e2e.load import Outcome, Plan
from bench.e2e.rig import Rig
from bench.e2e.watch import OrderProbe, ProcSampler, RowProbe, percentiles

log = structlog.get_logger("bench.e2e")

_PROBE_READINGS_PER_S = 50.0  # readings of probe sensors per second, roughly


@dataclass(frozen=True)
class StepSpec:
    """What one step offers."""

    system: str  # "pipeline" or "naive"
    form: Literal["single", "batch"]
    sensors: int
    rate: float
    warmup: float
    seconds: float
    workers: int = 1  # stream workers
    excursions_per_s: float = 2.0
    latency_limit: float = 2.0
    drain_limit: float = 30.0


def _probes(active: list[tuple[str, str]], rate: float, ids: dict[str, str]) -> list[str]:
    count = round(_PROBE_READINGS_PER_S * len(active) / rate)
    count = max(10, min(200, count, len(active)))
    step = len(active) / count
    return [ids[active[int(i * step)][1]] for i in range(count)]


async def _generate(plan: Plan, work: Path) -> Outcome:
    path = Path(tempfile.mkstemp(prefix="plan-", suffix=".json", dir=work)[1])
    await asyncio.to_thread(path.write_text, plan.model_dump_json())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.e2e.load",
        str(path),
        stdout=subprocess.PIPE,
        stderr=(work / "load.log").open("ab"),
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        msg = f"load generator exited {proc.returncode}: see {work / 'load.log'}"
        raise SystemExit(msg)
    return Outcome.model_validate_json(out.splitlines()[-1])


async def run_step(rig: Rig, spec: StepSpec, hot: list[tuple[str, str]]) -> dict[str, Any]:
    """One step on freshly started systems; `hot` gives up the devices its excursions use."""
    assert rig.fleet is not None
    fleet = rig.fleet
    active = fleet.active(spec.sensors)
    if spec.system == "pipeline":
        await rig.start_pipeline(spec.workers)
    else:
        await rig.start_naive()
    try:
        return await _measure(rig, spec, hot, active)
    finally:
        await rig.stop_systems()


async def _measure(  # noqa: PLR0915 - one step, read top to bottom
    rig: Rig, spec: StepSpec, hot: list[tuple[str, str]], active: list[tuple[str, str]]
) -> dict[str, Any]:
    assert rig.fleet is not None
    fleet = rig.fleet
    baseline = rig.rss("stream")
    await rig.truncate()
    n_hot = int(spec.excursions_per_s * spec.seconds) + 1 if spec.system == "pipeline" else 0
    mine, hot[:] = hot[:n_hot], hot[n_hot:]
    plan = Plan(
        mqtt_port=rig.mqtt_port,
        form=spec.form,
        rate=spec.rate,
        warmup=spec.warmup,
        seconds=spec.seconds,
        devices=active,
        hot=mine,
        excursions_per_s=spec.excursions_per_s,
    )
    since_ms = int((time.time() + spec.warmup) * 1000)
    rows = RowProbe(rig.url, _probes(active, spec.rate, fleet.sensor_id), since_ms)
    orders = OrderProbe(rig.bootstrap) if spec.system == "pipeline" else None
    sampler = ProcSampler(rig.pids)
    if orders is not None:
        await orders.start()
    poller = asyncio.create_task(rows.run())
    generating = asyncio.create_task(_generate(plan, rig.work))
    await asyncio.sleep(spec.warmup)
    sampler.start()
    outcome = await generating
    await sampler.stop()
    expected = outcome.sent + len(outcome.excursions)
    stored = await rig.rows()
    backlog = expected - stored
    t0 = time.monotonic()
    while stored < expected and time.monotonic() - t0 < spec.drain_limit:
        await asyncio.sleep(0.25)
        stored = await rig.rows()
    drain = time.monotonic() - t0
    if orders is not None:  # the last work orders: until each excursion has one, or 10 s
        wanted = [(fleet.sensor_id[d], ts) for d, ts in outcome.excursions]
        deadline = time.monotonic() + 10.0
        while orders.latencies(wanted)[1] and time.monotonic() < deadline:  # noqa: ASYNC110 - a poll with a deadline
            await asyncio.sleep(0.1)
    rows.stop()
    await poller
    row_lat = [x for x in rows.latencies if x > -1]
    result: dict[str, Any] = {
        "system": spec.system,
        "form": spec.form,
        "sensors": spec.sensors,
        "offered": spec.rate,
        "achieved": outcome.rate,
        "seconds": spec.seconds,
        "readings_sent": expected,
        "readings_stored": stored,
        "lost": expected - stored,
        "backlog_at_end": backlog,
        "drain_seconds": round(drain, 2),
        "generator_max_behind_s": outcome.max_behind_s,
        "row_latency_ms": percentiles(row_lat),
        "cpu_cores": {**sampler.cpu, "load": outcome.cpu_cores},
        "machine_cores": sampler.machine_cores,
        "cpu_us_per_reading": round(sampler.machine_cores * 1e6 / max(1.0, outcome.rate), 1),
        "rss_peak_mb": {k: round(v / 2**20, 1) for k, v in sampler.rss_peak.items()},
        "rss_last": sampler.rss_last,
    }
    if baseline:
        grown = sampler.rss_last.get("stream", baseline) - baseline
        result["stream_rss_baseline_mb"] = round(baseline / 2**20, 1)
        result["stream_rss_bytes_per_sensor"] = round(grown / spec.sensors)
    if orders is not None:
        excursions = [(fleet.sensor_id[d], ts) for d, ts in outcome.excursions]
        wo_lat, missing = orders.latencies(excursions)
        await orders.stop()
        result["workorder_latency_ms"] = percentiles(wo_lat)
        result["excursions"] = len(excursions)
        result["workorders_missing"] = missing
    reasons = []
    if outcome.rate < 0.97 * spec.rate:
        reasons.append(f"generator reached {outcome.rate:,.0f}/s")
    if stored < expected:
        reasons.append(f"{expected - stored} readings not stored {spec.drain_limit:.0f} s after")
    p99 = result["row_latency_ms"]["p99"]
    if p99 is None or p99 > 1000 * spec.latency_limit:
        reasons.append(f"p99 to row {p99} ms")
    result["sustained"] = not reasons
    result["why_not"] = "; ".join(reasons)
    log.warning(
        "step",
        system=spec.system,
        form=spec.form,
        sensors=spec.sensors,
        offered=spec.rate,
        achieved=outcome.rate,
        p99_row_ms=p99,
        p99_wo_ms=result.get("workorder_latency_ms", {}).get("p99"),
        backlog=backlog,
        drain_s=result["drain_seconds"],
        cpu=sampler.cpu,
        machine_cores=sampler.machine_cores,
        sustained=result["sustained"],
        why_not=result["why_not"],
    )
    return result


async def climb(  # noqa: PLR0913 - the ladder's knobs, keyword-only
    rig: Rig,
    make: Callable[[float], StepSpec],
    start: float,
    *,
    refine: int = 2,
    max_rate: float = 400_000,
    steps_out: list[dict[str, Any]],
) -> float:
    """Highest sustained rate: double from `start` while steps hold, then bisect `refine` times.

    ``make(rate)`` builds each step; every step's result is appended to `steps_out`.
    Returns 0 when no step held.
    """
    assert rig.fleet is not None
    sensors = make(start).sensors
    hot = [(c, d) for c, d in rig.fleet.active(sensors) if d in rig.fleet.watched]
    random.Random(5).shuffle(hot)
    passed, failed = 0.0, 0.0
    rate = start
    while True:
        result = await run_step(rig, make(rate), hot)
        steps_out.append(result)
        if result["sustained"]:
            passed = rate
        else:
            failed = rate
        if not failed:
            if rate * 2 > max_rate:
                return passed
            rate *= 2
        elif not passed:
            if rate / 2 < start / 8:
                return 0.0
            rate /= 2
        elif refine > 0:
            refine -= 1
            rate = round((passed + failed) / 2, -2)
            if rate in (passed, failed):
                return passed
        else:
            return passed


def dump(path: Path, report: dict[str, Any]) -> None:
    """Write the report as JSON (after every step, so a long run leaves partial results)."""
    path.write_text(json.dumps(report, indent=2) + "\n")
