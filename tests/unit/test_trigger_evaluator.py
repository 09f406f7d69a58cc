from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers.conditions import parse_condition
from triggers.evaluator import Evaluator
from triggers.incidents import MAX_EVIDENCE
from triggers.model import (
    Cleared,
    Opened,
    ScoredReading,
    SensorInfo,
    Transition,
    TriggerSpec,
    incident_key,
)
from triggers.trends import HOUR_US
from triggers.windows import State

S = 1_000_000  # a second, in us
MIN = 60 * S
T0 = 1_790_000_000 * S  # an event time in 2026
SENSOR = SensorInfo(
    sensor_id="s1",
    company_id="c1",
    customer_equipment_id="e1",
    sensor_number="SENS-001",
    sensor_type="temperature",
    sampling_interval_seconds=60,
    alert_threshold_min=10.0,
    alert_threshold_max=90.0,
    unit="°C",
    status="active",
    equipment_name="Boiler",
)


def trigger(kind: str, data: dict[str, object], tid: str = "t1") -> TriggerSpec:
    return TriggerSpec(
        trigger_id=tid,
        company_id="c1",
        trigger_number=f"AST-{tid}",
        trigger_name="test",
        sensor_id=None,
        condition_type=kind,
        condition=parse_condition(kind, data),
    )


def reading(
    ts_us: int,
    value: float | None,
    score: float = 0.0,
    kind: str | None = None,
    *,
    received_us: int = 0,
) -> ScoredReading:
    return ScoredReading(
        sensor_id="s1",
        ts_us=ts_us,
        value=value,
        anomaly_score=score,
        is_anomaly=kind is not None,
        anomaly_type=kind,
        received_us=received_us,
    )


def feed(
    ev: Evaluator,
    trig: TriggerSpec,
    series: Sequence[tuple[int, float | None]],
    sensor: SensorInfo = SENSOR,
    now_us: int | None = None,
) -> list[Transition]:
    """Observe (ts_us, value) pairs; now is the reading's time unless given."""
    out: list[Transition] = []
    for ts, value in series:
        out += ev.observe(trig, sensor, reading(ts, value), ts if now_us is None else now_us)
    return out


def events(transitions: list[Transition]) -> list[tuple[str, int]]:
    """(kind, event time relative to T0 in seconds) of each transition."""
    return [
        ("open", (t.opened_us - T0) // S)
        if isinstance(t, Opened)
        else (f"clear:{t.reason}", (t.cleared_us - T0) // S)
        for t in transitions
    ]


def minutes(values: Sequence[float], start: int = 0) -> list[tuple[int, float | None]]:
    """A reading a minute from T0 + start minutes."""
    return [(T0 + (start + i) * MIN, v) for i, v in enumerate(values)]


# --- threshold_exceeded ---------------------------------------------------------------------


def test_threshold_duration_fires_and_clears_on_time():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90, "for_seconds": 300})
    out = feed(ev, trig, minutes([80] * 6 + [95] * 10 + [80] * 10))
    # Beyond from minute 6; 5 minutes later (minute 11) it has held for 300 s.
    # Back inside at minute 16; min_hold (300 s) ends at minute 16 as well.
    assert events(out) == [("open", 660), ("clear:condition_cleared", 960)]
    opened = out[0]
    assert isinstance(opened, Opened)
    assert opened.key == incident_key("t1", "s1", T0 + 660 * S)
    assert opened.summary == "value above 90 °C for 5 min (peak 95 °C, 6 readings)"
    assert [e.ts_us for e in opened.evidence] == [T0 + m * MIN for m in range(6, 12)]
    assert opened.historical is False
    assert opened.forecast is None
    assert ev.open_incident("t1", "s1") is None


def test_threshold_min_hold_delays_clearing():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90, "min_hold_seconds": 600})
    out = feed(ev, trig, minutes([95, 80, 80, 80, 80, 80, 80, 80, 80, 80, 80, 80]))
    assert events(out) == [("open", 0), ("clear:condition_cleared", 600)]


