"""IoT KPIs per company and day, computed from the pipeline's tables into the Phase 4 KPI tables.

``tmiot kpis [--date D] [--company C]`` (run daily, e.g. a Kubernetes CronJob after
midnight UTC) defines the KPIs of each company in ``kpi_definitions`` and writes one
``kpi_values`` row per KPI for the UTC day ``D`` (default: yesterday). Idempotent: a
second run for the same day recomputes and replaces that day's rows (a unique index on
definition, date and period), never adds rows.

The KPIs, over the day's ``[00:00, 24:00)`` UTC and the company's active sensors:

========================================  =====================================================
``sensor_uptime``  (%, higher is better)  share of (sensor, hour) pairs with at least one reading
``readings_received`` (%, higher)         readings stored / readings expected (86,400 s / each
                                          sensor's ``sampling_interval_seconds``)
``anomaly_rate`` (%, lower)               readings flagged ``is_anomaly`` / readings stored
``work_orders_per_1000_sensor_days``      work orders opened x 1,000 / (active sensors x 1 day)
(lower)
``false_positive_rate`` (%, lower)        work orders closed that day as ``false_positive`` /
                                          work orders closed that day with an outcome
``minutes_fault_to_work_order`` (lower)   median over the day's work orders of: the request
                                          (the incident's row) minus its first evidence reading
========================================  =====================================================

Each value row carries the previous day's value, the target and the variance from it
(absolute and %), the trend against the previous day (``stable`` within 1 %), the
performance status from the definition's thresholds, and a data-quality score (the
share of active sensors that reported that day). A KPI with nothing to measure (no work
order closed, say) is stored with a null value and no status.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, LiteralString

import psycopg
import structlog

from tmiot.config import DatabaseSettings
from tmiot.db import conninfo

__all__ = ["KPIS", "Kpi", "run"]

log = structlog.get_logger(__name__)

_STABLE: Final = 0.01  # relative change under which the trend is "stable"


@dataclass(frozen=True)
class Kpi:
    """One KPI's definition; ``higher_is_better`` orients its thresholds."""

    name: str
    title: str
    description: str
    method: str
    sources: tuple[str, ...]
    unit: str  # kpi_unit_type
    target: float
    green: float  # at least (higher is better) or at most (lower): excellent
    yellow: float  # ... good
    red: float  # ... warning; beyond: poor
    higher_is_better: bool

    def code(self, company_id: str) -> str:
        """``kpi_code`` is unique across companies in the Phase 4 schema: the company is in it."""
        return f"iot.{self.name}.{company_id}"

    def status(self, value: float | None) -> str | None:
        """The status by the thresholds (excellent, good, warning, poor); None without a value."""
        if value is None:
            return None
        for bound, label in (
            (self.green, "excellent"),
            (self.yellow, "good"),
            (self.red, "warning"),
        ):
            if (value >= bound) if self.higher_is_better else (value <= bound):
                return label
        return "poor"


KPIS: Final = (
    Kpi(
        "sensor_uptime",
        "Sensor uptime",
        "Share of the day's sensor-hours in which a sensor delivered at least one reading.",
        "100 x count(distinct (sensor, hour) with a reading) / (active sensors x 24)",
        ("sensor_readings", "equipment_sensors"),
        "percentage",
        99.0,
        99.0,
        95.0,
        90.0,
        higher_is_better=True,
    ),
    Kpi(
        "readings_received",
        "Readings received vs expected",
        "Readings stored against those the sensors' sampling intervals promise.",
        "100 x readings stored / sum over active sensors of (86400 / sampling_interval_seconds)",
        ("sensor_readings", "equipment_sensors"),
        "percentage",
        100.0,
        98.0,
        90.0,
        75.0,
        higher_is_better=True,
    ),
    Kpi(
        "anomaly_rate",
        "Anomaly rate",
        "Share of the day's readings the detector flagged as anomalous.",
        "100 x readings with is_anomaly / readings stored",
        ("sensor_readings",),
        "percentage",
        0.5,
        0.5,
        2.0,
        5.0,
        higher_is_better=False,
    ),
    Kpi(
        "work_orders_per_1000_sensor_days",
        "Work orders per 1,000 sensor-days",
        "Work orders the triggers opened, per 1,000 days of active sensors.",
        "1000 x work orders opened / active sensors (one day)",
        ("trigger_work_orders", "equipment_sensors"),
        "ratio",
        5.0,
        5.0,
        20.0,
        50.0,
        higher_is_better=False,
    ),
    Kpi(
        "false_positive_rate",
        "False-positive rate of work orders",
        "Share of the work orders closed that day that the FSM marked false_positive.",
        "100 x closed with outcome false_positive / closed with an outcome",
        ("trigger_work_orders",),
        "percentage",
        10.0,
        10.0,
        25.0,
        50.0,
        higher_is_better=False,
    ),
    Kpi(
        "minutes_fault_to_work_order",
        "Median minutes from fault to work order",
        "From the first reading of a work order's evidence to its request, median.",
        "median over work orders opened of (incident created_at - first evidence reading), min",
        ("trigger_work_orders", "trigger_incidents"),
        "number",
        15.0,
        15.0,
        60.0,
        240.0,
        higher_is_better=False,
    ),
)

