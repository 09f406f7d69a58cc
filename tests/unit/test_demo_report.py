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


def _order(sensor: str, minutes: int, latency_ms: int, *, update: bool = False) -> WorkOrder:
    published = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    return WorkOrder(
        sensor,
        "DEMO-BAND-1",
        _at(minutes),
        published + dt.timedelta(milliseconds=latency_ms),
        published,
        update=update,
    )


def test_detection_precision_and_latency_against_the_ground_truth() -> None:
    readings = {
        "a": _readings({100, 105}),  # found (within the grace after its end)
        "b": _readings({500}),  # not found: flagged long after; a false episode
        "c": _readings(set()),
    }
    orders = [
        _order("a", 100, 200),  # true: the spike of "a"
        _order("a", 105, 400, update=True),  # another incident of "a" joined it
        _order("b", 500, 1000),  # false: the drop of "b" ended 260 min before
    ]
    s = summarise(
        TRUTH,
        readings,
        missing={"c": [_at(312)]},  # the first silence seen, not the second
        work_orders=orders,
        timed=orders[:2],
        incidents=3,
        published=400,
        equipment={"a": "e1", "b": "e2", "c": "e2"},
        sensor_days=2.5,
    )
    assert s.found == {"spike": (1, 1), "drop": (0, 1), "missing": (1, 2)}
    assert (s.episodes, s.true_episodes) == (2, 1)
    assert s.readings_written == 3 * 120
    assert s.latency_ms["p50"] == 300
    assert s.latency_ms["max"] == 400
    text = "\n".join(s.lines())
    assert [w.true for w in orders] == [True, None, False]
    assert (s.faults, s.work_orders, s.true_orders, s.updates) == (2, 2, 1, 1)
    assert s.recalled == {"spike": (1, 1), "drop": (0, 1)}  # a dropout is not a fault
    assert "2 faults injected, 2 work orders (1 true, 1 false), 1 incidents joined" in text
    assert "precision 50%" in text
    assert "false work orders per 1,000 sensor-days: 400.0" in text
    assert "1 of 2 flagged episodes" in text


def test_a_picture_and_a_page_per_affected_sensor(tmp_path: Path) -> None:
    readings = {"a": _readings({100}), "b": _readings(set())}
    files = write_pictures(
        tmp_path,
        names={"a": "SENS-A", "b": "SENS-B"},
        truth=TRUTH[:2],
        readings=readings,
        work_orders=[ok := _order("a", 100, 200), bad := _order("a", 400, 200)],
        threshold=0.5,
    )
    names = sorted(f.name for f in files)
    assert names == ["SENS-A.html", "SENS-A.png", "SENS-B.html", "SENS-B.png", "index.html"]
    assert (tmp_path / "SENS-A.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "SENS-A.html").read_text()
    assert "work order DEMO-BAND-1" in page  # not judged: no mark
    assert 'href="SENS-B.html"' in (tmp_path / "index.html").read_text()
    ok.true, bad.true = True, False
    write_pictures(
        tmp_path,
        names={"a": "SENS-A"},
        truth=TRUTH[:1],
        readings=readings,
        work_orders=[ok, bad],
        threshold=0.5,
    )
    page = (tmp_path / "SENS-A.html").read_text()
    assert "work order (true) DEMO-BAND-1" in page
    assert "FALSE work order DEMO-BAND-1" in page
