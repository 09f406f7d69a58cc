"""Golden replay: a recorded fleet with every anomaly type, through stream and triggers.

Scoring is deterministic for a recording (each sensor's readings are scored in
order, whatever the buffers), and triggers evaluate in event time, so a replay must
give exactly the stored outputs: every reading's score, is_anomaly and type, and
every work order (trigger, sensor, opening time). ``make golden`` regenerates
``tests/golden/expected.json`` on purpose (TMIOT_GOLDEN_UPDATE=1); a change of
detector or trigger behaviour then shows as a diff of that file in review.

Not compared: ``missing`` events and the offline flag, which depend on when the
worker's timer runs against the event-time clock (tests/integration/test_stream.py
covers them).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest

from tests.fix_pipeline import PipelineRig
from tests.golden import fleet
from tmiot.events import decode_reading_batch
from tmiot.recording import read_recording

pytestmark = pytest.mark.kafka

EXPECTED = fleet.HERE / "expected.json"
UPDATE = os.environ.get("TMIOT_GOLDEN_UPDATE") == "1"
# The recording is from 2026-11-02: its incidents must not count as a backfill.
ENV = {"TMIOT_TRIGGERS__BACKFILL_HORIZON_SECONDS": str(10 * 365 * 86400)}


def _scores(rig: PipelineRig) -> dict[str, Any]:
    rows = rig.query(
        "SELECT s.sensor_type::text, r.reading_timestamp, r.anomaly_score::float8,"
        " r.is_anomaly, r.anomaly_type::text FROM sensor_readings AS r"
        " JOIN equipment_sensors AS s ON s.id = r.sensor_id ORDER BY 1, 2"
    )
    out: dict[str, Any] = {}
    for kind, at, score, is_anomaly, anomaly_type in rows:
        one = out.setdefault(
            kind, {"readings": 0, "first": at.isoformat(), "scores": [], "anomalies": []}
        )
        one["readings"] += 1
        one["last"] = at.isoformat()
        one["scores"].append(round(score * 10_000))
        if is_anomaly:
            one["anomalies"].append([at.isoformat(), anomaly_type])
    return out


def _work_orders(values: list[Any]) -> list[list[str]]:
    sensors = {v: k for k, v in fleet.SENSORS.items()}
    return sorted([v["trigger_number"], sensors[v["sensor_id"]], v["opened_at"]] for v in values)


async def test_a_replayed_fleet_gives_the_stored_scores_and_work_orders(
    pipeline_rig: PipelineRig,
) -> None:
    rig = pipeline_rig
    fleet.register(rig.db)
    expected = None if UPDATE else json.loads(EXPECTED.read_text())
    readings = sum(
        len(decode_reading_batch(r.value or b"")["sensor_id"])
        for r in read_recording(fleet.RECORDING)
    )
    assert await rig.replay(fleet.RECORDING) > 0
    rig.start("stream", **ENV)
    rig.start("triggers", **ENV)
    await asyncio.to_thread(
        rig.wait_rows, "SELECT count(*) FROM sensor_readings", readings, deadline_s=120
    )
    if expected is None:
        # Regenerating: every reading is written; wait until the work orders stop coming.
        orders, deadline = -1, time.monotonic() + 120
        while time.monotonic() < deadline:
            now = len(await rig.read_topic("wo", expect=orders + 1, deadline_s=5))
            if now == orders:
                break
            orders = now
        values = await rig.read_topic("wo", expect=orders)
        rows = readings
        actual = {
            "readings": rows,
            "sensors": _scores(rig),
            "work_orders": _work_orders(values),
        }
        EXPECTED.write_text(json.dumps(actual, indent=1) + "\n")
        pytest.skip(f"regenerated {EXPECTED} ({rows} readings, {orders} work orders)")
    assert readings == expected["readings"], "the recording is not the one expected.json is of"
    values = await rig.read_topic("wo", expect=len(expected["work_orders"]))
    sensors = _scores(rig)
    for kind, want in expected["sensors"].items():
        got = sensors.get(kind)
        assert got is not None, f"no rows for {kind}"
        assert got["readings"] == want["readings"], kind
        assert got["anomalies"] == want["anomalies"], kind
        assert got["scores"] == want["scores"], kind
    assert set(sensors) == set(expected["sensors"])
    assert _work_orders(values) == expected["work_orders"]
