"""Synthetic sensor signals and labelled anomalies: pure numpy, no I/O.

A reading is ``baseline + per-sensor offset + daily cycle + slow wear + noise``,
clipped to what the quantity can physically take. Noise comes from a counter-based
hash of (sensor key, timestamp), so a value depends only on the seed, the sensor
and the instant: any time range, cut into any chunks, gives the same numbers.

Timestamps are integer epoch milliseconds on a per-sensor grid
(``phase + k * interval``), hence unique per sensor by construction.

Example:
    >>> from datetime import UTC, datetime, timedelta
    >>> start = datetime(2025, 1, 1, tzinfo=UTC)
    >>> p = PROFILES[SensorType.TEMPERATURE]
    >>> a = list(series(p, seed=7, start=start, end=start + timedelta(hours=1)))
    >>> a == list(series(p, seed=7, start=start, end=start + timedelta(hours=1)))
    True
    >>> len(a), p.unit_of_measure
    (60, 'degC')
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ANOMALY_SAMPLES",
    "PROFILES",
    "AnomalyType",
    "Injection",
    "SensorType",
    "SignalBank",
    "SignalProfile",
    "inject",
    "schedule_anomalies",
    "series",
    "to_datetime",
    "to_ms",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]

_MS_PER_DAY: Final = 86_400_000
_MASK64: Final = (1 << 64) - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class SensorType(StrEnum):
    """The seed's ``sensor_type`` enum."""

    TEMPERATURE = "temperature"
    PRESSURE = "pressure"
    VIBRATION = "vibration"
    FLOW = "flow"
    ELECTRICAL = "electrical"
    HUMIDITY = "humidity"
    AIR_QUALITY = "air_quality"


class AnomalyType(StrEnum):
    """The seed's ``anomaly_type`` enum."""

    SPIKE = "spike"
    DROP = "drop"
    DRIFT = "drift"
    NOISE = "noise"
    MISSING = "missing"


# How long each anomaly lasts, in sampling intervals of the sensor it hits.
ANOMALY_SAMPLES: Final = {
    AnomalyType.SPIKE: 3,
    AnomalyType.DROP: 8,
    AnomalyType.DRIFT: 120,
    AnomalyType.NOISE: 40,
    AnomalyType.MISSING: 12,
}
_NOISE_FACTOR: Final = 8.0  # sd multiplier inside a `noise` window


@dataclass(frozen=True, slots=True)
class SignalProfile:
    """How one kind of sensor behaves; also the values its registration stores."""

    sensor_type: SensorType
    unit_of_measure: str
    baseline: float
    daily_amplitude: float
    noise_sd: float
    wear_per_day: float  # slow trend: equipment ageing, filters clogging
    alert_threshold_min: float
    alert_threshold_max: float
    sampling_interval_seconds: int
    floor: float | None = None  # physical limits: no negative flow, no 120 %RH
    ceiling: float | None = None
    day_phase: float = 0.0  # radians: when in the (UTC) day the cycle peaks

    @property
    def level_spread(self) -> float:
        """Largest per-sensor offset from the baseline (sensors are not identical)."""
        return 0.25 * self.daily_amplitude


