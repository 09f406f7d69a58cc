from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggers.conditions import (
    CONDITION_TYPES,
    AnomalyDetected,
    InvalidCondition,
    MissingPattern,
    RepeatedDriftPattern,
    ServiceInterval,
    SlopePattern,
    ThresholdExceeded,
    TrendForecast,
    parse_condition,
)

VALID = [
    ("threshold_exceeded", {}, ThresholdExceeded),
    ("threshold_exceeded", {"above": 90, "for_seconds": 300}, ThresholdExceeded),
    ("threshold_exceeded", {"below": 5.5, "count": 3, "of": 5}, ThresholdExceeded),
    ("threshold_exceeded", {"above": 90, "below": 10, "hysteresis": 2.5}, ThresholdExceeded),
    (
        "threshold_exceeded",
        {"above": 1, "clear_seconds": 60, "cooldown_seconds": 0},
        ThresholdExceeded,
    ),
    ("anomaly_detected", {}, AnomalyDetected),
    (
        "anomaly_detected",
        {"min_score": 0.8, "anomaly_types": ["spike", "drop"], "count": 3, "window_seconds": 600},
        AnomalyDetected,
    ),
    ("pattern_detected", {"pattern": "slope", "min_slope_per_hour": 1.5}, SlopePattern),
    (
        "pattern_detected",
        {"pattern": "slope", "min_slope_per_hour": 2, "direction": "down", "min_readings": 4},
        SlopePattern,
    ),
    ("pattern_detected", {"pattern": "repeated_drift"}, RepeatedDriftPattern),
    ("pattern_detected", {"pattern": "missing", "for_seconds": 1800}, MissingPattern),
    ("maintenance_due", {"mode": "forecast"}, TrendForecast),
    ("maintenance_due", {"mode": "forecast", "horizon_hours": 24, "min_r2": 0.9}, TrendForecast),
    ("maintenance_due", {"mode": "service_interval", "interval_days": 90}, ServiceInterval),
]


@pytest.mark.parametrize(("kind", "data", "model"), VALID)
def test_valid_shapes(kind, data, model):
    cond = parse_condition(kind, data)
    assert type(cond) is model
    # The JSON text form parses to the same value.
    assert parse_condition(kind, json.dumps(data)) == cond


def test_defaults():
    cond = parse_condition("threshold_exceeded", {})
    assert isinstance(cond, ThresholdExceeded)
    assert (cond.above, cond.below, cond.for_seconds, cond.count, cond.of) == (
        None,
        None,
        0.0,
        None,
        None,
    )
    assert (cond.cooldown_seconds, cond.min_hold_seconds, cond.hysteresis) == (3600.0, 300.0, 0.0)
    anomaly = parse_condition("anomaly_detected", {})
    assert isinstance(anomaly, AnomalyDetected)
    assert (anomaly.min_score, anomaly.count, anomaly.window_seconds) == (None, 1, 3600.0)
    assert anomaly.anomaly_types is None
    forecast = parse_condition("maintenance_due", {"mode": "forecast"})
    assert isinstance(forecast, TrendForecast)
    assert (forecast.horizon_hours, forecast.min_readings, forecast.min_r2) == (72.0, 20, 0.5)


def test_anomaly_types_have_one_spelling():
    a = parse_condition("anomaly_detected", {"anomaly_types": ["spike", "drop", "spike"]})
    b = parse_condition("anomaly_detected", {"anomaly_types": ["drop", "spike"]})
    assert a == b
    assert isinstance(a, AnomalyDetected)
    assert a.anomaly_types == ("drop", "spike")
    assert a.model_dump_json() == b.model_dump_json()


