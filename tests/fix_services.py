"""Fixtures for the real services the integration tests talk to.

Where a Docker engine answers, testcontainers starts Kafka (KRaft), PostgreSQL
and Mosquitto. Where none does (this machine), the local services are used: a
tansu broker started here on a free port, the PostgreSQL server and the
Mosquitto broker already running on loopback. A service that does not answer
fails the test with what to do; it never turns into a silent pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tmiot.config import DatabaseSettings, MqttSettings
from tmiot.db import apply_schema
from tmiot.services import free_port, kafka_problem, mqtt_problem, start_tansu, stop_pid

DEADLINE_SECONDS = 30.0


@functools.cache
def docker_engine() -> str | None:
    """Return None when a Docker engine answers /_ping, else why not (the fallback reason).

    Asked over the socket directly: docker-py leaks its socket when no engine answers.
    """
    if os.environ.get("TMIOT_TEST_NO_DOCKER"):
        return "TMIOT_TEST_NO_DOCKER is set"
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        family, address = socket.AF_UNIX, host.removeprefix("unix://")
    elif host.startswith("tcp://"):
        name, _, port = host.removeprefix("tcp://").rpartition(":")
        family, address = socket.AF_INET, (name, int(port))  # type: ignore[assignment]
    else:
        return f"unsupported DOCKER_HOST {host}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"no Docker engine at {host} ({exc.strerror or exc})"
    if b" 200 " not in answer:
        return f"Docker at {host} answered {answer[:40]!r}"
    return None


def wait_until_healthy(
    probe: Callable[[], Coroutine[object, object, str | None]], what: str
) -> None:
    """Poll an async probe (returns None when healthy) until the deadline; fail if never."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    problem: str | None = "not probed"
    while time.monotonic() < deadline:
        problem = asyncio.run(probe())
        if problem is None:
            return
        time.sleep(0.2)
    pytest.fail(f"{what} did not answer within {DEADLINE_SECONDS:.0f} s: {problem}")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a Kafka-protocol broker for this test session."""
    if docker_engine() is None:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield str(kafka.get_bootstrap_server())
        return
    port = free_port()
    log_path = tmp_path_factory.mktemp("kafka") / "tansu.log"
    proc = start_tansu("127.0.0.1", port, log_path)
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_until_healthy(functools.partial(kafka_problem, bootstrap), f"tansu at {bootstrap}")
        yield bootstrap
    finally:
        stop_pid(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database (superuser)."""
    if docker_engine() is None:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as pg:
            yield str(pg.get_connection_url())
        return
    url = os.environ.get("TMIOT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL does not answer at {url}: {exc}. Start it "
            "(pg_ctlcluster --skip-systemctl-redirect 15 main start) or set TMIOT_TEST_PG_URL."
        )
    yield url


def _database_url(admin_url: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(admin_url)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


@pytest.fixture
def fresh_database(pg_admin_url: str) -> Iterator[DatabaseSettings]:
    """A new, empty database of its own for one test, dropped afterwards."""
    dbname = f"tmiot_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield DatabaseSettings(url=_database_url(pg_admin_url, dbname))
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


@pytest.fixture
def schema_database(fresh_database: DatabaseSettings) -> DatabaseSettings:
    """A database of its own with schema.sql applied."""
    apply_schema(fresh_database)
    return fresh_database


@pytest.fixture(scope="session")
def mqtt_settings() -> Iterator[MqttSettings]:
    """Settings of an MQTT broker that accepts anonymous clients."""
    if docker_engine() is None:
        from testcontainers.mqtt import MosquittoContainer

        with MosquittoContainer() as broker:
            yield MqttSettings(
                host=broker.get_container_host_ip(),
                port=int(broker.get_exposed_port(broker.MQTT_PORT)),
            )
        return
    host = os.environ.get("TMIOT_TEST_MQTT_HOST", "127.0.0.1")
    port = int(os.environ.get("TMIOT_TEST_MQTT_PORT", "1883"))
    settings = MqttSettings(host=host, port=port)
    from tmiot.config import Settings

    problem = asyncio.run(mqtt_problem(Settings(mqtt=settings)))
    if problem is not None:
        pytest.fail(
            f"Mosquitto does not answer at {host}:{port}: {problem}. Start it "
            "(mosquitto -d -c /etc/mosquitto/mosquitto.conf) or set TMIOT_TEST_MQTT_HOST/PORT."
        )
    yield settings


def repo_root() -> Path:
    """The repository root (parent of tests/)."""
    return Path(__file__).resolve().parents[1]
