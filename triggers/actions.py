"""What a live incident asks for: a work-order request or update, and notifications.

A new work order's idempotency key is the incident's key; an update's record key
is its work order's key and its ``update_id`` uuid5(work order, incident); a
notification's key is uuid5(incident, audience). An incident that joins an open
work order (:mod:`triggers.grouping`) sends the update only: the customer and the
technician were told when the work order was requested. Messages are rendered
with the trigger's ``notification_template`` in a sandbox
(:mod:`triggers.templates`); a template that fails at render time falls back to
the default one, logged.
"""

from __future__ import annotations

import uuid
from typing import Final

import structlog

from tmiot.config import TopicSettings
from tmiot.events import (
    WORKORDER_UPDATE_SCHEMA,
    EvidenceItem,
    ForecastItem,
    NotificationRequested,
    WorkOrderRequested,
    WorkOrderUpdated,
    from_us,
)
from triggers.directory import Directory
from triggers.grouping import Attach, Decision, NewOrder
from triggers.model import Opened
from triggers.store import OutboxRow, prediction_id
from triggers.templates import TemplateRejected, render

__all__ = ["IncidentEvents", "incident_events"]

log = structlog.get_logger(__name__)

_NOTIFY_NS: Final = uuid.UUID("a3f5e1c2-7d44-4c1b-b0a9-5e2f8c6d9b31")
_UPDATE_NS: Final = uuid.UUID("c0f3d7a1-8e52-4b6a-9d1f-2a7e5b3c9e44")


class IncidentEvents:
    """The events of one poll's live incidents (a :class:`~triggers.store.Events`)."""

    def __init__(
        self,
        directory: Directory,
        topics: TopicSettings,
        requested_us: int,
        gateways: dict[str, str],
    ) -> None:
        """Render with `directory` at `requested_us`; `gateways`: sensor -> its gateway."""
        self._directory = directory
        self._topics = topics
        self._requested_us = requested_us
        self._gateways = gateways

    def wants_order(self, o: Opened) -> bool:
        """Whether the incident's trigger requests work orders."""
        trigger = self._directory.triggers.get(o.trigger_id)
        return trigger is not None and trigger.auto_create_work_order

    def gateway(self, sensor_id: str) -> str | None:
        """The gateway the sensor delivers through, if any."""
        return self._gateways.get(sensor_id)

    def events(self, o: Opened, decision: Decision | None) -> list[OutboxRow]:
        """The outbox rows of a live incident placed as `decision` (None: no work order)."""
        if isinstance(decision, Attach):
            return _update(o, decision.order, self._directory, self._topics, self._requested_us)
        gone = isinstance(decision, NewOrder) and decision.subject.kind == "gateway"
        gateway = decision.subject.id if isinstance(decision, NewOrder) and gone else None
        return incident_events(
            o,
            self._directory,
            self._topics,
            self._requested_us,
            order=decision is not None,
            gateway=gateway,
        )


def _evidence(o: Opened) -> list[EvidenceItem]:
    return [
        EvidenceItem(
            sensor_id=uuid.UUID(e.sensor_id),
            reading_timestamp=from_us(e.ts_us),
            value=e.value,
            anomaly_score=e.anomaly_score,
            anomaly_type=e.anomaly_type,
        )
        for e in o.evidence
    ]


def _update(
    o: Opened, order: str, directory: Directory, topics: TopicSettings, requested_us: int
) -> list[OutboxRow]:
    trigger = directory.triggers.get(o.trigger_id)
    sensor = directory.sensors.get(o.sensor_id)
    if trigger is None or sensor is None:
        return []
    update_id = str(uuid.uuid5(_UPDATE_NS, f"{order}/{o.key}"))
    event = WorkOrderUpdated(
        idempotency_key=uuid.UUID(order),
        update_id=uuid.UUID(update_id),
        incident_id=uuid.UUID(o.key),
        company_id=uuid.UUID(trigger.company_id),
        customer_equipment_id=uuid.UUID(sensor.customer_equipment_id),
        sensor_id=uuid.UUID(sensor.sensor_id),
        trigger_id=uuid.UUID(trigger.trigger_id),
        trigger_number=trigger.trigger_number,
        summary=f"{o.summary} on sensor {sensor.sensor_number} ({sensor.sensor_type})"[:500],
        opened_at=from_us(o.opened_us),
        requested_at=from_us(requested_us),
        evidence=_evidence(o),
    )
    return [
        OutboxRow(
            update_id,
            o.key,
            topics.workorders_requested,
            order,
            event.model_dump_json().encode(),
            WORKORDER_UPDATE_SCHEMA.decode(),
        )
    ]


def incident_events(  # noqa: PLR0913 - the incident and how it is placed
    o: Opened,
    directory: Directory,
    topics: TopicSettings,
    requested_us: int,
    *,
    order: bool | None = None,
    gateway: str | None = None,
) -> list[OutboxRow]:
    """The work-order request and notifications of a live incident (none if its trigger is gone).

    `order`: request a work order (default: when the trigger auto-creates them);
    `gateway`: the work order is for this offline gateway, not the equipment.
    """
    trigger = directory.triggers.get(o.trigger_id)
    sensor = directory.sensors.get(o.sensor_id)
    if trigger is None or sensor is None:
        return []
    rows: list[OutboxRow] = []
    last = o.evidence[-1] if o.evidence else None
    if trigger.auto_create_work_order if order is None else order:
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
            title=(
                f"Gateway {gateway} offline: its sensors are silent"
                if gateway is not None
                else f"{trigger.trigger_name}: {sensor.sensor_number}"
            )[:200],
            description=(
                (f"Gateway {gateway} stopped delivering; first seen on " if gateway else "")
                + f"{o.summary} on sensor {sensor.sensor_number} ({sensor.sensor_type})"
                f" of {sensor.equipment_name or 'equipment'}; trigger {trigger.trigger_number}."
            ),
            opened_at=from_us(o.opened_us),
            requested_at=from_us(requested_us),
            evidence=_evidence(o),
            forecast=forecast,
            subject="gateway" if gateway is not None else "equipment",
            gateway_id=gateway,
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
