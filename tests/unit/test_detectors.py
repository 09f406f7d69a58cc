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


def trained(days: float = 4.0, seed: int = 1) -> tuple[SensorDetector, random.Random, int]:
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


def test_a_step_alerts_once_and_is_then_learned() -> None:
    det, rng, n = trained()
    verdicts = run(det, rng, n, [0.0] * 10 + [12 * SD] * 3000)
    assert not any(v.is_anomaly for v in verdicts[:10])
    assert alarms(verdicts[10:20]) == ["spike"]  # at the step, as a sudden change
    assert not any(v.is_anomaly for v in verdicts[20:])  # the new level is learned


def test_one_event_one_alert() -> None:
    det, rng, n = trained()
    verdicts = run(det, rng, n, [0.0] * 10 + [-15 * SD] * 40 + [0.0] * 500)
    assert alarms(verdicts) == ["drop"]


def test_slow_ramp_is_detected_as_a_drift() -> None:
    det, rng, n = trained()
    ramp = [40 * SD * k / 120 for k in range(120)]
    verdicts = run(det, rng, n, [0.0] * 10 + ramp)
    assert alarms(verdicts[10:]) == ["drift"]
    assert not any(v.is_anomaly for v in verdicts[:10])


def test_more_noise_is_detected_as_noise() -> None:
    det, rng, n = trained()
    burst = [rng.gauss(0.0, 4 * SD) for _ in range(60)]
    verdicts = run(det, rng, n, [0.0] * 10 + burst)
    assert not any(v.is_anomaly for v in verdicts[:10])
    # Its first large reading may alert as a spike or drop; the event is then re-typed
    # as noise once, and noise that lasts is alerted once more: never more alerts.
    found = alarms(verdicts[10:])
    assert found[-1] == "noise"
    assert len(found) <= 3
    assert found.count("noise") <= 2


def test_noise_is_alerted_again_only_when_it_lasts() -> None:
    # The same noise for 6 readings (a burst) and for 40 (a fault that lasts), each on a
    # sensor trained alike: the lasting one is alerted a second time, the burst is not.
    found = {}
    for length in (6, 40):
        det, rng, n = trained()
        burst = [rng.gauss(0.0, 8 * SD) for _ in range(length)]
        found[length] = alarms(run(det, rng, n, [0.0] * 10 + burst + [0.0] * 60))
    assert len(found[6]) == 1, found
    assert found[40].count("noise") == 2, found


def test_a_fast_young_sensors_noise_fault_opening_as_a_spike_is_alerted_as_noise_twice() -> None:
    # Sampled every 15 s, half a day old: 40 readings of 8x noise (10 minutes). The event
    # opens as a spike or drop and is re-typed as noise; it lasts from when it opened, so
    # the second noise alert comes within the fault (counted from the re-typing, the fault
    # was often over first: a missed work order, #21).
    step, per_day = 15_000, 5760
    twice = 0
    for seed in range(1, 9):
        det = SensorDetector(DetectorSettings())
        rng = random.Random(seed)  # noqa: S311 - test data, not secrets

        def value(i: int, extra: float, rng: random.Random = rng) -> float:
            return 20.0 + 3.0 * math.sin(2 * math.pi * i / per_day) + rng.gauss(0.0, SD) + extra

        n = per_day // 2
        for i in range(n):
            det.update(i * step, value(i, 0.0))
        extra = [0.0] * 10 + [rng.gauss(0.0, 8 * SD) for _ in range(40)] + [0.0] * 60
        found = alarms([det.update((n + k) * step, value(n + k, e)) for k, e in enumerate(extra)])
        twice += found.count("noise") == 2
    assert twice >= 7


