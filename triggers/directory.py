"""The active triggers and the sensors they watch, loaded from the database.

Reloaded every ``refresh_seconds`` by the service (one query for the triggers,
one for their sensors), so a trigger created, changed or deactivated applies
without a restart. A trigger whose conditions or template do not validate, or
that names another company's sensor or job template, is skipped with a logged
reason; every trigger version (its ``updated_at``) seen for the first time, and
every rejection, is written once to ``security_audit_logs``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from triggers.conditions import InvalidCondition, parse_condition
from triggers.model import SensorInfo, TriggerSpec
from triggers.templates import TemplateRejected, validate_template

__all__ = ["Directory", "Rejection", "audit_changes", "load_directory"]

log = structlog.get_logger(__name__)

_CHUNK: Final = 5000  # sensors built between two yields to the event loop

# trigger_conditions as text, parsed by pydantic (whose JSON parser stops at a depth of
# 200): psycopg's json.loads of a jsonb nested 1,000 deep raised RecursionError out of
# the load, and one tenant's trigger stopped every tenant's triggers.
_TRIGGERS: Final = """
SELECT t.id::text AS id, t.company_id::text AS company_id, t.trigger_number, t.trigger_name,
       t.sensor_id::text AS sensor_id, t.condition_type::text AS condition_type,
       t.trigger_conditions::text AS trigger_conditions, t.auto_create_work_order,
       t.work_order_template_id::text AS template_id, t.priority_level::text AS priority_level,
       t.notify_customer, t.notify_technician, t.notification_template, t.updated_at,
       ce.company_id::text AS sensor_company, jt.company_id::text AS template_company
FROM automated_service_triggers AS t
LEFT JOIN equipment_sensors AS s ON s.id = t.sensor_id
LEFT JOIN customer_equipment AS ce ON ce.id = s.customer_equipment_id
LEFT JOIN job_templates AS jt ON jt.id = t.work_order_template_id
WHERE t.is_active OR %(inactive_too)s
"""

# The active triggers' versions only: when they are the ones already loaded, a refresh
# stops here (10,000 full rows with their conditions took 0.3 s to load every 5 s).
_VERSIONS: Final = "SELECT id::text, updated_at FROM automated_service_triggers WHERE is_active"

_SENSORS: Final = """
SELECT s.id::text, ce.company_id::text, s.customer_equipment_id::text, s.sensor_number,
       s.sensor_type::text, s.sampling_interval_seconds, s.alert_threshold_min::float8,
       s.alert_threshold_max::float8, s.unit_of_measure, s.status::text, ce.name,
       ce.last_service_date, ce.install_date
FROM equipment_sensors AS s
JOIN customer_equipment AS ce ON ce.id = s.customer_equipment_id
WHERE s.id = ANY(%(sensors)s::uuid[]) OR ce.company_id = ANY(%(companies)s::uuid[])
"""

# One row per trigger version never audited before (any process may have written it).
_AUDIT: Final = """
INSERT INTO security_audit_logs (
    company_id, event_type, severity, resource_type, resource_id, action_attempted,
    success, failure_reason, additional_data, risk_score
)
SELECT v.company_id, 'configuration_change', v.severity::audit_severity,
       'automated_service_trigger', v.resource_id, v.action, v.success, v.reason, v.data, v.risk
FROM unnest(%(company)s::uuid[], %(severity)s::text[], %(resource)s::text[], %(action)s::text[],
            %(success)s::bool[], %(reason)s::text[], %(data)s::jsonb[], %(risk)s::int[])
     AS v(company_id, severity, resource_id, action, success, reason, data, risk)
WHERE NOT EXISTS (
    SELECT 1 FROM security_audit_logs AS a
    WHERE a.resource_type = 'automated_service_trigger' AND a.resource_id = v.resource_id
      AND a.additional_data ->> 'version' = v.data ->> 'version'
      AND a.action_attempted = v.action
)
"""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A trigger skipped because its configuration is invalid or crosses tenants."""

    trigger_id: str
    company_id: str
    trigger_number: str
    version: str
    reason: str


@dataclass(slots=True)
class Directory:
    """Active, valid triggers; the sensors they apply to; and what was rejected."""

    triggers: dict[str, TriggerSpec] = field(default_factory=dict)
    sensors: dict[str, SensorInfo] = field(default_factory=dict)
    by_sensor: dict[str, tuple[TriggerSpec, ...]] = field(default_factory=dict)
    rejected: dict[str, Rejection] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # trigger id -> updated_at
    fleets: frozenset[str] = frozenset()  # companies with a fleet-wide trigger

    def for_sensor(self, sensor_id: str) -> tuple[TriggerSpec, ...]:
        """The triggers that watch a sensor (its own ones and its company's fleet-wide ones)."""
        return self.by_sensor.get(sensor_id, ())


