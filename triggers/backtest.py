"""`tmiot backtest`: what would these triggers have done over a stored time range?

The live code, without side effects: a company's triggers (active or not, all of
them or some by number) are evaluated by the trigger service's own
:class:`~triggers.evaluator.Evaluator` over the readings stored in
``sensor_readings`` between two times, in event time. With ``--rescore`` the
readings are scored again first by the stream's own detectors (fresh models, warmed
up on the hours before the range), so a detector change can be tried as well.
Nothing is written: no incident, no outbox row, no Kafka record, no counter.

Per trigger, the report gives the incidents it would have opened and the work
orders they would have requested, and, where the trigger ran live over the same
range, how these compare with the incidents it did open (same sensor, opened within
``MATCH_WINDOW``) and with their recorded outcomes (resolved, false positive).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg

from stream.scoring import Scorer, SensorMeta
from stream.sink import ReadingsSink
from tmiot.config import Settings
from tmiot.db import conninfo
from tmiot.events import ReadingBatch, from_us, to_us
from triggers.directory import Directory, load_directory
from triggers.evaluator import Evaluator
from triggers.model import Opened, ScoredReading, TriggerSpec

__all__ = ["TriggerReport", "backtest"]

MATCH_WINDOW: Final = dt.timedelta(minutes=10)
_CHUNK: Final = 5000
_NEVER_HISTORICAL: Final = 100 * 365 * 86_400.0  # seconds: a backtest has no backfill horizon

_READINGS: Final = """
SELECT r.sensor_id::text, r.reading_timestamp, r.value::float8, r.quality_score::float8,
       r.anomaly_score::float8, r.is_anomaly, r.anomaly_type::text
FROM sensor_readings AS r
WHERE r.sensor_id = ANY(%(sensors)s::uuid[])
  AND r.reading_timestamp >= %(since)s AND r.reading_timestamp < %(until)s
