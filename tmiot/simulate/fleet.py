"""Register a simulated fleet in the database: company, customer, equipment, sensors.

Registration is idempotent for a company name and seed: the company of that name
is reused, and only the sensors (``device_id`` ``sim-<seed>-<n>``) and pieces of
equipment it does not have yet are inserted. Concurrent registrations of the same
company name are serialised by an advisory lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
import structlog

from tmiot.config import DatabaseSettings
from tmiot.db import conninfo
from tmiot.errors import DatabaseError
from tmiot.simulate.signals import PROFILES, SensorType, SignalBank, SignalProfile

__all__ = ["Fleet", "SimSensor", "device_id", "load_fleet", "register_fleet", "sensor_types"]

log = structlog.get_logger(__name__)

SENSORS_PER_EQUIPMENT: Final = 10
_SENSOR_TYPES: Final = tuple(SensorType)
_PROTOCOLS: Final = ("wifi", "zigbee", "lora", "cellular", "ethernet", "bluetooth")
_EQUIPMENT_TYPES: Final = ("rooftop unit", "boiler", "chiller", "air handler", "heat pump")

Conn = psycopg.Connection[tuple[Any, ...]]

# The schema's BEFORE INSERT trigger takes a number per row from one counter
# row; 100,000 rows in one transaction then update that row 100,000 times and
# take minutes. We reserve the whole block in one update instead and format
# the numbers as tmiot_next_number() does, so both ways share one sequence.
_INSERT_SENSORS: Final = """
WITH block AS (
    INSERT INTO number_counters AS c (prefix, period, last_value)
    VALUES ('SENS', 0, %(n)s)
    ON CONFLICT ON CONSTRAINT number_counters_pkey
    DO UPDATE SET last_value = c.last_value + %(n)s
    RETURNING c.last_value - %(n)s AS base
)
INSERT INTO equipment_sensors (
    customer_equipment_id, sensor_number, sensor_type, manufacturer, model, serial_number,
    communication_protocol, device_id, sampling_interval_seconds,
    alert_threshold_min, alert_threshold_max, unit_of_measure, status
)
SELECT
    u.equipment,
    'SENS-' || lpad((b.base + u.ord)::text, greatest(3, length((b.base + u.ord)::text)), '0'),
    u.kind::sensor_type, 'TradesMate Sim', u.kind || '-sim-1', u.serial,
    u.protocol::communication_protocol, u.device, u.interval,
    u.lo, u.hi, u.unit, 'active'
FROM block AS b,
    unnest(
        %(equipment)s::uuid[], %(kind)s::text[], %(serial)s::text[], %(protocol)s::text[],
        %(device)s::text[], %(interval)s::int[], %(lo)s::numeric[], %(hi)s::numeric[],
        %(unit)s::text[]
    ) WITH ORDINALITY AS u(equipment, kind, serial, protocol, device, interval, lo, hi, unit, ord)
RETURNING id::text, device_id, sensor_number, sensor_type::text
"""

_SELECT_SENSORS: Final = """
SELECT s.id::text, s.device_id, s.sensor_number, s.sensor_type::text
FROM equipment_sensors AS s
JOIN customer_equipment AS ce ON ce.id = s.customer_equipment_id
WHERE ce.company_id = %s AND s.device_id LIKE %s
"""


@dataclass(frozen=True, slots=True)
class SimSensor:
    """One registered simulated sensor; ``index`` is its place in the fleet's signal bank."""

    index: int
    sensor_id: str
    device_id: str
    sensor_number: str
    sensor_type: SensorType
    profile: SignalProfile


@dataclass(frozen=True, slots=True)
class Fleet:
    """A registered fleet: the tenant and its sensors, ordered by index."""

    company_id: str
    seed: int
    sensors: tuple[SimSensor, ...]

    def bank(self, origin: datetime) -> SignalBank:
        """The sensors' signals (sensor ``i`` is bank index ``i``); wear starts at origin."""
        return SignalBank.build([s.profile for s in self.sensors], seed=self.seed, origin=origin)


