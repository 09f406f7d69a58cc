"""Per-sensor online anomaly detection: one small, serialisable state per sensor.

Each reading is scored against what the sensor has shown so far, then learned
(River's ``score_one`` then ``learn_one``, in one call). The model is additive
Holt-Winters with a daily season: ``value = level + profile[time of day] + residual``.
Three tests read the residual:

* ``spike`` / ``drop``: the residual in units of its running mean absolute value;
  its surprise is ``z**2 / 2`` nats.
* ``noise``: the likelihood-ratio statistic of a short-term against the long-term
  residual variance (variance up: more noise; down: a stuck sensor).
* ``drift``: River's Page-Hinkley test on the deseasonalised value.

The surprise is relative to the sensor's own typical surprise (a running mean),
so a noisy or spiky sensor does not alert all day; ``s / (s + half)`` maps it to a
score in [0, 1]. After an alert, scores are damped for a while (one event, one
alert). A reading outside the sensor's alert thresholds is always an anomaly; a
low ``quality`` scales the surprise down.

Example:
    >>> from tmiot.config import DetectorSettings
    >>> det = SensorDetector(DetectorSettings())
    >>> for i in range(600):  # a quiet sensor, a reading a minute
    ...     v = det.update(i * 60_000, 20.0 + 0.1 * (i % 7))
    >>> det.update(600 * 60_000, 35.0).anomaly_type
    'spike'
    >>> SensorDetector.loads(DetectorSettings(), det.dumps()).dumps() == det.dumps()
    True
"""

from __future__ import annotations

import math
import struct
from array import array
from typing import Final, NamedTuple

from river import drift, stats

from tmiot.config import DetectorSettings

__all__ = ["Verdict", "SensorDetector"]

_DAY_MS: Final = 86_400_000
_CLIP: Final = 3.0  # residuals learned at most this many scales away (robust updates)
_DRIFT_CLIP: Final = 10.0  # largest step fed to Page-Hinkley, in scales
_TINY: Final = 1e-9
_VERSION: Final = 1
# version, readings, holdoff left, drift flag, bins | level, scale, short var, long var,
# low, high, typical surprise | Page-Hinkley: n, mean, sums and extremes.
_HEADER: Final = struct.Struct("<BQIBH7d6d")


class Verdict(NamedTuple):
    """The detector's view of one reading."""

    score: float  # in [0, 1], rounded to 4 decimals (NUMERIC(5,4))
    is_anomaly: bool
    anomaly_type: str | None  # "spike" | "drop" | "drift" | "noise" | None


_QUIET: Final = Verdict(0.0, is_anomaly=False, anomaly_type=None)


def _page_hinkley(settings: DetectorSettings) -> drift.PageHinkley:
    return drift.PageHinkley(
        min_instances=settings.drift_min_readings,
        delta=settings.drift_delta,
        threshold=settings.drift_threshold,
    )


