"""Per-sensor online anomaly detection: one small, serialisable state per sensor.

Each reading is scored against what the sensor has shown so far, then learned
(River's ``score_one`` then ``learn_one``, in one call). The model is a level
plus a daily profile: ``value = level + profile[time of day] + residual``, the
residual measured in its running mean absolute value (``z``). Tests read it, each
a statistic that is large when something changed:

* the residual's EWMA means (``mean_alphas``): a spike, a drop, a step, and
  deviations that last tens of readings;
* ``drift``: the level against a slow anchor of itself (a ramp the level follows);
* ``noise``: the likelihood-ratio statistic of the short-term against the long-term
  residual variance, both ways (a noisier sensor, or a quieter one);
* ``stuck``: the same value again, for a sensor that rarely repeats.

No statistic is read against a fixed scale. Each is calibrated against the
sensor's own past, peaks over threshold: a running threshold near its
``1 - tail_quantile`` quantile and a generalised Pareto tail fitted (method of
moments) to the excesses above it. A reading's evidence is ``-log`` of the
smallest tail probability among the tests, less half a nat per e-fold of the
sensor's history; its score is ``e / (e + evidence_half)``. So a sensor whose
readings are often spiky learns a heavy tail and alerts only on what is rare for
it, and the scores of different sensors are comparable.

An anomaly opens an event: one event, one alert. The following scores read 0
until the event is over (``quiet_readings`` readings in a row in which no test is
above its tail's threshold) or ``holdoff_readings`` have passed, unless the event
grows far rarer (it alerts again) or turns out to be noise (re-typed once; noise that
lasts alerts once more). Types: ``spike`` / ``drop`` (sudden), ``drift`` (built up),
``noise`` (variance, stuck). An event is noise when the noise test leads, or when its
readings went far both ways from what was expected as it opened while the noise test is
above its threshold: erratic readings, which the mean tests see as well.
A reading outside the sensor's alert thresholds is always an anomaly; a low
``quality`` scales the evidence down. docs/detector.md has the why and the figures.

Example:
    >>> from tmiot.config import DetectorSettings
    >>> det = SensorDetector(DetectorSettings())
    >>> for i in range(2000):  # a sensor's first 33 hours, a reading a minute
    ...     v = det.update(i * 60_000, 20.0 + (i * 7919 % 101) / 100)
    >>> det.update(2000 * 60_000, 25.0).anomaly_type
    'spike'
    >>> SensorDetector.loads(DetectorSettings(), det.dumps()).dumps() == det.dumps()
    True
"""

from __future__ import annotations

import math
import struct
from array import array
from math import isfinite, isnan, log
from typing import Final, NamedTuple

from tmiot.config import DetectorSettings

__all__ = ["SensorDetector", "Verdict", "first_scored"]