INVALID = [
    ("nope", {}, "unknown condition_type"),
    ("threshold_exceeded", [], "Input should be a valid dictionary"),
    ("threshold_exceeded", {"above": "hot"}, "above: Input should be a valid number"),
    ("threshold_exceeded", {"above": 10, "below": 20}, "below must be lower than above"),
    ("threshold_exceeded", {"above": 10, "below": 10}, "below must be lower than above"),
    ("threshold_exceeded", {"count": 6, "of": 5}, "count must not exceed of"),
    ("threshold_exceeded", {"count": 3}, "count and of go together"),
    ("threshold_exceeded", {"of": 3}, "count and of go together"),
    (
        "threshold_exceeded",
        {"count": 1, "of": 2, "for_seconds": 60},
        "use for_seconds or count/of, not both",
    ),
    (
        "threshold_exceeded",
        {"for_seconds": -1},
        "for_seconds: Input should be greater than or equal to 0",
    ),
    (
        "threshold_exceeded",
        {"hysteresis": -0.5},
        "hysteresis: Input should be greater than or equal to 0",
    ),
    (
        "threshold_exceeded",
        {"cooldown_seconds": -5},
        "cooldown_seconds: Input should be greater than or equal to 0",
    ),
    ("threshold_exceeded", {"above": float("nan")}, "above: Input should be a finite number"),
    ("threshold_exceeded", '{"above": 1e999}', "above: Input should be a finite number"),
    ("threshold_exceeded", {"abvoe": 90}, "abvoe: Extra inputs are not permitted"),
    ("anomaly_detected", {"min_score": 1.5}, "min_score: Input should be less than or equal to 1"),
    (
        "anomaly_detected",
        {"anomaly_types": ["bogus"]},
        "anomaly_types.0: Input should be 'spike', 'drop', 'drift', 'noise' or 'missing'",
    ),
    ("anomaly_detected", {"anomaly_types": []}, "anomaly_types: Tuple should have at least 1 item"),
    ("anomaly_detected", {"count": 0}, "count: Input should be greater than or equal to 1"),
    ("anomaly_detected", {"window_seconds": 0}, "window_seconds: Input should be greater than 0"),
    ("pattern_detected", {}, "Unable to extract tag using discriminator 'pattern'"),
    (
        "pattern_detected",
        {"pattern": "zigzag"},
        "Input tag 'zigzag' found using 'pattern' does not match",
    ),
    ("pattern_detected", {"pattern": "slope"}, "min_slope_per_hour: Field required"),
    (
        "pattern_detected",
        {"pattern": "slope", "min_slope_per_hour": 1, "direction": "sideways"},
        "direction: Input should be 'up', 'down' or 'either'",
    ),
    (
        "pattern_detected",
        {"pattern": "missing", "for_seconds": -1},
        "for_seconds: Input should be greater than or equal to 0",
    ),
    (
        "pattern_detected",
        {"pattern": "missing", "count": 2},
        "count: Extra inputs are not permitted",
    ),
    (
        "maintenance_due",
        {"mode": "forecast", "horizon_hours": 0},
        "horizon_hours: Input should be greater than 0",
    ),
    (
        "maintenance_due",
        {"mode": "forecast", "min_r2": 2},
        "min_r2: Input should be less than or equal to 1",
    ),
    (
        "maintenance_due",
        {"mode": "service_interval", "interval_days": -3},
        "interval_days: Input should be greater than 0",
    ),
    ("maintenance_due", {"interval_days": 3}, "Unable to extract tag using discriminator 'mode'"),
]


@pytest.mark.parametrize(("kind", "data", "reason"), INVALID)
def test_invalid_shapes(kind, data, reason):
    with pytest.raises(InvalidCondition) as info:
        parse_condition(kind, data)
    assert info.value.reason.startswith(f"{kind}: {reason}"), info.value.reason
    assert "\n" not in info.value.reason
    assert str(info.value) == info.value.reason


def test_condition_types_are_the_seed_enum():
    assert set(CONDITION_TYPES) == {
        "threshold_exceeded",
        "anomaly_detected",
        "pattern_detected",
        "maintenance_due",
    }


def test_conditions_are_frozen():
    cond = parse_condition("threshold_exceeded", {"above": 1})
    with pytest.raises(ValueError, match="frozen"):
        cond.above = 2  # type: ignore[misc,union-attr]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "above",
                    "below",
                    "count",
                    "of",
                    "for_seconds",
                    "pattern",
                    "mode",
                    "min_score",
                    "x",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@given(kind=st.sampled_from([*CONDITION_TYPES, "other"]), data=JSON)
def test_any_json_parses_or_is_rejected_with_a_reason(kind, data):
    try:
        cond = parse_condition(kind, data)
    except InvalidCondition as exc:
        reason = exc.reason
        assert reason.startswith(f"{kind}: ")
        assert "\n" not in reason
    else:
        # What parses dumps to JSON and parses back to itself.
        assert parse_condition(kind, cond.model_dump_json()) == cond


@given(
    above=st.floats(-1e6, 1e6) | st.none(),
    below=st.floats(-1e6, 1e6) | st.none(),
    count=st.integers(1, 10),
    of=st.integers(1, 10),
)
def test_threshold_consistency_property(above, below, count, of):
    data = {"above": above, "below": below, "count": count, "of": of}
    consistent = (above is None or below is None or below < above) and count <= of
    try:
        parse_condition("threshold_exceeded", data)
    except InvalidCondition:
        assert not consistent
    else:
        assert consistent
