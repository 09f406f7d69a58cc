from __future__ import annotations

import math
import random

import pytest

from stream.detectors import SensorDetector, Verdict
from tmiot.config import DetectorSettings

STEP_MS = 60_000  # a reading a minute
DAY = 1440  # readings a day
SD = 0.5


def healthy(i: int, rng: random.Random) -> float:
    """A daily cycle plus Gaussian noise: what a temperature sensor does."""
    return 20.0 + 3.0 * math.sin(2 * math.pi * i / DAY) + rng.gauss(0.0, SD)


def trained(days: float = 2.0, seed: int = 1) -> tuple[SensorDetector, random.Random, int]:
    det = SensorDetector(DetectorSettings())
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    n = int(days * DAY)
    for i in range(n):
        det.update(i * STEP_MS, healthy(i, rng))
    return det, rng, n


def run(det: SensorDetector, rng: random.Random, start: int, extra: list[float]) -> list[Verdict]:
    """Feed healthy readings plus ``extra[k]`` from ``start`` on."""
    return [
        det.update((start + k) * STEP_MS, healthy(start + k, rng) + e) for k, e in enumerate(extra)
    ]


def alarms(verdicts: list[Verdict]) -> list[str | None]:
    return [v.anomaly_type for v in verdicts if v.is_anomaly]


def test_spike_is_detected_as_a_spike() -> None:
    det, rng, n = trained()
    verdicts = run(det, rng, n, [0.0] * 10 + [15 * SD] + [0.0] * 10)
    assert verdicts[10].is_anomaly
    assert verdicts[10].anomaly_type == "spike"
    assert verdicts[10].score > max(v.score for v in verdicts[:10])


def test_drop_is_detected_as_a_drop() -> None:
    det, rng, n = trained()
    verdicts = run(det, rng, n, [0.0] * 10 + [-20 * SD] * 8 + [0.0] * 10)
    assert verdicts[10].is_anomaly
    assert verdicts[10].anomaly_type == "drop"
    assert not any(v.is_anomaly for v in verdicts[:10])


def test_slow_ramp_is_detected_as_a_drift() -> None:
    det, rng, n = trained()
    ramp = [40 * SD * k / 120 for k in range(120)]
    verdicts = run(det, rng, n, [0.0] * 10 + ramp)
    assert "drift" in alarms(verdicts[10:])
    assert not any(v.is_anomaly for v in verdicts[:10])


def test_burst_of_noise_is_detected_as_noise() -> None:
    det, rng, n = trained()
    burst = [rng.gauss(0.0, 8 * SD) for _ in range(40)]
    verdicts = run(det, rng, n, [0.0] * 10 + burst)
    found = alarms(verdicts[10:])
    assert "noise" in found
    assert found.count("noise") >= found.count("spike") + found.count("drop")