_DAY_MS: Final = 86_400_000
_CLIP: Final = 3.0  # residuals learned at most this many scales away (robust updates)
_Z_CAP: Final = 50.0  # the mean tests see residuals of at most this many scales
_ESCALATE: Final = 2.0  # within an event, evidence this many times its alert's alerts again
_SUDDEN: Final = 2.0  # a reading this many times its recent mean residual is sudden
_NOISE_CLIP: Final = 4.0  # largest residual the variance test sees, in scales
_TINY: Final = 1e-9
_REPEAT_RATE: Final = 0.01  # the stuck test judges sensors repeating less often than this
# Evidence is reduced by this many nats per e-fold of the sensor's history since its
# warm-up: the rarest reading of a long history is less surprising than that of a short
# one, so a sensor's false-alarm rate falls as it ages (as n ** -0.5) instead of staying
# constant, and a year-old sensor is not alerting on the once-a-week reading.
_HISTORY: Final = 0.5
_MAX_ABS: Final = 1e100  # readings are clamped to this magnitude
_XI_MAX: Final = 0.9  # Pareto shape: heavy tails allowed, an infinite mean not
_QUANTILE_STEP: Final = 0.05  # the tail's threshold moves by this share of the mean excess
# EWMA weight, per reading, of the log of the time between readings (the sensor's pace).
_PACE_ALPHA: Final = 0.01
_SECOND_MS: Final = 1000
_VERSION: Final = 7  # 7: an event's swings; 6: the pace; 5: a noise alert's persistence (#21)
_V4: Final = 4
_V6: Final = 6
_FLOATS: Final = (
    "_level",
    "_anchor",
    "_scale",
    "_var_short",
    "_var_long",
    "_lo",
    "_hi",
    "_alerted",
    "_prev",
    "_repeats",
    "_again",
    "_readings",
)
# version, readings, hold-off left and its type, quiet readings in it, repeats in a row,
# mean tests, profile slots, the previous reading's time, our floats; then each mean
# test's mean; then per test (the means, drift, noise) the tail's threshold, mean excess
# and mean squared excess; then the profile.
_HEADER_V4: Final = struct.Struct(f"<BQIBIIBHq{len(_FLOATS)}d")
# v5 adds, after the previous reading's time, the noise alert's persistence and time.
_HEADER_V5: Final = struct.Struct(f"<BQIBIIBHqiq{len(_FLOATS)}d")
# v6 adds, after the floats, the pace.
_HEADER_V6: Final = struct.Struct(f"<BQIBIIBHqiq{len(_FLOATS) + 1}d")
# v7 adds, after the pace, the value expected when the event opened and the directions
# its readings went far from it.
_HEADER: Final = struct.Struct(f"<BQIBIIBHqiq{len(_FLOATS) + 2}dB")
# The versions that load.
_HEADERS: Final = {4: _HEADER_V4, 5: _HEADER_V5, _V6: _HEADER_V6, _VERSION: _HEADER}


class Verdict(NamedTuple):
    """The detector's view of one reading."""

    score: float  # in [0, 1], rounded to 4 decimals (NUMERIC(5,4))
    is_anomaly: bool
    anomaly_type: str | None  # "spike" | "drop" | "drift" | "noise" | None


# Anomaly types as small ints in the state; _TYPES names them.
_NONE, _SPIKE, _DROP, _DRIFT, _NOISE = range(5)
_TYPES: Final = (None, "spike", "drop", "drift", "noise")
_SUDDEN_TYPES: Final = (_SPIKE, _DROP)
# Readings in a row not quiet, in a noise alert's hold-off, to alert again on a reading
# that shows noise (the noise test leads, or the event is erratic): noise that lasts (a
# loose contact) is told from a passing burst by a second alert.
_LASTING: Final = 10
_LASTING_MS: Final = 300_000  # ... and for 5 minutes: a fast sensor's readings are not independent
_QUIET: Final = Verdict(0.0, is_anomaly=False, anomaly_type=None)
# A reading this many residual scales from the model went far; an event whose readings
# went far both ways is erratic.
_SWING: Final = 4.0
_UP: Final = 1
_DOWN: Final = 2


def _pareto_evidence(excess: float, mean: float, square: float, log_q: float) -> float:
    """``-log`` tail probability of an excess over the threshold, given the excesses so far.

    The generalised Pareto shape and scale by the method of moments from the mean and
    mean square of past excesses; ``log_q`` is log of the threshold's own tail probability.

    >>> round(_pareto_evidence(0.0, 1.0, 2.0, log(0.01)), 3)  # at the threshold: q itself
    4.605
    >>> round(_pareto_evidence(3.0, 1.0, 2.0, log(0.01)), 3)  # exponential tail: 3 more nats
    7.605
    """
    var = square - mean * mean
    if var <= _TINY * mean * mean + _TINY:
        var = _TINY * mean * mean + _TINY
    ratio = mean * mean / var
    xi = 0.5 * (1.0 - ratio)
    if xi < 0.0:  # a bounded tail would make any larger reading infinitely rare
        xi = 0.0
    elif xi > _XI_MAX:
        xi = _XI_MAX
    sigma = 0.5 * mean * (ratio + 1.0)
    if xi < 1e-6:  # noqa: PLR2004 - the exponential limit
        return excess / sigma - log_q
    return math.log1p(xi * excess / sigma) / xi - log_q