# Per company, the day's raw figures; one query, %(start)s, %(end)s, %(companies)s.
_FIGURES: Final[LiteralString] = """
WITH sensors AS (
    SELECT es.id, ce.company_id, es.sampling_interval_seconds
    FROM equipment_sensors es
    JOIN customer_equipment ce ON ce.id = es.customer_equipment_id
    WHERE es.status = 'active' AND es.created_at < %(end)s
      AND ce.company_id = ANY(%(companies)s::uuid[])
), per_sensor AS (
    SELECT r.sensor_id,
           count(*) AS readings,
           count(*) FILTER (WHERE r.is_anomaly) AS anomalies,
           count(DISTINCT date_trunc('hour', r.reading_timestamp)) AS hours
    FROM sensor_readings r
    WHERE r.reading_timestamp >= %(start)s AND r.reading_timestamp < %(end)s
      AND r.sensor_id IN (SELECT id FROM sensors)
    GROUP BY r.sensor_id
), orders AS (
    SELECT wo.company_id,
           count(*) FILTER (WHERE wo.opened_at >= %(start)s AND wo.opened_at < %(end)s)
               AS opened,
           count(*) FILTER (WHERE wo.closed_at >= %(start)s AND wo.closed_at < %(end)s
                            AND wo.outcome = 'false_positive') AS false_positives,
           count(*) FILTER (WHERE wo.closed_at >= %(start)s AND wo.closed_at < %(end)s
                            AND wo.outcome IS NOT NULL) AS with_outcome
    FROM trigger_work_orders wo
    WHERE wo.company_id = ANY(%(companies)s::uuid[])
    GROUP BY wo.company_id
), waits AS (
    SELECT wo.company_id,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
               i.created_at - (SELECT min((e ->> 'reading_timestamp')::timestamptz)
                               FROM jsonb_array_elements(i.evidence) AS e)) / 60.0) AS minutes
    FROM trigger_work_orders wo
    JOIN trigger_incidents i ON i.id = wo.id
    WHERE wo.company_id = ANY(%(companies)s::uuid[])
      AND wo.opened_at >= %(start)s AND wo.opened_at < %(end)s
      AND jsonb_array_length(i.evidence) > 0
    GROUP BY wo.company_id
)
SELECT s.company_id::text,
       count(*) AS sensors,
       count(p.sensor_id) AS reporting,
       coalesce(sum(p.hours), 0) AS hours,
       coalesce(sum(p.readings), 0) AS readings,
       coalesce(sum(p.anomalies), 0) AS anomalies,
       sum(86400.0 / s.sampling_interval_seconds) AS expected,
       max(o.opened) AS opened,
       max(o.false_positives) AS false_positives,
       max(o.with_outcome) AS with_outcome,
       max(w.minutes) AS minutes
FROM sensors s
LEFT JOIN per_sensor p ON p.sensor_id = s.id
LEFT JOIN orders o ON o.company_id = s.company_id
LEFT JOIN waits w ON w.company_id = s.company_id
GROUP BY s.company_id
"""

_DEFINE: Final[LiteralString] = """
INSERT INTO kpi_definitions (company_id, kpi_code, kpi_name, description, calculation_method,
    data_sources, update_frequency, unit_type, decimal_places, target_value, benchmark_value,
    green_threshold, yellow_threshold, red_threshold)
VALUES (%s, %s, %s, %s, %s, %s, 'daily', %s, 2, %s, %s, %s, %s, %s)
ON CONFLICT (kpi_code) DO UPDATE SET
    kpi_name = EXCLUDED.kpi_name, description = EXCLUDED.description,
    calculation_method = EXCLUDED.calculation_method, data_sources = EXCLUDED.data_sources,
    unit_type = EXCLUDED.unit_type, target_value = EXCLUDED.target_value,
    benchmark_value = EXCLUDED.benchmark_value, green_threshold = EXCLUDED.green_threshold,
    yellow_threshold = EXCLUDED.yellow_threshold, red_threshold = EXCLUDED.red_threshold,
    updated_at = now()
RETURNING id
"""