def _young(step: int, hours: float, seed: int, fault: list[float]) -> list[str | None]:
    """The alerts of a sensor read every `step` ms, `hours` old, around `fault` (added)."""
    det = SensorDetector(DetectorSettings())
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    per_day = 86_400_000 // step

    def value(i: int, extra: float) -> float:
        return 20.0 + 3.0 * math.sin(2 * math.pi * i / per_day) + rng.gauss(0.0, SD) + extra

    n = int(hours * 3_600_000 / step)
    for i in range(n):
        det.update(i * step, value(i, 0.0))
    extra = [0.0] * 10 + fault + [0.0] * 100
    return alarms([det.update((n + k) * step, value(n + k, e)) for k, e in enumerate(extra)])


@pytest.mark.parametrize(("step", "hours"), [(10_000, 3), (30_000, 6), (60_000, 12)])
def test_erratic_noise_the_mean_tests_lead_on_is_still_alerted_as_noise_twice(
    step: int, hours: float
) -> None:
    # 40 readings of 8x noise on young sensors. Such readings are far from the model, so
    # the mean tests often give more evidence than the noise test: v6 waited for the noise
    # test to lead, and alerted such a fault twice as noise in 18 of 20 in each case (#21).
    # Readings that went far both ways while the noise test is above its threshold are
    # noise whichever test leads.
    twice = 0
    for seed in range(1, 21):
        rng = random.Random(1000 + seed)  # noqa: S311 - test data, not secrets
        found = _young(step, hours, seed, [rng.gauss(0.0, 8 * SD) for _ in range(40)])
        twice += found.count("noise") == 2  # re-typed, then lasting
    assert twice >= 19


@pytest.mark.parametrize("step", [15_000, 60_000])
def test_a_fault_that_goes_one_way_is_not_made_noise_by_its_return(step: int) -> None:
    # A ramp down and back at once, and at 15 s a drop of 8 readings: both go one way
    # from what was expected when they began. The model has learned some of the fault
    # when it ends, so the return looks far the other way from the model's view; from
    # what it expected at the event's start, it is not (a swing from the model made
    # noise of 13 of 20 such ramps).
    typed = 0
    for seed in range(1, 21):
        size = (4 + seed) * 2 * SD
        typed += "noise" in _young(step, 12, seed, [-size * k / 100 for k in range(100)])
        if step == 15_000:  # at 60 s a drop may show as noise (its variance)
            typed += "noise" in _young(step, 12, seed, [-size] * 8)
    assert typed <= 1


def test_a_stuck_sensor_is_detected_as_noise() -> None:
    det, rng, n = trained()
    stuck = healthy(n, rng)
    verdicts = [det.update((n + k) * STEP_MS, stuck) for k in range(200)]
    assert alarms(verdicts) == ["noise", "noise"]  # noise that lasts: alerted once more


@pytest.mark.parametrize(("step_ms", "days"), [(60_000, 7), (1_000, 1)])
def test_a_daily_pattern_is_learned_and_adds_no_alarms(step_ms: int, days: int) -> None:
    # A strong daily cycle (amplitude 20 standard deviations of the noise), sampled every
    # minute for a week or every second for a day. Once its first day is learned (at one
    # reading a second: its first hour, the cycle being slow there), it alerts no more
    # than the same noise without the cycle: what is left is the false-alarm rate on noise.
    per_day = 86_400_000 // step_ms
    learned = per_day if step_ms == STEP_MS else per_day // 24

    def alarm_count(amplitude: float) -> int:
        det = SensorDetector(DetectorSettings())
        rng = random.Random(5)  # noqa: S311 - test data, not secrets
        count = 0
        for i in range(days * per_day):
            cycle = amplitude * math.sin(2 * math.pi * i / per_day)
            alarm = det.update(i * step_ms, 20.0 + cycle + rng.gauss(0.0, SD)).is_anomaly
            count += alarm and i >= learned
        return count

    flat = alarm_count(0.0)
    assert alarm_count(10.0) <= flat + 1
    assert flat <= days * per_day // 2_000  # at most one alarm in 2,000 readings of noise


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


