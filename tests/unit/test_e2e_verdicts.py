"""The e2e benchmark's verdict lines: ratios, stage shares, costs, the machine bound."""

from __future__ import annotations

import time
from typing import Any

from bench.e2e.__main__ import _verdicts
from bench.e2e.stages import bound
from bench.e2e.watch import machine_busy_seconds


def _step(system: str, form: str, offered: float, *, held: bool, p99: int | None) -> dict[str, Any]:
    return {
        "system": system,
        "form": form,
        "sensors": 1000,
        "offered": offered,
        "achieved": offered,
        "sustained": held,
        "backlog_at_end": 0 if held else 123_456,
        "row_latency_ms": {"p50": p99, "p95": p99, "p99": p99},
        "workorder_latency_ms": {"p99": p99},
    }


def test_verdicts_report_ratios_shares_and_missing_latency() -> None:
    r = {
        "stages": {"mqtt_single": 4000, "kafka": 100_000, "db": 30_000},
        "steps": [
            _step("naive", "single", 800, held=True, p99=120),
            _step("pipeline", "single", 2000, held=True, p99=300),
            _step("pipeline", "single", 5000, held=False, p99=None),
            _step("pipeline", "batch", 5000, held=True, p99=1234),
            _step("pipeline", "batch", 15000, held=True, p99=1900),
            _step("pipeline", "batch", 20000, held=False, p99=9000),
        ],
    }
    lines = _verdicts(r)
    assert any("2,000 readings/s = **2.5 x** the naive bridge's 800" in x for x in lines)
    # The slowest stage a batch passes is the database (the single-message subscriber is not).
    assert any("**15,000 readings/s**" in x and "50% of the slowest stage (db" in x for x in lines)
    assert any("batch, 1,000 sensors: **1,234 ms**" in x for x in lines)
    none = [x for x in lines if "single, 1,000 sensors: **none**" in x]
    assert none, lines
    assert "123,456 readings behind" in none[0]


def test_verdicts_charge_steps_and_bound_the_machine_by_the_stages_cpu() -> None:
    single = _step("pipeline", "single", 4000, held=True, p99=300)
    single |= {"machine_cores": 1.6, "cpu_us_per_reading": 400.0}
    batch = _step("pipeline", "batch", 20000, held=True, p99=900)
    batch |= {"machine_cores": 1.8, "cpu_us_per_reading": 90.0}
    r = {
        "machine": {"cpus": 2},
        "stages": {"kafka": 250_000, "db": 45_000, "scoring": 90_000},
        "stage_cpu_us": {
            "validation": 3.0,
            "kafka": 5.0,
            "scoring": 10.0,
            "db": 17.0,
            "triggers": 10.0,
        },
        "steps": [_step("naive", "single", 1000, held=True, p99=60), single, batch],
    }
    lines = _verdicts(r)
    bound = [x for x in lines if x.startswith("machine bound")]
    assert bound, lines
    # 2 cores / (3 + 2 x 5 + 10 + 17) µs per reading = 50,000 readings/s at most.
    assert "validation 3.0 + 2 x kafka 5.0 + scoring 10.0 + db 17.0 = 40.0 µs" in bound[0]
    assert "**50,000 readings/s**" in bound[0]
    # ... and with triggers' 10 µs, 2 / 50 µs = 40,000.
    assert "+ triggers 10.0 = 50.0 µs: **40,000 readings/s**" in bound[0]
    # 10 x the naive 1,000/s at 400 µs per reading is 4 cores' work.
    assert any("(1.6 cores busy: 400 µs" in x and "keep 4.0 cores busy, of 2" in x for x in lines)
    assert any("**20,000 readings/s**" in x and "(1.8 cores busy: 90 µs" in x for x in lines)


def test_verdicts_of_results_without_cpu_figures_leave_them_out() -> None:
    r = {
        "stages": {"db": 30_000},
        "steps": [
            _step("naive", "single", 800, held=True, p99=120),
            _step("pipeline", "single", 2000, held=True, p99=300),
        ],
    }
    lines = _verdicts(r)
    assert not any("machine bound" in x or "cores busy" in x for x in lines), lines


def test_bound_is_cores_over_the_path_cost_repeats_counted() -> None:
    cpu = {"validation": 2.0, "kafka": 4.0, "scoring": 10.0, "db": 20.0, "mqtt_single": 150.0}
    assert bound(cpu, 2) == 2e6 / 40.0  # validation, kafka twice, scoring, db
    assert bound(cpu, 4, ("mqtt_single",)) == 4e6 / 150.0


def test_machine_busy_seconds_count_this_process_spinning() -> None:
    before = machine_busy_seconds()
    spin_until = time.process_time() + 0.3
    while time.process_time() < spin_until:
        pass
    assert machine_busy_seconds() - before >= 0.25
