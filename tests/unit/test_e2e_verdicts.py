"""The e2e benchmark's verdict lines: ratios, stage shares, and a step with no latency."""

from __future__ import annotations

from typing import Any

from bench.e2e.__main__ import _verdicts


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
