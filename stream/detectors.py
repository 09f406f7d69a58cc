"""Per-sensor online anomaly detection: one small, serialisable state per sensor.

Each reading is scored against what the sensor has shown so far, then learned
(River's ``score_one`` then ``learn_one``, in one call). The model is additive
Holt-Winters with a daily season: ``value = level + profile[time of day] + residual``.
Three tests read the residual:

* ``spike`` / ``drop``: the residual in units of its running mean absolute value;
  its surprise is ``z**2 / 2`` nats.
* ``noise``: the likelihood-ratio statistic of a short-term against the long-term
  residual variance (up: more noise; down: a quieter, possibly stuck, sensor).
* ``drift``: River's Page-Hinkley test on the residual, whose mean moves when
  the level lags behind a ramp.

The surprise (spike plus noise statistic, nats) is then calibrated against the
sensor's own past: a decayed histogram of its past surprises, mixed with a
Gaussian prior tail, gives its tail probability, whose ``-log`` is the reading's
evidence. So a sensor that is often spiky does not alert all day, only a reading
rarer than what it usually shows does, and the scores of different sensors are
comparable. A second histogram calibrates the spike surprise alone; the
short-term mean of that evidence (about 1 nat when nothing happens) gives a
burst test, a Gamma tail: several moderately rare readings close together
(denser spikes, a dip that is not deep but lasts) are as telling as one very
rare reading. The larger evidence maps to a score in [0, 1] by ``e / (e + half)``.
A score from ``event_threshold`` opens an event, which alerts from
``anomaly_threshold`` on. Within an event, scores are damped and the event
keeps its type (one event, one alert) unless it turns out more lasting (a
spike that is the start of a drift), until the event is over: a run of quiet
readings ends the hold-off early, so a second event soon after the first
alerts too. For the same reason a surprising reading barely widens the
residual scale: the first event's readings would otherwise set the bar for
the next one (two dips in a row). A reading outside the sensor's alert
thresholds is always an anomaly; a low ``quality`` scales the evidence down.

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
from math import exp, isfinite, isnan, log, log1p
from typing import Final, NamedTuple

from river import drift, stats

from tmiot.config import DetectorSettings

__all__ = ["SensorDetector", "Verdict"]

_DAY_MS: Final = 86_400_000
_CLIP: Final = 3.0  # residuals learned at most this many scales away (robust updates)
_DRIFT_CLIP: Final = 10.0  # largest step fed to Page-Hinkley, in scales
_NOISE_CLIP: Final = 4.0  # largest residual the variance test sees, in scales
_TINY: Final = 1e-9
_MAX_ABS: Final = 1e100  # readings are clamped to this magnitude
_VERSION: Final = 3
_BINS: Final = 32  # slots of a surprise histogram ...
_LAST_BIN: Final = _BINS - 1
_BINS_PER_NAT: Final = 4.0  # ... per nat of log1p(surprise): the last one from e**7.75 nats
_FLOOR: Final = 1e-300  # least tail probability
_RESCALE: Final = 2.0**300  # the histograms' growing increment is brought back below this
# The prior tail of a surprise s is exp(-s * 2/pi): z is in mean absolute residuals, which
# are sqrt(2/pi) standard deviations for a Gaussian residual, so z**2 / 2 overstates its nats.
_PRIOR_RATE: Final = 2.0 / math.pi
_FLOATS: Final = (
    "_level",
    "_scale",
    "_var_short",
    "_var_long",
    "_clip_short",
    "_clip_long",
    "_lo",
    "_hi",
    "_weight",
    "_total",
    "_evidence",
)
_PH_FLOATS: Final = ("_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease")
# version, readings, hold-off left and its type, quiet readings in it, drift left, Page-Hinkley's
# flag, profile slots, our floats, then Page-Hinkley's running mean (n, mean) and its sums; the
# two surprise histograms and the profile follow.
_HEADER: Final = struct.Struct(f"<BQIBIIBH{len(_FLOATS)}d2d{len(_PH_FLOATS)}d")


class Verdict(NamedTuple):
    """The detector's view of one reading."""

    score: float  # in [0, 1], rounded to 4 decimals (NUMERIC(5,4))
    is_anomaly: bool
    anomaly_type: str | None  # "spike" | "drop" | "drift" | "noise" | None


