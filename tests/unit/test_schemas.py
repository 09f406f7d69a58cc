"""docs/schemas: generated from the models, kept in step with them, and what we write validates."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from jsonschema import Draft202012Validator

from tmiot.config import TopicSettings
from tmiot.events import (
    DeadLetter,
    DeadLetterReason,
    EvidenceItem,
    PipelineHealth,
    WorkOrderRequested,
    WorkOrderUpdated,
)
from tmiot.schemas import DOCS, RECORDS, schemas

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _validator(field: str) -> Draft202012Validator:
    return Draft202012Validator(
        schemas()[field], format_checker=Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize("field", list(RECORDS))
def test_the_files_are_the_models_schemas(field: str) -> None:
    path = DOCS / f"{getattr(TopicSettings(), field)}.schema.json"
    assert json.loads(path.read_text()) == schemas()[field], "run `make schemas`"
    Draft202012Validator.check_schema(schemas()[field])


def test_every_topic_we_produce_has_a_schema() -> None:
    assert set(RECORDS) == set(TopicSettings.model_fields)


def test_records_as_written_validate_and_broken_ones_do_not() -> None:
    sensor = str(uuid.uuid4())
    raw = {
        "v": 1,
        "sensor_id": [sensor],
        "company_id": [str(uuid.uuid4())],
        "ts_us": [1_765_000_000_000_000],
        "value": [21.5],
        "unit": ["degC"],
        "quality_score": [None],
        "ambient_temperature": [None],
        "ambient_humidity": [None],
        "weather_conditions": [None],
        "received_us": [1_765_000_000_300_000],
        "gateways": {sensor: "gw-1"},
    }
    assert not list(_validator("readings_raw").iter_errors(raw))
    beat = {**{k: [] for k in raw if k not in ("v", "gateways")}, "v": 1}
    beat["beat"] = {"source": "ingest-1", "at_us": 1, "mqtt": True}
    assert not list(_validator("readings_raw").iter_errors(beat))
    assert list(_validator("readings_raw").iter_errors({**raw, "value": ["21.5"]}))

    evidence = EvidenceItem(
        sensor_id=sensor, reading_timestamp=NOW, value=95.0, anomaly_score=0.9, anomaly_type=None
    )
    common = {
        "idempotency_key": uuid.uuid4(),
        "incident_id": uuid.uuid4(),
        "company_id": uuid.uuid4(),
        "customer_equipment_id": uuid.uuid4(),
        "sensor_id": uuid.uuid4(),
        "trigger_id": uuid.uuid4(),
        "trigger_number": "TRG-1",
        "opened_at": NOW,
        "requested_at": NOW,
        "evidence": [evidence],
    }
    request = WorkOrderRequested.model_validate(
        {
            **common,
            "work_order_template_id": None,
            "priority_level": "high",
            "title": "Boiler: temperature above 90",
            "description": "temperature 95.0 degC above 90.0 for 40 s",
        }
    )
    update = WorkOrderUpdated.model_validate(
        {**common, "update_id": uuid.uuid4(), "summary": "pressure 3.1 bar below 3.5"}
    )
    for event in (request, update):
        written = json.loads(event.model_dump_json())
        assert not list(_validator("workorders_requested").iter_errors(written)), written
    assert list(_validator("workorders_requested").iter_errors({**written, "event": "closed"}))
    letter = DeadLetter(
        reason=DeadLetterReason.MALFORMED_JSON,
        detail="not JSON",
        source="mqtt:tenants/x/gateways/y/readings",
        received_at=NOW,
        payload="{",
        payload_size=1,
    )
    assert not list(
        _validator("readings_deadletter").iter_errors(json.loads(letter.model_dump_json()))
    )
    health = PipelineHealth(
        outage_id=uuid.uuid4(),
        cause="no_heartbeat",
        since=NOW,
        until=None,
        live=True,
        partitions=[0, 1],
        reporter="stream-1",
        detected_at=NOW,
    )
    assert not list(_validator("pipeline_health").iter_errors(json.loads(health.model_dump_json())))
