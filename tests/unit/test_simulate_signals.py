"""The simulator's signals: plausible, deterministic, and anomalies where the labels say."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest

from tmiot.simulate.signals import (
    ANOMALY_SAMPLES,
    PROFILES,
    AnomalyType,
    SensorType,
    SignalBank,
    inject,
    schedule_anomalies,
    series,
    to_ms,
)

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def test_every_seed_sensor_type_has_a_plausible_profile() -> None:
    assert set(PROFILES) == set(SensorType)
    assert {t.value for t in SensorType} == {
        "temperature",
        "pressure",
        "vibration",
        "flow",
        "electrical",
        "humidity",
        "air_quality",
    }
    for kind, p in PROFILES.items():
        assert p.alert_threshold_min < p.baseline < p.alert_threshold_max, kind
        assert p.sampling_interval_seconds > 0, kind
        assert p.unit_of_measure, kind


def test_same_seed_same_series_other_seed_other_series() -> None:
    profile = PROFILES[SensorType.TEMPERATURE]
    one = list(series(profile, seed=7, start=START, end=START + DAY))
    two = list(series(profile, seed=7, start=START, end=START + DAY))
    other = list(series(profile, seed=8, start=START, end=START + DAY))
    assert one == two
    assert [v for _, v in one] != [v for _, v in other][: len(one)]
    expected = 86_400 / profile.sampling_interval_seconds
    assert abs(len(one) - expected) <= 1


def test_normal_signal_stays_inside_the_alert_thresholds() -> None:
    for kind, p in PROFILES.items():
        values = np.array([v for _, v in series(p, seed=3, start=START, end=START + DAY)])
        inside = (values > p.alert_threshold_min) & (values < p.alert_threshold_max)
        assert inside.mean() > 0.99, kind


def _bank(n: int) -> SignalBank:
    profiles = [PROFILES[SensorType.TEMPERATURE]] * n
    return SignalBank.build(profiles, seed=11, origin=START)


def test_schedule_covers_every_anomaly_type_without_overlap_and_after_warmup() -> None:
    bank = _bank(20)
    end = START + 7 * DAY
    plan = schedule_anomalies(bank, seed=11, start=START, end=end, count=10)
    assert plan == schedule_anomalies(bank, seed=11, start=START, end=end, count=10)
    assert {a.anomaly_type for a in plan} == set(AnomalyType)
    warmup_end = to_ms(START) + 0.2 * (to_ms(end) - to_ms(START))
    assert all(a.start_ms >= warmup_end and a.end_ms <= to_ms(end) for a in plan)
    for a in plan:
        assert a.end_ms - a.start_ms == ANOMALY_SAMPLES[a.anomaly_type] * int(bank.interval_ms[0])
    by_sensor: dict[int, list[tuple[int, int]]] = {}
    for a in plan:
        by_sensor.setdefault(a.sensor, []).append((a.start_ms, a.end_ms))
    for spans in by_sensor.values():
        spans.sort()
        assert all(e <= s for (_, e), (s, _) in itertools.pairwise(spans))


@pytest.mark.parametrize("kind", list(AnomalyType))
def test_injected_anomaly_shows_only_inside_its_window(kind: AnomalyType) -> None:
    bank = _bank(1)
    end = START + 2 * DAY
    plan = [
        a
        for a in schedule_anomalies(bank, seed=5, start=START, end=end, count=5)
        if a.anomaly_type is kind
    ]
    assert len(plan) == 1
    a = plan[0]
    sensors, t_ms = bank.sample_times(to_ms(START), to_ms(end))
    clean = bank.values(sensors, t_ms)
    _s2, t2, v2 = inject(bank, sensors, t_ms, clean, plan)
    inside = (t_ms >= a.start_ms) & (t_ms < a.end_ms)
    assert inside.any()
    if kind is AnomalyType.MISSING:
        assert len(t2) == len(t_ms) - int(inside.sum())
        assert not ((t2 >= a.start_ms) & (t2 < a.end_ms)).any()
        return
    assert np.array_equal(t2, t_ms)
    assert np.allclose(v2[~inside], bank.clip(sensors[~inside], clean[~inside]))
    p = PROFILES[SensorType.TEMPERATURE]
    changed = v2[inside] - clean[inside]
    if kind is AnomalyType.SPIKE:
        assert (v2[inside] > p.alert_threshold_max).all()
    elif kind is AnomalyType.DROP:
        assert (v2[inside] < p.alert_threshold_min).all()
    elif kind is AnomalyType.DRIFT:
        assert abs(changed[-1]) > abs(changed[0])  # a ramp, largest at the end
        assert (v2[inside][-1] > p.alert_threshold_max) or (v2[inside][-1] < p.alert_threshold_min)
    else:  # noise: the spread grows several-fold, the level stays
        assert np.std(changed) > 4 * p.noise_sd
        assert abs(np.mean(changed)) < 4 * p.noise_sd