@pytest.mark.parametrize("step_ms", [STEP_MS, 10_000])  # 10 s: the pace is below the reference
@pytest.mark.parametrize("cut", [0, 5, 29, 30, 700, 3000, 3105, 3350, 3510])
def test_restored_detector_continues_exactly(cut: int, step_ms: int) -> None:
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
    first = [whole.update(i * step_ms, v, 0.9, 10.0, 30.0) for i, v in enumerate(values)]

    part = SensorDetector(settings)
    for i, v in enumerate(values[:cut]):
        part.update(i * step_ms, v, 0.9, 10.0, 30.0)
    data = part.dumps()
    restored = SensorDetector.loads(settings, data)
    assert restored.dumps() == data
    second = [
        restored.update(i * step_ms, v, 0.9, 10.0, 30.0) for i, v in enumerate(values) if i >= cut
    ]
    assert second == first[cut:]
    assert restored.dumps() == whole.dumps()
    assert any(v.is_anomaly for v in second)  # the comparison covered alerts too


def test_state_is_compact() -> None:
    det, _, _ = trained(days=1.0)
    # 96 profile slots, two mean tests, four tails: 1,038 bytes (issue #20: <= 16 KB).
    assert len(det.dumps()) == 1038


def test_a_sensor_sampled_faster_than_the_reference_needs_more_evidence() -> None:
    # The same readings every 10 s: judged per unit of time (reference 60 s), a spike's
    # evidence is log(60 / 10) nats less than judged per reading (reference 0).
    def spike_evidence(reference: float) -> float:
        det = SensorDetector(DetectorSettings(reference_interval_seconds=reference))
        rng = random.Random(3)  # noqa: S311 - test data, not secrets
        for i in range(3000):
            det.update(i * 10_000, healthy(i, rng))
        score = det.update(3000 * 10_000, healthy(3000, rng) + 30 * SD).score
        return 8.0 * score / (1.0 - score)  # evidence_half 8: score = e / (e + 8)

    per_reading, per_minute = spike_evidence(0.0), spike_evidence(60.0)
    assert per_minute > 0.0
    assert per_reading - per_minute == pytest.approx(math.log(6.0), abs=0.01)


def test_the_pace_is_learned_from_the_readings_own_times() -> None:
    # A minute's pace (or slower) is not penalised; a late or repeated timestamp is no pace.
    slow, fast = (SensorDetector(DetectorSettings()) for _ in range(2))
    rng = random.Random(4)  # noqa: S311 - test data, not secrets
    values = [healthy(i, rng) for i in range(3000)]
    for i, v in enumerate(values):
        slow.update(i * 300_000, v)
        fast.update(i * 10_000, v)
        if i % 100 == 0:
            fast.update(i * 10_000 - 5_000, v)  # a late reading
    assert slow._pace == pytest.approx(math.log(300.0))  # noqa: SLF001 - the state under test
    assert fast._pace == pytest.approx(math.log(10.0), abs=0.05)  # noqa: SLF001


def test_a_sensor_that_spikes_routinely_stops_alerting_on_its_spikes() -> None:
    det, rng, n = trained()
    routine = [10 * SD if k % 100 == 0 else 0.0 for k in range(1, 6001)]
    verdicts = run(det, rng, n, routine)
    early = sum(v.is_anomaly for v in verdicts[:1000])
    late = sum(v.is_anomaly for v in verdicts[5000:])
    assert early >= 1
    assert late < early
    # A reading far rarer than the routine spikes still alerts.
    assert run(det, rng, n + len(routine), [0.0] * 50 + [30 * SD])[-1].is_anomaly


def test_moderate_spikes_in_a_row_alert_where_one_does_not() -> None:
    det, rng, n = trained()
    alone = run(det, rng, n, [0.0] * 5 + [4 * SD] + [0.0] * 200)
    assert not any(v.is_anomaly for v in alone)  # 4 sd: rare, not alarming on its own ...
    verdicts = run(det, rng, n + len(alone), [4 * SD] * 6 + [0.0] * 10)
    assert any(v.is_anomaly for v in verdicts)  # ... but six of them in a row are


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
