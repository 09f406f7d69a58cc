"""Database access shared by the services: connection strings and the schema.

``schema.sql`` lives at the repository root (the project layout asks for it
there); wheels carry a copy inside this package.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tmiot.config import DatabaseSettings
from tmiot.errors import DatabaseError

__all__ = [
    "SchemaReport",
    "apply_schema",
    "conninfo",
    "create_database_if_missing",
    "schema_statements",
    "schema_text",
]

log = structlog.get_logger(__name__)

# schema.sql separates statements with this line, so that a client whose
# server limits the query message size can send them one at a time.
STATEMENT_SEPARATOR: Final = "-- ;;"
# Serialises concurrent `db init` runs (several services starting at once);
# the value is arbitrary but fixed: "tmiot" in ASCII.
_SCHEMA_LOCK_KEY: Final = 0x746D696F74

PHASE4_TABLES: Final = (
    "route_optimizations",
    "dynamic_scheduling_rules",
    "predictive_maintenance_models",
    "maintenance_predictions",
    "customer_churn_predictions",
    "equipment_sensors",
    "sensor_readings",
    "automated_service_triggers",
    "kpi_definitions",
    "kpi_values",
    "security_audit_logs",
    "compliance_frameworks",
)


def schema_text() -> str:
    """Return the text of schema.sql (packaged copy first, then the source tree)."""
    packaged = importlib.resources.files("tmiot").joinpath("schema.sql")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[1] / "schema.sql").read_text(encoding="utf-8")


def schema_statements(text: str | None = None) -> list[str]:
    """Split schema.sql into its statements (non-empty chunks between separators)."""
    text = schema_text() if text is None else text
    chunks = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip() == STATEMENT_SEPARATOR:
            chunks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    chunks.append("\n".join(current))
    return [c.strip() for c in chunks if _has_code(c)]


def _has_code(chunk: str) -> bool:
    return any(ln.strip() and not ln.strip().startswith("--") for ln in chunk.splitlines())


def conninfo(settings: DatabaseSettings, **overrides: str) -> str:
    """Build a libpq conninfo from the settings (password kept out of the URL)."""
    extra: dict[str, str] = dict(overrides)
    if settings.password is not None:
        extra["password"] = settings.password.get_secret_value()
    extra.setdefault("connect_timeout", str(max(1, round(settings.connect_timeout_seconds))))
    extra.setdefault("application_name", "tmiot")
    return make_conninfo(settings.url, **extra)


def create_database_if_missing(settings: DatabaseSettings) -> bool:
    """Create the configured database when it does not exist; True if it was created."""
    target = conninfo_to_dict(settings.url).get("dbname")
    if not target:
        return False
    try:
        with psycopg.connect(conninfo(settings, dbname="postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (target,)
            ).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(target))))
    except psycopg.errors.DuplicateDatabase:
        return False  # created concurrently by another process
    except psycopg.OperationalError as exc:
        msg = f"cannot reach PostgreSQL at {_safe_target(settings)}: {exc}"
        raise DatabaseError(msg, retriable=True) from exc
    log.info("database created", dbname=target)
    return True


@dataclass(frozen=True, slots=True)
class SchemaReport:
    """What `apply_schema` found once the schema was in place."""

    server_version: str
    timescaledb_version: str | None
    tables: tuple[str, ...]
    hypertables: tuple[str, ...]

    @property
    def missing_tables(self) -> tuple[str, ...]:
        """Phase 4 tables that are not there (empty after a successful apply)."""
        return tuple(t for t in PHASE4_TABLES if t not in self.tables)


def apply_schema(settings: DatabaseSettings) -> SchemaReport:
    """Apply schema.sql in one transaction, statement by statement; idempotent.

    Raises:
        DatabaseError: the server is unreachable (retriable) or refused a statement.
    """
    statements = schema_statements()
    try:
        with psycopg.connect(conninfo(settings)) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                for stmt in statements:
                    # Our own file, not user input: the statements carry no parameters.
                    conn.execute(stmt.encode())
            return _report(conn)
    except psycopg.OperationalError as exc:
        msg = f"cannot reach PostgreSQL at {_safe_target(settings)}: {exc}"
        raise DatabaseError(msg, retriable=True) from exc
    except psycopg.Error as exc:
        msg = f"schema.sql failed: {exc}"
        raise DatabaseError(msg) from exc


def _report(conn: psycopg.Connection[tuple[object, ...]]) -> SchemaReport:
    server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    ts_row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    tables = tuple(
        str(r[0])
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            " ORDER BY table_name"
        )
    )
    hypertables: tuple[str, ...] = ()
    if ts_row is not None:
        hypertables = tuple(
            str(r[0])
            for r in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
                " WHERE hypertable_schema = current_schema() ORDER BY 1"
            )
        )
    return SchemaReport(
        server_version=server,
        timescaledb_version=None if ts_row is None else str(ts_row[0]),
        tables=tables,
        hypertables=hypertables,
    )


def _safe_target(settings: DatabaseSettings) -> str:
    """Host, port and database of the settings, never the password."""
    parts = conninfo_to_dict(settings.url)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"
