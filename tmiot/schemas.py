"""JSON Schemas of every topic's record, generated from the models in :mod:`tmiot.events`.

A downstream team reads ``docs/schemas/<topic>.schema.json`` instead of our code:
what a record's value holds, each field's type and meaning. ``tmiot schemas``
(``make schemas``) writes them; ``tests/unit/test_schemas.py`` fails when a model
changed and the files did not, and the end-to-end tests validate every record the
pipeline produced against them (``tests/fix_pipeline.py``).

Keys are the settings' topic fields (:class:`tmiot.config.TopicSettings`); the files
are named after the default topic names. ``workorders.outcomes`` is the one topic we
consume and do not produce (the FSM writes it): its schema says what we accept.

Example:
    >>> sorted(schemas())[:2]
    ['notifications_requested', 'pipeline_health']
    >>> schemas()["workorders_requested"]["$id"]
    'https://tradesmate.pro/schemas/tmiot/workorders.requested.schema.json'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import Field, TypeAdapter

from tmiot.config import TopicSettings
from tmiot.events import (
    DeadLetter,
    NotificationRequested,
    PipelineHealth,
    ReadingBatch,
    ScoredBatch,
    SensorStatusEvent,
    WorkOrderOutcome,
    WorkOrderRequested,
    WorkOrderUpdated,
)

__all__ = ["DOCS", "RECORDS", "schemas", "write"]

DOCS: Final = Path(__file__).resolve().parent.parent / "docs" / "schemas"
_DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
_BASE: Final = "https://tradesmate.pro/schemas/tmiot/"

# A work-order topic's record is a request or an update of one (field "event").
_WorkOrderRecord = Annotated[
    WorkOrderRequested | WorkOrderUpdated, Field(description="a request, or an update of one")
]

# Topic field -> (the record value's type, who writes it, what it is).
RECORDS: Final[dict[str, tuple[Any, str, str]]] = {
    "readings_raw": (
        ReadingBatch,
        "ingest",
        "Validated readings of one partition, as columns; or an ingest heartbeat (beat).",
    ),
    "readings_scored": (
        ScoredBatch,
        "stream",
        "The raw batch scored per reading; missing-sensor events are rows with a null value.",
    ),
    "readings_deadletter": (
        DeadLetter,
        "ingest, stream",
        "A rejected message or batch item, with its reason and payload.",
    ),
    "sensor_status": (
        SensorStatusEvent,
        "ingest",
        "A device's status message (battery, firmware, connectivity).",
    ),
    "workorders_requested": (
        _WorkOrderRecord,
        "triggers",
        "A work order requested by a trigger, or an update of an open one (new evidence).",
    ),
    "notifications_requested": (
        NotificationRequested,
        "triggers",
        "A notification for a customer or a technician, rendered from the trigger's template.",
    ),
    "pipeline_health": (
        PipelineHealth,
        "stream",
        "The pipeline's own outage (no ingest heartbeat, MQTT disconnected) and its end.",
    ),
    "workorders_outcomes": (
        WorkOrderOutcome,
        "the FSM (consumed by triggers)",
        "How a work order ended: resolved, or a false positive.",
    ),
}


def schemas() -> dict[str, dict[str, Any]]:
    """Every topic's JSON Schema (draft 2020-12), keyed by the topic's settings field."""
    topics = TopicSettings()
    out: dict[str, dict[str, Any]] = {}
    for field, (kind, writer, what) in RECORDS.items():
        topic = getattr(topics, field)
        body = TypeAdapter(kind).json_schema(mode="serialization")
        out[field] = {
            "$schema": _DRAFT,
            "$id": f"{_BASE}{topic}.schema.json",
            "title": f"{topic} record value",
            "description": f"{what} Written by {writer}; JSON, UTF-8.",
            **{k: v for k, v in body.items() if k not in ("title", "description")},
        }
    return out


def write(directory: Path = DOCS) -> list[Path]:
    """Write ``<topic>.schema.json`` for every topic into `directory`; the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    topics = TopicSettings()
    paths = []
    for field, schema in schemas().items():
        path = directory / f"{getattr(topics, field)}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
