"""Value types of trigger evaluation (pure, no I/O).

The directory builds :class:`SensorInfo` and :class:`TriggerSpec` from the
database; the service turns each scored row into a :class:`ScoredReading`; the
evaluator answers with :class:`Opened` and :class:`Cleared` transitions of
incidents, which the service persists and turns into Kafka events.

Times are integer microseconds since the Unix epoch (UTC), like the Kafka
records; ``*_us`` names say so.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, TypeAlias

from triggers.conditions import Condition

__all__ = [
    "INCIDENT_NAMESPACE",
    "Cleared",
    "Evidence",
    "Forecast",
    "Opened",
    "ScoredReading",
    "SensorInfo",
    "Transition",
    "TriggerSpec",
    "incident_key",
]

# Namespace of incident keys (uuid5): the same incident always gets the same key,
# which is also the idempotency key of its work-order request.
INCIDENT_NAMESPACE: Final = uuid.UUID("6f1c1f3e-51b7-4b57-9a0e-7c4d0f0b7a11")


def incident_key(trigger_id: str, sensor_id: str, opened_us: int) -> str:
    """The stable key of the incident of (trigger, sensor) that opened at `opened_us`."""
    return str(uuid.uuid5(INCIDENT_NAMESPACE, f"{trigger_id}/{sensor_id}/{opened_us}"))


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """What evaluation needs of an ``equipment_sensors`` row and its equipment."""

    sensor_id: str
    company_id: str
    customer_equipment_id: str
    sensor_number: str
    sensor_type: str
    sampling_interval_seconds: int
    alert_threshold_min: float | None
    alert_threshold_max: float | None
    unit: str | None
    status: str  # sensor_status; "maintenance" opens no incident
    equipment_name: str = ""
    last_service_date: dt.date | None = None
    install_date: dt.date | None = None


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """An active ``automated_service_triggers`` row whose conditions parsed."""

    trigger_id: str
    company_id: str
    trigger_number: str
    trigger_name: str
    sensor_id: str | None  # None: every sensor of the company
    condition_type: str
    condition: Condition
    auto_create_work_order: bool = False
    work_order_template_id: str | None = None
    priority_level: str = "normal"
    notify_customer: bool = False
    notify_technician: bool = False
    notification_template: str | None = None


class ScoredReading(NamedTuple):
    """One row of a ``sensor.readings.scored`` record.

    A ``missing`` event (the sensor went silent) has ``value`` None and
    ``anomaly_type`` "missing"; ``ts_us`` is when the silence was established.
    A named tuple, not a frozen dataclass: the service builds one per reading, and a
    frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) was an
    eighth of the trigger process's time.
    """

    sensor_id: str
    ts_us: int
    value: float | None
    anomaly_score: float
    is_anomaly: bool
    anomaly_type: str | None
    received_us: int = 0


@dataclass(frozen=True, slots=True)
class Evidence:
    """A reading behind an incident; (sensor_id, ts_us) is its key in ``sensor_readings``."""

    sensor_id: str
    ts_us: int
    value: float | None
    anomaly_score: float
    anomaly_type: str | None


@dataclass(frozen=True, slots=True)
class Forecast:
    """A predicted crossing of an alert threshold (``maintenance_due``)."""

    crossing_us: int  # when the trend reaches the threshold
    threshold: float
    bound: Literal["max", "min"]
    slope_per_hour: float
    confidence: float  # 0..100
    severity: Literal["low", "medium", "high", "critical"]
    recommended_action: Literal["monitor", "schedule_maintenance", "immediate_service", "replace"]


@dataclass(frozen=True, slots=True)
class Opened:
    """An incident opened: the condition holds for (trigger, sensor)."""

    key: str  # incident_key(trigger_id, sensor_id, opened_us)
    trigger_id: str
    sensor_id: str
    opened_us: int  # event time of the reading that made the condition hold
    historical: bool  # older than the backfill horizon: recorded, no work order
    summary: str  # one line a dispatcher reads, e.g. "value above 90.0 for 300 s (max 97.2)"
    evidence: tuple[Evidence, ...]
    forecast: Forecast | None = None
    silent_since_us: int | None = None  # a silence (pattern "missing"): its last delivery


@dataclass(frozen=True, slots=True)
class Cleared:
    """An incident closed: the condition cleared, or its work order was resolved."""

    key: str
    trigger_id: str
    sensor_id: str
    cleared_us: int
    reason: Literal["condition_cleared", "work_order_resolved", "trigger_removed"]


Transition: TypeAlias = Opened | Cleared  # `type X = ...` needs Python 3.12