# Anomaly types as small ints in the state; _TYPES names them.
_NONE, _SPIKE, _DROP, _DRIFT, _NOISE = range(5)
_TYPES: Final = (None, "spike", "drop", "drift", "noise")
_RANK: Final = (0, 1, 1, 3, 2)  # how lasting each type is: a later, more lasting one re-alerts
_QUIET: Final = Verdict(0.0, is_anomaly=False, anomaly_type=None)


def _variance_lr(short: float, long: float, f2: float, half_df: float) -> float:
    """Log-likelihood ratio, in nats, of a short window's variance against the long-run one.

    ``half_df`` is half the short window's effective size; ``f2`` a floor added
    to both variances, so that a quiet series does not divide by zero.

    >>> _variance_lr(1.0, 1.0, 0.0, 10.0)
    0.0
    >>> round(_variance_lr(4.0, 1.0, 0.0, 10.0), 2)  # twice the standard deviation
    16.14
    """
    rho = (short + f2) / (long + f2)
    return half_df * (rho - 1.0 - log(rho))


def _tail_bin(surprise: float) -> tuple[int, float]:
    """The histogram slot of a surprise and the fraction of that slot below it."""
    x = log1p(surprise) * _BINS_PER_NAT
    slot = min(int(x), _BINS - 1)
    return slot, min(x - slot, 1.0)