_Row = tuple[
    SensorType,
    str,
    float,
    float,
    float,
    float,
    float,
    float,
    int,
    float | None,
    float | None,
    float,
]
# Thresholds leave room for cycle + offset + 30 days of wear + 6 noise sd, so a
# healthy sensor stays inside them; every anomaly but `noise` crosses them.
_TABLE: Final[tuple[_Row, ...]] = (
    # type, unit, baseline, daily amplitude, noise sd, wear/day, alert min, alert max,
    # sampling interval s, floor, ceiling, day phase
    (SensorType.TEMPERATURE, "degC", 21.0, 3.0, 0.25, 0.02, 10.0, 32.0, 60, None, None, 1.2),
    (SensorType.PRESSURE, "kPa", 350.0, 15.0, 2.0, -0.3, 280.0, 420.0, 30, 0.0, None, 0.0),
    (SensorType.VIBRATION, "mm/s", 2.8, 0.4, 0.15, 0.01, 0.5, 7.1, 10, 0.0, None, 0.0),
    (SensorType.FLOW, "L/min", 40.0, 8.0, 1.2, -0.05, 15.0, 65.0, 30, 0.0, None, 0.6),
    (SensorType.ELECTRICAL, "A", 12.0, 3.0, 0.4, 0.01, 2.0, 22.0, 15, 0.0, None, 0.4),
    (SensorType.HUMIDITY, "%RH", 45.0, 8.0, 1.0, 0.0, 20.0, 70.0, 60, 0.0, 100.0, -1.8),
    (SensorType.AIR_QUALITY, "ppm", 720.0, 150.0, 20.0, 0.5, 350.0, 1200.0, 60, 0.0, None, 0.9),
)
PROFILES: Final[dict[SensorType, SignalProfile]] = {row[0]: SignalProfile(*row) for row in _TABLE}