ORDER BY r.reading_timestamp, r.sensor_id
"""

_RECORDED: Final = """
SELECT trigger_id::text, sensor_id::text, opened_at, outcome
FROM trigger_incidents
WHERE trigger_id = ANY(%(triggers)s::uuid[]) AND opened_at >= %(since)s AND opened_at < %(until)s
"""


@dataclass(slots=True)
class TriggerReport:
    """What one trigger would have done over the range."""

    trigger_number: str
    condition_type: str
    active: bool
    incidents: int = 0
    work_orders: int = 0
    recorded: int = 0  # incidents it opened live over the range
    matched: int = 0  # would-be incidents that a live one matches
    matched_resolved: int = 0
    matched_false_positive: int = 0
    first: list[str] = field(default_factory=list)  # a few would-be incidents, for the eye

    def line(self) -> str:
        """One line of the report."""
        state = "active" if self.active else "inactive"
        live = (
            f"; live: {self.recorded} incidents, {self.matched} of the would-be ones matched"
            f" ({self.matched_resolved} resolved, {self.matched_false_positive} false positive)"
            if self.recorded or self.matched
            else ""
        )
        return (
            f"{self.trigger_number} ({self.condition_type}, {state}): {self.incidents} incidents,"
            f" {self.work_orders} work orders{live}"
        )


def _select(directory: Directory, company: str, numbers: Sequence[str] | None) -> Directory:
    keep = {
        t.trigger_id: t
        for t in directory.triggers.values()
        if t.company_id == company and (not numbers or t.trigger_number in numbers)
    }
    out = Directory(triggers=keep, sensors=directory.sensors, versions=directory.versions)
    for sensor_id, watching in directory.by_sensor.items():
        mine = tuple(t for t in watching if t.trigger_id in keep)
        if mine:
            out.by_sensor[sensor_id] = mine
    return out


def _batch(rows: list[tuple[Any, ...]]) -> ReadingBatch:
    n = len(rows)
    return {
        "v": 1,
        "sensor_id": [r[0] for r in rows],
        "company_id": [""] * n,
        "ts_us": [to_us(r[1]) for r in rows],
        "value": [r[2] for r in rows],
        "unit": [None] * n,
        "quality_score": [r[3] for r in rows],
        "ambient_temperature": [None] * n,
        "ambient_humidity": [None] * n,
        "weather_conditions": [None] * n,
        "received_us": [to_us(r[1]) for r in rows],
    }


async def backtest(  # noqa: PLR0913 - one keyword per option of the command
    settings: Settings,
    *,
    company: str,
    since: dt.datetime,
    until: dt.datetime,
    numbers: Sequence[str] | None = None,
    rescore: bool = False,
    warmup: dt.timedelta = dt.timedelta(hours=24),
) -> list[TriggerReport]:
    """Evaluate the company's triggers over ``[since, until)``; one report per trigger."""
    async with await psycopg.AsyncConnection.connect(
        conninfo(settings.database, application_name="tmiot-backtest"), autocommit=True
    ) as conn:
        directory = _select(await load_directory(conn, include_inactive=True), company, numbers)
        active = {
            str(r[0]): bool(r[1])
            for r in await (
                await conn.execute(
                    "SELECT id, is_active FROM automated_service_triggers"
                    " WHERE id = ANY(%s::uuid[])",
                    (list(directory.triggers),),
                )
            ).fetchall()
        }
        reports = {
            t.trigger_id: TriggerReport(t.trigger_number, t.condition_type, active[t.trigger_id])
            for t in directory.triggers.values()
        }
        sensors = list(directory.by_sensor)
        meta: dict[str, SensorMeta] = {}
        if rescore:  # the stream's own lookup of what its detectors need
            async with ReadingsSink(settings.database) as sink:
                meta = await sink.sensor_meta(sensors)
        evaluator = Evaluator(
            lateness_seconds=settings.triggers.lateness_seconds,
            backfill_horizon_seconds=_NEVER_HISTORICAL,
        )
        scorer = Scorer(settings.stream.detector) if rescore else None
        opened: list[Opened] = []
        start = since - warmup if rescore else since
        async with conn.transaction(), conn.cursor(name="backtest") as cur:
            await cur.execute(_READINGS, {"sensors": sensors, "since": start, "until": until})
            while rows := await cur.fetchmany(_CHUNK):
                scored = scorer.score(0, _batch(rows), meta).batch if scorer else None
                for i, r in enumerate(rows):
                    if r[1] < since:
                        continue  # the detectors' warm-up only
                    reading = ScoredReading(
                        sensor_id=r[0],
                        ts_us=to_us(r[1]),
                        value=r[2],
                        anomaly_score=scored["anomaly_score"][i] if scored else (r[4] or 0.0),
                        is_anomaly=scored["is_anomaly"][i] if scored else bool(r[5]),
                        anomaly_type=scored["anomaly_type"][i] if scored else r[6],
                        received_us=to_us(r[1]),
                    )
                    sensor = directory.sensors[r[0]]
                    for trigger in directory.for_sensor(r[0]):
                        found = evaluator.observe(trigger, sensor, reading, reading.ts_us)
                        opened += [t for t in found if isinstance(t, Opened)]
                    opened += [
                        t
                        for t in evaluator.tick(
                            reading.ts_us, directory.triggers, directory.sensors
                        )
                        if isinstance(t, Opened)
                    ]
        end_us = to_us(until)
        opened += [
            t
            for t in evaluator.tick(end_us, directory.triggers, directory.sensors)
            if isinstance(t, Opened) and t.opened_us < end_us
        ]
        recorded = await (
            await conn.execute(
                _RECORDED, {"triggers": list(directory.triggers), "since": since, "until": until}
            )
        ).fetchall()
    _tally(reports, directory.triggers, opened, recorded)
    return sorted(reports.values(), key=lambda r: r.trigger_number)


def _tally(
    reports: dict[str, TriggerReport],
    triggers: dict[str, TriggerSpec],
    opened: list[Opened],
    recorded: Sequence[tuple[Any, ...]],
) -> None:
    live: dict[tuple[str, str], list[tuple[dt.datetime, str | None]]] = {}
    for trigger_id, sensor_id, at, outcome in recorded:
        live.setdefault((trigger_id, sensor_id), []).append((at, outcome))
        reports[trigger_id].recorded += 1
    for o in opened:
        report = reports[o.trigger_id]
        report.incidents += 1
        report.work_orders += triggers[o.trigger_id].auto_create_work_order
        at = from_us(o.opened_us)
        if len(report.first) < 3:  # noqa: PLR2004 - a few, for the eye
            report.first.append(f"{at:%Y-%m-%d %H:%M} {o.summary}")
        match = next(
            (
                x
                for x in live.get((o.trigger_id, o.sensor_id), [])
                if abs(x[0] - at) <= MATCH_WINDOW
            ),
            None,
        )
        if match is not None:
            report.matched += 1
            report.matched_resolved += match[1] == "resolved"
            report.matched_false_positive += match[1] == "false_positive"
