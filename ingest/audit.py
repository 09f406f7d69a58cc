"""Tenant violations to ``security_audit_logs``, aggregated so a flood writes few rows.

Repeats of the same (actor company, identifier) within one flush window become
one row with a count, first and last time seen.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

import psycopg
import structlog
from psycopg.types.json import Jsonb

from ingest.validation import Violation
from tmiot.config import DatabaseSettings
from tmiot.db import conninfo

__all__ = ["ViolationAuditor"]

log = structlog.get_logger(__name__)

RISK_SCORE: Final = 80  # a gateway writing a foreign tenant's sensor: compromised or misconfigured

_INSERT: Final = """
INSERT INTO security_audit_logs (
    company_id, event_type, severity, resource_type, resource_id, action_attempted,
    success, failure_reason, additional_data, risk_score, event_timestamp
)
SELECT (SELECT id FROM companies WHERE id = %(company)s::uuid),
       'security_violation', 'critical', 'equipment_sensor', %(ident)s, 'publish',
       false, 'tenant_mismatch', %(data)s, %(risk)s, %(first)s
"""


@dataclass(slots=True)
class _Tally:
    count: int
    first: dt.datetime
    last: dt.datetime
    topic: str
    owners: frozenset[str]
    topics: set[str] = field(default_factory=set)


class ViolationAuditor:
    """Counts violations in memory; `flush` writes one row per (company, identifier)."""

    def __init__(self) -> None:
        """Start with an empty window."""
        self._window: dict[tuple[str, str], _Tally] = {}

    def __len__(self) -> int:
        """Distinct (company, identifier) pairs waiting to be written."""
        return len(self._window)

    def record(self, violation: Violation, at: dt.datetime) -> None:
        """Count one violation."""
        key = (violation.company_id, violation.ident)
        tally = self._window.get(key)
        if tally is None:
            self._window[key] = _Tally(1, at, at, violation.topic, violation.owners)
        else:
            tally.count += 1
            tally.last = at

    async def flush(self, db: DatabaseSettings) -> int:
        """Write the window's rows in one transaction; returns rows written.

        On a database error the window is kept (merged with new counts) for the next flush.
        """
        if not self._window:
            return 0
        window, self._window = self._window, {}
        rows = [
            {
                "company": company,
                "ident": ident,
                "risk": RISK_SCORE,
                "first": t.first,
                "data": Jsonb(
                    {
                        "reason": "tenant_mismatch",
                        "attempts": t.count,
                        "first_seen": t.first.isoformat(),
                        "last_seen": t.last.isoformat(),
                        "sample_topic": t.topic,
                        "owner_company_ids": sorted(t.owners),
                    }
                ),
            }
            for (company, ident), t in window.items()
        ]
        try:
            async with (
                await psycopg.AsyncConnection.connect(conninfo(db)) as conn,
                conn.cursor() as cur,
            ):
                await cur.executemany(_INSERT, rows)
        except psycopg.Error as exc:
            for key, t in window.items():
                mine = self._window.get(key)
                if mine is None:
                    self._window[key] = t
                else:
                    mine.count += t.count
                    mine.first = min(mine.first, t.first)
            log.warning("audit write failed; kept for the next flush", error=str(exc))
            return 0
        log.warning(
            "tenant violations audited",
            rows=len(rows),
            attempts=sum(t.count for t in window.values()),
        )
        return len(rows)
