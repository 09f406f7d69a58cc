"""The trigger service's database side: incidents, outbox, checkpoints, feedback.

Every write is idempotent, so a replay after a crash writes nothing twice:

- an incident's id is its stable key (:func:`triggers.model.incident_key`); a
  replay that reopens it inserts nothing, and only a newly inserted incident
  adds outbox events, bumps ``times_triggered`` and writes a prediction;
- the outbox rows of a poll are committed in the same transaction as its
  incidents, and sent to Kafka afterwards (an unsent row is resent, with the
  same idempotency key, by whoever finds it);
- a checkpoint saves the changed (trigger, sensor) states with the offsets of
  the scored partitions they are current to, in one transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import psycopg
from psycopg.types.json import Jsonb
from pydantic_core import to_json

from tmiot.events import WorkOrderOutcome, from_us
from triggers.model import Cleared, Opened, SensorInfo
from triggers.orders import Dispatcher, Silenced, place, record_silences

if TYPE_CHECKING:
    from triggers.grouping import Decision

__all__ = [
    "Events",
    "OutboxRow",
    "TriggerStore",
    "prediction_id",
]

_PREDICTION_NS: Final = uuid.UUID("0b8f2b61-3f0e-4c4e-8d0a-9a7c2f4e1d52")
_ENCODE_CHUNK: Final = 2000  # states JSON-encoded between two yields to the event loop


def prediction_id(incident: str) -> str:
    """The ``maintenance_predictions`` id of an incident's forecast (stable)."""
    return str(uuid.uuid5(_PREDICTION_NS, incident))


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An event to send once its incident is committed."""

    id: str  # the event's idempotency key
    incident_id: str
    topic: str
    key: str
    payload: bytes
    schema: str | None = None  # the record's tmiot-schema header (None: the topic's default)


class Events(Dispatcher, Protocol):
    """The outbox rows of placed incidents (:class:`triggers.actions.IncidentEvents`)."""

    def events(self, o: Opened, decision: Decision | None) -> list[OutboxRow]:
        """The rows of a live incident placed as `decision` (None: no work order)."""


_INCIDENTS: Final = """
INSERT INTO trigger_incidents (
    id, company_id, trigger_id, sensor_id, opened_at, historical, summary, evidence, prediction_id
)
SELECT * FROM unnest(%(id)b::uuid[], %(company)b::uuid[], %(trigger)b::uuid[], %(sensor)b::uuid[],
                     %(opened)b::timestamptz[], %(historical)b::bool[], %(summary)b::text[],
                     %(evidence)b::jsonb[], %(prediction)b::uuid[])
ON CONFLICT (id) DO NOTHING
RETURNING id::text
"""

_PREDICTIONS: Final = """
INSERT INTO maintenance_predictions (
    id, customer_equipment_id, predicted_failure_date, confidence_score, failure_type,
    severity, recommended_action
)
SELECT v.id, v.equipment, v.day, v.confidence, v.failure, v.severity::severity_level,
       v.action::recommended_action
FROM unnest(%(id)b::uuid[], %(equipment)b::uuid[], %(day)b::date[], %(confidence)b::numeric[],
            %(failure)b::text[], %(severity)b::text[], %(action)b::text[])
     AS v(id, equipment, day, confidence, failure, severity, action)
ON CONFLICT (id) DO NOTHING
"""

_OUTBOX: Final = """
INSERT INTO trigger_outbox (id, incident_id, topic, record_key, payload, record_schema)
SELECT * FROM unnest(%(id)b::uuid[], %(incident)b::uuid[], %(topic)b::text[], %(key)b::text[],
                     %(payload)b::bytea[], %(schema)b::text[])
ON CONFLICT (id) DO NOTHING
"""

_COUNTERS: Final = """
UPDATE automated_service_triggers AS t
SET times_triggered = t.times_triggered + v.n,
    last_triggered_at = greatest(t.last_triggered_at, v.last)
