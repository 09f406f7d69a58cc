"""The stream's readings sink on a real PostgreSQL: what a chunk stores, column by column."""

from __future__ import annotations

import psycopg

from stream.sink import ReadingsSink, _columns
from tests.fix_ingest import register_tenant
from tmiot.config import DatabaseSettings
from tmiot.db import conninfo
from tmiot.events import ScoredBatch

_T0 = 1_780_000_000_000_000  # µs


def _batch(sensors: list[str]) -> ScoredBatch:
    """Four readings: two optional columns empty throughout, the others partly filled."""
    n = 4
    return {
        "v": 1,
        "sensor_id": [sensors[i % len(sensors)] for i in range(n)],
        "company_id": [""] * n,
        "ts_us": [_T0 + i for i in range(n)],
        "value": [1.5, 2.5, 3.5, 4.5],
        "unit": ["degC", None, "degC", None],
        "quality_score": [None] * n,
        "ambient_temperature": [None, 21.25, None, None],
        "ambient_humidity": [None] * n,
        "weather_conditions": [None, None, None, "rain"],
        "received_us": [_T0] * n,
        "anomaly_score": [0.1, 0.2, 0.95, 0.3],
        "is_anomaly": [False, False, True, False],
        "anomaly_type": [None, None, "spike", None],
    }


def test_columns_of_nothing_but_nulls_go_as_one_null_array() -> None:
    cols = _columns(_batch(["a", "b"]))
    names = ("sensor_id", "ts_us", "value", "unit", "quality", "temp", "humidity", "weather")
    empty = {names[i] for i, c in enumerate(cols[: len(names)]) if c is None}
    assert empty == {"quality", "humidity"}
    assert cols[3] == ["degC", None, "degC", None]
    # The row subset of a row-by-row retry: its own columns decide.
    one = _columns(_batch(["a", "b"]), [1])
    assert one[3] is None  # unit of row 1 is None
    assert one[5] == [21.25]


async def test_a_chunk_stores_every_column_and_nulls_where_it_had_none(
    schema_database: DatabaseSettings,
) -> None:
    tenant = register_tenant(schema_database, "sink", ["d1", "d2"])
    batch = _batch(list(tenant.sensors.values()))
    async with ReadingsSink(schema_database) as sink:
        assert await sink.write(batch) == (4, [])
        assert await sink.write(batch) == (0, [])  # a replay stores nothing twice
    with psycopg.connect(conninfo(schema_database)) as conn:
        rows = conn.execute(
            "SELECT value::float8, unit, quality_score, ambient_temperature::float8,"
            " ambient_humidity, weather_conditions, is_anomaly, anomaly_score::float8,"
            " anomaly_type::text FROM sensor_readings ORDER BY reading_timestamp"
        ).fetchall()
    assert rows == [
        (1.5, "degC", None, None, None, None, False, 0.1, None),
        (2.5, None, None, 21.25, None, None, False, 0.2, None),
        (3.5, "degC", None, None, None, None, True, 0.95, "spike"),
        (4.5, None, None, None, None, "rain", False, 0.3, None),
    ]
