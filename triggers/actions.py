"""What a live incident asks for: a work-order request and notifications, as outbox rows.

The work order's idempotency key is the incident's key; a notification's is
uuid5(incident, audience). Messages are rendered with the trigger's
``notification_template`` in a sandbox (:mod:`triggers.templates`); a template
that fails at render time falls back to the default one, logged.
"""

from __future__ import annotations

import uuid
from typing import Final

import structlog

from tmiot.config import TopicSettings
from tmiot.events import (
    EvidenceItem,
    ForecastItem,
    NotificationRequested,
    WorkOrderRequested,
    from_us,
)
from triggers.directory import Directory
from triggers.model import Opened
from triggers.store import OutboxRow, prediction_id
from triggers.templates import TemplateRejected, render

__all__ = ["incident_events"]

log = structlog.get_logger(__name__)

_NOTIFY_NS: Final = uuid.UUID("a3f5e1c2-7d44-4c1b-b0a9-5e2f8c6d9b31")


def incident_events(
    o: Opened, directory: Directory, topics: TopicSettings, requested_us: int
) -> list[OutboxRow]:
    """The work-order request and notifications of a live incident (none if its trigger is gone)."""
    trigger = directory.triggers.get(o.trigger_id)
    sensor = directory.sensors.get(o.sensor_id)
    if trigger is None or sensor is None:
        return []
    rows: list[OutboxRow] = []
    last = o.evidence[-1] if o.evidence else None
    if trigger.auto_create_work_order:
        forecast = None
        if o.forecast is not None:
            f = o.forecast
            forecast = ForecastItem(
                prediction_id=uuid.UUID(prediction_id(o.key)),
                predicted_crossing_at=from_us(f.crossing_us),
                threshold=f.threshold,
                slope_per_hour=f.slope_per_hour,
                confidence_score=f.confidence,
                severity=f.severity,
                recommended_action=f.recommended_action,
            )
        event = WorkOrderRequested(
            idempotency_key=uuid.UUID(o.key),
            incident_id=uuid.UUID(o.key),
            company_id=uuid.UUID(trigger.company_id),
            customer_equipment_id=uuid.UUID(sensor.customer_equipment_id),
            sensor_id=uuid.UUID(sensor.sensor_id),
            trigger_id=uuid.UUID(trigger.trigger_id),
            trigger_number=trigger.trigger_number,
            work_order_template_id=(
                uuid.UUID(trigger.work_order_template_id)
                if trigger.work_order_template_id
                else None
            ),
            priority_level=trigger.priority_level,
            title=f"{trigger.trigger_name}: {sensor.sensor_number}"[:200],
            description=(
                f"{o.summary} on sensor {sensor.sensor_number} ({sensor.sensor_type})"
                f" of {sensor.equipment_name or 'equipment'}; trigger {trigger.trigger_number}."
            ),
            opened_at=from_us(o.opened_us),
            requested_at=from_us(requested_us),
            evidence=[
                EvidenceItem(
                    sensor_id=uuid.UUID(e.sensor_id),
                    reading_timestamp=from_us(e.ts_us),
                    value=e.value,
                    anomaly_score=e.anomaly_score,
                    anomaly_type=e.anomaly_type,
                )
                for e in o.evidence
            ],
            forecast=forecast,
        )
        rows.append(
            OutboxRow(
                o.key,
                o.key,
                topics.workorders_requested,
                o.key,
                event.model_dump_json().encode(),
            )
        )
    fields: dict[str, str | int | float | None] = {
        "trigger_name": trigger.trigger_name,
        "trigger_number": trigger.trigger_number,
        "sensor_number": sensor.sensor_number,
        "sensor_type": sensor.sensor_type,
        "equipment_name": sensor.equipment_name,
        "value": last.value if last else None,
        "unit": sensor.unit,
        "anomaly_score": last.anomaly_score if last else None,
        "anomaly_type": last.anomaly_type if last else None,
        "opened_at": from_us(o.opened_us).isoformat(),
        "priority_level": trigger.priority_level,
        "summary": o.summary,
    }
    for audience, wanted in (
        ("customer", trigger.notify_customer),
        ("technician", trigger.notify_technician),
    ):
        if not wanted:
            continue
        try:
            message = render(trigger.notification_template, fields)
        except TemplateRejected as exc:
            log.warning(
                "template failed; default used",
                trigger=trigger.trigger_number,
                reason=exc.reason,
            )
            message = render(None, fields)
        key = str(uuid.uuid5(_NOTIFY_NS, f"{o.key}/{audience}"))
        note = NotificationRequested(
            idempotency_key=uuid.UUID(key),
            incident_id=uuid.UUID(o.key),
            company_id=uuid.UUID(trigger.company_id),
            customer_equipment_id=uuid.UUID(sensor.customer_equipment_id),
            sensor_id=uuid.UUID(sensor.sensor_id),
            trigger_id=uuid.UUID(trigger.trigger_id),
            audience=audience,
            message=message,
            requested_at=from_us(requested_us),
        )
        rows.append(
            OutboxRow(
                key,
                o.key,
                topics.notifications_requested,
                o.key,
                note.model_dump_json().encode(),
            )
        )
    return rows