def test_a_clean_series_raises_few_alarms() -> None:
    det, rng, n = trained(days=1.0, seed=7)
    verdicts = run(det, rng, n, [0.0] * (4 * DAY))
    assert sum(v.is_anomaly for v in verdicts) <= 2
    assert sorted(v.score for v in verdicts)[len(verdicts) // 2] < 0.1  # the median is low


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_stay_in_range_and_finite_on_wild_input(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    det = SensorDetector(DetectorSettings())
    for i in range(3000):
        kind = rng.random()
        if kind < 0.05:
            value = rng.choice([1e300, -1e300, 0.0, 5e-324, math.nan, math.inf, -math.inf])
        elif kind < 0.5:
            value = math.tan(math.pi * (rng.random() - 0.5))  # Cauchy: very heavy tails
        else:
            value = 42.0  # long constant stretches: zero variance
        quality = rng.choice([None, 0.0, 0.3, 1.0, 1.7, -0.2])
        verdict = det.update(i * STEP_MS, value, quality)
        assert 0.0 <= verdict.score <= 1.0
        assert not math.isnan(verdict.score)
        assert verdict.score == round(verdict.score, 4)
        assert verdict.anomaly_type in {None, "spike", "drop", "drift", "noise"}
        assert verdict.is_anomaly == (verdict.anomaly_type is not None)


def test_non_finite_values_are_ignored() -> None:
    det, _, n = trained(days=0.5)
    before = det.dumps()
    for value in (math.nan, math.inf, -math.inf):
        assert det.update(n * STEP_MS, value) == Verdict(0.0, is_anomaly=False, anomaly_type=None)
    assert det.dumps() == before


@pytest.mark.parametrize("cut", [0, 5, 29, 30, 700, 3000, 3105, 3350, 3510])
def test_restored_detector_continues_exactly(cut: int) -> None:
    settings = DetectorSettings()
    rng = random.Random(11)  # noqa: S311 - test data, not secrets
    values = [healthy(i, rng) for i in range(3600)]
    values[3100] += 20 * SD  # a spike, a drop, a ramp and a noise burst after the cut
    for k in range(3200, 3208):
        values[k] -= 20 * SD
    for k in range(3300, 3420):
        values[k] += 40 * SD * (k - 3300) / 120
    for k in range(3500, 3540):
        values[k] += rng.gauss(0.0, 8 * SD)
    whole = SensorDetector(settings)
    first = [whole.update(i * STEP_MS, v, 0.9, 10.0, 30.0) for i, v in enumerate(values)]

    part = SensorDetector(settings)
    for i, v in enumerate(values[:cut]):
        part.update(i * STEP_MS, v, 0.9, 10.0, 30.0)
    data = part.dumps()
    restored = SensorDetector.loads(settings, data)
    assert restored.dumps() == data
    second = [
        restored.update(i * STEP_MS, v, 0.9, 10.0, 30.0) for i, v in enumerate(values) if i >= cut
    ]
    assert second == first[cut:]
    assert restored.dumps() == whole.dumps()
    assert any(v.is_anomaly for v in second)  # the comparison covered alerts too


def test_state_is_compact() -> None:
    det, _, _ = trained(days=1.0)
    assert len(det.dumps()) < 1536  # 96 profile slots and two 32-slot histograms: 1,441


def test_a_sensor_that_spikes_routinely_stops_alerting_on_its_spikes() -> None:
    det, rng, n = trained()
    routine = [10 * SD if k % 100 == 0 else 0.0 for k in range(1, 3001)]
    verdicts = run(det, rng, n, routine)
    early = sum(v.is_anomaly for v in verdicts[:1000])
    late = sum(v.is_anomaly for v in verdicts[2000:])
    assert early >= 1
    assert late < early
    # A reading far rarer than the routine spikes still alerts.
    assert run(det, rng, n + len(routine), [0.0] * 50 + [30 * SD])[-1].is_anomaly


def test_a_burst_of_moderate_spikes_alerts() -> None:
    det, rng, n = trained()
    alone = run(det, rng, n, [0.0] * 5 + [4 * SD] + [0.0] * 200)
    assert not any(v.is_anomaly for v in alone)  # 4 sd: rare, not alarming on its own ...
    burst = [4 * SD if k % 2 == 0 else 0.0 for k in range(20)]
    verdicts = run(det, rng, n + len(alone), burst + [0.0] * 10)
    assert any(v.is_anomaly for v in verdicts)  # ... but ten of them in 20 readings are


def test_loads_rejects_foreign_bytes() -> None:
    settings = DetectorSettings()
    data = trained(days=0.2)[0].dumps()
    with pytest.raises(ValueError, match="detector state"):
        SensorDetector.loads(settings, data[:-8])
    with pytest.raises(ValueError, match="detector state"):
        SensorDetector.loads(settings, b"\x09" + data[1:])
    with pytest.raises(ValueError, match="detector state"):
        SensorDetector.loads(DetectorSettings(season_bins=48), data)


def test_alert_thresholds_make_an_ordinary_reading_an_anomaly() -> None:
    det, rng, n = trained()
    state = det.dumps()
    settings = DetectorSettings()
    value = healthy(n, rng)
    plain = SensorDetector.loads(settings, state).update(n * STEP_MS, value)
    assert not plain.is_anomaly
    above = SensorDetector.loads(settings, state).update(n * STEP_MS, value, hi=value - 0.01)
    alert = settings.anomaly_threshold
    assert above == Verdict(max(plain.score, alert), is_anomaly=True, anomaly_type="spike")
    below = SensorDetector.loads(settings, state).update(n * STEP_MS, value, lo=value + 0.01)
    assert below.is_anomaly
    assert below.anomaly_type == "drop"
    inside = SensorDetector.loads(settings, state).update(
        n * STEP_MS, value, lo=value - 1, hi=value + 1
    )
    assert inside == plain


def test_low_quality_damps_the_score() -> None:
    det, rng, n = trained()
    state = det.dumps()
    settings = DetectorSettings()
    value = healthy(n, rng) + 12 * SD
    scores = [
        SensorDetector.loads(settings, state).update(n * STEP_MS, value, quality).score
        for quality in (None, 1.0, 0.5, 0.1, 0.0)
    ]
    assert scores[0] == scores[1]
    assert scores[1] > scores[2] > scores[3] > scores[4] == 0.0
    assert SensorDetector.loads(settings, state).update(n * STEP_MS, value, 1.0).is_anomaly
    assert not SensorDetector.loads(settings, state).update(n * STEP_MS, value, 0.1).is_anomaly


def test_warm_up_scores_zero() -> None:
    det = SensorDetector(DetectorSettings(warmup_readings=50))
    verdicts = [det.update(i * STEP_MS, 1e6 if i == 40 else 1.0) for i in range(50)]
    assert all(v == Verdict(0.0, is_anomaly=False, anomaly_type=None) for v in verdicts)