def test_threshold_defaults_to_the_sensor_bounds():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"min_hold_seconds": 0})
    out = feed(ev, trig, minutes([50, 9.5, 50, 50, 90.5]))
    assert events(out) == [("open", 60), ("clear:condition_cleared", 120)]
    assert isinstance(out[0], Opened)
    assert out[0].summary == "value outside 10..90 °C (peak 9.5 °C, 1 reading)"
    # A sensor without thresholds gives the empty condition nothing to watch.
    bare = dataclasses.replace(SENSOR, alert_threshold_min=None, alert_threshold_max=None)
    assert feed(Evaluator(), trig, minutes([1e9, -1e9]), sensor=bare) == []


def test_threshold_count_form():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90, "count": 3, "of": 5, "min_hold_seconds": 0})
    out = feed(ev, trig, minutes([95, 80, 95, 80, 95, 80, 80]))
    assert events(out) == [("open", 240), ("clear:condition_cleared", 300)]
    assert isinstance(out[0], Opened)
    assert out[0].summary == "3 of the last 5 readings above 90 °C (peak 95 °C)"
    assert [e.ts_us for e in out[0].evidence] == [T0, T0 + 2 * MIN, T0 + 4 * MIN]


def test_hysteresis_gives_one_incident_for_a_flapping_value():
    trig = trigger(
        "threshold_exceeded",
        {"above": 90, "hysteresis": 3, "min_hold_seconds": 0, "cooldown_seconds": 0},
    )
    ev = Evaluator()
    flapping = [89.0 if i % 2 == 0 else 91.0 for i in range(60)]
    assert events(feed(ev, trig, minutes(flapping))) == [("open", 60)]
    # Below 87 (90 - 3) it clears.
    assert events(feed(ev, trig, minutes([86.9], start=60))) == [("clear:condition_cleared", 3600)]


def test_min_hold_and_cooldown_give_one_incident_for_a_flapping_value():
    flapping = [89.0 if i % 2 == 0 else 91.0 for i in range(60)]
    bare = trigger(
        "threshold_exceeded", {"above": 90, "min_hold_seconds": 0, "cooldown_seconds": 0}
    )
    assert sum(isinstance(t, Opened) for t in feed(Evaluator(), bare, minutes(flapping))) == 30
    damped = trigger("threshold_exceeded", {"above": 90, "min_hold_seconds": 600})
    assert events(feed(Evaluator(), damped, minutes(flapping))) == [
        ("open", 60),
        ("clear:condition_cleared", 720),
    ]


def test_clear_seconds_needs_a_lasting_return():
    trig = trigger("threshold_exceeded", {"above": 90, "clear_seconds": 180, "min_hold_seconds": 0})
    out = feed(Evaluator(), trig, minutes([95, 80, 80, 95, 80, 80, 80, 80]))
    # Inside from minute 4; 180 s later, minute 7.
    assert events(out) == [("open", 0), ("clear:condition_cleared", 420)]


def test_cooldown_after_clearing():
    trig = trigger(
        "threshold_exceeded", {"above": 90, "min_hold_seconds": 0, "cooldown_seconds": 600}
    )
    values = [95, 80, 95, 95, 80, 80, 80, 80, 80, 80, 95, 95, 95]
    out = feed(Evaluator(), trig, minutes(values))
    # Cleared at minute 1: nothing opens before minute 11, then the next excursion does.
    assert events(out) == [("open", 0), ("clear:condition_cleared", 60), ("open", 660)]


def test_maintenance_status_opens_nothing_but_keeps_state():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90, "for_seconds": 120})
    down = dataclasses.replace(SENSOR, status="maintenance")
    assert feed(ev, trig, minutes([95, 95, 95, 95]), sensor=down) == []
    assert ev.open_incident("t1", "s1") is None
    # Back in service: the excursion that began during maintenance still counts.
    assert events(feed(ev, trig, minutes([95], start=4))) == [("open", 240)]


def test_out_of_order_readings_land_in_their_place():
    ev = Evaluator(lateness_seconds=60)
    trig = trigger("threshold_exceeded", {"above": 90, "for_seconds": 120})
    out = feed(ev, trig, [(T0, 80), (T0 + 60 * S, 95), (T0 + 150 * S, 95)])
    # A reading 30 s late breaks the run: it now starts at 150 s.
    out += feed(ev, trig, [(T0 + 120 * S, 80)])
    # Too late (100 s behind the newest): dropped, the run is unchanged.
    out += feed(ev, trig, [(T0 + 50 * S, 80)])
    assert ev.late_dropped == 1
    out += feed(ev, trig, [(T0 + 200 * S, 95), (T0 + 270 * S, 95)])
    assert events(out) == [("open", 270)]


