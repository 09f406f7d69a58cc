"""Fixtures for ingest tests: two tenants with sensors, settings, a running service, Kafka reads."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer

from ingest.service import IngestService
from tmiot.config import (
    DatabaseSettings,
    IngestSettings,
    KafkaSettings,
    MetricsSettings,
    MqttSettings,
    Settings,
    TopicSettings,
)
from tmiot.db import conninfo


@dataclass(frozen=True)
class Tenant:
    """A company with sensors: device ids -> sensor ids."""

    company_id: str
    sensors: dict[str, str]


@dataclass(frozen=True)
class Tenants:
    """Two companies, so that isolation can be tested."""

    a: Tenant
    b: Tenant


def register_tenant(
    db: DatabaseSettings, name: str, devices: list[str], company_id: str | None = None
) -> Tenant:
    """Insert a company, a customer, one piece of equipment and a sensor per device."""
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO companies (id, name) VALUES (coalesce(%s::uuid, gen_random_uuid()), %s)"
            " RETURNING id",
            (company_id, name),
        )
        company = row.fetchone()
        assert company is not None
        customer = conn.execute(
            "INSERT INTO customers (company_id, name) VALUES (%s, %s) RETURNING id",
            (company[0], f"{name} customer"),
        ).fetchone()
        assert customer is not None
        equipment = conn.execute(
            "INSERT INTO customer_equipment (company_id, customer_id, name)"
            " VALUES (%s, %s, 'Boiler') RETURNING id",
            (company[0], customer[0]),
        ).fetchone()
        assert equipment is not None
        sensors = {}
        for device in devices:
            sensor = conn.execute(
                "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, device_id)"
                " VALUES (%s, 'temperature', %s) RETURNING id",
                (equipment[0], device),
            ).fetchone()
            assert sensor is not None
            sensors[device] = str(sensor[0])
    return Tenant(str(company[0]), sensors)


@pytest.fixture
def tenants(schema_database: DatabaseSettings) -> Tenants:
    """Company A with five sensors, company B with one."""
    suffix = uuid.uuid4().hex[:6]
    return Tenants(
        a=register_tenant(schema_database, "A", [f"a{i}-{suffix}" for i in range(5)]),
        b=register_tenant(schema_database, "B", [f"b0-{suffix}"]),
    )


def ingest_settings(
    db: DatabaseSettings, kafka_bootstrap: str, mqtt: MqttSettings, **ingest: object
) -> Settings:
    """Settings with topics, client id and share group of their own."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        readings_raw=f"raw.{suffix}",
        readings_deadletter=f"dlq.{suffix}",
        sensor_status=f"status.{suffix}",
    )
    limits: dict[str, object] = {
        "audit_flush_seconds": 0.5,
        "session_expiry_seconds": 300,
        "progress_log_seconds": 3600,
    }
    limits.update(ingest)
    return Settings(
        mqtt=mqtt.model_copy(update={"client_id": f"ingest-{suffix}", "share_group": f"g{suffix}"}),
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=4, topics=topics),
        database=db,
        ingest=IngestSettings.model_validate(limits),
        metrics=MetricsSettings(enabled=False),
    )


@contextlib.asynccontextmanager
async def running(service: IngestService) -> AsyncIterator[asyncio.Task[None]]:
    """Run the service in this event loop until the block exits."""
    task = asyncio.create_task(service.run(), name="ingest-under-test")
    try:
        async with asyncio.timeout(30):
            waiter = asyncio.create_task(service.subscribed.wait())
            done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                waiter.cancel()
                task.result()  # raises what stopped it
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class Record:
    """A consumed Kafka record."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


async def consume_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Record]], bool],
    *,
    deadline_s: float = 30.0,
    beats: bool = False,
) -> list[Record]:
    """Read `topic` from the start until `done(records)` holds; fail at the deadline.

    Ingest's heartbeats (raw records with no readings) are left out unless `beats`.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Record] = []
    try:
        async with asyncio.timeout(deadline_s):
            while not done(records):
                batch = await consumer.getmany(timeout_ms=200)
                for tp, msgs in batch.items():
                    records.extend(
                        Record(tp.partition, m.offset, m.key, m.value, dict(m.headers))
                        for m in msgs
                        if beats or b'"beat":' not in (m.value or b"")
                    )
    except TimeoutError:
        pytest.fail(f"{topic}: condition not met within {deadline_s} s ({len(records)} records)")
    finally:
        await consumer.stop()
    return records
