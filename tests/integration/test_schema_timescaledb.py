"""schema.sql on real TimescaleDB code (2.23, PostgreSQL 17, in WASM via tools/pglite)."""

from __future__ import annotations

import psycopg
import pytest

from tests.seed_phase4 import PHASE4_COLUMNS
from tmiot.config import DatabaseSettings
from tmiot.db import apply_schema

pytestmark = pytest.mark.timescaledb


def test_schema_builds_hypertable_policies_and_continuous_aggregate(
    timescaledb_dsn: str,
) -> None:
    db = DatabaseSettings(url=timescaledb_dsn)
    first = apply_schema(db)
    second = apply_schema(db)  # idempotent on the TimescaleDB path too
    assert first.timescaledb_version is not None
    assert first.timescaledb_version.startswith("2.")
    # The server is shared by the session's TimescaleDB tests: look at ours only.
    assert "sensor_readings" in second.hypertables
    assert second.missing_tables == ()

    with psycopg.connect(timescaledb_dsn) as conn:
        hyper = conn.execute(
            "SELECT compression_enabled, num_dimensions FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = 'sensor_readings'"
        ).fetchone()
        assert hyper == (True, 1)
        dim = conn.execute(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_name = 'sensor_readings'"
        ).fetchone()
        assert dim is not None
        assert dim[0] == "reading_timestamp"
        settings = conn.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_name = 'sensor_readings' ORDER BY attname"
        ).fetchall()
        assert ("sensor_id", 1, None) in settings
        assert any(a == "reading_timestamp" and o == 1 for a, _, o in settings)

        jobs = conn.execute(
            "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs"
            # a continuous aggregate's refresh job names the aggregate's view
            " WHERE hypertable_name IN ('sensor_readings', 'sensor_readings_hourly')"
            " ORDER BY proc_name"
        ).fetchall()
        by_proc = {str(p): (str(h), c) for p, h, c in jobs}
        assert set(by_proc) == {
            "policy_compression",
            "policy_retention",
            "policy_refresh_continuous_aggregate",
        }, "each policy exactly once after two applies"
        assert len(jobs) == 3
        assert by_proc["policy_compression"][0] == "sensor_readings"
        assert by_proc["policy_retention"][0] == "sensor_readings"
        assert by_proc["policy_refresh_continuous_aggregate"][0] == "sensor_readings_hourly"
        assert by_proc["policy_retention"][1]["drop_after"] == "365 days"

        cagg = conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            " WHERE view_name = 'sensor_readings_hourly'"
        ).fetchall()
        assert cagg == [("sensor_readings_hourly", False)]

        cols = {
            str(r[0])
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'sensor_readings'"
            )
        }
        assert set(PHASE4_COLUMNS["sensor_readings"]) <= cols


def test_readings_land_in_the_hypertable_and_the_hourly_aggregate(timescaledb_dsn: str) -> None:
    db = DatabaseSettings(url=timescaledb_dsn)
    apply_schema(db)
    with psycopg.connect(timescaledb_dsn, autocommit=True) as conn:
        company = conn.execute("INSERT INTO companies (name) VALUES ('ts') RETURNING id").fetchone()
        assert company is not None
        customer = conn.execute(
            "INSERT INTO customers (company_id, name) VALUES (%s, 'c') RETURNING id", (company[0],)
        ).fetchone()
        assert customer is not None
        equipment = conn.execute(
            "INSERT INTO customer_equipment (company_id, customer_id, name)"
            " VALUES (%s, %s, 'pump') RETURNING id",
            (company[0], customer[0]),
        ).fetchone()
        assert equipment is not None
        sensor = conn.execute(
            "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type)"
            " VALUES (%s, 'pressure') RETURNING id, sensor_number",
            (equipment[0],),
        ).fetchone()
        assert sensor is not None
        assert str(sensor[1]).startswith("SENS-")
        insert = (
            "INSERT INTO sensor_readings (sensor_id, reading_timestamp, value, is_anomaly)"
            " SELECT %s, t, 10 + extract(minute FROM t), extract(minute FROM t) = 30"
            " FROM generate_series('2026-03-01 00:00+00'::timestamptz,"
            " '2026-03-01 01:59+00', '1 minute') AS t ON CONFLICT DO NOTHING"
        )
        assert conn.execute(insert, (sensor[0],)).rowcount == 120
        assert conn.execute(insert, (sensor[0],)).rowcount == 0  # replay: no duplicates
        chunks = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'sensor_readings'"
        ).fetchone()
        assert chunks == (1,)
        hourly = conn.execute(
            "SELECT bucket, reading_count, anomaly_count, min_value, max_value"
            " FROM sensor_readings_hourly WHERE sensor_id = %s ORDER BY bucket",
            (sensor[0],),
        ).fetchall()
        assert [(int(r[1]), int(r[2]), float(r[3]), float(r[4])) for r in hourly] == [
            (60, 1, 10.0, 69.0),
            (60, 1, 10.0, 69.0),
        ]