def _spec(row: dict[str, Any]) -> TriggerSpec | str:
    """The trigger of a row, or why it is rejected."""
    if row["sensor_id"] is not None and row["sensor_company"] != row["company_id"]:
        return "tenant_mismatch: the sensor belongs to another company"
    if row["template_id"] is not None and row["template_company"] != row["company_id"]:
        return "tenant_mismatch: the job template belongs to another company"
    try:
        condition = parse_condition(row["condition_type"], row["trigger_conditions"])
    except InvalidCondition as exc:
        return f"invalid_conditions: {exc.reason}"
    if row["notification_template"] is not None:
        try:
            validate_template(row["notification_template"])
        except TemplateRejected as exc:
            return f"invalid_template: {exc.reason}"
    return TriggerSpec(
        trigger_id=row["id"],
        company_id=row["company_id"],
        trigger_number=row["trigger_number"],
        trigger_name=row["trigger_name"],
        sensor_id=row["sensor_id"],
        condition_type=row["condition_type"],
        condition=condition,
        auto_create_work_order=row["auto_create_work_order"],
        work_order_template_id=row["template_id"],
        priority_level=row["priority_level"],
        notify_customer=row["notify_customer"],
        notify_technician=row["notify_technician"],
        notification_template=row["notification_template"],
    )


