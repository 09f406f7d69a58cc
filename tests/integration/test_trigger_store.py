"""The trigger service's database side on real PostgreSQL: directory, audit, idempotent writes."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg

from tests.fix_ingest import register_tenant
from tmiot.config import DatabaseSettings
from tmiot.db import conninfo
from tmiot.events import WorkOrderOutcome, to_us
from triggers.directory import audit_changes, load_directory
from triggers.grouping import Decision
from triggers.model import Cleared, Evidence, Forecast, Opened, incident_key
from triggers.store import OutboxRow, TriggerStore, prediction_id


class _Rows:
    """Events of placed incidents: one row each (the unit here is the store)."""

    # Protocol methods: the arguments are part of the interface, unused here.
    # ruff: noqa: ARG002

    def wants_order(self, o: Opened) -> bool:
        return True

    def gateway(self, sensor_id: str) -> str | None:
        return None

    def events(self, o: Opened, decision: Decision | None) -> list[OutboxRow]:
        return [OutboxRow(o.key, o.key, "wo", o.key, b"{}")]


def _trigger(  # noqa: PLR0913 - one keyword per column that matters
    conn: psycopg.Connection[tuple[object, ...]],
    *,
    company: str,
    sensor: str | None,
    kind: str,
    conditions: object,
    template: str | None = None,
) -> str:
    row = conn.execute(
        "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
        " condition_type, trigger_conditions, notification_template, auto_create_work_order)"
        " VALUES (%s, 't', %s, %s, %s, %s, true) RETURNING id",
        (company, sensor, kind, json.dumps(conditions), template),
    ).fetchone()
    assert row is not None
    return str(row[0])


async def test_directory_loads_valid_triggers_and_audits_rejections_once(
    schema_database: DatabaseSettings,
) -> None:
    a = register_tenant(schema_database, "A", ["a1", "a2"])
    b = register_tenant(schema_database, "B", ["b1"])
    a1, a2, b1 = a.sensors["a1"], a.sensors["a2"], b.sensors["b1"]
    with psycopg.connect(conninfo(schema_database), autocommit=True) as conn:
        good = _trigger(
            conn,
            company=a.company_id,
            sensor=a1,
            kind="threshold_exceeded",
            conditions={"above": 80},
        )
        fleet = _trigger(
            conn,
            company=a.company_id,
            sensor=None,
            kind="anomaly_detected",
            conditions={"min_score": 0.7},
        )
        bad_shape = _trigger(
            conn,
            company=a.company_id,
            sensor=a1,
            kind="threshold_exceeded",
            conditions={"above": "hot"},
        )
        foreign = _trigger(
            conn,
            company=a.company_id,
            sensor=b1,
            kind="threshold_exceeded",
            conditions={"above": 80},
        )
        bad_template = _trigger(
            conn,
            company=a.company_id,
            sensor=a2,
            kind="anomaly_detected",
            conditions={},
            template="{{ ''.__class__ }}",
        )
    async with await psycopg.AsyncConnection.connect(
        conninfo(schema_database), autocommit=True
    ) as conn:
        directory = await load_directory(conn)
        assert set(directory.triggers) == {good, fleet}
        assert set(directory.rejected) == {bad_shape, foreign, bad_template}
        assert directory.rejected[foreign].reason.startswith("tenant_mismatch")
        assert directory.rejected[bad_shape].reason.startswith("invalid_conditions")
        assert directory.rejected[bad_template].reason.startswith("invalid_template")
        # a1 is watched by its own trigger and the fleet-wide one; a2 by the fleet one;
        # company B's sensor by none.
        assert [t.trigger_id for t in directory.for_sensor(a1)] == [good, fleet]
        assert [t.trigger_id for t in directory.for_sensor(a2)] == [fleet]
        assert directory.for_sensor(b1) == ()

        audited: set[tuple[str, str, str]] = set()
        assert await audit_changes(conn, None, directory, audited) == 5
        # Another process (a fresh memory) writes nothing already audited.
        assert await audit_changes(conn, None, directory, set()) == 0
        # Deactivating a trigger is audited once.
        await conn.execute(
            "UPDATE automated_service_triggers SET is_active = false WHERE id = %s", (good,)
        )
        after = await load_directory(conn)
        assert good not in after.triggers
        assert await audit_changes(conn, directory, after, audited) == 1
        rows = await (
            await conn.execute(
                "SELECT action_attempted, success, failure_reason FROM security_audit_logs"
                " WHERE event_type = 'configuration_change' AND resource_id = %s",
                (foreign,),
            )
        ).fetchall()
        assert rows == [("trigger_rejected", False, rows[0][2])]
        assert "tenant_mismatch" in str(rows[0][2])


async def test_a_refresh_reloads_only_what_changed(schema_database: DatabaseSettings) -> None:
    a = register_tenant(schema_database, "A", ["a1"])
    with psycopg.connect(conninfo(schema_database), autocommit=True) as conn:
        trigger = _trigger(
            conn,
            company=a.company_id,
            sensor=a.sensors["a1"],
            kind="threshold_exceeded",
            conditions={"above": 80},
        )
    async with await psycopg.AsyncConnection.connect(
        conninfo(schema_database), autocommit=True
    ) as conn:
        first = await load_directory(conn)
        # Nothing changed: the same directory, not a reload.
        assert await load_directory(conn, first, reload_sensors=False) is first
        await conn.execute(
            "UPDATE automated_service_triggers SET trigger_conditions = %s WHERE id = %s",
            (json.dumps({"above": 95}), trigger),
        )
        changed = await load_directory(conn, first, reload_sensors=False)
        assert changed is not first
        assert changed.versions[trigger] != first.versions[trigger]
        assert changed.triggers[trigger].condition != first.triggers[trigger].condition
        # A sensor reload is a full load even when no trigger changed.
        assert await load_directory(conn, changed, reload_sensors=True) is not changed
        await conn.execute(
            "UPDATE automated_service_triggers SET is_active = false WHERE id = %s", (trigger,)
        )
        assert trigger not in (await load_directory(conn, changed, reload_sensors=False)).triggers


async def test_store_writes_each_incident_once_and_keeps_feedback(  # noqa: PLR0915 - one story
    schema_database: DatabaseSettings,
) -> None:
    a = register_tenant(schema_database, "A", ["a1"])
    sensor = a.sensors["a1"]
    with psycopg.connect(conninfo(schema_database), autocommit=True) as conn:
        trigger = _trigger(
            conn,
            company=a.company_id,
            sensor=sensor,
            kind="threshold_exceeded",
            conditions={"above": 80},
        )
    async with await psycopg.AsyncConnection.connect(conninfo(schema_database)) as conn:
        await conn.set_autocommit(True)
        directory = await load_directory(conn)
        await conn.set_autocommit(False)
        store = TriggerStore(conn, "g", "scored")
        opened_us = to_us(dt.datetime.now(dt.UTC))
        key = incident_key(trigger, sensor, opened_us)
        evidence = (Evidence(sensor, opened_us, 91.5, 0.2, None),)
        forecast = Forecast(
            crossing_us=opened_us + 3_600_000_000 * 30,
            threshold=100.0,
            bound="max",
            slope_per_hour=0.5,
            confidence=80.0,
            severity="high",
            recommended_action="schedule_maintenance",
        )
        live = Opened(
            key,
            trigger,
            sensor,
            opened_us,
            historical=False,
            summary="above 80",
            evidence=evidence,
            forecast=forecast,
        )
        old_key = incident_key(trigger, sensor, opened_us - 10**10)
        old = Opened(
            old_key,
            trigger,
            sensor,
            opened_us - 10**10,
            historical=True,
            summary="above 80",
            evidence=evidence,
        )
        outbox = _Rows()
        companies = {trigger: a.company_id}
        send, new = await store.commit([live, old], directory.sensors, companies, [], outbox)
        assert (len(send), new) == (1, 1)
        # A replay of the same transitions writes nothing and sends nothing.
        send, new = await store.commit([live, old], directory.sensors, companies, [], outbox)
        assert (send, new) == ([], 0)
        rows = await (
            await conn.execute(
                "SELECT times_triggered, last_triggered_at IS NOT NULL"
                " FROM automated_service_triggers WHERE id = %s",
                (trigger,),
            )
        ).fetchall()
        assert rows == [(1, True)]
        await conn.commit()
        incidents = await (
            await conn.execute(
                "SELECT id::text, historical, prediction_id::text FROM trigger_incidents"
                " ORDER BY opened_at"
            )
        ).fetchall()
        assert incidents == [(old_key, True, None), (key, False, prediction_id(key))]
        orders = await (
            await conn.execute("SELECT id::text, subject_kind FROM trigger_work_orders")
        ).fetchall()
        assert orders == [(key, "equipment")]  # the live incident's work order
        prediction = await (
            await conn.execute(
                "SELECT severity::text, recommended_action::text, confidence_score::float8,"
                " status::text FROM maintenance_predictions WHERE id = %s",
                (prediction_id(key),),
            )
        ).fetchone()
        assert prediction == ("high", "schedule_maintenance", 80.0, "active")
        await conn.commit()

        # Sent rows are marked; unsent ones older than a cutoff are found for a retry.
        cutoff = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        assert [r.id for r in await store.unsent(cutoff)] == [key]
        await store.mark_sent([key])
        assert await store.unsent(cutoff) == []

        # Feedback: a false positive sets the rate and the prediction's status.
        outcome = WorkOrderOutcome(
            idempotency_key=uuid.UUID(key),
            outcome="false_positive",
            at=dt.datetime.now(dt.UTC),
        )
        assert await store.record_outcome(outcome) == (key, trigger, sensor)
        unknown = outcome.model_copy(update={"idempotency_key": uuid.uuid4()})
        assert await store.record_outcome(unknown) is None
        rate = await (
            await conn.execute(
                "SELECT false_positive_rate::float8 FROM automated_service_triggers WHERE id = %s",
                (trigger,),
            )
        ).fetchone()
        assert rate == (100.0,)
        status = await (
            await conn.execute(
                "SELECT status::text FROM maintenance_predictions WHERE id = %s",
                (prediction_id(key),),
            )
        ).fetchone()
        assert status == ("false_positive",)
        await conn.commit()

        # Clearing is idempotent too; a checkpoint round-trips states and offsets.
        cleared = Cleared(key, trigger, sensor, opened_us + 1, "condition_cleared")
        await store.commit([], directory.sensors, companies, [cleared], outbox)
        await store.commit([], directory.sensors, companies, [cleared], outbox)
        state = {"open": key, "n": 3}
        await store.checkpoint({2: 41}, {(trigger, sensor): state}, {sensor: 2})
        offset, states = await store.load_partition(2)
        assert (offset, states) == (41, {(trigger, sensor): state})
        assert await store.load_partition(3) == (None, {})
