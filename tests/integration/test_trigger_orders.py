"""One work order per fault, on the real database: two processes, replays, gateways."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import psycopg

from tests.fix_ingest import register_tenant
from tmiot.config import DatabaseSettings, TopicSettings
from tmiot.db import conninfo
from tmiot.events import (
    WORKORDER_UPDATE_SCHEMA,
    WorkOrderOutcome,
    WorkOrderRequested,
    WorkOrderUpdated,
    to_us,
)
from triggers.actions import IncidentEvents
from triggers.directory import load_directory
from triggers.model import Evidence, Opened, incident_key
from triggers.orders import Silenced
from triggers.store import TriggerStore

_S = 1_000_000


def _fleet_trigger(db: DatabaseSettings, company: str, kind: str, conditions: object) -> str:
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
            " condition_type, trigger_conditions, auto_create_work_order)"
            " VALUES (%s, 'fleet', NULL, %s, %s, true) RETURNING id",
            (company, kind, json.dumps(conditions)),
        ).fetchone()
        assert row is not None
        return str(row[0])


def _incident(trigger: str, sensor: str, at_us: int, *, since_us: int | None = None) -> Opened:
    return Opened(
        incident_key(trigger, sensor, at_us),
        trigger,
        sensor,
        at_us,
        historical=False,
        summary="2 anomalies",
        evidence=(Evidence(sensor, at_us, 1.0, 0.9, "spike"),),
        silent_since_us=since_us,
    )


async def test_five_sensors_of_one_equipment_make_one_work_order_across_two_processes(
    schema_database: DatabaseSettings,
) -> None:
    devices = [f"d{i}" for i in range(5)]
    tenant = register_tenant(schema_database, "Pump Co", devices)
    # A trigger per sensor (each a different check of the pump): nothing but the work
    # order's lock keeps their processes from opening one each.
    triggers = [
        _fleet_trigger(schema_database, tenant.company_id, "anomaly_detected", {"count": i + 1})
        for i in range(5)
    ]
    now = to_us(dt.datetime.now(dt.UTC))
    incidents = [
        _incident(t, tenant.sensors[d], now - (10 - i) * _S)
        for i, (t, d) in enumerate(zip(triggers, devices, strict=True))
    ]
    dsn = conninfo(schema_database)
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as dconn,
        await psycopg.AsyncConnection.connect(dsn) as c1,
        await psycopg.AsyncConnection.connect(dsn) as c2,
        await psycopg.AsyncConnection.connect(dsn) as c3,
        await psycopg.AsyncConnection.connect(dsn) as c4,
        await psycopg.AsyncConnection.connect(dsn) as c5,
    ):
        directory = await load_directory(dconn)
        companies = dict.fromkeys(triggers, tenant.company_id)
        events = IncidentEvents(directory, TopicSettings(), now, {})
        stores = [TriggerStore(c, "g", "scored") for c in (c1, c2, c3, c4, c5)]
        one, two = stores[0], stores[1]

        async def commit(store: TriggerStore, opened: list[Opened]) -> list[bytes]:
            send, _ = await store.commit(opened, directory.sensors, companies, [], events)
            return [r.payload for r in send if r.topic == "workorders.requested"]

        # Trigger processes, each with one of the equipment's sensors, commit at once.
        sent = await asyncio.gather(
            *(commit(st, [o]) for st, o in zip(stores, incidents, strict=True))
        )
        payloads = [p for batch in sent for p in batch]
        requests = [
            WorkOrderRequested.model_validate_json(p) for p in payloads if b'"updated"' not in p
        ]
        updates = [WorkOrderUpdated.model_validate_json(p) for p in payloads if b'"updated"' in p]
        assert len(requests) == 1
        order = requests[0].idempotency_key
        assert len(updates) == 4
        assert {u.idempotency_key for u in updates} == {order}
        evidence = {e.sensor_id for e in requests[0].evidence} | {
            e.sensor_id for u in updates for e in u.evidence
        }
        assert {str(s) for s in evidence} == set(tenant.sensors.values())
        # A replay (a restart, a second process taking the partitions over) adds nothing.
        assert await commit(one, incidents) == []
        assert await commit(two, incidents[::-1]) == []
        rows = await (
            await dconn.execute(
                "SELECT count(*), count(DISTINCT work_order_id) FROM trigger_incidents"
                " WHERE company_id = %s",
                (tenant.company_id,),
            )
        ).fetchone()
        assert rows == (5, 1)
        schemas = await (
            await dconn.execute(
                "SELECT record_schema, count(*) FROM trigger_outbox o"
                " JOIN trigger_incidents i ON i.id = o.incident_id WHERE i.company_id = %s"
                " GROUP BY 1 ORDER BY 1 NULLS FIRST",
                (tenant.company_id,),
            )
        ).fetchall()
        assert schemas == [(None, 1), (WORKORDER_UPDATE_SCHEMA.decode(), 4)]
        # The FSM resolves the work order: every gathered incident shares the outcome, the
        # order is closed, and the next fault of the pump is a new work order.
        outcome = WorkOrderOutcome(
            idempotency_key=order, outcome="resolved", at=dt.datetime.now(dt.UTC)
        )
        assert await one.record_outcome(outcome) is not None
        resolved = await (
            await dconn.execute(
                "SELECT count(*) FROM trigger_incidents WHERE company_id = %s"
                " AND outcome = 'resolved' AND clear_reason = 'work_order_resolved'",
                (tenant.company_id,),
            )
        ).fetchone()
        assert resolved == (5,)
        later = _incident(triggers[0], tenant.sensors["d0"], now + 60 * _S)
        (payload,) = await commit(one, [later])
        fresh = WorkOrderRequested.model_validate_json(payload)  # a request, not an update
        assert fresh.idempotency_key != order


async def test_a_gateways_sensors_silent_together_are_one_gateway_work_order(
    schema_database: DatabaseSettings,
) -> None:
    tenant = register_tenant(schema_database, "Gate Co", ["g1", "g2", "g3"])
    trigger = _fleet_trigger(
        schema_database, tenant.company_id, "pattern_detected", {"pattern": "missing"}
    )
    now = to_us(dt.datetime.now(dt.UTC))
    since = now - 3600 * _S
    s = tenant.sensors
    gateways = {s[d]: "gw-9" for d in ("g1", "g2", "g3")}
    silenced = [Silenced(tenant.company_id, "gw-9", s[d], since) for d in ("g1", "g2", "g3")]
    dsn = conninfo(schema_database)
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as dconn,
        await psycopg.AsyncConnection.connect(dsn) as conn,
    ):
        directory = await load_directory(dconn)
        store = TriggerStore(conn, "g", "scored")
        companies = {trigger: tenant.company_id}
        events = IncidentEvents(directory, TopicSettings(), now, gateways)
        send, _ = await store.commit(
            [], directory.sensors, companies, [], events, silenced=silenced
        )
        assert send == []
        gone = [
            _incident(trigger, s[d], since + 900 * _S, since_us=since) for d in ("g1", "g2", "g3")
        ]
        send, _ = await store.commit(gone, directory.sensors, companies, [], events)
        requests = [
            WorkOrderRequested.model_validate_json(r.payload) for r in send if r.schema is None
        ]
        assert [(r.subject, r.gateway_id) for r in requests] == [("gateway", "gw-9")]
        assert sum(r.schema is not None for r in send) == 2  # the other two: updates
        orders = await (
            await dconn.execute(
                "SELECT subject_kind, subject_id FROM trigger_work_orders WHERE company_id = %s",
                (tenant.company_id,),
            )
        ).fetchall()
        assert orders == [("gateway", "gw-9")]
