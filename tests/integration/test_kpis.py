"""`tmiot kpis` on a fleet of known figures: the expected kpi_values, twice, no duplicates."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest

from tmiot import kpis
from tmiot.config import DatabaseSettings
from tmiot.db import conninfo

DAY = dt.date(2026, 11, 10)
T0 = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC)


def _at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def _fleet(db: DatabaseSettings) -> str:
    """Two active hourly sensors (24 and 12 readings of the day), one in maintenance, two orders."""
    company = str(uuid.uuid4())
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        conn.execute("INSERT INTO companies (id, name) VALUES (%s, 'KPI Co')", (company,))
        customer = conn.execute(
            "INSERT INTO customers (company_id, name) VALUES (%s, 'c') RETURNING id", (company,)
        ).fetchone()
        assert customer is not None
        unit = conn.execute(
            "INSERT INTO customer_equipment (company_id, customer_id, name) VALUES (%s, %s, 'pump')"
            " RETURNING id",
            (company, customer[0]),
        ).fetchone()
        assert unit is not None
        sensors = []
        for device, status in (("a", "active"), ("b", "active"), ("m", "maintenance")):
            row = conn.execute(
                "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, device_id,"
                " sampling_interval_seconds, status, created_at)"
                " VALUES (%s, 'temperature', %s, 3600, %s, %s) RETURNING id",
                (unit[0], f"kpi-{device}-{company[:8]}", status, T0 - dt.timedelta(days=30)),
            ).fetchone()
            assert row is not None
            sensors.append(str(row[0]))
        a, b, m = sensors
        rows = [(a, _at(h + 0.01), h in (5, 17)) for h in range(24)]  # 24 hours, 2 anomalies
        rows += [(b, _at(h + 0.5), False) for h in range(12)]  # 12 of 24 hours
        rows += [(m, _at(h), False) for h in range(24)]  # in maintenance: not counted
        rows += [(a, _at(-0.01), True), (b, _at(24.0), True)]  # the days around: not counted
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sensor_readings (sensor_id, reading_timestamp, value, is_anomaly)"
                " VALUES (%s, %s, 20.5, %s)",
                rows,
            )
        trigger = conn.execute(
            "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
            " condition_type, trigger_conditions, auto_create_work_order)"
            " VALUES (%s, 'hot', %s, 'threshold_exceeded', '{\"above\": 90}', true) RETURNING id",
            (company, a),
        ).fetchone()
        assert trigger is not None
        # Two work orders: requested 10 and 30 minutes after their first evidence reading;
        # one closed resolved, one closed a false positive, both that day.
        for first, requested, outcome in ((10.0, 10.5, "resolved"), (15.0, 15.5, "false_positive")):
            order = str(uuid.uuid4())
            evidence = [
                {"sensor_id": a, "reading_timestamp": _at(first + k / 60).isoformat()}
                for k in (2, 0, 1)
            ]
            conn.execute(
                "INSERT INTO trigger_incidents (id, company_id, trigger_id, sensor_id, opened_at,"
                " summary, evidence, created_at) VALUES (%s, %s, %s, %s, %s, 's', %s, %s)",
                (
                    order,
                    company,
                    trigger[0],
                    a,
                    _at(requested - 0.01),
                    json.dumps(evidence),
                    _at(first) + dt.timedelta(minutes=10 if outcome == "resolved" else 30),
                ),
            )
            conn.execute(
                "INSERT INTO trigger_work_orders (id, company_id, subject_kind, subject_id,"
                " opened_at, closed_at, outcome) VALUES (%s, %s, 'equipment', %s, %s, %s, %s)",
                (order, company, str(unit[0]), _at(requested), _at(requested + 2), outcome),
            )
    return company


def _rows(db: DatabaseSettings, company: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(conninfo(db)) as conn:
        found = conn.execute(
            "SELECT d.kpi_code, v.measurement_date, v.current_value, v.previous_value,"
            " v.target_value, v.variance_from_target, v.trend_direction::text,"
            " v.performance_status::text, v.data_quality_score"
            " FROM kpi_values v JOIN kpi_definitions d ON d.id = v.kpi_definition_id"
            " WHERE d.company_id = %s ORDER BY 1, 2",
            (company,),
        ).fetchall()
    return {f"{r[0].split('.')[1]}@{r[1]}": r[2:] for r in found}


def test_the_days_kpis_have_the_known_values_and_a_rerun_adds_nothing(
    schema_database: DatabaseSettings,
) -> None:
    company = _fleet(schema_database)
    first = kpis.run(schema_database, DAY, [company])[company]
    assert first == pytest.approx(
        {
            "sensor_uptime": 75.0,  # (24 + 12) sensor-hours of 48
            "readings_received": 75.0,  # 36 of 2 x 24
            "anomaly_rate": 100 * 2 / 36,
            "work_orders_per_1000_sensor_days": 1000.0,  # 2 orders, 2 sensor-days
            "false_positive_rate": 50.0,  # 1 of 2 closed with an outcome
            "minutes_fault_to_work_order": 20.0,  # median of 10 and 30
        }
    )
    rows = _rows(schema_database, company)
    kpis.run(schema_database, DAY, [company])  # again: replaces, adds nothing
    assert _rows(schema_database, company) == rows
    assert len(rows) == len(kpis.KPIS)
    uptime = rows[f"sensor_uptime@{DAY}"]
    # value, previous, target, variance, trend, status, data quality
    assert [float(x) for x in uptime[:4] if x is not None] == [75.0, 99.0, -24.0]
    assert uptime[4:] == (None, "poor", pytest.approx(1.0))
    status = {k.split("@")[0]: v[5] for k, v in rows.items()}
    assert status == {
        "sensor_uptime": "poor",
        "readings_received": "warning",
        "anomaly_rate": "poor",
        "work_orders_per_1000_sensor_days": "poor",
        "false_positive_rate": "warning",
        "minutes_fault_to_work_order": "good",
    }
    with psycopg.connect(conninfo(schema_database)) as conn:
        count = conn.execute(
            "SELECT count(*) FROM kpi_definitions WHERE company_id = %s", (company,)
        ).fetchone()
    assert count == (len(kpis.KPIS),)

    # The next day, through the CLI: only sensor b's midnight reading, one sensor-hour of 48;
    # the trend against the day before.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tmiot.cli",
            "kpis",
            "--date",
            str(DAY + dt.timedelta(days=1)),
            "--company",
            company,
        ],
        env={"PATH": os.environ.get("PATH", ""), "TMIOT_DATABASE__URL": schema_database.url},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    after = _rows(schema_database, company)[f"sensor_uptime@{DAY + dt.timedelta(days=1)}"]
    assert float(after[0]) == pytest.approx(100 / 48, abs=1e-4)
    assert (float(after[1]), after[4]) == (75.0, "down")
    assert float(after[6]) == 0.5  # one of the two active sensors reported
