from __future__ import annotations

from stream.scoring import Scorer, SensorMeta
from tmiot.config import DetectorSettings
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
    scorer.load(0, {"s": b"not a state"})
    assert len(scorer) == 1
    again = scorer.score(0, _batch("s", [1.0, 2.0, 3.0]), meta)
    assert again.batch["anomaly_score"] == fresh.batch["anomaly_score"]


def test_restored_state_continues_where_it_left_off() -> None:
    meta = {"s": SensorMeta(None, None, 60)}
    values = [20.0 + (i % 7) / 10 for i in range(200)]
    one = Scorer(DetectorSettings())
    one.score(0, _batch("s", values[:100]), meta)
    two = Scorer(DetectorSettings())
    two.load(0, one.take_dirty(0))
    tail = _batch("s", values[100:])
    assert two.score(0, tail, meta).batch == one.score(0, tail, meta).batch