def to_ms(when: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return math.floor(when.timestamp() * 1000)


def to_datetime(ms: int) -> datetime:
    """Aware UTC datetime of epoch milliseconds."""
    return _EPOCH + timedelta(milliseconds=ms)


def _mix(x: U64) -> U64:
    """splitmix64's finaliser, element-wise (uint64 arithmetic wraps, as intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _normal(keys: U64, t_ms: I64, stream: int) -> F64:
    """Standard normal draws, a pure function of (key, timestamp, stream)."""
    h = _mix(keys ^ _mix(t_ms.astype(np.uint64) + np.uint64(stream * 0x9E3779B97F4A7C15 & _MASK64)))
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0**32
    u2 = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 2.0**32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _key(seed: int, index: int) -> int:
    return int(_mix(np.array([(seed * 0x2545F4914F6CDD1D + index) & _MASK64], np.uint64))[0])


@dataclass(frozen=True, slots=True, eq=False)
class SignalBank:
    """Many sensors' signal parameters as arrays, for vectorised generation.

    Sensor ``i`` of the bank is the ``i``-th profile given to :meth:`build`.
    """

    profiles: tuple[SignalProfile, ...]
    keys: U64
    origin_ms: int  # wear is zero here
    interval_ms: I64
    phase_ms: I64  # sampling grid offset, in [0, interval)
    level: F64  # baseline plus this sensor's offset
    amplitude: F64
    noise_sd: F64
    wear_per_ms: F64
    day_phase: F64
    floor: F64
    ceiling: F64

    @classmethod
    def build(cls, profiles: Sequence[SignalProfile], *, seed: int, origin: datetime) -> SignalBank:
        """Derive every sensor's key, offset and sampling phase from the seed."""
        n = len(profiles)
        keys = np.array([_key(seed, i) for i in range(n)], dtype=np.uint64)
        interval = np.array([p.sampling_interval_seconds * 1000 for p in profiles], np.int64)
        zeros = np.zeros(n, np.int64)
        offset = np.clip(_normal(keys, zeros, 1), -1.0, 1.0)
        jitter = _normal(keys, zeros, 2)
        u = (_mix(keys ^ np.uint64(0xA5A5)) >> np.uint64(11)).astype(np.float64) / 2.0**53

        def col(name: str) -> F64:
            return np.array([float(getattr(p, name)) for p in profiles], np.float64)

        return cls(
            profiles=tuple(profiles),
            keys=keys,
            origin_ms=to_ms(origin),
            interval_ms=interval,
            phase_ms=(u * interval).astype(np.int64),
            level=col("baseline") + offset * np.array([p.level_spread for p in profiles]),
            amplitude=col("daily_amplitude"),
            noise_sd=col("noise_sd"),
            wear_per_ms=col("wear_per_day") / _MS_PER_DAY,
            day_phase=col("day_phase") + 0.2 * np.clip(jitter, -1.0, 1.0),
            floor=np.array([-np.inf if p.floor is None else p.floor for p in profiles]),
            ceiling=np.array([np.inf if p.ceiling is None else p.ceiling for p in profiles]),
        )

    def __len__(self) -> int:
        """Number of sensors."""
        return len(self.profiles)

    @property
    def readings_per_second(self) -> float:
        """Readings the whole bank produces per simulated second."""
        return float(np.sum(1000.0 / self.interval_ms))

    def sample_times(
        self, start_ms: int, end_ms: int, sensors: I64 | None = None
    ) -> tuple[I64, I64]:
        """Every sample in ``[start_ms, end_ms)``, ordered by time then sensor.

        Returns:
            (sensor indices, epoch-ms timestamps), aligned.
        """
        idx = np.arange(len(self), dtype=np.int64) if sensors is None else sensors
        step, phase = self.interval_ms[idx], self.phase_ms[idx]
        first = -((phase - start_ms) // step)  # ceil((start - phase) / step)
        stop = -((phase - end_ms) // step)
        counts = np.maximum(stop - first, 0)
        rows = np.repeat(idx, counts)
        ks = np.repeat(first, counts) + (
            np.arange(int(counts.sum()), dtype=np.int64)
            - np.repeat(np.cumsum(counts) - counts, counts)
        )
        times = self.phase_ms[rows] + ks * self.interval_ms[rows]
        order = np.lexsort((rows, times))
        return rows[order], times[order]

    def values(self, sensors: I64, t_ms: I64) -> F64:
        """Healthy values of ``sensors`` at ``t_ms`` (aligned arrays)."""
        day = 2.0 * np.pi * (t_ms % _MS_PER_DAY) / _MS_PER_DAY
        v = (
            self.level[sensors]
            + self.amplitude[sensors] * np.sin(day - self.day_phase[sensors])
            + self.wear_per_ms[sensors] * (t_ms - self.origin_ms)
            + self.noise_sd[sensors] * _normal(self.keys[sensors], t_ms, 0)
        )
        return np.asarray(v, dtype=np.float64)

    def clip(self, sensors: I64, values: F64) -> F64:
        """Clip values to the physical limits of each sensor's quantity."""
        return np.clip(values, self.floor[sensors], self.ceiling[sensors])


@dataclass(frozen=True, slots=True)
class Injection:
    """One anomaly injected into sensor ``sensor`` (a bank index) over ``[start_ms, end_ms)``."""

    sensor: int
    anomaly_type: AnomalyType
    start_ms: int
    end_ms: int
    magnitude: float  # signed size of the excursion (spike, drop, drift); unused otherwise


def _magnitude(p: SignalProfile, kind: AnomalyType, *, upward: bool) -> float:
    """Size that takes a value past a threshold wherever it sits in its daily cycle."""
    margin = (
        p.daily_amplitude + p.level_spread + 0.1 * (p.alert_threshold_max - p.alert_threshold_min)
    )
    up = p.alert_threshold_max - p.baseline + margin
    down = -(p.baseline - p.alert_threshold_min + margin)
    if kind is AnomalyType.SPIKE:
        return up
    if kind is AnomalyType.DROP:
        return down
    if kind is AnomalyType.DRIFT:
        return up if upward else down
    return 0.0


def inject(
    bank: SignalBank, sensors: I64, t_ms: I64, values: F64, injections: Sequence[Injection]
) -> tuple[I64, I64, F64]:
    """Apply the injections that overlap these samples; `missing` drops rows.

    Returns:
        The (sensors, timestamps, values) that remain, clipped to physical limits.
    """
    values = values.copy()
    keep = np.ones(len(t_ms), dtype=bool)
    if len(t_ms):
        lo, hi = int(t_ms.min()), int(t_ms.max())
        for a in injections:
            if a.end_ms <= lo or a.start_ms > hi:
                continue
            hit = (sensors == a.sensor) & (t_ms >= a.start_ms) & (t_ms < a.end_ms)
            if not hit.any():
                continue
            if a.anomaly_type is AnomalyType.MISSING:
                keep &= ~hit
            elif a.anomaly_type is AnomalyType.DRIFT:
                ramp = (t_ms[hit] - a.start_ms) / max(1, a.end_ms - a.start_ms)
                values[hit] += a.magnitude * ramp
            elif a.anomaly_type is AnomalyType.NOISE:
                extra = _normal(bank.keys[sensors[hit]], t_ms[hit], 3)
                values[hit] += _NOISE_FACTOR * bank.noise_sd[sensors[hit]] * extra
            else:
                values[hit] += a.magnitude
    return sensors[keep], t_ms[keep], bank.clip(sensors[keep], values[keep])


def schedule_anomalies(  # noqa: PLR0913 - each knob is a documented keyword
    bank: SignalBank,
    *,
    seed: int,
    start: datetime,
    end: datetime,
    count: int | None = None,
    probability: float = 0.05,
    warmup: float = 0.2,
) -> list[Injection]:
    """Choose anomalies deterministically from the seed, spread out in time.

    Each anomaly gets a time slot of its own within ``[start + warmup, end)``, so
    they are spaced apart; types go round-robin, so all five appear as soon as
    there are five; sensors are drawn without replacement while they last.

    Args:
        bank: the sensors that can be hit.
        seed: the fleet's seed.
        start: simulated start (detectors learn during the warm-up).
        end: simulated end.
        count: how many anomalies; default ``round(probability * sensors)``, at least 1.
        probability: per-sensor chance of an anomaly, when ``count`` is None.
        warmup: leading fraction of the range left clean.
    """
    n = len(bank)
    total = count if count is not None else max(1, round(probability * n))
    if n == 0 or total <= 0:
        return []
    rng = np.random.default_rng([seed, 0xA40A1])
    kinds = list(AnomalyType)
    first_kind = int(rng.integers(len(kinds)))
    order = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
    t0 = to_ms(start) + round(warmup * (to_ms(end) - to_ms(start)))
    slot = (to_ms(end) - t0) / total
    busy_until: dict[int, int] = {}
    out: list[Injection] = []
    for i in range(total):
        sensor = int(order[i])
        kind = kinds[(first_kind + i) % len(kinds)]
        length = ANOMALY_SAMPLES[kind] * int(bank.interval_ms[sensor])
        room = slot - length
        begin = round(t0 + i * slot + (rng.random() * room if room > 0 else 0.0))
        upward = bool(rng.random() < 0.5)  # noqa: PLR2004 - a fair coin
        if begin + length > to_ms(end) or begin < busy_until.get(sensor, begin):
            continue  # does not fit in the range, or would overlap this sensor's last one
        busy_until[sensor] = begin + length
        magnitude = _magnitude(bank.profiles[sensor], kind, upward=upward)
        out.append(Injection(sensor, kind, begin, begin + length, magnitude))
    return out


def series(  # noqa: PLR0913 - each knob is a documented keyword
    profile: SignalProfile,
    *,
    seed: int,
    start: datetime,
    end: datetime,
    index: int = 0,
    injections: Sequence[Injection] = (),
) -> Iterator[tuple[datetime, float]]:
    """Yield one sensor's ``(timestamp, value)`` readings over ``[start, end)``.

    The sensor is the ``index``-th of a fleet built with this seed (same key,
    offset and sampling phase); its wear starts at ``start``. Injections for
    other sensors than ``index`` are ignored.
    """
    profiles = [profile] * (index + 1)
    bank = SignalBank.build(profiles, seed=seed, origin=start)
    one = np.array([index], dtype=np.int64)
    sensors, t_ms = bank.sample_times(to_ms(start), to_ms(end), one)
    mine = [a for a in injections if a.sensor == index]
    sensors, t_ms, values = inject(bank, sensors, t_ms, bank.values(sensors, t_ms), mine)
    for t, v in zip(t_ms.tolist(), values.tolist(), strict=True):
        yield to_datetime(t), v
