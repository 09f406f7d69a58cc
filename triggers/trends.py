"""Least-squares trends of a sliding window, kept as running sums (pure, no I/O).

:class:`Fit` adds and removes points in O(1), so a window of thousands of readings
costs no more per reading than a window of ten. Times are hours and values are
offsets from an anchor point, which keeps the sums small enough for float64;
:meth:`Fit.rebuild` re-anchors on the window (the evaluator does it when the
anchor falls far behind, so rounding never accumulates).

Example:
    >>> fit = Fit()
    >>> for h in range(5):
    ...     fit.add(h * HOUR_US, 10.0 + 2.0 * h)
    >>> line = fit.line()
    >>> round(line.slope_per_hour, 6), round(line.r2, 6), round(line.value_at(6 * HOUR_US), 6)
    (2.0, 1.0, 22.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal, NamedTuple

from triggers.model import Forecast

__all__ = ["HOUR_US", "Fit", "Line", "forecast"]

HOUR_US: Final = 3_600_000_000
_CRITICAL_H: Final = 24.0
_HIGH_H: Final = 72.0


class Line(NamedTuple):
    """A fitted line: value = ``value_at(ts_us)``."""

    t0_us: int
    v0: float  # value at t0_us
    slope_per_hour: float
    r2: float
    n: int

    def value_at(self, ts_us: int) -> float:
        """The line's value at event time `ts_us`."""
        return self.v0 + self.slope_per_hour * (ts_us - self.t0_us) / HOUR_US


class Fit:
    """Running sums of (hours, value) offsets from an anchor point."""

    __slots__ = ("n", "sx", "sxx", "sxy", "sy", "syy", "t0", "v0")

    def __init__(self) -> None:
        """An empty fit; the first point added becomes the anchor."""
        self.t0 = 0
        self.v0 = 0.0
        self.n = 0
        self.sx = self.sy = self.sxx = self.sxy = self.syy = 0.0

    def add(self, ts_us: int, value: float, sign: int = 1) -> None:
        """Add a point (``sign=-1``: remove one added before)."""
        if self.n == 0 and sign > 0:
            self.t0, self.v0 = ts_us, value
            self.sx = self.sy = self.sxx = self.sxy = self.syy = 0.0
        x = (ts_us - self.t0) / HOUR_US
        y = value - self.v0
        self.n += sign
        self.sx += sign * x
        self.sy += sign * y
        self.sxx += sign * x * x
        self.sxy += sign * x * y
        self.syy += sign * y * y

    def rebuild(self, points: Iterable[tuple[int, float]]) -> None:
        """Start again from `points`, anchored on the first one."""
        self.n = 0
        for ts_us, value in points:
            self.add(ts_us, value)

    def line(self) -> Line | None:
        """The least-squares line, or None with fewer than two distinct times."""
        n = self.n
        if n < 2:  # noqa: PLR2004 - a line needs two points
            return None
        sxx = self.sxx - self.sx * self.sx / n
        if sxx <= 1e-18:  # noqa: PLR2004 - all points at one time (rounding aside)
            return None
        sxy = self.sxy - self.sx * self.sy / n
        syy = self.syy - self.sy * self.sy / n
        slope = sxy / sxx
        r2 = min(1.0, sxy * sxy / (sxx * syy)) if syy > 0 else 0.0
        # The line through the means, written as its value at the anchor time.
        v0 = self.v0 + self.sy / n - slope * self.sx / n
        return Line(self.t0, v0, slope, r2, n)

    def dump(self) -> list[float]:
        """JSON-able sums (floats survive JSON exactly)."""
        return [self.t0, self.v0, self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy]

    @classmethod
    def load(cls, data: list[float]) -> Fit:
        """The fit :meth:`dump` wrote."""
        fit = cls()
        t0, v0, n, sx, sy, sxx, sxy, syy = data
        fit.t0, fit.v0, fit.n = int(t0), float(v0), int(n)
        fit.sx, fit.sy, fit.sxx, fit.sxy, fit.syy = (
            float(sx),
            float(sy),
            float(sxx),
            float(sxy),
            float(syy),
        )
        return fit


def forecast(
    line: Line, at_us: int, lo: float | None, hi: float | None, horizon_hours: float
) -> Forecast | None:
    """The crossing of `hi` (rising) or `lo` (falling) within `horizon_hours` of `at_us`.

    A trend already beyond its threshold crosses "now" (``crossing_us == at_us``).
    Confidence is ``100 * r2 * n / (n + 10)``: a good fit of few points is worth less.
    """
    slope = line.slope_per_hour
    bound: Literal["max", "min"]
    severity: Literal["medium", "high", "critical"]
    action: Literal["schedule_maintenance", "immediate_service"]
    if slope > 0 and hi is not None:
        threshold, bound = hi, "max"
    elif slope < 0 and lo is not None:
        threshold, bound = lo, "min"
    else:
        return None
    hours = max(0.0, (threshold - line.value_at(at_us)) / slope)
    if hours > horizon_hours:
        return None
    if hours < _CRITICAL_H:
        severity, action = "critical", "immediate_service"
    elif hours < _HIGH_H:
        severity, action = "high", "schedule_maintenance"
    else:
        severity, action = "medium", "schedule_maintenance"
    return Forecast(
        crossing_us=at_us + round(hours * HOUR_US),
        threshold=threshold,
        bound=bound,
        slope_per_hour=slope,
        confidence=round(100.0 * line.r2 * line.n / (line.n + 10), 2),
        severity=severity,
        recommended_action=action,
    )