FROM unnest(%(trigger)b::uuid[], %(n)b::int[], %(last)b::timestamptz[]) AS v(id, n, last)
WHERE t.id = v.id
"""

_CLEAR: Final = """
UPDATE trigger_incidents AS i
SET cleared_at = v.at, clear_reason = v.reason
FROM unnest(%(id)b::uuid[], %(at)b::timestamptz[], %(reason)b::text[]) AS v(id, at, reason)
WHERE i.id = v.id AND i.cleared_at IS NULL
"""

_OFFSETS: Final = """
INSERT INTO trigger_offsets (consumer_group, topic, kafka_partition, next_offset)
SELECT %(group)s, %(topic)s, * FROM unnest(%(partition)b::int[], %(offset)b::bigint[])
ON CONFLICT (consumer_group, topic, kafka_partition)
DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()
"""

_STATES: Final = """
INSERT INTO trigger_states (consumer_group, trigger_id, sensor_id, kafka_partition, state)
SELECT %(group)s, v.t, v.s, v.p, v.state::jsonb
FROM unnest(%(trigger)b::uuid[], %(sensor)b::uuid[], %(partition)b::int[], %(state)b::text[])
     AS v(t, s, p, state)
ON CONFLICT (consumer_group, trigger_id, sensor_id)
DO UPDATE SET state = excluded.state, kafka_partition = excluded.kafka_partition, updated_at = now()
"""

_OUTCOME: Final = """
UPDATE trigger_incidents
SET outcome = %(outcome)s, outcome_at = %(at)s,
    cleared_at = CASE WHEN %(outcome)s = 'resolved' THEN coalesce(cleared_at, %(at)s)
                      ELSE cleared_at END,
    clear_reason = CASE WHEN %(outcome)s = 'resolved' AND cleared_at IS NULL
                        THEN 'work_order_resolved' ELSE clear_reason END
WHERE id = %(id)s OR (work_order_id = %(id)s AND outcome IS NULL)
RETURNING id::text, trigger_id::text, sensor_id::text, prediction_id::text, opened_at
"""

# A work order's outcome closes it (the incidents it gathered share it: _OUTCOME).
_CLOSE_ORDER: Final = """
UPDATE trigger_work_orders SET closed_at = coalesce(closed_at, %(at)s), outcome = %(outcome)s
WHERE id = %(id)s
"""

_FALSE_POSITIVE_RATE: Final = """
UPDATE automated_service_triggers AS t
SET false_positive_rate = (
    SELECT round(100.0 * count(*) FILTER (WHERE outcome = 'false_positive') / count(*), 2)
    FROM trigger_incidents WHERE trigger_id = t.id AND outcome IS NOT NULL
)
WHERE t.id = %(trigger)s
"""

_PREDICTION_OUTCOME: Final = """
UPDATE maintenance_predictions
SET status = %(status)s::prediction_status,
    actual_failure_date = coalesce(%(actual)s, actual_failure_date),
    prediction_accuracy = CASE
        WHEN %(actual)s::date IS NULL OR predicted_failure_date IS NULL THEN prediction_accuracy
        ELSE greatest(0, 100 - 100.0 * abs(predicted_failure_date - %(actual)s::date)
                      / greatest(1, predicted_failure_date - %(opened)s::date))
    END