def device_id(seed: int, index: int) -> str:
    """The device id of the ``index``-th simulated sensor of a seed.

    >>> device_id(7, 12)
    'sim-7-12'
    """
    return f"sim-{seed}-{index}"


def sensor_types(indices: Iterable[int]) -> list[SensorType]:
    """The sensor type of each simulated sensor index: the types in turn.

    >>> [t.value for t in sensor_types(range(2))]
    ['temperature', 'pressure']
    """
    return [_SENSOR_TYPES[i % len(_SENSOR_TYPES)] for i in indices]


def _index_of(seed: int, device: str) -> int | None:
    prefix = f"sim-{seed}-"
    rest = device.removeprefix(prefix)
    return int(rest) if device.startswith(prefix) and rest.isdigit() else None


def register_fleet(db: DatabaseSettings, *, sensors: int, seed: int, company_name: str) -> Fleet:
    """Insert (or find) a company with ``sensors`` simulated sensors; idempotent.

    Raises:
        DatabaseError: the database is unreachable (retriable) or refused a statement.
    """
    if sensors < 0:
        msg = f"sensors must be >= 0, not {sensors}"
        raise ValueError(msg)
    try:
        with psycopg.connect(conninfo(db, application_name="tmiot-simulate")) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (company_name,))
                company = _company(conn, company_name)
                customer = _one(
                    conn,
                    "SELECT id::text FROM customers WHERE company_id = %s AND name = %s",
                    "INSERT INTO customers (company_id, name) VALUES (%s, %s) RETURNING id::text",
                    (company, f"Simulated customer {seed}"),
                )
                existing = _existing(conn, company, seed)
                missing = [i for i in range(sensors) if i not in existing]
                equipment = _equipment(conn, company, customer, seed, sensors)
                created = _insert_sensors(conn, seed, missing, equipment)
            rows = {**existing, **created}
    except psycopg.OperationalError as exc:
        msg = f"cannot reach PostgreSQL to register the fleet: {exc}"
        raise DatabaseError(msg, retriable=True) from exc
    except psycopg.Error as exc:
        msg = f"registering the fleet failed: {exc}"
        raise DatabaseError(msg) from exc
    log.info("fleet registered", company_id=company, sensors=sensors, created=len(created))
    return _fleet(company, seed, {i: rows[i] for i in range(sensors)})


def load_fleet(db: DatabaseSettings, *, seed: int, company_name: str) -> Fleet:
    """Read a fleet registered earlier, without inserting anything.

    Raises:
        DatabaseError: no company of that name, or the database failed.
    """
    try:
        with psycopg.connect(conninfo(db, application_name="tmiot-simulate")) as conn:
            row = conn.execute(
                "SELECT id::text FROM companies WHERE name = %s ORDER BY created_at, id LIMIT 1",
                (company_name,),
            ).fetchone()
            if row is None:
                msg = f"no company named {company_name!r}: register the fleet first"
                raise DatabaseError(msg)
            company = str(row[0])
            rows = _existing(conn, company, seed)
    except psycopg.OperationalError as exc:
        msg = f"cannot reach PostgreSQL to load the fleet: {exc}"
        raise DatabaseError(msg, retriable=True) from exc
    except psycopg.Error as exc:
        msg = f"loading the fleet failed: {exc}"
        raise DatabaseError(msg) from exc
    # Indices must be 0..n-1 to address the signal bank; keep the leading run.
    n = next(i for i in itertools.count() if i not in rows)
    return _fleet(company, seed, {i: rows[i] for i in range(n)})


_Row = tuple[str, str, str, str]  # id, device_id, sensor_number, sensor_type