class _Tuning:
    """The settings the hot path reads, as slots, with the constants derived from them.

    One per :class:`DetectorSettings` object (:func:`_tuning`), shared by its detectors:
    a slot read is cheaper than a model attribute.
    """

    __slots__ = (
        "alphas",
        "anomaly_threshold",
        "decay",
        "drift_alpha",
        "evidence_half",
        "excess_alpha",
        "half_df",
        "history",
        "holdoff_readings",
        "level_alpha",
        "log_q",
        "log_reference",
        "noise_long_alpha",
        "noise_short_alpha",
        "norms",
        "quiet_readings",
        "scale_alpha",
        "scale_floor",
        "score_from",
        "season_bins",
        "season_gamma",
        "season_rate",
        "seasonal",
        "step_down",
        "tests",
        "warmup_log",
        "warmup_readings",
        "window",
    )

    def __init__(self, s: DetectorSettings) -> None:
        """Read `s` once."""
        self.season_bins = s.season_bins
        self.season_gamma = s.season_gamma
        self.seasonal = s.season_bins > 1
        self.season_rate = s.season_gamma * s.season_bins / _DAY_MS  # per ms since the last
        self.level_alpha = s.level_alpha
        self.scale_alpha = s.scale_alpha
        self.scale_floor = s.scale_floor
        self.alphas = s.mean_alphas
        # An EWMA of unit-variance noise has variance alpha / (2 - alpha).
        self.norms = tuple(1.0 / math.sqrt(a / (2.0 - a)) for a in s.mean_alphas)
        self.noise_short_alpha = s.noise_short_alpha
        self.noise_long_alpha = s.noise_long_alpha
        self.half_df = 1.0 / s.noise_short_alpha - 0.5
        self.drift_alpha = s.drift_alpha
        self.tests = len(s.mean_alphas) + 2  # the means, drift, noise
        self.log_q = log(s.tail_quantile)
        self.excess_alpha = 1.0 / (s.tail_window * s.tail_quantile)  # per excess
        self.decay = 1.0 - 1.0 / s.tail_window
        self.window = s.tail_window
        self.step_down = s.tail_quantile / (1.0 - s.tail_quantile)
        self.evidence_half = s.evidence_half
        self.warmup_readings = s.warmup_readings
        self.score_from = first_scored(s)
        self.history = _HISTORY
        reference = s.reference_interval_seconds
        self.log_reference = log(reference) if reference > 0 else -math.inf
        self.warmup_log = log(s.warmup_readings)
        self.anomaly_threshold = s.anomaly_threshold
        self.holdoff_readings = s.holdoff_readings
        self.quiet_readings = s.quiet_readings


def first_scored(settings: DetectorSettings) -> int:
    """The reading from which a sensor is scored: its warm-up, then its tails located.

    A 1-in-1/q threshold is located after about 1/q readings, and steadied over as
    many again: scored from 1/q readings on, a new sensor's first day held most of
    the fleet's false alarms (bench/results/workorders.md, settings chosen on seed 3).

    >>> first_scored(DetectorSettings())
    230
    """
    return settings.warmup_readings + 2 * math.ceil(1.0 / settings.tail_quantile)


_TUNINGS: dict[int, tuple[DetectorSettings, _Tuning]] = {}


def _tuning(settings: DetectorSettings) -> _Tuning:
    """The shared :class:`_Tuning` of `settings` (kept with it, so its id is not reused)."""
    cached = _TUNINGS.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = _TUNINGS[id(settings)] = (settings, _Tuning(settings))
    return cached[1]