def test_late_anomaly_counts_in_its_window():
    ev = Evaluator(lateness_seconds=60)
    trig = trigger("anomaly_detected", {"count": 3, "window_seconds": 600})
    obs = [
        reading(T0 + 100 * S, 5.0, 0.9, "spike"),
        reading(T0 + 200 * S, 5.0, 0.9, "spike"),
        reading(T0 + 300 * S, 1.0),
        reading(T0 + 230 * S, 5.0, 0.9, "spike"),  # 70 s late: dropped
        reading(T0 + 250 * S, 5.0, 0.9, "spike"),  # 50 s late: counts
    ]
    out = [t for r in obs for t in ev.observe(trig, SENSOR, r, r.ts_us)]
    assert ev.late_dropped == 1
    assert events(out) == [("open", 300)]
    assert isinstance(out[0], Opened)
    assert [e.ts_us - T0 for e in out[0].evidence] == [100 * S, 200 * S, 250 * S]


def test_duplicate_readings_are_ignored():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90, "count": 2, "of": 3})
    out = feed(ev, trig, [(T0, 95), (T0 + MIN, 80), (T0, 95)])
    assert out == []
    assert ev.duplicates == 1


def test_backfill_incidents_are_historical():
    trig = trigger("threshold_exceeded", {"above": 90})
    horizon = 3600 * S
    opened_at = T0 + 60 * S
    old = feed(Evaluator(), trig, minutes([80, 95]), now_us=opened_at + horizon + 1)
    assert isinstance(old[0], Opened)
    assert old[0].historical is True
    recent = feed(Evaluator(), trig, minutes([80, 95]), now_us=opened_at + horizon)
    assert isinstance(recent[0], Opened)
    assert recent[0].historical is False
    assert old[0].key == recent[0].key


def test_evidence_is_bounded():
    trig = trigger("threshold_exceeded", {"above": 90, "for_seconds": 3600})
    out = feed(Evaluator(), trig, [(T0 + i * 10 * S, 95.0 + i % 3) for i in range(400)])
    assert events(out) == [("open", 3600)]
    opened = out[0]
    assert isinstance(opened, Opened)
    assert len(opened.evidence) == MAX_EVIDENCE
    assert opened.evidence[0].ts_us == T0
    assert opened.evidence[-1].ts_us == T0 + 3600 * S
    assert opened.summary == "value above 90 °C for 1 h (peak 97 °C, 361 readings)"


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(70, 110), min_size=1, max_size=200),
    hysteresis=st.floats(0, 5),
    hold=st.integers(0, 900),
    cool=st.integers(0, 3600),
    count_form=st.booleans(),
)
def test_incidents_alternate_and_respect_hold_and_cooldown(
    values, hysteresis, hold, cool, count_form
):
    shape: dict[str, object] = {
        "above": 90,
        "hysteresis": hysteresis,
        "min_hold_seconds": hold,
        "cooldown_seconds": cool,
    }
    shape |= {"count": 2, "of": 3} if count_form else {"for_seconds": 120}
    out = feed(Evaluator(), trigger("threshold_exceeded", shape), minutes(values))
    opened: Opened | None = None
    cleared_us: int | None = None
    for t in out:
        if isinstance(t, Opened):
            assert opened is None  # one open incident at a time
            assert cleared_us is None or t.opened_us >= cleared_us + cool * S
            opened = t
        else:
            assert opened is not None
            assert t.key == opened.key
            assert t.cleared_us - opened.opened_us >= hold * S
            opened, cleared_us = None, t.cleared_us


# --- anomaly_detected and patterns ----------------------------------------------------------


def test_anomaly_detected_filters_types_and_clears_after_the_window():
    ev = Evaluator()
    trig = trigger(
        "anomaly_detected",
        {"min_score": 0.8, "anomaly_types": ["spike"], "count": 2, "window_seconds": 600},
    )
    obs = [
        reading(T0, 9.0, 0.95, "spike"),
        reading(T0 + 60 * S, 9.0, 0.99, "drift"),  # wrong type
        reading(T0 + 120 * S, 9.0, 0.7, "spike"),  # score too low
        reading(T0 + 180 * S, 9.0, 0.85, "spike"),
        reading(T0 + 600 * S, 1.0),  # the first spike leaves the window (600 s)
    ]
    out = [t for r in obs for t in ev.observe(trig, SENSOR, r, r.ts_us)]
    assert events(out) == [("open", 180), ("clear:condition_cleared", 600)]
    assert isinstance(out[0], Opened)
    assert out[0].summary == "2 anomalies (spike, score >= 0.80) within 10 min (max score 0.95)"