WHERE id = %(id)s
"""


class TriggerStore:
    """Writes of one trigger process, on a connection it owns."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], group: str, topic: str) -> None:
        """Use `conn` (autocommit off) for consumer group `group` of scored topic `topic`."""
        self._conn = conn
        self._group = group
        self._topic = topic

    async def load_partition(self, partition: int) -> tuple[int | None, dict[tuple[str, str], Any]]:
        """A partition's checkpoint: its next offset and the (trigger, sensor) states."""
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await cur.execute(
                "SELECT next_offset FROM trigger_offsets"
                " WHERE consumer_group = %s AND topic = %s AND kafka_partition = %s",
                (self._group, self._topic, partition),
            )
            row = await cur.fetchone()
            await cur.execute(
                "SELECT trigger_id::text, sensor_id::text, state FROM trigger_states"
                " WHERE consumer_group = %s AND kafka_partition = %s",
                (self._group, partition),
            )
            states = {(t, s): state for t, s, state in await cur.fetchall()}
        return (None if row is None else int(row[0])), states

    async def resolved_among(self, keys: Iterable[str]) -> set[str]:
        """Which of these incidents were closed by a resolved work order."""
        wanted = list(keys)
        if not wanted:
            return set()
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await cur.execute(
                "SELECT id::text FROM trigger_incidents"
                " WHERE id = ANY(%s::uuid[]) AND outcome = 'resolved'",
                (wanted,),
            )
            return {r[0] for r in await cur.fetchall()}

    async def resolved_since(self, since: dt.datetime) -> list[tuple[str, str, str, dt.datetime]]:
        """(incident, trigger, sensor, outcome_at) of work orders resolved after `since`."""
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await cur.execute(
                "SELECT id::text, trigger_id::text, sensor_id::text, outcome_at"
                " FROM trigger_incidents WHERE outcome = 'resolved' AND outcome_at > %s"
                " ORDER BY outcome_at",
                (since,),
            )
            return [(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()]

    async def commit(  # noqa: PLR0913 - one poll's whole outcome, written at once
        self,
        opened: list[Opened],
        sensors: Mapping[str, SensorInfo],
        companies: Mapping[str, str],
        cleared: list[Cleared],
        events: Events,
        *,
        silenced: Sequence[Silenced] = (),
        attach_us: int = 86_400_000_000,
    ) -> tuple[list[OutboxRow], int]:
        """Write one poll's incidents in a transaction; the outbox rows to send and new incidents.

        `companies` maps trigger id to company id. Only incidents not already in
        the table are placed (:mod:`triggers.orders`: a new work order, or joining an
        open one of their equipment or gateway) and add their outbox rows,
        predictions and trigger counters. `silenced`: sensors behind gateways newly
        reported silent (the peers of a gateway's silence).
        """
        if not (opened or cleared or silenced):
            return [], 0
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await record_silences(cur, silenced)
            inserted: set[str] = set()
            # Predictions first (incidents reference them); their ids are stable too.
            forecasts = [o for o in opened if o.forecast is not None]
            if forecasts:
                await cur.execute(_PREDICTIONS, _prediction_columns(forecasts, sensors))
            if opened:
                await cur.execute(_INCIDENTS, _incident_columns(opened, companies))
                inserted = {r[0] for r in await cur.fetchall()}
            new = [o for o in opened if o.key in inserted]
            live = [o for o in new if not o.historical]
            if live:
                per = Counter(o.trigger_id for o in live)
                last: dict[str, int] = {}
                for o in live:
                    last[o.trigger_id] = max(last.get(o.trigger_id, 0), o.opened_us)
                await cur.execute(
                    _COUNTERS,
                    {
                        "trigger": list(per),
                        "n": list(per.values()),
                        "last": [from_us(last[t]) for t in per],
                    },
                )
            decisions = await place(cur, live, sensors, events, attach_us) if live else {}
            send = [r for o in live for r in events.events(o, decisions.get(o.key))]
            if send:
                await cur.execute(
                    _OUTBOX,
                    {
                        "id": [r.id for r in send],
                        "incident": [r.incident_id for r in send],
                        "topic": [r.topic for r in send],
                        "key": [r.key for r in send],
                        "payload": [r.payload for r in send],
                        "schema": [r.schema for r in send],
                    },
                )
            if cleared:
                await cur.execute(
                    _CLEAR,
                    {
                        "id": [c.key for c in cleared],
                        "at": [from_us(c.cleared_us) for c in cleared],
                        "reason": [c.reason for c in cleared],
                    },
                )
        return send, len(live)

    async def checkpoint(
        self,
        offsets: Mapping[int, int],
        states: Mapping[tuple[str, str], object],
        partition_of: Mapping[str, int],
    ) -> None:
        """Save changed states and the offsets they are current to, in one transaction."""
        known = [(k, v) for k, v in states.items() if k[1] in partition_of]
        encoded: list[str] = []
        for start in range(0, len(known), _ENCODE_CHUNK):
            if start:
                await asyncio.sleep(0)  # let the consumer run between chunks
            # pydantic-core's encoder: the same values as json.dumps, 2.5x as fast (a busy
            # sensor's window holds a minute of readings, every one encoded per checkpoint).
            encoded.extend(to_json(v).decode() for _, v in known[start : start + _ENCODE_CHUNK])
        async with self._conn.transaction(), self._conn.cursor() as cur:
            if known:
                await cur.execute(
                    _STATES,
                    {
                        "group": self._group,
                        "trigger": [k[0] for k, _ in known],
                        "sensor": [k[1] for k, _ in known],
                        "partition": [partition_of[k[1]] for k, _ in known],
                        "state": encoded,
                    },
                )
            if offsets:
                await cur.execute(
                    _OFFSETS,
                    {
                        "group": self._group,
                        "topic": self._topic,
                        "partition": list(offsets),
                        "offset": list(offsets.values()),
                    },
                )

    async def unsent(self, older_than: dt.datetime, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows committed before `older_than` and never acknowledged by Kafka."""
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await cur.execute(
                "SELECT id::text, incident_id::text, topic, record_key, payload, record_schema"
                " FROM trigger_outbox"
                " WHERE sent_at IS NULL AND created_at < %s ORDER BY created_at LIMIT %s",
                (older_than, limit),
            )
            return [
                OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in await cur.fetchall()
            ]

    async def mark_sent(self, ids: list[str]) -> None:
        """Kafka acknowledged these outbox rows."""
        if not ids:
            return
        async with self._conn.transaction():
            await self._conn.execute(
                "UPDATE trigger_outbox SET sent_at = now() WHERE id = ANY(%s::uuid[])", (ids,)
            )

    async def record_outcome(self, outcome: WorkOrderOutcome) -> tuple[str, str, str] | None:
        """Apply a work order's outcome; (incident, trigger, sensor), or None if unknown.

        Keeps the trigger's ``false_positive_rate`` (percent of incidents with an
        outcome that were false positives) and the prediction's status and accuracy.
        """
        key = str(outcome.idempotency_key)
        values = {"outcome": outcome.outcome, "at": outcome.at, "id": key}
        async with self._conn.transaction(), self._conn.cursor() as cur:
            # The work order's own incident, and those that joined it, share its outcome.
            await cur.execute(_OUTCOME, values)
            rows = await cur.fetchall()
            row = next((r for r in rows if r[0] == key), None)
            if row is None:
                return None
            _, trigger, sensor, prediction, opened_at = row
            await cur.execute(_CLOSE_ORDER, values)
            for gathered in sorted({r[1] for r in rows}):
                await cur.execute(_FALSE_POSITIVE_RATE, {"trigger": gathered})
            if prediction is not None:
                await cur.execute(
                    _PREDICTION_OUTCOME,
                    {
                        "status": "completed"
                        if outcome.outcome == "resolved"
                        else "false_positive",
                        "actual": outcome.actual_failure_date,
                        "opened": opened_at.date(),
                        "id": prediction,
                    },
                )
        return key, trigger, sensor


def _incident_columns(opened: list[Opened], companies: Mapping[str, str]) -> dict[str, object]:
    return {
        "id": [o.key for o in opened],
        "company": [companies[o.trigger_id] for o in opened],
        "trigger": [o.trigger_id for o in opened],
        "sensor": [o.sensor_id for o in opened],
        "opened": [from_us(o.opened_us) for o in opened],
        "historical": [o.historical for o in opened],
        "summary": [o.summary for o in opened],
        "evidence": [
            Jsonb(
                [
                    {
                        "sensor_id": e.sensor_id,
                        "reading_timestamp": from_us(e.ts_us).isoformat(),
                        "value": e.value,
                        "anomaly_score": e.anomaly_score,
                        "anomaly_type": e.anomaly_type,
                    }
                    for e in o.evidence
                ]
            )
            for o in opened
        ],
        "prediction": [prediction_id(o.key) if o.forecast else None for o in opened],
    }


def _prediction_columns(
    opened: list[Opened], sensors: Mapping[str, SensorInfo]
) -> dict[str, object]:
    rows = [(o, o.forecast) for o in opened if o.forecast is not None]
    return {
        "id": [prediction_id(o.key) for o, _ in rows],
        "equipment": [sensors[o.sensor_id].customer_equipment_id for o, _ in rows],
        "day": [from_us(f.crossing_us).date() for _, f in rows],
        "confidence": [round(f.confidence, 2) for _, f in rows],
        "failure": [
            f"{sensors[o.sensor_id].sensor_type} {'above' if f.bound == 'max' else 'below'}"
            f" alert threshold {f.threshold:g}"
            for o, f in rows
        ],
        "severity": [f.severity for _, f in rows],
        "action": [f.recommended_action for _, f in rows],
    }