def _fleet(company: str, seed: int, rows: dict[int, _Row]) -> Fleet:
    sensors = []
    for i in sorted(rows):
        sensor_id, device, number, kind = rows[i]
        sensor_type = SensorType(kind)
        sensors.append(SimSensor(i, sensor_id, device, number, sensor_type, PROFILES[sensor_type]))
    return Fleet(company_id=company, seed=seed, sensors=tuple(sensors))


def _one(conn: Conn, select: str, insert: str, params: tuple[str, ...]) -> str:
    row = conn.execute(select, params).fetchone() or conn.execute(insert, params).fetchone()
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns a row
        msg = "insert returned no row"
        raise DatabaseError(msg)
    return str(row[0])


def _company(conn: Conn, name: str) -> str:
    return _one(
        conn,
        "SELECT id::text FROM companies WHERE name = %s ORDER BY created_at, id LIMIT 1",
        "INSERT INTO companies (name) VALUES (%s) RETURNING id::text",
        (name,),
    )


def _existing(conn: Conn, company: str, seed: int) -> dict[int, _Row]:
    found: dict[int, _Row] = {}
    for sensor_id, device, number, kind in conn.execute(
        _SELECT_SENSORS, (company, f"sim-{seed}-%")
    ):
        index = _index_of(seed, str(device))
        if index is not None:
            found[index] = (str(sensor_id), str(device), str(number), str(kind))
    return found


def _equipment(conn: Conn, company: str, customer: str, seed: int, sensors: int) -> list[str]:
    """Ids of the fleet's equipment, one per SENSORS_PER_EQUIPMENT sensors, created if missing."""
    names = [f"Sim {seed} unit {j}" for j in range(-(-sensors // SENSORS_PER_EQUIPMENT))]
    have: dict[str, str] = dict(
        conn.execute(
            "SELECT name, id::text FROM customer_equipment"
            " WHERE company_id = %s AND customer_id = %s AND name = ANY(%s)",
            (company, customer, names),
        ).fetchall()
    )
    todo = [j for j, name in enumerate(names) if name not in have]
    if todo:
        created = conn.execute(
            "INSERT INTO customer_equipment"
            " (company_id, customer_id, name, equipment_type, manufacturer, model, serial_number)"
            " SELECT %s, %s, u.name, u.kind, 'TradesMate Sim', 'SIM-1', u.name"
            " FROM unnest(%s::text[], %s::text[]) AS u(name, kind)"
            " RETURNING name, id::text",
            (
                company,
                customer,
                [names[j] for j in todo],
                [_EQUIPMENT_TYPES[(seed + j) % len(_EQUIPMENT_TYPES)] for j in todo],
            ),
        ).fetchall()
        have.update(dict(created))
    return [str(have[name]) for name in names]


def _insert_sensors(
    conn: Conn, seed: int, indices: Sequence[int], equipment: Sequence[str]
) -> dict[int, _Row]:
    if not indices:
        return {}
    kinds = sensor_types(indices)
    profiles = [PROFILES[k] for k in kinds]
    params = {
        "n": len(indices),
        "equipment": [equipment[i // SENSORS_PER_EQUIPMENT] for i in indices],
        "kind": [k.value for k in kinds],
        "serial": [f"SIM{seed}-{i:06d}" for i in indices],
        "protocol": [
            _PROTOCOLS[(seed + i // SENSORS_PER_EQUIPMENT) % len(_PROTOCOLS)] for i in indices
        ],
        "device": [device_id(seed, i) for i in indices],
        "interval": [p.sampling_interval_seconds for p in profiles],
        "lo": [p.alert_threshold_min for p in profiles],
        "hi": [p.alert_threshold_max for p in profiles],
        "unit": [p.unit_of_measure for p in profiles],
    }
    created: dict[int, _Row] = {}
    for sensor_id, device, number, kind in conn.execute(_INSERT_SENSORS, params):
        index = _index_of(seed, str(device))
        if index is not None:
            created[index] = (str(sensor_id), str(device), str(number), str(kind))
    return created
