"""Malformed or cross-tenant trigger rows on real PostgreSQL: rejected with a reason, never fatal.

Whatever a tenant stores in ``automated_service_triggers`` (any JSON in
``trigger_conditions``, any template text), loading the directory must not raise,
must load every good trigger beside it, and must reject and audit each bad one.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fix_ingest import register_tenant
from tmiot.config import DatabaseSettings
from tmiot.db import conninfo
from triggers.conditions import CONDITION_TYPES
from triggers.directory import audit_changes, load_directory

pytestmark = pytest.mark.postgres

# What jsonb and text columns hold: no NaN or Infinity, no NUL.
_TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=12)
_NUMBER = st.floats(allow_nan=False, allow_infinity=False)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _NUMBER | _TEXT,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(_TEXT, c, max_size=5),
    max_leaves=15,
)
_KEYS = ["above", "below", "count", "of", "for_seconds", "pattern", "mode", "min_score"]
_CONDITIONS = _JSON | st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=5)
# jsonb holds deeper JSON than Python's json.loads (or pydantic's parser) takes.
_DEEP = [
    '{"above": ' + "[" * 1000 + "]" * 1000 + "}",
    "[" * 5000 + "]" * 5000,
    '{"a":' * 1000 + "1" + "}" * 1000,
]
_TEMPLATES = (
    st.none()
    | _TEXT
    | st.sampled_from(
        ["{{ ''.__class__ }}", "{{" + "(" * 990 + "1" + ")" * 990 + "}}", "{% for %}"]
    )
)


def _insert(conn: psycopg.Connection[Any], company: str, sensor: str, row: dict[str, Any]) -> str:
    found = conn.execute(
        "INSERT INTO automated_service_triggers (company_id, trigger_name, sensor_id,"
        " condition_type, trigger_conditions, notification_template, work_order_template_id)"
        " VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s) RETURNING id::text",
        (
            company,
            row.get("name", "t"),
            sensor,
            row["kind"],
            row["conditions"],
            row.get("template"),
            row.get("job_template"),
        ),
    ).fetchone()
    assert found is not None
    return str(found[0])


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    bad=st.lists(
        st.fixed_dictionaries(
            {"kind": st.sampled_from(CONDITION_TYPES), "conditions": _CONDITIONS},
            optional={"template": _TEMPLATES},
        ),
        min_size=1,
        max_size=6,
    )
)
async def test_no_trigger_row_stops_the_directory_from_loading(
    schema_database: DatabaseSettings, bad: list[dict[str, Any]]
) -> None:
    # Hypothesis runs every example on one database: a tenant per example.
    a = register_tenant(schema_database, "A", ["a1"])
    b = register_tenant(schema_database, "B", ["b1"])
    a1, b1 = a.sensors["a1"], b.sensors["b1"]
    with psycopg.connect(conninfo(schema_database), autocommit=True) as conn:
        template_b = conn.execute(
            "INSERT INTO job_templates (company_id, name) VALUES (%s, 'B only') RETURNING id::text",
            (b.company_id,),
        ).fetchone()
        assert template_b is not None
        good = _insert(
            conn,
            a.company_id,
            a1,
            {"kind": "threshold_exceeded", "conditions": json.dumps({"above": 90})},
        )
        ids = [
            _insert(conn, a.company_id, a1, row | {"conditions": json.dumps(row["conditions"])})
            for row in bad
        ]
        deep = [
            _insert(conn, a.company_id, a1, {"kind": "threshold_exceeded", "conditions": text})
            for text in _DEEP
        ]
        foreign_sensor = _insert(
            conn, a.company_id, b1, {"kind": "anomaly_detected", "conditions": "{}"}
        )
        foreign_template = _insert(
            conn,
            a.company_id,
            a1,
            {"kind": "anomaly_detected", "conditions": "{}", "job_template": template_b[0]},
        )
    async with await psycopg.AsyncConnection.connect(
        conninfo(schema_database), autocommit=True
    ) as conn:
        directory = await load_directory(conn)
        assert good in directory.triggers
        assert set(deep) <= set(directory.rejected)
        for trigger_id in deep:
            assert "recursion limit" in directory.rejected[trigger_id].reason
        assert directory.rejected[foreign_sensor].reason.startswith("tenant_mismatch")
        assert "job template" in directory.rejected[foreign_template].reason
        for trigger_id in ids:
            assert (trigger_id in directory.triggers) != (trigger_id in directory.rejected)
            if trigger_id in directory.rejected:
                reason = directory.rejected[trigger_id].reason
                assert reason.startswith(("invalid_conditions: ", "invalid_template: ")), reason
                assert "\n" not in reason
        # Company B's sensor is watched by none of A's triggers.
        assert directory.for_sensor(b1) == ()
        assert all(t.company_id == a.company_id for t in directory.for_sensor(a1))
        written = await audit_changes(conn, None, directory, set())
        mine = {good, *ids, *deep, foreign_sensor, foreign_template}
        assert written >= len(mine)
        rows = await (
            await conn.execute(
                "SELECT resource_id, success, failure_reason FROM security_audit_logs"
                " WHERE resource_id = ANY(%s)",
                (list(mine),),
            )
        ).fetchall()
    assert {r[0] for r in rows} == mine
    assert all(r[2] for r in rows if not r[1])  # every rejection audited with its reason