class SensorDetector:
    """Online anomaly detector of one sensor's readings (not thread-safe)."""

    # Slots: 10,000 sensors per worker, so no per-instance __dict__.
    __slots__ = (
        "_beta",
        "_hi",
        "_holdoff",
        "_level",
        "_lo",
        "_n",
        "_ph",
        "_profile",
        "_scale",
        "_settings",
        "_var_long",
        "_var_short",
    )

    def __init__(self, settings: DetectorSettings) -> None:
        """Start with no history: the first ``warmup_readings`` score 0."""
        self._settings = settings
        self._n = 0
        self._level = 0.0
        self._scale = 0.0  # mean absolute residual
        self._var_short = 0.0
        self._var_long = 0.0
        self._lo = math.inf
        self._hi = -math.inf
        self._beta = 0.0  # typical surprise, nats
        self._holdoff = 0
        # NaN marks a time-of-day slot not seen yet; array('d') is 8 bytes a slot.
        self._profile = array("d", [math.nan]) * settings.season_bins
        # Page-Hinkley costs about 1.3 us an update and 0.5 KB: affordable, and
        # its state is six numbers, which dumps() writes out exactly.
        self._ph = _page_hinkley(settings)

    def update(  # noqa: PLR0913 - the reading and its sensor's context, as the worker has them
        self,
        ts_ms: int,
        value: float,
        quality: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
    ) -> Verdict:
        """Score the reading against the state so far, then learn it.

        Args:
            ts_ms: reading time, epoch milliseconds (UTC); sets the time-of-day slot.
            value: the measurement; NaN and infinities are neither scored nor learned.
            quality: 0..1 confidence of the reading; scales its surprise (None: 1).
            lo: the sensor's ``alert_threshold_min``, if any.
            hi: the sensor's ``alert_threshold_max``, if any.
        """
        if not math.isfinite(value):
            return _QUIET
        s = self._settings
        n = self._n
        slot = (ts_ms % _DAY_MS) * s.season_bins // _DAY_MS
        if n == 0:
            self._level, self._lo, self._hi, self._n = value, value, value, 1
            self._profile[slot] = 0.0
            return self._breach(_QUIET, value, lo, hi)

        seasonal = self._profile[slot]
        seen = seasonal == seasonal  # not NaN
        if not seen:
            seasonal = 0.0
        floor = s.scale_floor * (self._hi - self._lo) + _TINY
        scale = max(self._scale, floor)
        residual = value - self._level - seasonal
        z = residual / scale

        # Surprise in nats: the residual's own, plus the variance-change statistic.
        r2 = residual * residual
        var_short = self._var_short + s.noise_short_alpha * (r2 - self._var_short)
        f2 = floor * floor
        rho = (var_short + f2) / (self._var_long + f2)
        noise = (1.0 / s.noise_short_alpha - 0.5) * (rho - 1.0 - math.log(rho))
        spike = 0.5 * z * z if seen else 0.0
        cap = s.surprise_cap
        surprise = cap * math.log1p((spike + noise) / cap)

        warm = n >= s.warmup_readings
        score = 0.0
        if warm:
            relative = surprise / max(self._beta, s.surprise_floor)
            if quality is not None:
                relative *= min(max(quality, 0.0), 1.0)
            score = relative / (relative + s.surprise_half)
        weight = s.surprise_alpha if warm else 1.0 / n
        self._beta += weight * (surprise - self._beta)

        if self._holdoff > 0:
            self._holdoff -= 1
            score *= s.holdoff_damping
        kind: str | None = None
        if score >= s.anomaly_threshold:
            self._holdoff = s.holdoff_readings
            kind = ("spike" if z > 0 else "drop") if spike >= noise else "noise"
        if seen and warm:
            self._ph.update(min(max((value - seasonal) / scale, -_DRIFT_CLIP), _DRIFT_CLIP))
            if kind is None and self._ph.drift_detected:
                kind = "drift"
                score = max(score, s.anomaly_threshold)

        self._learn(value, slot, residual, r2, scale, var_short, seen=seen, warm=warm)
        verdict = Verdict(round(score, 4), kind is not None, kind)
        return self._breach(verdict, value, lo, hi)

    def _learn(  # noqa: PLR0913 - intermediate values of update(), passed not recomputed
        self,
        value: float,
        slot: int,
        residual: float,
        r2: float,
        scale: float,
        var_short: float,
        *,
        seen: bool,
        warm: bool,
    ) -> None:
        s = self._settings
        n = self._n
        if warm:
            # Robust (clipped) updates: an outlier moves the model only a little.
            c = _CLIP * scale
            step = min(max(residual, -c), c)
            self._scale += s.scale_alpha * (min(abs(residual), 2.0 * c) - self._scale)
            self._var_long += s.noise_long_alpha * (r2 - self._var_long)
        else:
            step = residual
            self._scale += (abs(residual) - self._scale) / n
            self._var_long += (r2 - self._var_long) / n
        self._var_short = var_short
        self._level += s.level_alpha * step
        if seen:
            self._profile[slot] += s.season_gamma * step
        else:
            self._profile[slot] = value - self._level
        self._lo = min(self._lo, value)
        self._hi = max(self._hi, value)
        self._n = n + 1

    def _breach(self, verdict: Verdict, value: float, lo: float | None, hi: float | None) -> Verdict:
        """A reading past the sensor's alert thresholds is an anomaly, whatever the model."""
        above = hi is not None and value > hi
        if not (above or (lo is not None and value < lo)):
            return verdict
        kind = verdict.anomaly_type or ("spike" if above else "drop")
        score = max(verdict.score, round(self._settings.anomaly_threshold, 4))
        return Verdict(score, is_anomaly=True, anomaly_type=kind)

    def dumps(self) -> bytes:
        """The state as bytes (about 0.2 KB plus 8 bytes a profile slot)."""
        ph = self._ph
        mean = ph._x_mean  # noqa: SLF001 - River keeps no public accessor for its state
        header = _HEADER.pack(
            _VERSION,
            self._n,
            self._holdoff,
            ph.drift_detected,
            len(self._profile),
            self._level,
            self._scale,
            self._var_short,
            self._var_long,
            self._lo,
            self._hi,
            self._beta,
            mean.n,
            mean._mean,  # noqa: SLF001
            ph._sum_increase,  # noqa: SLF001
            ph._sum_decrease,  # noqa: SLF001
            ph._min_increase,  # noqa: SLF001
            ph._max_decrease,  # noqa: SLF001
        )
        return header + self._profile.tobytes()

    @classmethod
    def loads(cls, settings: DetectorSettings, data: bytes) -> SensorDetector:
        """Restore a detector from :meth:`dumps`; it continues exactly where it stopped.

        Raises:
            ValueError: the bytes are not a state of this version and profile size.
        """
        if len(data) < _HEADER.size:
            msg = f"detector state too short ({len(data)} bytes)"
            raise ValueError(msg)
        (version, n, holdoff, detected, bins, *floats) = _HEADER.unpack_from(data)
        if version != _VERSION or bins != settings.season_bins:
            msg = f"detector state v{version} with {bins} slots; expected v{_VERSION}, {settings.season_bins}"
            raise ValueError(msg)
        if len(data) != _HEADER.size + 8 * bins:
            msg = f"detector state is {len(data)} bytes, expected {_HEADER.size + 8 * bins}"
            raise ValueError(msg)
        det = cls(settings)
        det._n, det._holdoff = n, holdoff
        (det._level, det._scale, det._var_short, det._var_long, det._lo, det._hi, det._beta) = (
            floats[:7]
        )
        det._profile = array("d", data[_HEADER.size :])
        ph = det._ph
        mean = stats.Mean()
        mean.n, mean._mean = floats[7:9]  # noqa: SLF001
        ph._x_mean = mean  # noqa: SLF001
        (ph._sum_increase, ph._sum_decrease, ph._min_increase, ph._max_decrease) = floats[9:]  # noqa: SLF001
        ph._drift_detected = bool(detected)  # noqa: SLF001
        return det
