"""The PGlite TimescaleDB test server answers like TimescaleDB over the wire protocol."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

pytestmark = pytest.mark.timescaledb


@pytest.fixture
def conn(timescaledb_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(timescaledb_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        yield conn


def test_timescaledb_extension_is_2_23(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    assert row is not None
    assert str(row[0]).startswith("2.23")


def test_hypertable_with_composite_key(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        "CREATE TABLE probe_readings (sensor_id uuid NOT NULL, ts timestamptz NOT NULL,"
        " value double precision, PRIMARY KEY (sensor_id, ts))"
    )
    conn.execute("SELECT create_hypertable('probe_readings', by_range('ts'))")
    row = conn.execute(
        "SELECT count(*) FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = 'probe_readings'"
    ).fetchone()
    assert row == (1,)


def test_parameterised_insert_and_select(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        "CREATE TABLE probe_params (sensor_id uuid NOT NULL, ts timestamptz NOT NULL,"
        " value double precision)"
    )
    conn.execute("SELECT create_hypertable('probe_params', by_range('ts'))")
    sensor = uuid.uuid4()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [(sensor, start + timedelta(hours=i), float(i)) for i in range(48)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO probe_params VALUES (%s, %s, %s)", rows)
    got = conn.execute(
        "SELECT time_bucket('1 day', ts) AS day, sum(value) FROM probe_params"
        " WHERE sensor_id = %s GROUP BY day ORDER BY day",
        (sensor,),
    ).fetchall()
    assert got == [
        (start, float(sum(range(24)))),
        (start + timedelta(days=1), float(sum(range(24, 48)))),
    ]


def test_next_connection_gets_a_clean_session(timescaledb_dsn: str) -> None:
    """One PGlite session serves every client: the server resets it between them."""
    with psycopg.connect(timescaledb_dsn) as first:
        first.execute("CREATE TEMP TABLE probe_temp (a int)")
        for i in range(6):  # psycopg prepares a query on its 5th run, as _pg3_0
            first.execute("SELECT %s::int", (i,))
        # Closed with the transaction open: a real backend would roll it back.
        first.execute("CREATE TABLE probe_uncommitted (a int)")
        first.close()
    with psycopg.connect(timescaledb_dsn) as second:
        assert second.execute("SELECT to_regclass('probe_uncommitted')").fetchone() == (None,)
        assert second.execute("SELECT to_regclass('probe_temp')").fetchone() == (None,)
        for i in range(6):
            assert second.execute("SELECT %s::int", (i,)).fetchone() == (i,)
