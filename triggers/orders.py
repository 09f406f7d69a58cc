"""Work orders in the database: the store's side of :mod:`triggers.grouping`.

Inside the poll's transaction, after its incidents were inserted, each *new* live
incident that asks for a work order is placed: the subjects it may belong to are
locked (``pg_advisory_xact_lock``, all of the poll's at once, in one order, so two
trigger processes cannot deadlock or both open an order for one equipment), the
open work orders of those subjects and the gateway's silent peers are read, and
:func:`triggers.grouping.decide` says whether it requests a new work order or
joins an open one. A replayed incident is not new (its insert did nothing), so it
is never placed twice: exactly one request or update per incident.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from tmiot.events import from_us
from triggers.grouping import SAME_SILENCE_US, Decision, NewOrder, Subject, decide, subjects
from triggers.model import Opened, SensorInfo

__all__ = ["Dispatcher", "Silenced", "place", "record_silences"]

_OPEN_ORDERS = """
SELECT id::text FROM trigger_work_orders
WHERE company_id = %s AND subject_kind = %s AND subject_id = %s
  AND closed_at IS NULL AND opened_at >= %s
ORDER BY opened_at DESC LIMIT 1
"""

_PEERS = """
SELECT count(DISTINCT sensor_id) FROM trigger_silences
WHERE company_id = %s AND gateway_id = %s AND sensor_id <> %s AND since BETWEEN %s AND %s
"""

_NEW_ORDER = """
INSERT INTO trigger_work_orders (id, company_id, subject_kind, subject_id, opened_at)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING
"""

_SILENCES = """
INSERT INTO trigger_silences (company_id, gateway_id, sensor_id, since)
SELECT * FROM unnest(%(company)s::uuid[], %(gateway)s::text[], %(sensor)s::uuid[],
                     %(since)s::timestamptz[])
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Silenced:
    """A sensor behind a gateway reported silent since its last delivery."""

    company_id: str
    gateway_id: str
    sensor_id: str
    since_us: int


class Dispatcher(Protocol):
    """What a placed incident sends (:class:`triggers.actions.IncidentEvents`)."""

    def wants_order(self, o: Opened) -> bool:
        """Whether the incident's trigger requests work orders."""

    def gateway(self, sensor_id: str) -> str | None:
        """The gateway the sensor delivers through, if any."""


async def record_silences(cur: psycopg.AsyncCursor[Any], silenced: Sequence[Silenced]) -> None:
    """Remember which sensors of which gateways fell silent since when (idempotent)."""
    if silenced:
        await cur.execute(
            _SILENCES,
            {
                "company": [s.company_id for s in silenced],
                "gateway": [s.gateway_id for s in silenced],
                "sensor": [s.sensor_id for s in silenced],
                "since": [from_us(s.since_us) for s in silenced],
            },
        )


async def place(
    cur: psycopg.AsyncCursor[Any],
    live: Sequence[Opened],
    sensors: Mapping[str, SensorInfo],
    dispatcher: Dispatcher,
    attach_us: int,
) -> dict[str, Decision]:
    """Decide, and record, the work order of each new live incident that wants one."""
    wanted = [
        (o, subjects(o, sensors[o.sensor_id], dispatcher.gateway(o.sensor_id)))
        for o in sorted(live, key=lambda o: (o.opened_us, o.key))
        if o.sensor_id in sensors and dispatcher.wants_order(o)
    ]
    locks = sorted({s.lock_key for _, candidates in wanted for s in candidates})
    for key in locks:
        await cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
    decisions: dict[str, Decision] = {}
    for o, candidates in wanted:
        opened = from_us(o.opened_us)
        oldest = opened - dt.timedelta(microseconds=attach_us)
        open_orders: dict[Subject, str] = {}
        for subject in candidates:
            await cur.execute(_OPEN_ORDERS, (subject.company_id, subject.kind, subject.id, oldest))
            row = await cur.fetchone()
            if row is not None:
                open_orders[subject] = row[0]
        peers = 0
        gateway = next((s for s in candidates if s.kind == "gateway"), None)
        if gateway is not None and o.silent_since_us is not None:
            since = o.silent_since_us
            await cur.execute(
                _PEERS,
                (
                    gateway.company_id,
                    gateway.id,
                    o.sensor_id,
                    from_us(since - SAME_SILENCE_US),
                    from_us(since + SAME_SILENCE_US),
                ),
            )
            found = await cur.fetchone()
            peers = int(found[0]) if found else 0
        decision = decide(candidates, open_orders, peers)
        if isinstance(decision, NewOrder):
            s = decision.subject
            await cur.execute(_NEW_ORDER, (o.key, s.company_id, s.kind, s.id, opened))
            order = o.key
        else:
            order = decision.order
        await cur.execute(
            "UPDATE trigger_incidents SET work_order_id = %s WHERE id = %s", (order, o.key)
        )
        decisions[o.key] = decision
    return decisions