def test_anomaly_detected_by_default_counts_flagged_readings_and_never_silence():
    ev = Evaluator()
    trig = trigger("anomaly_detected", {"count": 2, "window_seconds": 600})
    obs = [
        reading(T0, 9.0, 0.9),  # a high score the detector did not flag
        reading(T0 + 60 * S, None, 1.0, "missing"),  # silence: its own pattern
        reading(T0 + 120 * S, 9.0, 0.4, "spike"),  # flagged
        reading(T0 + 180 * S, None, 1.0, "missing"),
        reading(T0 + 240 * S, 9.0, 0.38, "noise"),  # flagged
    ]
    out = [t for r in obs for t in ev.observe(trig, SENSOR, r, r.ts_us)]
    assert events(out) == [("open", 240)]
    assert isinstance(out[0], Opened)
    assert out[0].summary == "2 anomalies (any type, flagged) within 10 min (max score 0.40)"
    listed = trigger(
        "anomaly_detected", {"anomaly_types": ["missing"], "count": 2, "window_seconds": 600}
    )
    again = Evaluator()
    out = [t for r in obs for t in again.observe(listed, SENSOR, r, r.ts_us)]
    assert events(out) == [("open", 180)]


def test_repeated_drift():
    ev = Evaluator()
    trig = trigger("pattern_detected", {"pattern": "repeated_drift", "count": 2})
    obs = [
        reading(T0, 1.0, 0.9, "drift"),
        reading(T0 + 3600 * S, 1.0, 0.9, "spike"),
        reading(T0 + 7200 * S, 1.0, 0.6, "drift"),
    ]
    out = [t for r in obs for t in ev.observe(trig, SENSOR, r, r.ts_us)]
    assert events(out) == [("open", 7200)]
    assert isinstance(out[0], Opened)
    assert out[0].summary == "2 drift anomalies within 24 h"


def test_slope_pattern():
    up = trigger(
        "pattern_detected",
        {"pattern": "slope", "min_slope_per_hour": 2, "direction": "up", "min_readings": 10},
    )
    down = trigger(
        "pattern_detected",
        {"pattern": "slope", "min_slope_per_hour": 2, "direction": "down", "min_readings": 10},
        tid="t2",
    )
    ev = Evaluator()
    series = [(T0 + i * 5 * MIN, 20.0 + 3.0 * i * 5 / 60) for i in range(12)]  # +3 °C/h
    out = feed(ev, up, series) + feed(ev, down, series)
    # The 10th reading (45 min) gives the fit enough points.
    assert events(out) == [("open", 2700)]
    assert isinstance(out[0], Opened)
    assert out[0].summary == "value rising 3 °C/h over 1 h (10 readings; limit 2 °C/h)"


def test_missing_pattern_fires_from_tick():
    ev = Evaluator()
    trig = trigger("pattern_detected", {"pattern": "missing", "for_seconds": 1800})
    assert feed(ev, trig, minutes([20.0] * 11)) == []  # last reading at 600 s
    silent = reading(T0 + 781 * S, None, 1.0, "missing", received_us=T0 + 600 * S)
    assert ev.observe(trig, SENSOR, silent, T0 + 781 * S) == []
    triggers, sensors = {"t1": trig}, {"s1": SENSOR}
    assert ev.tick(T0 + 2399 * S, triggers, sensors) == []
    out = ev.tick(T0 + 2400 * S, triggers, sensors)
    assert events(out) == [("open", 2400)]
    assert isinstance(out[0], Opened)
    assert out[0].summary == "no reading for 30 min since 2026-09-21T14:23:20Z (limit 30 min)"
    assert [e.value for e in out[0].evidence] == [20.0, None]
    assert ev.tick(T0 + 9999 * S, triggers, sensors) == []  # fired once
    # The sensor comes back: the incident clears (min_hold has passed).
    assert events(feed(ev, trig, [(T0 + 3000 * S, 20.0)])) == [("clear:condition_cleared", 3000)]


