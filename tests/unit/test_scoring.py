from __future__ import annotations

from pathlib import Path

import pytest

from stream.scoring import Scorer, SensorMeta
from tmiot.config import DetectorSettings, SilenceSettings
from tmiot.events import ReadingBatch


def _batch(sensor: str, values: list[float]) -> ReadingBatch:
    n = len(values)
    return {
        "v": 1,
        "sensor_id": [sensor] * n,
        "company_id": ["c"] * n,
        "ts_us": [i * 60_000_000 for i in range(n)],
        "value": values,
        "unit": [None] * n,
        "quality_score": [None] * n,
        "ambient_temperature": [None] * n,
        "ambient_humidity": [None] * n,
        "weather_conditions": [None] * n,
        "received_us": [0] * n,
    }


def test_a_state_that_does_not_load_starts_that_sensor_fresh() -> None:
    meta = {"s": SensorMeta(None, None, 60)}
    fresh = Scorer(DetectorSettings()).score(0, _batch("s", [1.0, 2.0, 3.0]), meta)
    scorer = Scorer(DetectorSettings())
    refused = scorer.load(0, {"s": b"not a state"})
    assert list(refused) == ["s"]
    assert "not a detector state v7" in refused["s"]
    assert len(scorer) == 1
    again = scorer.score(0, _batch("s", [1.0, 2.0, 3.0]), meta)
    assert again.batch["anomaly_score"] == fresh.batch["anomaly_score"]


def test_a_checkpoint_of_the_previous_detector_version_is_refused_by_name() -> None:
    # The bytes a v3 detector (before #20) checkpointed after 500 readings.
    v3 = (Path(__file__).parent / "detector_state_v3.bin").read_bytes()
    assert v3[0] == 3
    scorer = Scorer(DetectorSettings())
    refused = scorer.load(0, {"s": v3, "t": v3})
    assert sorted(refused) == ["s", "t"]
    assert "version byte 03" in refused["s"]
    meta = {"s": SensorMeta(None, None, 60)}
    fresh = Scorer(DetectorSettings()).score(0, _batch("s", [1.0, 2.0, 3.0]), meta)
    assert (
        scorer.score(0, _batch("s", [1.0, 2.0, 3.0]), meta).batch["anomaly_score"]
        == (fresh.batch["anomaly_score"])
    )


@pytest.mark.parametrize(("version", "size"), [(4, 1009), (5, 1021), (6, 1029)])
def test_a_checkpoint_of_detector_v4_to_v6_loads_and_scores_as_they_did(
    version: int, size: int
) -> None:
    # The bytes a v4 detector (#20), a v5 and a v6 one (#21) checkpointed after 500 readings
    # of this series. v5 adds a noise alert's persistence (a v4 state starts at none), v6 the
    # pace (learned from the next reading: a minute, as the reference, so the same scores),
    # v7 an event's swings (none held: the series is quiet).
    state = (Path(__file__).parent / f"detector_state_v{version}.bin").read_bytes()
    assert (state[0], len(state)) == (version, size)
    scorer = Scorer(DetectorSettings())
    assert scorer.load(0, {"s": state}) == {}
    values = [20.0 + (i % 7) / 10 + (5.0 if i == 510 else 0.0) for i in range(500, 520)]
    batch = _batch("s", values)
    batch["ts_us"] = [i * 60_000_000 for i in range(500, 520)]
    scores = scorer.score(0, batch, {"s": SensorMeta(None, None, 60)}).batch["anomaly_score"]
    # What the v4 to v6 detectors themselves scored on these readings (computed with them).
    assert scores == [0.0] * 11 + [0.4044, 0.6859] + [0.0] * 7


def test_restored_state_continues_where_it_left_off() -> None:
    meta = {"s": SensorMeta(None, None, 60)}
    values = [20.0 + (i % 7) / 10 for i in range(200)]
    one = Scorer(DetectorSettings())
    one.score(0, _batch("s", values[:100]), meta)
    two = Scorer(DetectorSettings())
    two.load(0, one.take_dirty(0))
    tail = _batch("s", values[100:])
    assert two.score(0, tail, meta).batch == one.score(0, tail, meta).batch


_EPOCH = 1_750_000_000  # event time of the tests' first reading, seconds


def _at(sensor: str, seconds: int, value: float = 1.0) -> ReadingBatch:
    """One reading of `sensor` taken and delivered `seconds` after the epoch."""
    batch = _batch(sensor, [value])
    batch["ts_us"] = batch["received_us"] = [(_EPOCH + seconds) * 1_000_000]
    return batch


def test_a_silent_sensor_is_reported_once_and_again_after_it_returned() -> None:
    meta = {"a": SensorMeta(None, None, 60), "b": SensorMeta(None, None, 60)}
    scorer = Scorer(DetectorSettings(), SilenceSettings(learning_seconds=0))
    for minute in range(1, 6):
        for sensor in ("a", "b"):
            scorer.score(0, _at(sensor, minute * 60), meta, wall=0)
    for minute in range(6, 10):  # "b" goes on, "a" is silent
        scorer.score(0, _at("b", minute * 60), meta, wall=0)
    silent = scorer.find_silent(meta, wall=0)
    assert [(s.sensor_id, s.last_ts_us) for s in silent] == [("a", (_EPOCH + 300) * 1_000_000)]
    assert scorer.find_silent(meta, wall=0) == []  # reported once
    assert scorer.score(0, _at("a", 600), meta, wall=0).back_online == ["a"]
    meta["a"] = SensorMeta(None, None, 60, maintenance=True)  # muted while in maintenance
    for minute in range(11, 20):
        scorer.score(0, _at("b", minute * 60), meta, wall=0)
    assert scorer.find_silent(meta, wall=0) == []
    meta["a"] = SensorMeta(None, None, 60)  # back: judged again
    assert [s.sensor_id for s in scorer.find_silent(meta, wall=0)] == ["a"]


def test_a_snapshot_holds_the_states_of_its_moment_however_late_it_is_serialised() -> None:
    meta = {s: SensorMeta(None, None, 60) for s in ("a", "b")}
    values = [20.0 + (i % 7) / 10 for i in range(150)]
    before = Scorer(DetectorSettings())
    for sensor in ("a", "b"):
        before.score(0, _batch(sensor, values[:100]), meta)
    expected = before.take_dirty(0)

    scorer = Scorer(DetectorSettings())
    for sensor in ("a", "b"):
        scorer.score(0, _batch(sensor, values[:100]), meta)
    snapshot = scorer.begin_snapshot(0)
    assert scorer.serialise(snapshot, budget=0) is False
    later = _batch("a", values[100:])
    later["ts_us"] = [(100 + i) * 60_000_000 for i in range(50)]
    scorer.score(0, later, meta)  # "a" moves on before its state was serialised
    assert scorer.serialise(snapshot) is True
    assert snapshot.states == expected
    # The readings after the snapshot's moment are in the next one.
    assert set(scorer.take_dirty(0)) == {"a"}
