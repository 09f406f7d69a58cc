"""schema.sql on plain PostgreSQL: complete, idempotent, and enforcing the seed."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import psycopg
import pytest

from tests.seed_phase4 import PHASE4_COLUMNS, PHASE4_ENUMS, PHASE4_FOREIGN_KEYS, PHASE4_UNIQUE
from tmiot.config import DatabaseSettings
from tmiot.db import apply_schema, conninfo

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn(schema_database: DatabaseSettings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(conninfo(schema_database), autocommit=True) as c:
        yield c


def _columns(conn: psycopg.Connection[tuple[object, ...]], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_schema_applies_twice(fresh_database: DatabaseSettings) -> None:
    first = apply_schema(fresh_database)
    second = apply_schema(fresh_database)
    assert first.missing_tables == ()
    assert second.tables == first.tables
    assert second.timescaledb_version is None
    assert second.hypertables == ()


def test_every_phase4_table_has_every_seed_column(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    for table, seed_columns in PHASE4_COLUMNS.items():
        missing = set(seed_columns) - _columns(conn, table)
        assert not missing, f"{table} lacks {sorted(missing)}"


def test_enums_carry_the_seed_labels_in_order(
    conn: psycopg.Connection[tuple[object, ...]],
) -> None:
    for (table, column), labels in PHASE4_ENUMS.items():
        row = conn.execute(
            "SELECT udt_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s",
            (table, column),
        ).fetchone()
        assert row is not None, f"{table}.{column} missing"
        got = conn.execute(
            "SELECT array_agg(enumlabel ORDER BY enumsortorder)::text[] FROM pg_enum"
            " WHERE enumtypid = %s::regtype",
            (row[0],),
        ).fetchone()
        assert got is not None
        assert tuple(got[0]) == labels, f"{table}.{column}"  # type: ignore[arg-type]


def test_unique_and_foreign_keys_of_the_seed(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    unique = {
        (str(t), str(c))
        for t, c in conn.execute(
            """
            SELECT tc.table_name, kcu.column_name
            FROM information_schema.table_constraints tc
            JOIN information_schema.key_column_usage kcu
              USING (constraint_schema, constraint_name, table_name)
            WHERE tc.constraint_type = 'UNIQUE' AND tc.table_schema = current_schema()
            """
        )
    }
    assert set(PHASE4_UNIQUE) <= unique
    fks = {
        (str(t), str(c)): str(r)
        for t, c, r in conn.execute(
            """
            SELECT cl.relname, a.attname, ref.relname
            FROM pg_constraint con
            JOIN pg_class cl ON cl.oid = con.conrelid
            JOIN pg_class ref ON ref.oid = con.confrelid
            JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
            WHERE con.contype = 'f'
            """
        )
    }
    for key, target in PHASE4_FOREIGN_KEYS.items():
        assert fks.get(key) == target, key


def _tenant(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[object, object]:
    company = conn.execute("INSERT INTO companies (name) VALUES ('Acme') RETURNING id").fetchone()
    assert company is not None
    customer = conn.execute(
        "INSERT INTO customers (company_id, name) VALUES (%s, 'Cust') RETURNING id", (company[0],)
    ).fetchone()
    assert customer is not None
    equipment = conn.execute(
        "INSERT INTO customer_equipment (company_id, customer_id, name)"
        " VALUES (%s, %s, 'Chiller 1') RETURNING id",
        (company[0], customer[0]),
    ).fetchone()
    assert equipment is not None
    return company[0], equipment[0]


def test_numbers_are_generated_on_insert(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    company, equipment = _tenant(conn)
    sensors = conn.execute(
        "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type)"
        " VALUES (%s, 'temperature'), (%s, 'vibration') RETURNING sensor_number",
        (equipment, equipment),
    ).fetchall()
    assert [r[0] for r in sensors] == ["SENS-001", "SENS-002"]
    year = dt.datetime.now(dt.UTC).year
    trig = conn.execute(
        "INSERT INTO automated_service_triggers (company_id, trigger_name, condition_type)"
        " VALUES (%s, 'hot', 'threshold_exceeded') RETURNING trigger_number",
        (company,),
    ).fetchone()
    assert trig == (f"AST-{year}-001",)
    audit = conn.execute(
        "INSERT INTO security_audit_logs (company_id, event_type, risk_score)"
        " VALUES (%s, 'security_violation', 80) RETURNING audit_number",
        (company,),
    ).fetchone()
    assert audit == (f"SEC-{year}-001",)
    given = conn.execute(
        "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, sensor_number)"
        " VALUES (%s, 'flow', 'CUSTOM-9') RETURNING sensor_number",
        (equipment,),
    ).fetchone()
    assert given == ("CUSTOM-9",)


def test_number_width_grows_past_999(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("INSERT INTO number_counters VALUES ('SENS', 0, 999)")
    assert conn.execute("SELECT tmiot_next_number('SENS', false)").fetchone() == ("SENS-1000",)


def test_seed_constraints_are_enforced(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    company, equipment = _tenant(conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO security_audit_logs (company_id, event_type, risk_score)"
            " VALUES (%s, 'data_access', 101)",
            (company,),
        )
    conn.execute(
        "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, sensor_number)"
        " VALUES (%s, 'flow', 'DUP-1')",
        (equipment,),
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, sensor_number)"
            " VALUES (%s, 'flow', 'DUP-1')",
            (equipment,),
        )
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        conn.execute(
            "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type)"
            " VALUES (%s, 'sonar')",
            (equipment,),
        )
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute(
            "INSERT INTO sensor_readings (sensor_id, reading_timestamp, value)"
            " VALUES (gen_random_uuid(), now(), 1)"
        )


def test_readings_key_makes_replays_no_ops(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    _, equipment = _tenant(conn)
    sensor = conn.execute(
        "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type)"
        " VALUES (%s, 'pressure') RETURNING id",
        (equipment,),
    ).fetchone()
    assert sensor is not None
    insert = (
        "INSERT INTO sensor_readings (sensor_id, reading_timestamp, value, is_anomaly)"
        " VALUES (%s, '2026-01-01T00:00:00Z', 1.5, true), (%s, '2026-01-01T00:05:00Z', 2.5, false)"
        " ON CONFLICT DO NOTHING"
    )
    first = conn.execute(insert, (sensor[0], sensor[0]))
    second = conn.execute(insert, (sensor[0], sensor[0]))
    assert (first.rowcount, second.rowcount) == (2, 0)
    hourly = conn.execute(
        "SELECT reading_count, anomaly_count, min_value, max_value FROM sensor_readings_hourly"
    ).fetchall()
    assert [tuple(map(float, r)) for r in hourly] == [(2.0, 1.0, 1.5, 2.5)]  # type: ignore[arg-type]


def test_updated_at_is_maintained(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    company, _ = _tenant(conn)
    before = conn.execute(
        "UPDATE companies SET updated_at = '2000-01-01' WHERE id = %s RETURNING updated_at",
        (company,),
    ).fetchone()
    assert before is not None
    assert before[0].year > 2000  # type: ignore[attr-defined]


def test_hot_query_indexes_exist(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    names = {str(r[0]) for r in conn.execute("SELECT indexname FROM pg_indexes")}
    for index in (
        "equipment_sensors_device_id_idx",
        "sensor_readings_anomalies_idx",
        "automated_service_triggers_active_idx",
        "sensor_readings_time_brin_idx",
    ):
        assert index in names


def test_schema_sql_has_no_string_interpolated_identifiers_outside_format() -> None:
    from tmiot.db import schema_text

    # Dynamic SQL in the schema goes through format() with %I / %L only.
    for line in schema_text().splitlines():
        assert not re.search(r"EXECUTE\s+'[^']*'\s*\|\|", line), line