def test_short_missing_pattern_fires_a_settle_after_the_missing_event():
    ev = Evaluator(settle_seconds=60)
    trig = trigger("pattern_detected", {"pattern": "missing", "for_seconds": 60})
    feed(ev, trig, minutes([20.0] * 3))
    silent = reading(T0 + 301 * S, None, 1.0, "missing", received_us=T0 + 120 * S)
    assert ev.observe(trig, SENSOR, silent, T0 + 301 * S) == []
    # The other sensors of a gateway report their silence within the settle: one incident.
    assert ev.tick(T0 + 360 * S, {"t1": trig}, {"s1": SENSOR}) == []
    assert events(ev.tick(T0 + 361 * S, {"t1": trig}, {"s1": SENSOR})) == [("open", 361)]
    assert ev.tick(T0 + 10_000 * S, {"t1": trig}, {"s1": SENSOR}) == []


def test_a_store_and_forward_upload_of_older_readings_ends_the_silence():
    ev = Evaluator()
    trig = trigger("pattern_detected", {"pattern": "missing", "for_seconds": 1800})
    feed(ev, trig, minutes([20.0] * 3))
    silent = reading(T0 + 1000 * S, None, 1.0, "missing", received_us=T0 + 200 * S)
    ev.observe(trig, SENSOR, silent, T0 + 1000 * S)
    # Taken at 900 s, before the silence was reported, delivered at 1100 s.
    late = reading(T0 + 900 * S, 20.0, received_us=T0 + 1100 * S)
    ev.observe(trig, SENSOR, late, T0 + 1100 * S)
    assert ev.tick(T0 + 10_000 * S, {"t1": trig}, {"s1": SENSOR}) == []


def test_a_sensor_that_comes_back_before_the_deadline_fires_nothing():
    ev = Evaluator()
    trig = trigger("pattern_detected", {"pattern": "missing", "for_seconds": 1800})
    feed(ev, trig, minutes([20.0] * 3))
    ev.observe(trig, SENSOR, reading(T0 + 400 * S, None, 1.0, "missing"), T0 + 400 * S)
    feed(ev, trig, [(T0 + 500 * S, 20.0)])
    assert ev.tick(T0 + 10_000 * S, {"t1": trig}, {"s1": SENSOR}) == []


# --- maintenance_due ------------------------------------------------------------------------


def test_forecast_crossing_with_severity():
    ev = Evaluator()
    trig = trigger("maintenance_due", {"mode": "forecast", "min_readings": 20})
    # +1 °C/h from 60 °C: the max (90 °C) is reached 30 h after T0.
    series = [(T0 + i * 10 * MIN, 60.0 + i / 6) for i in range(25)]
    out = feed(ev, trig, series)
    assert events(out) == [("open", 190 * 60)]
    opened = out[0]
    assert isinstance(opened, Opened)
    fc = opened.forecast
    assert fc is not None
    assert abs(fc.crossing_us - (T0 + 30 * HOUR_US)) <= 1
    assert (fc.bound, fc.threshold, fc.severity, fc.recommended_action) == (
        "max",
        90.0,
        "high",
        "schedule_maintenance",
    )
    assert math.isclose(fc.slope_per_hour, 1.0)
    assert fc.confidence == 66.67  # r2 = 1, 20 points: 100 * 20 / 30
    assert (
        opened.summary == "trend +1 °C/h reaches max 90 °C in 26.8 h (r² 1.00, 20 readings): high"
    )
    assert len(opened.evidence) == 20


@pytest.mark.parametrize(
    ("slope", "severity", "action"),
    [(-2.0, "critical", "immediate_service"), (-0.5, "medium", "schedule_maintenance")],
)
def test_forecast_falling_towards_the_min(slope, severity, action):
    trig = trigger("maintenance_due", {"mode": "forecast", "min_readings": 5, "horizon_hours": 100})
    series = [(T0 + i * HOUR_US, 50.0 + slope * i) for i in range(5)]
    out = feed(Evaluator(), trig, series)
    assert isinstance(out[0], Opened)
    assert out[0].forecast is not None
    assert (out[0].forecast.bound, out[0].forecast.severity) == ("min", severity)
    assert out[0].forecast.recommended_action == action