class _Tuning:
    """The settings the hot path reads, as slots, with the constants derived from them.

    One per :class:`DetectorSettings` object (:func:`_tuning`), shared by its detectors:
    a slot read is cheaper than a model attribute, and ``1 / alpha - 0.5`` and the like
    are computed once, as the same expressions, so every result stays bit for bit.
    """

    __slots__ = (
        "burst_factor",
        "event_threshold",
        "evidence_alpha",
        "evidence_cap",
        "evidence_half",
        "half_df",
        "holdoff_readings",
        "level_alpha",
        "noise_long_alpha",
        "noise_short_alpha",
        "scale_alpha",
        "scale_alpha_surprising",
        "scale_floor",
        "scale_learn_score",
        "season_bins",
        "season_gamma",
        "surprise_cap",
        "tail_prior",
        "warmup_readings",
        "weight_decay",
    )

    def __init__(self, s: DetectorSettings) -> None:
        """Read `s` once."""
        self.season_bins = s.season_bins
        self.warmup_readings = s.warmup_readings
        self.scale_floor = s.scale_floor
        self.noise_short_alpha = s.noise_short_alpha
        self.noise_long_alpha = s.noise_long_alpha
        self.half_df = 1.0 / s.noise_short_alpha - 0.5
        self.surprise_cap = s.surprise_cap
        self.evidence_half = s.evidence_half
        self.holdoff_readings = s.holdoff_readings
        self.scale_learn_score = s.scale_learn_score
        self.event_threshold = s.event_threshold
        self.scale_alpha = s.scale_alpha
        self.scale_alpha_surprising = s.scale_alpha * s.scale_learn_weight
        self.level_alpha = s.level_alpha
        self.season_gamma = s.season_gamma
        self.tail_prior = s.tail_prior
        self.evidence_alpha = s.evidence_alpha
        self.evidence_cap = s.evidence_cap
        self.burst_factor = 2.0 / s.evidence_alpha - 1.0
        self.weight_decay = 1.0 - 1.0 / s.tail_window


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
        "_clip_long",
        "_clip_short",
        "_drift_left",
        "_evidence",
        "_held",
        "_hi",
        "_hist",
        "_holdoff",
        "_k",
        "_level",
        "_lo",
        "_n",
        "_ph",
        "_profile",
        "_quiet",
        "_scale",
        "_settings",
        "_total",
        "_var_long",
        "_var_short",
        "_weight",
    )

    def __init__(self, settings: DetectorSettings) -> None:
        """Start with no history: the first ``warmup_readings`` score 0."""
        self._settings = settings
        self._k = _tuning(settings)
        self._n = 0
        self._level = 0.0
        self._scale = 0.0  # mean absolute residual
        # Short- and long-term residual variances: raw (the score's noise test) and
        # with each residual clipped at a few scales (the robust one that types it).
        self._var_short = self._var_long = self._clip_short = self._clip_long = 0.0
        self._lo = math.inf
        self._hi = -math.inf
        # Decayed histograms of past surprises, the whole one then the spike part's:
        # each reading adds the current weight to one slot of each, and the weight grows
        # by 1 / (1 - 1/tail_window) a reading (cheaper than decaying every slot);
        # _total is each histogram's sum. _evidence: short-term mean spike evidence.
        self._hist = array("d", [0.0]) * (2 * _BINS)
        self._weight = 1.0
        self._total = 0.0
        self._evidence = 1.0
        self._holdoff = 0  # readings left in the hold-off after an alert
        self._held = _NONE  # the type of that alert
        self._quiet = 0  # readings in a row scoring below quiet_score during the hold-off
        self._drift_left = 0  # readings left during which Page-Hinkley's drift stands
        # NaN marks a time-of-day slot not seen yet; array('d') is 8 bytes a slot.
        self._profile = array("d", [math.nan]) * settings.season_bins
        # River's Page-Hinkley costs about 1.3 us an update and 0.5 KB: affordable,
        # and its state is six numbers, which dumps() writes out exactly.
        self._ph = drift.PageHinkley(
            min_instances=settings.drift_min_readings,
            delta=settings.drift_delta,
            threshold=settings.drift_threshold,
        )

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
        # Comparisons stand in for min() and max() (a builtin call each, two dozen a
        # reading); each picks the same operand the builtin would, so results are
        # bit for bit the same.
        if not isfinite(value):
            return _QUIET
        if value > _MAX_ABS:  # so that squares stay finite
            value = _MAX_ABS
        elif value < -_MAX_ABS:
            value = -_MAX_ABS
        k = self._k
        n = self._n
        slot = (ts_ms % _DAY_MS) * k.season_bins // _DAY_MS
        if n < k.warmup_readings:
            self._warm_up(slot, value)
            return (
                self._breach(_QUIET, value, lo, hi) if lo is not None or hi is not None else _QUIET
            )

        profile = self._profile
        seasonal = profile[slot]
        seen = not isnan(seasonal)
        if not seen:
            seasonal = 0.0
        floor = k.scale_floor * (self._hi - self._lo) + _TINY
        scale = self._scale
        if floor > scale:
            scale = floor
        residual = value - self._level - seasonal
        z = residual / scale

        # Surprise in nats: the residual's own, plus the variance-change statistic
        # (likelihood ratio of the short-term against the long-term variance, as
        # _variance_lr computes it).
        r2 = residual * residual
        c2 = (_NOISE_CLIP * scale) ** 2
        if not c2 < r2:
            c2 = r2
        alpha = k.noise_short_alpha
        var_short = self._var_short + alpha * (r2 - self._var_short)
        clip_short = self._clip_short + alpha * (c2 - self._clip_short)
        f2 = floor * floor
        half_df = k.half_df  # half the short window's effective size
        rho = (var_short + f2) / (self._var_long + f2)
        noise = half_df * (rho - 1.0 - log(rho))
        spike = 0.5 * z * z
        cap = k.surprise_cap
        evidence = self._calibrate(cap * log1p((spike + noise) / cap), cap * log1p(spike / cap))
        if quality is not None:
            evidence *= min(max(quality, 0.0), 1.0)
        score = evidence / (evidence + k.evidence_half)

        if seen:
            # Page-Hinkley on the residual: a ramp that the level lags behind leaves
            # a lasting bias. It raises an alert when it fires and names those that follow.
            ph = self._ph
            ph.update(_DRIFT_CLIP if z > _DRIFT_CLIP else -_DRIFT_CLIP if z < -_DRIFT_CLIP else z)  # type: ignore[no-untyped-call]
            if ph._drift_detected:  # noqa: SLF001 - the flag behind River's property
                self._drift_left = k.holdoff_readings
        kind = _NONE
        surprising = score >= k.scale_learn_score
        if score >= k.event_threshold or self._holdoff or self._drift_left:
            # The robust variance test only names an alert; skip it when there is none.
            robust = 0.0
            if score >= k.event_threshold:
                robust = _variance_lr(clip_short, self._clip_long, f2, half_df)
            score, kind = self._decide(score, z, noise=robust, spike=spike)

        # Learn, robustly: a residual moves the model by at most a few scales, and a
        # surprising one (score before damping) the scale only a little.
        c = _CLIP * scale
        step = residual
        if step > c:
            step = c
        elif step < -c:
            step = -c
        size = abs(residual)
        c = 2.0 * c
        if c < size:
            size = c
        self._scale += (k.scale_alpha_surprising if surprising else k.scale_alpha) * (
            size - self._scale
        )
        alpha = k.noise_long_alpha
        self._var_long += alpha * (r2 - self._var_long)
        self._clip_long += alpha * (c2 - self._clip_long)
        self._var_short, self._clip_short = var_short, clip_short
        self._level += k.level_alpha * step
        if seen:
            profile[slot] = seasonal + k.season_gamma * step
        else:
            profile[slot] = value - self._level
        if value < self._lo:
            self._lo = value
        if value > self._hi:
            self._hi = value
        self._n = n + 1

        verdict = Verdict(round(score, 4), kind != _NONE, _TYPES[kind])
        return self._breach(verdict, value, lo, hi) if lo is not None or hi is not None else verdict

    def _calibrate(self, surprise: float, spike: float) -> float:
        """Evidence, nats, of a reading's surprise against the past ones; then learn it.

        The larger of ``-log`` the tail probability of ``surprise`` (spike plus noise
        test) and the Gamma-tail statistic of the short-term mean of the spike test's
        own tail evidence (capped; its mean is 1 nat while nothing happens).
        (:func:`_tail_bin` inlined twice; comparisons for min and max, as in update.)
        """
        k = self._k
        hist = self._hist
        weight = self._weight
        prior = k.tail_prior * weight
        norm = log(self._total + prior)
        x = log1p(surprise) * _BINS_PER_NAT
        slot = int(x)
        if slot > _LAST_BIN:
            slot = _LAST_BIN
        below = x - slot
        if below > 1.0:
            below = 1.0
        tail = sum(hist[slot + 1 : _BINS]) + hist[slot] * (1.0 - below)
        x = surprise * _PRIOR_RATE
        tail += prior * exp(-(700.0 if x > 700.0 else x))  # noqa: PLR2004 - exp's range
        instant = norm - log(_FLOOR if tail < _FLOOR else tail)
        hist[slot] += weight
        x = log1p(spike) * _BINS_PER_NAT
        slot = int(x)
        if slot > _LAST_BIN:
            slot = _LAST_BIN
        below = x - slot
        if below > 1.0:
            below = 1.0
        slot += _BINS
        tail = sum(hist[slot + 1 : 2 * _BINS]) + hist[slot] * (1.0 - below)
        x = spike * _PRIOR_RATE
        tail += prior * exp(-(700.0 if x > 700.0 else x))  # noqa: PLR2004 - exp's range
        single = norm - log(_FLOOR if tail < _FLOOR else tail)
        hist[slot] += weight
        alpha = k.evidence_alpha
        if single > k.evidence_cap:
            single = k.evidence_cap
        mean = self._evidence + alpha * (single - self._evidence)
        self._evidence = mean
        burst = k.burst_factor * (mean - 1.0 - log(mean)) if mean > 1.0 else 0.0

        self._total += weight
        weight /= k.weight_decay
        if weight > _RESCALE:
            for i in range(2 * _BINS):
                hist[i] /= _RESCALE
            self._total /= _RESCALE
            weight /= _RESCALE
        self._weight = weight
        if burst > instant:
            instant = burst
        return 0.0 if instant < 0.0 else instant  # max(instant, burst, 0.0)

    def _decide(self, score: float, z: float, *, noise: float, spike: float) -> tuple[float, int]:
        """The reading's final score and anomaly type, given the hold-off and Page-Hinkley.

        Args:
            score: the reading's score before any hold-off damping.
            z: its residual in scales.
            noise: the robust variance-change statistic, nats.
            spike: the residual's own surprise, nats.
        """
        s = self._settings
        kind = _NONE
        if self._drift_left == s.holdoff_readings:  # Page-Hinkley fired just now
            kind = _DRIFT
            score = max(score, s.anomaly_threshold)
        elif score >= s.event_threshold:
            if self._drift_left > 0 and -_DRIFT_CLIP < z < _DRIFT_CLIP:
                kind = _DRIFT
            elif noise > spike:
                kind = _NOISE
            else:
                kind = _SPIKE if z > 0 else _DROP
        if self._holdoff > 0:
            # One event, one alert: within the hold-off, scores are damped and the
            # event keeps its type; only a more lasting type (spike -> noise -> drift)
            # alerts again, at full score. A run of quiet readings ends the event.
            self._quiet = self._quiet + 1 if score < s.quiet_score else 0
            self._holdoff = 0 if self._quiet >= s.quiet_readings else self._holdoff - 1
            if _RANK[kind] <= _RANK[self._held]:
                score *= s.holdoff_damping
                kind = self._held if score >= s.event_threshold else _NONE
        if kind != _NONE:
            self._holdoff = s.holdoff_readings
            self._held = kind
            self._quiet = 0
        if self._drift_left > 0:
            self._drift_left -= 1
        # An event opened below the alert threshold is watched (its hold-off runs), not raised.
        return score, kind if score >= s.anomaly_threshold else _NONE

    def _warm_up(self, slot: int, value: float) -> None:
        """Learn one of the first readings: plain running means, no score.

        The surprise histograms start after the warm-up: these readings' surprises
        tell more about a model still settling than about the sensor.
        """
        n = self._n
        if n == 0:
            self._level = self._lo = self._hi = value
            self._profile[slot] = 0.0
            self._n = 1
            return
        s = self._settings
        seasonal = self._profile[slot]
        seen = not isnan(seasonal)
        residual = value - self._level - (seasonal if seen else 0.0)
        r2 = residual * residual
        self._var_short += s.noise_short_alpha * (r2 - self._var_short)
        self._clip_short = self._var_short
        self._scale += (abs(residual) - self._scale) / n
        self._var_long += (r2 - self._var_long) / n
        self._clip_long = self._var_long
        self._level += s.level_alpha * residual
        if seen:
            self._profile[slot] = seasonal + s.season_gamma * residual
        else:
            self._profile[slot] = value - self._level
        self._lo = min(self._lo, value)
        self._hi = max(self._hi, value)
        self._n = n + 1

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
        score = max(verdict.score, round(self._settings.anomaly_threshold, 4))
        return Verdict(score, is_anomaly=True, anomaly_type=kind)

    def dumps(self) -> bytes:
        """The state as bytes: 673 bytes plus 8 a profile slot (1,441 by default)."""
        ph = self._ph
        mean = ph._x_mean  # noqa: SLF001 - River has no public accessor for its state
        return (
            _HEADER.pack(
                _VERSION,
                self._n,
                self._holdoff,
                self._held,
                self._quiet,
                self._drift_left,
                ph.drift_detected,
                len(self._profile),
                *(getattr(self, name) for name in _FLOATS),
                mean.n,
                mean._mean,  # noqa: SLF001
                *(getattr(ph, name) for name in _PH_FLOATS),
            )
            + self._hist.tobytes()
            + self._profile.tobytes()
        )

    @classmethod
    def loads(cls, settings: DetectorSettings, data: bytes) -> SensorDetector:
        """Restore a detector from :meth:`dumps`; it continues exactly where it stopped.

        Raises:
            ValueError: the bytes are not a state of this version and profile size.
        """
        bins = settings.season_bins
        if len(data) != _HEADER.size + 8 * (2 * _BINS + bins) or data[0] != _VERSION:
            msg = (
                f"not a detector state v{_VERSION} with {bins} profile slots"
                f" ({len(data)} bytes, version byte {data[:1].hex() or 'missing'})"
            )
            raise ValueError(msg)
        version, n, holdoff, held, quiet, drift_left, detected, slots, *floats = (
            _HEADER.unpack_from(data)
        )
        if (version, slots) != (_VERSION, bins):
            msg = f"detector state v{version} with {slots} slots; expected {bins}"
            raise ValueError(msg)
        det = cls(settings)
        det._n, det._holdoff, det._held, det._drift_left = n, holdoff, held, drift_left
        det._quiet = quiet
        for name, number in zip(_FLOATS, floats, strict=False):
            setattr(det, name, number)
        profile = _HEADER.size + 16 * _BINS
        det._hist = array("d", data[_HEADER.size : profile])
        det._profile = array("d", data[profile:])
        ph = det._ph
        rest = floats[len(_FLOATS) :]
        mean = stats.Mean()
        mean.n, mean._mean = rest[:2]  # noqa: SLF001
        ph._x_mean = mean  # noqa: SLF001
        for name, number in zip(_PH_FLOATS, rest[2:], strict=True):
            setattr(ph, name, number)
        ph._drift_detected = bool(detected)  # noqa: SLF001
        return det
