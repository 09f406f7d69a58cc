"""tmiot backtest on real PostgreSQL: what triggers would have done, with nothing written."""

from __future__ import annotations

import datetime as dt
import json

import psycopg

from tests.fix_ingest import register_tenant
from tmiot.config import DatabaseSettings, Settings
from tmiot.db import conninfo
from triggers.backtest import backtest

T0 = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)


def _side_effects(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[object, ...]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM trigger_incidents), (SELECT count(*) FROM trigger_outbox),"
        " (SELECT coalesce(sum(times_triggered), 0) FROM automated_service_triggers),"
        " (SELECT count(*) FROM maintenance_predictions)"
    ).fetchone()
    assert row is not None
    return tuple(row)


async def test_backtest_reports_would_be_incidents_and_writes_nothing(
    schema_database: DatabaseSettings,
) -> None:
    tenant = register_tenant(schema_database, "A", ["boiler"])
    other = register_tenant(schema_database, "B", ["b1"])
    sensor = tenant.sensors["boiler"]
    # 10 days a reading a minute; three excursions above 90, on days 2, 5 and 8.
    rows = []
    for m in range(10 * 1440):
        at = T0 + dt.timedelta(minutes=m)
        excursion = m % 1440 < 20 and m // 1440 in {2, 5, 8}
        value = 95.0 if excursion else 60.0 + (m % 7)
        rows.append((sensor, at, value, excursion))
    with psycopg.connect(conninfo(schema_database), autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY sensor_readings (sensor_id, reading_timestamp, value, is_anomaly) FROM STDIN"
        ) as copy:
            for r in rows:
                copy.write_row(r)
        triggers = {}
        for number, active, conditions in (
            ("HOT", True, {"above": 90}),
            ("HOT-5MIN", False, {"above": 90, "for_seconds": 300}),
            ("WARM", False, {"above": 200}),
        ):
            row = conn.execute(
                "INSERT INTO automated_service_triggers (company_id, trigger_number, trigger_name,"
                " sensor_id, condition_type, trigger_conditions, auto_create_work_order, is_active)"
                " VALUES (%s, %s, %s, %s, 'threshold_exceeded', %s, true, %s) RETURNING id",
                (tenant.company_id, number, number, sensor, json.dumps(conditions), active),
            ).fetchone()
            assert row is not None
            triggers[number] = str(row[0])
        conn.execute(
            "INSERT INTO automated_service_triggers (company_id, trigger_number, trigger_name,"
            " sensor_id, condition_type, trigger_conditions) VALUES (%s, 'B-HOT', 'x', %s,"
            " 'threshold_exceeded', '{\"above\": 1}')",
            (other.company_id, other.sensors["b1"]),
        )
        # HOT ran live on day 2 and day 5: a false positive, and one resolved.
        for day, outcome in ((2, "false_positive"), (5, "resolved")):
            conn.execute(
                "INSERT INTO trigger_incidents (id, company_id, trigger_id, sensor_id, opened_at,"
                " summary, outcome) VALUES (gen_random_uuid(), %s, %s, %s, %s, 'live', %s)",
                (tenant.company_id, triggers["HOT"], sensor, T0 + dt.timedelta(days=day), outcome),
            )
        before = _side_effects(conn)

    settings = Settings(database=schema_database)
    reports = await backtest(
        settings,
        company=tenant.company_id,
        since=T0 + dt.timedelta(days=1),
        until=T0 + dt.timedelta(days=10),
    )
    by = {r.trigger_number: r for r in reports}
    assert set(by) == {"HOT", "HOT-5MIN", "WARM"}  # not company B's
    hot = by["HOT"]
    assert (hot.incidents, hot.work_orders, hot.active) == (3, 3, True)
    assert (hot.recorded, hot.matched, hot.matched_resolved, hot.matched_false_positive) == (
        2,
        2,
        1,
        1,
    )
    assert by["HOT-5MIN"].incidents == 3
    assert by["HOT-5MIN"].active is False
    assert by["WARM"].incidents == 0
    assert "HOT (threshold_exceeded, active): 3 incidents, 3 work orders" in hot.line()

    # A narrower range, only one trigger, with the detectors re-run first.
    again = await backtest(
        settings,
        company=tenant.company_id,
        since=T0 + dt.timedelta(days=4),
        until=T0 + dt.timedelta(days=6),
        numbers=["HOT"],
        rescore=True,
    )
    assert [(r.trigger_number, r.incidents) for r in again] == [("HOT", 1)]
    with psycopg.connect(conninfo(schema_database)) as conn:
        assert _side_effects(conn) == before
