"""deploy/prometheus/alerts.yml against recorded series: each rule fires on its failure only.

No promtool here (no Go toolchain, no Prometheus binary on the package registries), so
the rules are evaluated by a small evaluator of the PromQL they use: ``sum``/``max`` of an
instant vector, ``rate`` and ``deriv`` over a range, ``+``, comparisons with a number, and
``and``; a rule fires once its expression has returned a value for its ``for``. The
series are what the services export (names checked against a live scrape in
tests/integration/test_health.py), recorded every 15 s over two hours, healthy and then
with one failure each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yml"
STEP = 15.0
HOURS = 2.0
FAIL_AT = 3600.0  # the failure starts after an hour of health

Series = dict[str, Callable[[float], float]]  # metric -> value at time t (one series each)


def _duration(text: str) -> float:
    return float(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


class _Eval:
    """Evaluate one expression at time `t` over `series`; None: an empty result."""

    _TOKEN = re.compile(r"\s*(\d+\.?\d*|[a-z_]+|\[\d+[smh]\]|==|[()+><])")

    def __init__(self, expr: str, series: Series) -> None:
        self.tokens = self._TOKEN.findall(expr)
        assert "".join(self.tokens) == re.sub(r"\s+", "", expr), f"unsupported PromQL: {expr}"
        self.series = series

    def at(self, t: float) -> float | None:
        self.i, self.t = 0, t
        value = self._and()
        assert self.i == len(self.tokens)
        return value

    def _next(self) -> str:
        self.i += 1
        return str(self.tokens[self.i - 1])

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _and(self) -> float | None:
        left = self._compare()
        while self._peek() == "and":
            self._next()
            right = self._compare()
            left = left if right is not None else None
        return left

    def _compare(self) -> float | None:
        value = self._sum()
        if self._peek() in (">", "<", "=="):
            op, bound = self._next(), float(self._next())
            ok = {">": value > bound, "<": value < bound, "==": value == bound}[op]
            return value if ok else None
        return value

    def _sum(self) -> float:
        value = self._aggregate()
        while self._peek() == "+":
            self._next()
            value += self._aggregate()
        return value

    def _aggregate(self) -> float:
        agg = self._next()
        assert agg in ("sum", "max"), agg
        assert self._next() == "("
        name = self._next()
        if name in ("rate", "deriv"):
            assert self._next() == "("
            metric, window = self._next(), _duration(self._next()[1:-1])
            assert self._next() == ")"
            value = self._range(name, self.series[metric], window)
        else:
            value = self.series[name](self.t)
        assert self._next() == ")"
        return value  # one series per metric: sum and max of one value are the value

    def _range(self, fn: str, f: Callable[[float], float], window: float) -> float:
        ts = [
            self.t - k * STEP for k in range(int(window / STEP), -1, -1) if self.t - k * STEP >= 0
        ]
        vs = [f(t) for t in ts]
        if len(ts) < 2:
            return 0.0
        if fn == "rate":
            return (vs[-1] - vs[0]) / (ts[-1] - ts[0])
        mt, mv = sum(ts) / len(ts), sum(vs) / len(vs)  # deriv: least-squares slope
        return sum((a - mt) * (b - mv) for a, b in zip(ts, vs, strict=True)) / sum(
            (a - mt) ** 2 for a in ts
        )


def _firing(series: Series) -> set[str]:
    """The alerts that fire at some point of the recording."""
    fired = set()
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        expr, hold = _Eval(rule["expr"], series), _duration(rule.get("for", "0s"))
        since: float | None = None
        t = 0.0
        while t <= HOURS * 3600:
            if expr.at(t) is None:
                since = None
            elif since is None:
                since = t
            if since is not None and t - since >= hold:
                fired.add(rule["alert"])
                break
            t += STEP
    return fired


def _counter(rate: float, stop: float | None = None) -> Callable[[float], float]:
    return lambda t: rate * (min(t, stop) if stop is not None else t)


def _healthy() -> Series:
    return {
        "tmiot_ingest_messages_received_total": _counter(50.0),
        "tmiot_ingest_deadletters_total": _counter(0.01),
        "tmiot_stream_deadletters_total": _counter(0.0),
        "tmiot_stream_readings_scored_total": _counter(2000.0),
        "tmiot_triggers_readings_total": _counter(2000.0),
        "tmiot_stream_lag_seconds": lambda t: 0.4 + 0.1 * ((t // STEP) % 3),
        "tmiot_triggers_lag_seconds": lambda _t: 0.6,
        "tmiot_stream_checkpoint_age_seconds": lambda t: t % 30.0,
    }


def _after(f: Callable[[float], float], g: Callable[[float], float]) -> Callable[[float], float]:
    return lambda t: f(t) if t < FAIL_AT else g(t)


FAILURES: dict[str, Callable[[Series], None]] = {
    "TmiotIngestNotReceiving": lambda s: s.update(
        {
            "tmiot_ingest_messages_received_total": _counter(50.0, FAIL_AT),
            "tmiot_stream_readings_scored_total": _counter(2000.0, FAIL_AT),
            "tmiot_triggers_readings_total": _counter(2000.0, FAIL_AT),
        }
    ),
    "TmiotStreamLagGrowing": lambda s: s.update(
        {"tmiot_stream_lag_seconds": _after(s["tmiot_stream_lag_seconds"], lambda t: t - FAIL_AT)}
    ),
    "TmiotTriggersLagGrowing": lambda s: s.update(
        {"tmiot_triggers_lag_seconds": _after(lambda _t: 0.6, lambda t: 0.5 * (t - FAIL_AT))}
    ),
    "TmiotDeadLetterRate": lambda s: s.update(
        {"tmiot_ingest_deadletters_total": _after(_counter(0.01), lambda t: 36 + 5 * (t - FAIL_AT))}
    ),
    "TmiotStreamNotCommitting": lambda s: s.update(
        {
            "tmiot_stream_checkpoint_age_seconds": _after(
                lambda t: t % 30.0, lambda t: t - FAIL_AT + 20
            )
        }
    ),
    "TmiotTriggerEvaluationStalled": lambda s: s.update(
        {"tmiot_triggers_readings_total": _counter(2000.0, FAIL_AT)}
    ),
}


def test_a_healthy_pipeline_raises_no_alert() -> None:
    assert _firing(_healthy()) == set()


@pytest.mark.parametrize("alert", list(FAILURES))
def test_each_failure_raises_its_alert(alert: str) -> None:
    series = _healthy()
    FAILURES[alert](series)
    assert _firing(series) == {alert}  # and no other


def test_every_rule_is_tested_and_documented() -> None:
    rules: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == set(FAILURES)
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"]