_PREVIOUS: Final[LiteralString] = """
SELECT current_value FROM kpi_values
WHERE kpi_definition_id = %s AND measurement_date = %s AND measurement_period = 'day'
"""

_VALUE: Final[LiteralString] = """
INSERT INTO kpi_values (kpi_definition_id, measurement_date, measurement_period, current_value,
    previous_value, target_value, variance_from_target, variance_percent, trend_direction,
    performance_status, data_quality_score, calculated_at)
VALUES (%s, %s, 'day', %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (kpi_definition_id, measurement_date, measurement_period) DO UPDATE SET
    current_value = EXCLUDED.current_value, previous_value = EXCLUDED.previous_value,
    target_value = EXCLUDED.target_value, variance_from_target = EXCLUDED.variance_from_target,
    variance_percent = EXCLUDED.variance_percent, trend_direction = EXCLUDED.trend_direction,
    performance_status = EXCLUDED.performance_status,
    data_quality_score = EXCLUDED.data_quality_score, calculated_at = now(), updated_at = now()
"""


def _values(row: dict[str, Any]) -> dict[str, float | None]:
    """Each KPI's value of one company's figures (None: nothing to measure)."""
    sensors = float(row["sensors"])
    readings = float(row["readings"])
    outcome = float(row["with_outcome"] or 0)
    return {
        "sensor_uptime": 100.0 * float(row["hours"]) / (sensors * 24.0) if sensors else None,
        "readings_received": (
            100.0 * readings / float(row["expected"]) if row["expected"] else None
        ),
        "anomaly_rate": 100.0 * float(row["anomalies"]) / readings if readings else None,
        "work_orders_per_1000_sensor_days": (
            1000.0 * float(row["opened"] or 0) / sensors if sensors else None
        ),
        "false_positive_rate": (
            100.0 * float(row["false_positives"] or 0) / outcome if outcome else None
        ),
        "minutes_fault_to_work_order": (
            float(row["minutes"]) if row["minutes"] is not None else None
        ),
    }


def _trend(current: float | None, previous: float | None) -> str | None:
    if current is None or previous is None:
        return None
    if abs(current - previous) <= _STABLE * max(abs(previous), 1e-9):
        return "stable"
    return "up" if current > previous else "down"


def _num(x: float | None, places: int = 4) -> Decimal | None:
    return None if x is None else round(Decimal(str(x)), places)


def run(
    settings: DatabaseSettings, day: dt.date, companies: list[str] | None = None
) -> dict[str, dict[str, float | None]]:
    """Define and compute every KPI of `day` for `companies` (None: every company).

    Returns:
        company id -> KPI name -> the day's value.
    """
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    out: dict[str, dict[str, float | None]] = {}
    with psycopg.connect(conninfo(settings)) as conn, conn.transaction():
        if companies is None:
            companies = [str(r[0]) for r in conn.execute("SELECT id FROM companies ORDER BY id")]
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(_FIGURES, {"start": start, "end": end, "companies": companies})
            figures = cur.fetchall()
        for row in figures:
            company = row["company_id"]
            values = _values(row)
            quality = float(row["reporting"]) / float(row["sensors"]) if row["sensors"] else None
            for kpi in KPIS:
                found = conn.execute(
                    _DEFINE,
                    (
                        company,
                        kpi.code(company),
                        kpi.title,
                        kpi.description,
                        kpi.method,
                        list(kpi.sources),
                        kpi.unit,
                        kpi.target,
                        kpi.target,
                        kpi.green,
                        kpi.yellow,
                        kpi.red,
                    ),
                ).fetchone()
                assert found is not None  # noqa: S101 - RETURNING of an upsert
                definition = found[0]
                before = conn.execute(
                    _PREVIOUS, (definition, day - dt.timedelta(days=1))
                ).fetchone()
                previous = float(before[0]) if before and before[0] is not None else None
                value = values[kpi.name]
                variance = None if value is None else value - kpi.target
                conn.execute(
                    _VALUE,
                    (
                        definition,
                        day,
                        _num(value),
                        _num(previous),
                        _num(kpi.target),
                        _num(variance),
                        _num(100.0 * variance / kpi.target if variance is not None else None),
                        _trend(value, previous),
                        kpi.status(value),
                        _num(quality, 2),
                    ),
                )
            out[company] = values
    log.info("kpis computed", day=day.isoformat(), companies=len(out), kpis=len(KPIS))
    return out
