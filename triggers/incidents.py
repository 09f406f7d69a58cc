"""What an incident says: the bounds it watches, its summary line and its evidence.

Pure helpers of :mod:`triggers.evaluator`: the condition semantics shared by the
decision and its description (:func:`bounds`, :func:`beyond`, :func:`inside`,
:func:`service_due`), and :func:`describe`, which builds the one-line summary (numbers
with units), the evidence (at most ``MAX_EVIDENCE`` readings, the most relevant) and
the forecast of an incident that opens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final, TypeAlias

from triggers.conditions import (
    AnomalyDetected,
    Condition,
    MissingPattern,
    RepeatedDriftPattern,
    ServiceInterval,
    SlopePattern,
    ThresholdExceeded,
    TrendForecast,
)
from triggers.model import Forecast, ScoredReading, SensorInfo
from triggers.trends import HOUR_US, Line, forecast
from triggers.windows import Point, State

__all__ = [
    "MAX_EVIDENCE",
    "Described",
    "beyond",
    "bounds",
    "describe",
    "inside",
    "service_due",
    "trend_forecast",
]

MAX_EVIDENCE: Final = 20  # readings attached to an incident
_US: Final = 1_000_000

# --- condition semantics ---------------------------------------------------------------


def bounds(cond: ThresholdExceeded, sensor: SensorInfo) -> tuple[float | None, float | None]:
    """(above, below): the condition's, else the sensor's alert thresholds."""
    if cond.above is None and cond.below is None:
        return sensor.alert_threshold_max, sensor.alert_threshold_min
    return cond.above, cond.below


def beyond(v: float | None, above: float | None, below: float | None) -> bool:
    """Whether `v` is strictly beyond a bound."""
    if v is None:
        return False
    return (above is not None and v > above) or (below is not None and v < below)


def inside(v: float | None, above: float | None, below: float | None, margin: float) -> bool:
    """Whether `v` is back inside the bounds by at least `margin` (the hysteresis)."""
    if v is None:
        return False
    return (above is None or v <= above - margin) and (below is None or v >= below + margin)


def service_due(cond: ServiceInterval, sensor: SensorInfo) -> int | None:
    """When the next service is due (us): UTC midnight of the last service plus the interval."""
    since = sensor.last_service_date or sensor.install_date
    if since is None:
        return None
    midnight = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    return round(midnight.timestamp() * _US) + round(cond.interval_days * 86_400 * _US)


# --- descriptions ----------------------------------------------------------------------


Described: TypeAlias = tuple[str, list[Point], Forecast | None]  # summary, evidence, forecast


def describe(
    st: State, cond: Condition, sensor: SensorInfo, reading: ScoredReading | None
) -> Described:
    """The summary line, evidence and forecast of an incident opening now."""
    u = f" {sensor.unit}" if sensor.unit else ""
    if isinstance(cond, ThresholdExceeded):
        return _describe_threshold(st, cond, sensor, u)
    if isinstance(cond, AnomalyDetected | RepeatedDriftPattern):
        return _describe_events(st, cond)
    if isinstance(cond, SlopePattern | TrendForecast):
        return _describe_trend(st, cond, sensor, u)
    if isinstance(cond, MissingPattern):
        since = st.silent if st.silent is not None else st.newest
        at = st.opened if st.opened is not None else st.newest
        text = (
            f"no reading for {_dur((at - since) / _US)} since {_when(since)} "
            f"(limit {_dur(cond.for_seconds)})"
        )
        return text, [p for p in (st.last, st.miss) if p is not None], None
    what = "last service" if sensor.last_service_date else "install"
    due = service_due(cond, sensor) or st.newest
    days = cond.interval_days + (st.newest - due) / (86_400 * _US)
    text = (
        f"service due: {days:.0f} days since {what} "
        f"{sensor.last_service_date or sensor.install_date} "
        f"(interval {_num(cond.interval_days)} days)"
    )
    if reading is not None:
        point = (reading.ts_us, reading.value, reading.anomaly_score, reading.anomaly_type)
        return text, [point], None
    return text, [st.last] if st.last is not None else [], None


def _describe_events(st: State, cond: AnomalyDetected | RepeatedDriftPattern) -> Described:
    w = st.window
    top = sorted(sorted(w, key=lambda p: -p[2])[:MAX_EVIDENCE])  # the highest scores
    if isinstance(cond, RepeatedDriftPattern):
        return f"{_n(len(w), 'drift anomaly')} within {_dur(cond.window_seconds)}", top, None
    kinds = "/".join(cond.anomaly_types) if cond.anomaly_types else "any type"
    flagged = "flagged" if cond.min_score is None else f"score >= {cond.min_score:.2f}"
    text = (
        f"{_n(len(w), 'anomaly')} ({kinds}, {flagged}) within "
        f"{_dur(cond.window_seconds)} (max score {max(p[2] for p in w):.2f})"
    )
    return text, top, None


def _describe_trend(
    st: State, cond: SlopePattern | TrendForecast, sensor: SensorInfo, u: str
) -> Described:
    line = st.fit.line() if st.fit is not None else None
    assert line is not None  # noqa: S101 - the condition held
    points = _pick(st.window, MAX_EVIDENCE)
    if isinstance(cond, SlopePattern):
        verb = "rising" if line.slope_per_hour > 0 else "falling"
        text = (
            f"value {verb} {_num(abs(line.slope_per_hour))}{u}/h over "
            f"{_dur(cond.window_seconds)} ({line.n} readings; limit "
            f"{_num(cond.min_slope_per_hour)}{u}/h)"
        )
        return text, points, None
    fc = trend_forecast(st, cond, sensor, line)
    assert fc is not None  # noqa: S101 - the condition held
    hours = (fc.crossing_us - st.newest) / HOUR_US
    text = (
        f"trend {line.slope_per_hour:+.3g}{u}/h reaches {fc.bound} {_num(fc.threshold)}{u} "
        f"in {hours:.1f} h (r² {line.r2:.2f}, {line.n} readings): {fc.severity}"
    )
    return text, points, fc


def trend_forecast(
    st: State, cond: TrendForecast, sensor: SensorInfo, line: Line
) -> Forecast | None:
    """The forecast of `line` against the sensor's alert thresholds, at the newest time."""
    lo, hi = sensor.alert_threshold_min, sensor.alert_threshold_max
    return forecast(line, st.newest, lo, hi, cond.horizon_hours)