class SensorDetector:
    """Online anomaly detector of one sensor's readings (not thread-safe)."""

    # Slots: 10,000 sensors per worker, so no per-instance __dict__.
    __slots__ = (
        "_again",
        "_alerted",
        "_anchor",
        "_held",
        "_hi",
        "_holdoff",
        "_k",
        "_last",
        "_level",
        "_lo",
        "_means",
        "_n",
        "_origin",
        "_pace",
        "_persist",
        "_prev",
        "_profile",
        "_quiet",
        "_readings",
        "_repeats",
        "_run",
        "_scale",
        "_since",
        "_swings",
        "_tails",
        "_var_long",
        "_var_short",
    )

    def __init__(self, settings: DetectorSettings) -> None:
        """Start with no history: the first ``warmup_readings`` score 0."""
        k = self._k = _tuning(settings)
        self._n = 0
        self._last = 0  # the previous reading's time, ms
        self._level = self._anchor = 0.0
        self._scale = 0.0  # mean absolute residual
        self._var_short = self._var_long = 0.0
        self._lo = math.inf
        self._hi = -math.inf
        self._means = array("d", [0.0]) * len(k.alphas)
        # Per test: the tail's threshold, mean excess and mean squared excess over it,
        # starting as an exponential tail of unit mean from 1 (the statistics are in
        # residual scales), which the sensor's own excesses replace as they come.
        self._tails = array("d", [1.0, 1.0, 2.0]) * k.tests
        self._holdoff = 0  # readings left in the hold-off after an alert
        self._alerted = 0.0  # the evidence of that alert
        self._prev = math.nan  # the previous reading
        self._run = 0  # readings in a row equal to the one before
        self._repeats = self._again = self._readings = 0.0  # counts, decayed
        self._held = _NONE  # the type of that alert
        self._quiet = 0  # readings in a row with no test above its threshold, in the hold-off
        # Readings in a row the noise test led, in a noise alert's hold-off (-1: it alerted
        # again): noise that lasts is alerted once more, a passing one is not.
        self._persist = 0
        self._since = 0  # when that alert was given, ms
        # The directions an event's readings went far (1: up, 2: down, 3: both ways).
        self._swings = 0
        self._origin = math.nan  # the value expected when the event opened (NaN: none)
        self._pace = math.nan  # mean log of the time between readings, s (NaN: not seen)
        # NaN marks a time-of-day slot not seen yet; array('d') is 8 bytes a slot.
        self._profile = array("d", [math.nan]) * settings.season_bins

    def update(  # noqa: C901, PLR0912, PLR0915 - the per-reading hot path stays in one frame
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
            quality: 0..1 confidence of the reading; scales its evidence (None: 1).
            lo: the sensor's ``alert_threshold_min``, if any.
            hi: the sensor's ``alert_threshold_max``, if any.
        """
        if not isfinite(value):
            return _QUIET
        if value > _MAX_ABS:  # so that squares stay finite
            value = _MAX_ABS
        elif value < -_MAX_ABS:
            value = -_MAX_ABS
        k = self._k
        n = self._n
        slot = (ts_ms % _DAY_MS) * k.season_bins // _DAY_MS
        profile = self._profile
        if n == 0:
            self._level = self._anchor = self._lo = self._hi = self._prev = value
            profile[slot] = 0.0
            self._n = 1
            self._last = ts_ms
            return (
                self._breach(_QUIET, value, lo, hi) if lo is not None or hi is not None else _QUIET
            )

        seasonal = profile[slot]
        seen = not isnan(seasonal)
        if not seen:
            seasonal = 0.0
        floor = k.scale_floor * (self._hi - self._lo) + _TINY
        scale = self._scale
        if floor > scale:
            scale = floor
        residual = value - seasonal - self._level
        z = residual / scale
        zc = _Z_CAP if z > _Z_CAP else -_Z_CAP if z < -_Z_CAP else z

        # The tests' statistics (each >= 0): the means, drift, noise.
        means = self._means
        stats = []
        for i, alpha in enumerate(k.alphas):
            m = means[i] + alpha * (zc - means[i])
            means[i] = m
            stats.append((m if m > 0.0 else -m) * k.norms[i])
        drift = (self._level - self._anchor) / scale
        stats.append(drift if drift > 0.0 else -drift)
        # The variance test sees residuals clipped at a few scales: one spike is the
        # mean tests' to judge, not a change of the noise as well.
        r2 = residual * residual
        c2 = _NOISE_CLIP * _NOISE_CLIP * scale * scale
        if r2 > c2:
            r2 = c2
        var_short = self._var_short + k.noise_short_alpha * (r2 - self._var_short)
        f2 = floor * floor
        rho = (var_short + f2) / (self._var_long + f2)
        stats.append(k.half_df * (rho - 1.0 - log(rho)))
        # Above the noise test's threshold, before it learns this reading.
        noisy = stats[-1] > self._tails[3 * k.tests - 3]

        # A stuck sensor: the same value again, for longer than its own history makes
        # likely. From decayed counts (Laplace's rule): p1 the rate of repeats, p2 that of a
        # repeat after a repeat; r repeats in a row have probability p1 * p2 ** (r - 1).
        # That is a likelihood already, in nats, so it is not calibrated again. Only for a
        # sensor that rarely repeats (p1 < _REPEAT_RATE): counts and coarse readings repeat
        # in runs that one rate does not describe (a quiet night of zeros).
        stuck = 0.0
        run = self._run
        if value == self._prev:
            p1 = (self._repeats + 1.0) / (self._readings + 2.0)
            stuck = -log(p1) if p1 < _REPEAT_RATE else -math.inf
            if run:
                stuck -= run * log((self._again + 1.0) / (self._repeats + 2.0))
                self._again += 1.0
            self._repeats += 1.0
            self._run = run + 1
        else:
            self._run = 0
        self._readings += 1.0
        if self._readings > k.window:  # forget: the counts' memory is tail_window readings
            self._readings *= k.decay
            self._repeats *= k.decay
            self._again *= k.decay
        self._prev = value

        score = 0.0
        kind = _NONE
        if n >= k.warmup_readings and (seen or not k.seasonal):
            evidence, test = self._calibrate(stats)
            if n < k.score_from:  # the tails' thresholds are still finding their level
                evidence = stuck = 0.0
            if stuck > evidence:
                evidence = stuck
                test = k.tests - 1  # a variance gone: noise
            typed = evidence  # what an event's type is judged on: per reading
            if evidence:
                evidence -= k.history * (log(n) - k.warmup_log)
                if evidence < _TINY:  # still above a tail's threshold: not quiet
                    evidence = _TINY
                typed = evidence
                if self._pace < k.log_reference:  # sampled faster: judged per unit of time
                    evidence -= k.log_reference - self._pace
                    if evidence < _TINY:
                        evidence = _TINY
            if quality is not None:
                weight = 0.0 if quality < 0.0 else 1.0 if quality > 1.0 else quality
                evidence *= weight
                typed *= weight
            lasting = False
            # How far the reading went from what the model expected when the event opened:
            # back from a drop is no swing up, as it would be from the model now (which
            # learned some of the drop). NaN compares false: no swing.
            far = (value - self._origin) / scale if self._holdoff else z
            swing = _UP if far >= _SWING else _DOWN if far <= -_SWING else 0
            leads = test == k.tests - 1  # the noise test
            # Erratic: the noise test above its threshold while the event has gone far
            # both ways. The mean tests see such readings too, and may lead on them.
            swung = False
            if self._holdoff:
                self._swings |= swing
                swung = noisy and self._swings == _UP | _DOWN
                self._quiet = 0 if evidence else self._quiet + 1
                self._holdoff = 0 if self._quiet >= k.quiet_readings else self._holdoff - 1
                if self._persist >= 0:
                    led = evidence > 0.0  # not quiet: the event goes on
                    self._persist = self._persist + 1 if led else 0
                    lasting = (
                        self._held == _NOISE
                        and self._persist >= _LASTING
                        and ts_ms - self._since >= _LASTING_MS
                        and (leads or swung)  # still noise
                    )
            retyped = self._holdoff and (
                (leads and self._held in _SUDDEN_TYPES)
                or (swung and self._held != _NOISE)  # a drift does not swing both ways
            )
            if not self._holdoff or lasting or evidence >= _ESCALATE * self._alerted or retyped:
                # Outside an event; or an event that grew far rarer than when it alerted
                # (a faint start of a large anomaly must not hide the rest of it); or
                # one that opened as a spike or drop and shows now as noise (its first
                # readings were only the first of a noisier sensor's: whether there is
                # an event was judged per unit of time when it opened, what it is is
                # judged per reading).
                if retyped:
                    evidence = typed
                score = evidence / (evidence + k.evidence_half)
                if lasting:  # noise that lasted its hold-off's quiet span: alerted once more
                    score = max(score, k.anomaly_threshold)
                if score >= k.anomaly_threshold:
                    # A mean test that fired on a reading far beyond the mean of its
                    # last few: a sudden change (spike or drop, a step's first reading);
                    # on readings each near that mean: a change that built up (drift).
                    if test == k.tests - 1 or retyped or lasting:
                        kind = _NOISE
                    elif test == k.tests - 2 or abs(zc) < _SUDDEN * abs(means[0]):
                        kind = _DRIFT
                    else:
                        kind = _SPIKE if z > 0.0 else _DROP
                    self._holdoff = k.holdoff_readings
                    self._held = kind
                    self._quiet = 0
                    # The event's alert level, which a later reading must double to
                    # alert again: a re-typing or a lasting noise's alert keeps it.
                    self._alerted = (
                        evidence if not (retyped or lasting) else max(self._alerted, evidence)
                    )
                    if not retyped:  # a re-typed event lasts from when it opened
                        self._persist = -1 if lasting else 0
                        self._since = ts_ms
                    if not (retyped or lasting):
                        self._swings = swing
                        self._origin = value - residual
                elif self._holdoff:
                    score = 0.0

        # Learn, robustly: a residual moves the model by at most a few scales.
        c = _CLIP * scale
        step = residual
        if step > c:
            step = c
        elif step < -c:
            step = -c
        size = residual if residual > 0.0 else -residual
        if n < k.warmup_readings:
            self._scale += (size - self._scale) / n
        else:
            c = 2.0 * c
            self._scale += k.scale_alpha * ((c if c < size else size) - self._scale)
        self._var_short = var_short
        self._var_long += k.noise_long_alpha * (r2 - self._var_long)
        self._level += k.level_alpha * step
        self._anchor += k.drift_alpha * (self._level - self._anchor)
        if seen:
            weight = k.season_rate * (ts_ms - self._last)
            profile[slot] = (
                seasonal
                + (k.season_gamma if weight > k.season_gamma else weight if weight > 0.0 else 0.0)
                * step
            )
        else:
            profile[slot] = value - self._level
        if value < self._lo:
            self._lo = value
        if value > self._hi:
            self._hi = value
        gap = ts_ms - self._last
        if gap > 0:  # a repeated or late timestamp is no pace; a second is the fastest
            lg = log(gap / 1000.0) if gap > _SECOND_MS else 0.0
            pace = self._pace
            self._pace = lg if isnan(pace) else pace + _PACE_ALPHA * (lg - pace)
        self._n = n + 1
        self._last = ts_ms

        verdict = Verdict(round(score, 4), kind != _NONE, _TYPES[kind]) if score else _QUIET
        return self._breach(verdict, value, lo, hi) if lo is not None or hi is not None else verdict

    def _calibrate(self, stats: list[float]) -> tuple[float, int]:
        """The largest evidence among the tests, nats, and which test gave it; then learn.

        A statistic above its test's threshold scores ``-log`` of the Pareto tail
        probability of its excess, and its excess is learned; the threshold then moves
        toward the running ``1 - tail_quantile`` quantile (up by a step, down by
        ``q / (1 - q)`` of one), its step a share of the mean excess.
        """
        k = self._k
        tails = self._tails
        best = 0.0
        test = 0
        alpha = k.excess_alpha
        step_down = k.step_down
        for i, x in enumerate(stats):
            j = 3 * i
            u = tails[j]
            mean = tails[j + 1]
            if x > u:
                excess = x - u
                square = tails[j + 2]
                evidence = _pareto_evidence(excess, mean, square, k.log_q)
                if evidence > best:
                    best = evidence
                    test = i
                mean += alpha * (excess - mean)
                tails[j + 1] = mean
                tails[j + 2] = square + alpha * (excess * excess - square)
                tails[j] = u + _QUANTILE_STEP * mean
            else:
                tails[j] = u - _QUANTILE_STEP * mean * step_down
        return best, test

    def _breach(
        self, verdict: Verdict, value: float, lo: float | None, hi: float | None
    ) -> Verdict:
        """A reading past the sensor's alert thresholds is an anomaly, whatever the model."""
        above = hi is not None and value > hi
        if not (above or (lo is not None and value < lo)):
            return verdict
        # Inside an ongoing event (a drift crossing the limit), the event names it.
        held = _TYPES[self._held] if self._holdoff > 0 else None
        kind = verdict.anomaly_type or held or ("spike" if above else "drop")
        score = max(verdict.score, round(self._k.anomaly_threshold, 4))
        return Verdict(score, is_anomaly=True, anomaly_type=kind)

    def dumps(self) -> bytes:
        """The state as bytes: 158, 8 a mean test, 24 a tail, 8 a profile slot (1,038 default)."""
        return (
            _HEADER.pack(
                _VERSION,
                self._n,
                self._holdoff,
                self._held,
                self._quiet,
                self._run,
                len(self._means),
                len(self._profile),
                self._last,
                self._persist,
                self._since,
                *(getattr(self, name) for name in _FLOATS),
                self._pace,
                self._origin,
                self._swings,
            )
            + self._means.tobytes()
            + self._tails.tobytes()
            + self._profile.tobytes()
        )

    @classmethod
    def loads(cls, settings: DetectorSettings, data: bytes) -> SensorDetector:
        """Restore a detector from :meth:`dumps`; it continues exactly where it stopped.

        Raises:
            ValueError: the bytes are not a state of this version, tests and profile size
                (a state of an earlier detector version among them: the caller starts
                that sensor afresh).
        """
        bins = settings.season_bins
        means = len(settings.mean_alphas)
        body = 8 * (means + 3 * (means + 2) + bins)
        header = _HEADERS.get(data[0]) if data else None
        if header is None or len(data) != header.size + body:
            msg = (
                f"not a detector state v{_VERSION} with {means} mean tests and {bins} profile"
                f" slots ({len(data)} bytes, version byte {data[:1].hex() or 'missing'})"
            )
            raise ValueError(msg)
        # v4: the same model without a noise alert's persistence; v5 without the pace; v6
        # without the swings.
        fields = list(header.unpack_from(data))
        version, n, holdoff, held, quiet, run, tests, slots, last = fields[:9]
        persist = since = swings = 0
        pace = math.nan
        origin = math.nan  # an event restored from v6 or earlier never swings
        floats = fields[9:]
        if version > _V4:
            persist, since, *floats = floats
        if version == _VERSION:
            *floats, origin, swings = floats
        if version >= _V6:
            *floats, pace = floats
        if tests != means or slots != bins:
            msg = (
                f"detector state v{version} with {tests} mean tests and {slots} slots;"
                f" expected {means} and {bins}"
            )
            raise ValueError(msg)
        det = cls(settings)
        det._n, det._holdoff, det._held, det._quiet, det._last = n, holdoff, held, quiet, last
        det._run, det._persist, det._since, det._pace = run, persist, since, pace
        det._origin, det._swings = origin, swings
        for name, number in zip(_FLOATS, floats, strict=True):
            setattr(det, name, number)
        at = header.size
        det._means = array("d", data[at : at + 8 * means])
        at += 8 * means
        det._tails = array("d", data[at : at + 24 * (means + 2)])
        det._profile = array("d", data[at + 24 * (means + 2) :])
        return det