def test_forecast_needs_a_good_fit_and_a_near_crossing():
    rng = random.Random(  # noqa: S311 - test data, not secrets
        7
    )
    trig = trigger("maintenance_due", {"mode": "forecast", "min_readings": 20})
    noisy = [(T0 + i * 10 * MIN, 50.0 + rng.gauss(0, 5)) for i in range(100)]
    assert feed(Evaluator(), trig, noisy) == []
    slow = [(T0 + i * 10 * MIN, 20.0 + i * 0.001) for i in range(100)]  # 90 °C in years
    assert feed(Evaluator(), trig, slow) == []


def test_service_interval():
    trig = trigger("maintenance_due", {"mode": "service_interval", "interval_days": 180})
    sensor = dataclasses.replace(
        SENSOR, last_service_date=dt.date(2026, 1, 1), install_date=dt.date(2020, 1, 1)
    )
    due = round(dt.datetime(2026, 6, 30, tzinfo=dt.UTC).timestamp()) * S
    ev = Evaluator()
    assert ev.observe(trig, sensor, reading(due - S, 1.0), due) == []
    out = ev.observe(trig, sensor, reading(due, 1.0), due)
    assert isinstance(out[0], Opened)
    assert out[0].opened_us == due
    assert (
        out[0].summary == "service due: 180 days since last service 2026-01-01 (interval 180 days)"
    )
    # Serviced: the condition no longer holds and the incident clears.
    serviced = dataclasses.replace(sensor, last_service_date=dt.date(2026, 6, 29))
    out = ev.observe(trig, serviced, reading(due + 600 * S, 1.0), due)
    assert isinstance(out[0], Cleared)
    # Without a last service, the install date counts.
    never = dataclasses.replace(sensor, last_service_date=None)
    out = Evaluator().observe(trig, never, reading(due, 1.0), due)
    assert isinstance(out[0], Opened)
    assert out[0].summary.startswith("service due: 2372 days since install 2020-01-01")


# --- feedback and lifecycle -----------------------------------------------------------------


def test_resolve_closes_and_cools_down():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90, "cooldown_seconds": 600})
    out = feed(ev, trig, minutes([95, 95]))
    assert events(out) == [("open", 0)]
    key = ev.open_incident("t1", "s1")
    assert key == out[0].key
    cleared = ev.resolve("t1", "s1", T0 + 90 * S)
    assert cleared == Cleared(key, "t1", "s1", T0 + 90 * S, "work_order_resolved")
    assert ev.open_incident("t1", "s1") is None
    assert ev.resolve("t1", "s1", T0 + 91 * S) is None
    # Still beyond: a new incident only once the cooldown (from the resolution) is over.
    out = feed(ev, trig, minutes([95] * 11, start=2))
    assert events(out) == [("open", 720)]


def test_forget_trigger():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90})
    other = trigger("threshold_exceeded", {"above": 90}, tid="t2")
    feed(ev, trig, minutes([95]))
    feed(ev, other, minutes([95]))
    ev.take_dirty()
    out = ev.forget_trigger("t1")
    assert out == [Cleared(incident_key("t1", "s1", T0), "t1", "s1", T0, "trigger_removed")]
    assert ev.take_dirty() == {("t1", "s1"): {}}
    assert ev.open_incident("t2", "s1") is not None
    assert len(ev) == 1


def test_a_changed_condition_starts_a_fresh_window():
    ev = Evaluator()
    feed(ev, trigger("threshold_exceeded", {"above": 90, "count": 2, "of": 3}), minutes([95]))
    changed = trigger("threshold_exceeded", {"above": 90, "count": 2, "of": 4})
    # The earlier reading is forgotten: one beyond reading is not two.
    assert feed(ev, changed, minutes([95], start=1)) == []
    assert events(feed(ev, changed, minutes([95], start=2))) == [("open", 120)]


# --- persistence ----------------------------------------------------------------------------