def _describe_threshold(
    st: State, cond: ThresholdExceeded, sensor: SensorInfo, u: str
) -> Described:
    above, below = bounds(cond, sensor)
    hits = [p for p in st.window if beyond(p[1], above, below)]
    if cond.of is None and st.run is not None:
        run = st.run
        hits = [p for p in hits if p[0] >= run]
    if above is not None and below is not None:
        where = f"outside {_num(below)}..{_num(above)}{u}"
    elif above is not None:
        where = f"above {_num(above)}{u}"
    else:
        where = f"below {_num(below or 0.0)}{u}"
    values = [p[1] for p in hits if p[1] is not None]
    hi = [v for v in values if above is not None and v > above]
    peak = max(hi) if hi else min(values)
    if cond.of is not None:
        text = f"{len(hits)} of the last {cond.of} readings {where} (peak {_num(peak)}{u})"
    else:
        lasted = (st.newest - (st.run or st.newest)) / _US
        lasting = f" for {_dur(lasted)}" if cond.for_seconds else ""
        text = f"value {where}{lasting} (peak {_num(peak)}{u}, {_n(len(hits), 'reading')})"
    return text, _pick(hits, MAX_EVIDENCE), None


def _pick(points: Sequence[Point], n: int) -> list[Point]:
    """At most `n` points, evenly spaced, the first and last included."""
    if len(points) <= n:
        return list(points)
    last = len(points) - 1
    return [points[round(i * last / (n - 1))] for i in range(n)]


def _n(count: int, noun: str) -> str:
    """``1 reading``, ``2 readings``, ``3 anomalies``."""
    if count == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {plural}"


def _num(x: float) -> str:
    return f"{x:.6g}"


def _dur(seconds: float) -> str:
    if seconds < 120:  # noqa: PLR2004 - unit boundaries
        return f"{seconds:.3g} s"
    if seconds < 3600:  # noqa: PLR2004
        return f"{seconds / 60:.3g} min"
    if seconds < 172_800:  # noqa: PLR2004
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86_400:.3g} d"


def _when(ts_us: int) -> str:
    return dt.datetime.fromtimestamp(ts_us / _US, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
