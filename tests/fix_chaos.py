"""Fixtures and checks for fault tests: private PostgreSQL and Mosquitto, drain and account.

A private instance is what a restart fault needs: the shared PostgreSQL and
Mosquitto serve other test runs and are never restarted. A missing prerequisite
(the PostgreSQL server binaries, mosquitto) skips the test with its reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmiot.chaos.accounting import (
    count_readings,
    match_work_orders,
    read_work_orders,
    wait_drained,
)
from tmiot.chaos.backends import BackendError, PrivateMosquitto, PrivatePostgres
from tmiot.chaos.pipeline import Pipeline
from tmiot.chaos.workload import WorkloadPublisher
from tmiot.config import DatabaseSettings
from tmiot.db import apply_schema, create_database_if_missing

# Each long-lived service stays under this resident size after a fault run (MiB):
# about four times what each takes here at steady state (140-170 MiB).
RSS_BOUND_MIB = 600.0
DRAIN_SECONDS = 120.0
_POLL = 0.2


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own (restartable)."""
    try:
        pg = PrivatePostgres()
    except BackendError as exc:
        pytest.skip(f"no private PostgreSQL: {exc}")
    with pg:
        yield pg


@pytest.fixture
def private_database(private_postgres: PrivatePostgres) -> DatabaseSettings:
    """The schema in a database of the private cluster."""
    db = DatabaseSettings(url=private_postgres.url("tmiot"))
    create_database_if_missing(db)
    apply_schema(db)
    return db


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A Mosquitto of this test's own (restartable, persistence on)."""
    broker = PrivateMosquitto(tmp_path / "mosquitto")
    try:
        broker.start()
    except BackendError as exc:
        pytest.skip(f"no private Mosquitto: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


def wait_ticks(publisher: WorkloadPublisher, pipeline: Pipeline, ticks: int) -> None:
    """Wait (deadline) until the publisher generated `ticks` ticks; fail if a service died."""
    deadline = publisher.workload.start_us / 1e6 + ticks + 60.0
    while publisher.stats.ticks < ticks:
        if publisher.error is not None:
            pytest.fail(f"publisher failed: {publisher.error!r}")
        if time.time() > deadline:
            pytest.fail(f"publisher at tick {publisher.stats.ticks}, wanted {ticks}")
        pipeline.check_alive()
        time.sleep(_POLL)


def drain_and_check(
    pipeline: Pipeline, db: DatabaseSettings, bootstrap: str, publisher: WorkloadPublisher
) -> None:
    """Wait for the publisher, every reading and every work order (deadlines); then assert.

    Every published reading is stored exactly once, every excursion has exactly
    one work order and nothing else has one, no service ended on its own, and
    each is under RSS_BOUND_MIB.
    """
    workload = publisher.workload
    end = time.monotonic() + workload.ticks + DRAIN_SECONDS
    while not publisher.finished.is_set():
        if publisher.error is not None:
            pytest.fail(f"publisher failed: {publisher.error!r}")
        if time.monotonic() > end:
            pytest.fail("the publisher did not finish (its broker never came back?)")
        pipeline.check_alive()
        time.sleep(_POLL)
    wait_drained(db, workload, DRAIN_SECONDS, check=pipeline.check_alive)
    excursions = workload.excursions()
    end = time.monotonic() + DRAIN_SECONDS
    while True:
        orders = asyncio.run(read_work_orders(bootstrap, pipeline.topic("wo")))
        account = match_work_orders(excursions, orders)
        if len(account.missing) == 0 or time.monotonic() > end:
            break
        pipeline.check_alive()
        time.sleep(1.0)
    # What should not be there (a late duplicate) gets a short grace period to show up.
    time.sleep(2.0)
    account = match_work_orders(
        excursions, asyncio.run(read_work_orders(bootstrap, pipeline.topic("wo")))
    )
    readings = count_readings(db, workload)
    rss = pipeline.last_rss_mib()
    print(f"{readings}\nwork orders {account.summary()}\nrss MiB {rss}\n{publisher.stats}")
    assert readings.ok(), (readings, pipeline.tails())
    assert account.incidents > 0
    assert account.ok(), (account.summary(), pipeline.tails())
    pipeline.check_alive()
    assert all(v < RSS_BOUND_MIB for v in rss.values()), rss