def _run_split(
    trig: TriggerSpec, obs: list[ScoredReading], split: int
) -> tuple[list[Transition], list[Transition]]:
    """Transitions of one evaluator, and of two with a JSON state hand-over at `split`."""
    triggers, sensors = {trig.trigger_id: trig}, {"s1": SENSOR}

    def run(ev: Evaluator, part: list[ScoredReading]) -> list[Transition]:
        out: list[Transition] = []
        for r in part:
            out += ev.tick(r.ts_us, triggers, sensors)
            out += ev.observe(trig, SENSOR, r, r.ts_us)
        return out

    whole = Evaluator()
    one = run(whole, obs)
    first = Evaluator()
    two = run(first, obs[:split])
    saved = json.loads(json.dumps({"|".join(k): v for k, v in first.take_dirty().items()}))
    second = Evaluator()
    for k, state in saved.items():
        tid, sid = k.split("|")
        second.restore(tid, sid, state)
    two += run(second, obs[split:])
    assert second.late_dropped + first.late_dropped == whole.late_dropped
    return one, two


CONDITIONS = [
    ("threshold_exceeded", {"above": 90, "for_seconds": 180, "hysteresis": 2}),
    ("threshold_exceeded", {"above": 90, "count": 3, "of": 5, "clear_seconds": 120}),
    ("anomaly_detected", {"min_score": 0.6, "count": 2, "window_seconds": 900}),
    ("pattern_detected", {"pattern": "slope", "min_slope_per_hour": 20, "window_seconds": 1800}),
    ("pattern_detected", {"pattern": "missing", "for_seconds": 600, "min_hold_seconds": 0}),
    ("maintenance_due", {"mode": "forecast", "window_seconds": 3600, "min_readings": 10}),
]


def _series(seed: int, n: int = 400) -> list[ScoredReading]:
    """Readings with excursions, jitter (out of order), silences and anomalies."""
    rng = random.Random(  # noqa: S311 - test data, not secrets
        seed
    )
    out = []
    t = T0
    for i in range(n):
        t += rng.choice([30, 60, 60, 60, 90]) * S
        if rng.random() < 0.02:  # a silence, then the stream's missing event
            t += 900 * S
            out.append(reading(t - 700 * S, None, 1.0, "missing"))
        level = 95.0 if (i // 25) % 3 == 1 else 80.0 + 0.05 * (i % 50)
        score = rng.random()
        kind = rng.choice(["spike", "drop", "drift"]) if score > 0.8 else None
        jitter = rng.randint(-80, 0) * S if rng.random() < 0.1 else 0
        out.append(reading(t + jitter, level + rng.gauss(0, 1.5), score, kind))
    return out


@pytest.mark.parametrize(("kind", "data"), CONDITIONS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restored_state_continues_exactly(kind, data, seed):
    obs = _series(seed)
    one, two = _run_split(trigger(kind, data), obs, len(obs) // 2)
    assert any(isinstance(t, Opened) for t in one)
    assert two == one


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    split=st.floats(0, 1),
    index=st.integers(0, len(CONDITIONS) - 1),
)
def test_restore_equivalence_property(seed, split, index):
    obs = _series(seed, n=150)
    kind, data = CONDITIONS[index]
    one, two = _run_split(trigger(kind, data), obs, int(split * len(obs)))
    assert two == one


def test_take_dirty_only_returns_changes():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90})
    feed(ev, trig, minutes([80, 81]))
    dirty = ev.take_dirty()
    assert list(dirty) == [("t1", "s1")]
    assert dirty[("t1", "s1")]["n"] == T0 + MIN
    assert ev.take_dirty() == {}


def test_malformed_state_starts_fresh():
    ev = Evaluator()
    ev.restore("t1", "s1", {"v": 1, "fp": 1, "n": "yesterday"})
    ev.restore("t1", "s1", {"v": 99})
    ev.restore("t1", "s1", {})  # a deleted state
    assert (ev.rejected_states, len(ev)) == (2, 0)
    with pytest.raises(ValueError, match="malformed trigger state"):
        State.load({"v": 1, "fp": 1, "n": "yesterday"})
    with pytest.raises(ValueError, match="state version 99"):
        State.load({"v": 99})


def test_drop_sensors_unloads_without_transitions():
    ev = Evaluator()
    trig = trigger("threshold_exceeded", {"above": 90})
    feed(ev, trig, minutes([95]))
    saved = ev.take_dirty()
    feed(ev, trig, minutes([96], start=1))
    ev.drop_sensors({"s1"})
    assert (len(ev), ev.take_dirty(), ev.open_incident("t1", "s1")) == (0, {}, None)
    # Moved back: the saved state continues (the incident is still open).
    ev.restore("t1", "s1", saved[("t1", "s1")])
    assert ev.open_incident("t1", "s1") == incident_key("t1", "s1", T0)
