"""The sensor directory: device id or sensor number -> sensor and owning company.

An in-memory map, so that no message costs a database query. It is loaded in
full at start and every ``sensor_reload_seconds``, and patched between full
loads from ``NOTIFY tmiot_sensors`` (schema.sql fires it when a sensor is
added, removed, or its device id, number or equipment changes).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from enum import Enum
from typing import Final, Self
from uuid import UUID

import psycopg
import structlog

from tmiot.config import DatabaseSettings
from tmiot.db import conninfo

__all__ = ["Lookup", "SensorDirectory", "SensorInfo", "watch_sensors"]

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL: Final = "tmiot_sensors"
_BURST: Final = 5000

_SELECT = """
SELECT s.id::text, s.device_id, s.sensor_number, ce.company_id::text
FROM equipment_sensors AS s
JOIN customer_equipment AS ce ON ce.id = s.customer_equipment_id
"""


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """What ingest needs to know of a sensor (ids as text and as UUIDs, parsed once)."""

    sensor_id: str
    company_id: str
    device_id: str | None
    sensor_number: str
    sensor_uuid: UUID
    company_uuid: UUID

    @classmethod
    def of(cls, sensor_id: str, company_id: str, device_id: str | None, sensor_number: str) -> Self:
        """Build one from text ids."""
        return cls(
            sensor_id, company_id, device_id, sensor_number, UUID(sensor_id), UUID(company_id)
        )


class Lookup(Enum):
    """Outcome of resolving a (company, device) pair."""

    FOUND = "found"
    UNKNOWN = "unknown"
    OTHER_TENANT = "other_tenant"


class SensorDirectory:
    """In-memory index of sensors by (company, device id or sensor number)."""

    def __init__(self) -> None:
        """Start empty; `replace_all` or `upsert` fill it."""
        self._by_key: dict[tuple[str, str], SensorInfo] = {}
        # identifier -> companies owning a sensor with that identifier: tells a
        # foreign tenant's sensor (audited) from an unknown one.
        self._owners: dict[str, set[str]] = {}
        self._by_id: dict[str, SensorInfo] = {}

    def __len__(self) -> int:
        """Number of sensors known."""
        return len(self._by_id)

    def find(self, company_id: str, ident: str) -> SensorInfo | None:
        """The sensor `ident` of `company_id`, or None (the hot path; see `resolve`)."""
        return self._by_key.get((company_id, ident))

    def resolve(self, company_id: str, ident: str) -> tuple[Lookup, SensorInfo | None]:
        """Find the sensor `ident` (device id or sensor number) of `company_id`."""
        info = self._by_key.get((company_id, ident))
        if info is not None:
            return Lookup.FOUND, info
        if ident in self._owners:
            return Lookup.OTHER_TENANT, None
        return Lookup.UNKNOWN, None

    def owners(self, ident: str) -> frozenset[str]:
        """Companies that own a sensor with this identifier (for audit records)."""
        return frozenset(self._owners.get(ident, ()))

    def upsert(self, info: SensorInfo) -> None:
        """Add or replace one sensor."""
        self.remove(info.sensor_id)
        self._by_id[info.sensor_id] = info
        for ident in self._idents(info):
            self._by_key[(info.company_id, ident)] = info
            self._owners.setdefault(ident, set()).add(info.company_id)

    def remove(self, sensor_id: str) -> None:
        """Forget one sensor (no-op when unknown)."""
        old = self._by_id.pop(sensor_id, None)
        if old is None:
            return
        for ident in self._idents(old):
            key = (old.company_id, ident)
            if self._by_key.get(key) is old:
                del self._by_key[key]
            owners = self._owners.get(ident)
            if owners is not None and key not in self._by_key:
                owners.discard(old.company_id)
                if not owners:
                    del self._owners[ident]

    def replace_all(self, infos: list[SensorInfo]) -> None:
        """Swap in a full load atomically (no await in between)."""
        fresh = SensorDirectory()
        for info in infos:
            fresh.upsert(info)
        self._by_key, self._owners, self._by_id = fresh._by_key, fresh._owners, fresh._by_id

    @staticmethod
    def _idents(info: SensorInfo) -> tuple[str, ...]:
        if info.device_id and info.device_id != info.sensor_number:
            return (info.device_id, info.sensor_number)
        return (info.sensor_number,)


def _info(row: tuple[object, ...]) -> SensorInfo:
    """A row of _SELECT: id, device_id, sensor_number, company_id."""
    device = None if row[1] is None else str(row[1])
    return SensorInfo.of(str(row[0]), str(row[3]), device, str(row[2]))


async def load_all(db: DatabaseSettings) -> list[SensorInfo]:
    """Read every sensor with its company."""
    async with await psycopg.AsyncConnection.connect(conninfo(db)) as conn:
        cur = await conn.execute(_SELECT)
        return [_info(r) for r in await cur.fetchall()]


async def watch_sensors(
    db: DatabaseSettings,
    directory: SensorDirectory,
    *,
    reload_seconds: float,
    loaded: asyncio.Event | None = None,
) -> None:
    """Keep `directory` fresh forever: full loads, patched by notifications.

    Reconnects with capped exponential backoff and jitter when the database
    goes away; the directory keeps serving its last state meanwhile.
    """
    attempt = 0
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo(db), autocommit=True) as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                cur = await conn.execute(_SELECT)
                directory.replace_all([_info(r) for r in await cur.fetchall()])
                log.info("sensor directory loaded", sensors=len(directory))
                if loaded is not None:
                    loaded.set()
                attempt = 0
                await _follow(conn, directory, reload_seconds)
        except psycopg.OperationalError as exc:
            attempt += 1
            delay = random.uniform(0, 1.5 ** min(10, attempt))  # noqa: S311 - jitter, not crypto
            log.warning("sensor directory connection lost", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)


async def _follow(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    directory: SensorDirectory,
    reload_seconds: float,
) -> None:
    """Apply notifications until it is time for a full reload, then reload; forever."""
    loop = asyncio.get_running_loop()
    next_reload = loop.time() + reload_seconds
    while True:
        timeout = max(0.0, next_reload - loop.time())
        changed: set[str] = set()
        # Wait for the first change, then take what else arrives in a short burst
        # (a bulk registration notifies once per sensor) and apply it in one query.
        async for note in conn.notifies(timeout=timeout, stop_after=1):
            changed.add(note.payload)
        if changed:
            async for note in conn.notifies(timeout=0.05, stop_after=_BURST):
                changed.add(note.payload)
        if changed:
            cur = await conn.execute(_SELECT + " WHERE s.id = ANY(%s::uuid[])", (list(changed),))
            found = {r[0]: _info(r) for r in await cur.fetchall()}
            for sensor_id in changed:
                if sensor_id in found:
                    directory.upsert(found[sensor_id])
                else:
                    directory.remove(sensor_id)
            log.debug("sensor directory patched", changed=len(changed))
        if loop.time() >= next_reload:
            cur = await conn.execute(_SELECT)
            directory.replace_all([_info(r) for r in await cur.fetchall()])
            next_reload = loop.time() + reload_seconds