async def load_directory(
    conn: psycopg.AsyncConnection[Any],
    previous: Directory | None = None,
    *,
    reload_sensors: bool = True,
    include_inactive: bool = False,
) -> Directory:
    """Load every active trigger (every one with `include_inactive`) and its sensors.

    With `previous`, nothing is reloaded when no active trigger changed (unless
    `reload_sensors`: sensors, and the tenant checks that join them, are reloaded
    then); else a trigger version already parsed is reused, and the sensors
    are reused too unless `reload_sensors` or the triggers now watch sensors
    (or fleets) that `previous` did not load: a 100,000-sensor fleet is then one
    cheap query per refresh instead of two large ones.
    """
    if previous is not None and not reload_sensors and await _unchanged(conn, previous):
        return previous
    directory = Directory()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_TRIGGERS, {"inactive_too": include_inactive})
        while rows := await cur.fetchmany(_CHUNK // 5):  # 10,000 triggers took 0.3 s
            await asyncio.sleep(0)
            _parse(rows, previous, directory)
    named = {t.sensor_id for t in directory.triggers.values() if t.sensor_id}
    fleet = {t.company_id for t in directory.triggers.values() if t.sensor_id is None}
    directory.fleets = frozenset(fleet)
    reuse = (
        previous is not None
        and not reload_sensors
        and fleet <= previous.fleets
        and all(s in previous.sensors for s in named)
    )
    if reuse and previous is not None:
        directory.sensors = previous.sensors
        if directory.versions == previous.versions:
            directory.by_sensor = previous.by_sensor
            return directory
    else:
        directory.sensors = await _sensors(conn, sorted(named), sorted(fleet))
    by_sensor: dict[str, list[TriggerSpec]] = {}
    by_company: dict[str, list[TriggerSpec]] = {}
    for spec in directory.triggers.values():
        if spec.sensor_id is not None:
            by_sensor.setdefault(spec.sensor_id, []).append(spec)
        else:
            by_company.setdefault(spec.company_id, []).append(spec)
    for i, sensor in enumerate(directory.sensors.values()):
        if i % _CHUNK == _CHUNK - 1:
            await asyncio.sleep(0)
        mine = by_sensor.get(sensor.sensor_id, []) + by_company.get(sensor.company_id, [])
        if mine:
            directory.by_sensor[sensor.sensor_id] = tuple(mine)
    return directory


async def _unchanged(conn: psycopg.AsyncConnection[Any], previous: Directory) -> bool:
    """True when the active triggers are exactly the versions `previous` loaded."""
    async with conn.cursor() as cur:
        await cur.execute(_VERSIONS)
        versions = {r[0]: _version(r[1]) for r in await cur.fetchall()}
    return versions == previous.versions


_AuditRow: TypeAlias = tuple[str, str, str, str, bool, str | None, dict[str, object], int]


def _parse(rows: list[dict[str, Any]], previous: Directory | None, directory: Directory) -> None:
    """Fill `directory` with the rows' triggers, reusing versions `previous` parsed."""
    for row in rows:
        trigger_id = row["id"]
        version = _version(row["updated_at"])
        directory.versions[trigger_id] = version
        if previous is not None and previous.versions.get(trigger_id) == version:
            if trigger_id in previous.triggers:
                directory.triggers[trigger_id] = previous.triggers[trigger_id]
                continue
            if trigger_id in previous.rejected:
                directory.rejected[trigger_id] = previous.rejected[trigger_id]
                continue
        try:
            spec = _spec(row)
        except Exception as exc:  # one trigger never stops the others from loading
            log.exception("trigger could not be parsed", trigger_id=trigger_id)
            spec = f"invalid: {type(exc).__name__}"
        if isinstance(spec, str):
            directory.rejected[trigger_id] = Rejection(
                trigger_id, row["company_id"], row["trigger_number"], version, spec
            )
        else:
            directory.triggers[spec.trigger_id] = spec


async def _sensors(
    conn: psycopg.AsyncConnection[Any], named: list[str], fleet: list[str]
) -> dict[str, SensorInfo]:
    sensors: dict[str, SensorInfo] = {}
    async with conn.cursor() as cur:
        await cur.execute(_SENSORS, {"sensors": named, "companies": fleet})
        # In chunks, yielding between them: building 100,000 sensors at once held the
        # event loop (and the scored stream) for a second.
        while rows := await cur.fetchmany(_CHUNK):
            await asyncio.sleep(0)
            for r in rows:
                sensors[r[0]] = SensorInfo(
                    sensor_id=r[0],
                    company_id=r[1],
                    customer_equipment_id=r[2],
                    sensor_number=r[3],
                    sensor_type=r[4],
                    sampling_interval_seconds=r[5],
                    alert_threshold_min=r[6],
                    alert_threshold_max=r[7],
                    unit=r[8],
                    status=r[9],
                    equipment_name=r[10] or "",
                    last_service_date=r[11],
                    install_date=r[12],
                )
    return sensors


def _version(updated_at: dt.datetime) -> str:
    return updated_at.isoformat()


async def audit_changes(
    conn: psycopg.AsyncConnection[Any],
    before: Directory | None,
    after: Directory,
    audited: set[tuple[str, str, str]],
) -> int:
    """Audit trigger versions not seen before, rejections and deactivations; rows written.

    `audited` remembers (trigger, version, action) already handled by this process,
    so a steady configuration costs no query; the INSERT skips versions another
    process already audited.
    """
    rows: list[_AuditRow] = []
    for trigger_id, version in after.versions.items():
        rejection = after.rejected.get(trigger_id)
        action = "trigger_rejected" if rejection else "trigger_active"
        if (trigger_id, version, action) in audited:
            continue
        audited.add((trigger_id, version, action))
        if rejection is not None:
            log.warning(
                "trigger rejected",
                trigger=rejection.trigger_number,
                trigger_id=trigger_id,
                reason=rejection.reason,
            )
            data: dict[str, object] = {
                "version": version,
                "trigger_number": rejection.trigger_number,
            }
            rows.append(
                (
                    rejection.company_id,
                    "warning",
                    trigger_id,
                    action,
                    False,
                    rejection.reason,
                    data,
                    20,
                )
            )
        else:
            spec = after.triggers[trigger_id]
            data = {
                "version": version,
                "trigger_number": spec.trigger_number,
                "condition_type": spec.condition_type,
                "sensor_id": spec.sensor_id,
            }
            rows.append((spec.company_id, "info", trigger_id, action, True, None, data, 0))
    if before is not None:
        for trigger_id in before.versions.keys() - after.versions.keys():
            gone = before.triggers.get(trigger_id)
            company = gone.company_id if gone else before.rejected[trigger_id].company_id
            version = before.versions[trigger_id]
            if (trigger_id, version, "trigger_inactive") in audited:
                continue
            audited.add((trigger_id, version, "trigger_inactive"))
            data = {"version": version}
            rows.append((company, "info", trigger_id, "trigger_inactive", True, None, data, 0))
    if not rows:
        return 0
    columns = list(zip(*rows, strict=True))
    async with conn.cursor() as cur:
        await cur.execute(
            _AUDIT,
            {
                "company": list(columns[0]),
                "severity": list(columns[1]),
                "resource": list(columns[2]),
                "action": list(columns[3]),
                "success": list(columns[4]),
                "reason": list(columns[5]),
                "data": [Jsonb(d) for d in columns[6]],
                "risk": list(columns[7]),
            },
        )
        written = cur.rowcount
    await conn.commit()
    return written
