from __future__ import annotations

import datetime as dt
from pathlib import Path

from tmiot.demo.report import Reading, WorkOrder, summarise, write_pictures
from tmiot.simulate.ground_truth import GroundTruth
from tmiot.simulate.signals import AnomalyType

T0 = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _readings(flagged: set[int]) -> list[Reading]:
    return [
        Reading(
            _at(m),
            20.0,
            0.9 if m in flagged else 0.1,
            m in flagged,
            "spike" if m in flagged else None,
        )
        for m in range(0, 600, 5)
    ]


TRUTH = [
    GroundTruth("a", "dev-a", AnomalyType.SPIKE, _at(100), _at(103)),
    GroundTruth("b", "dev-b", AnomalyType.DROP, _at(200), _at(240)),
    GroundTruth("c", "dev-c", AnomalyType.MISSING, _at(300), _at(360)),
    GroundTruth("c", "dev-c", AnomalyType.MISSING, _at(400), _at(460)),
]


def _order(sensor: str, minutes: int, latency_ms: int) -> WorkOrder:
    published = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    return WorkOrder(
        sensor,
        "DEMO-ANOMALY-1",
        _at(minutes),
        published + dt.timedelta(milliseconds=latency_ms),
        published,
    )


def test_detection_precision_and_latency_against_the_ground_truth() -> None:
    readings = {
        "a": _readings({100, 105}),  # found (within the grace after its end)
        "b": _readings({500}),  # not found: flagged long after; a false episode
        "c": _readings(set()),
    }
    orders = [_order("a", 100, 200), _order("a", 105, 400), _order("b", 500, 1000)]
    s = summarise(
        TRUTH,
        readings,
        missing={"c": [_at(312)]},  # the first silence seen, not the second
        work_orders=orders,
        timed=orders[:2],
        incidents=2,
        published=400,
    )
    assert s.found == {"spike": (1, 1), "drop": (0, 1), "missing": (1, 2)}
    assert (s.episodes, s.true_episodes) == (2, 1)
    assert s.readings_written == 3 * 120
    assert s.latency_ms["p50"] == 300
    assert s.latency_ms["max"] == 400
    text = "\n".join(s.lines())
    assert "incidents 2, work orders 3 (1.50 per incident)" in text
    assert "1 of 2 flagged episodes" in text


def test_a_picture_and_a_page_per_affected_sensor(tmp_path: Path) -> None:
    readings = {"a": _readings({100}), "b": _readings(set())}
    files = write_pictures(
        tmp_path,
        names={"a": "SENS-A", "b": "SENS-B"},
        truth=TRUTH[:2],
        readings=readings,
        work_orders=[_order("a", 100, 200)],
        threshold=0.5,
    )
    names = sorted(f.name for f in files)
    assert names == ["SENS-A.html", "SENS-A.png", "SENS-B.html", "SENS-B.png", "index.html"]
    assert (tmp_path / "SENS-A.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "work order DEMO-ANOMALY-1" in (tmp_path / "SENS-A.html").read_text()
    assert 'href="SENS-B.html"' in (tmp_path / "index.html").read_text()
