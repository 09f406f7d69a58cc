"""Benchmark fleets: a company with a customer and one piece of equipment, sensors on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psycopg

__all__ = ["EQUIPMENT", "add_sensors", "add_threshold_triggers", "new_equipment"]

# A new company, its customer and one piece of equipment: (company_id, equipment id).
EQUIPMENT: Final = (
    "WITH c AS (INSERT INTO companies (name) VALUES ('bench') RETURNING id),"
    " cu AS (INSERT INTO customers (company_id, name) SELECT id, 'bench' FROM c"
    "        RETURNING id, company_id)"
    " INSERT INTO customer_equipment (company_id, customer_id, name)"
    " SELECT company_id, id, 'rig' FROM cu RETURNING company_id, id"
)

_SENSORS: Final = (
    "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, device_id,"
    " sampling_interval_seconds, alert_threshold_max, sensor_number)"
    " SELECT %s, %s, d, %s, %s, 'B-' || d FROM unnest(%s::text[]) AS d RETURNING id"
)


def new_equipment(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    """A new company with one customer and one piece of equipment: (company id, equipment id)."""
    row = conn.execute(EQUIPMENT).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def add_sensors(  # noqa: PLR0913 - the columns a benchmark varies
    conn: psycopg.Connection[Any],
    equipment: str,
    devices: Sequence[str],
    *,
    sensor_type: str,
    interval_seconds: int,
    threshold_max: float | None = None,
) -> list[str]:
    """One sensor per device id on `equipment`; their ids, in the devices' order."""
    cur = conn.execute(
        _SENSORS, (equipment, sensor_type, interval_seconds, threshold_max, list(devices))
    )
    return [str(r[0]) for r in cur.fetchall()]


def add_threshold_triggers(conn: psycopg.Connection[Any], devices: Sequence[str]) -> None:
    """A work-order trigger per device: its sensor's value above 90."""
    conn.execute(
        "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
        " condition_type, trigger_conditions, auto_create_work_order)"
        " SELECT ce.company_id, 'hot ' || s.device_id, s.id, 'threshold_exceeded',"
        ' \'{"above": 90, "for_seconds": 0}\', true'
        " FROM equipment_sensors AS s"
        " JOIN customer_equipment AS ce ON ce.id = s.customer_equipment_id"
        " WHERE s.device_id = ANY(%s)",
        (list(devices),),
    )
