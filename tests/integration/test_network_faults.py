"""Network faults: the links to Kafka and to PostgreSQL cut, delayed and stalled under load.

Every service reaches Kafka and PostgreSQL through a TCP proxy on loopback
(tmiot.chaos.proxy). Kafka clients connect to the address the broker advertises,
so this test runs a tansu broker of its own that advertises the proxy. The
services must back off, reconnect and catch up by themselves: every reading
stored once, every excursion one work order, no process exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stream.sink import ReadingsSink
from tests.fix_chaos import drain_and_check, wait_ticks
from tmiot.chaos.backends import PrivateKafka
from tmiot.chaos.pipeline import Pipeline
from tmiot.chaos.proxy import TcpProxy
from tmiot.chaos.workload import Workload, WorkloadPublisher
from tmiot.config import DatabaseSettings, MqttSettings
from tmiot.services import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def kafka_behind_proxy(tmp_path: Path) -> Iterator[tuple[str, TcpProxy]]:
    """A tansu broker that advertises a proxy in front of it: (bootstrap via the proxy, proxy)."""
    port = free_port()
    with (
        PrivateKafka(tmp_path / "tansu.log", advertised=f"127.0.0.1:{port}") as kafka,
        TcpProxy("127.0.0.1", kafka.port, port=port) as proxy,
    ):
        yield f"127.0.0.1:{proxy.port}", proxy


async def test_stream_sink_waits_for_an_unreachable_database(
    schema_database: DatabaseSettings,
) -> None:
    """A stream worker starting while its database is unreachable waits for it (was: exited)."""
    with TcpProxy(*_pg_target(schema_database)) as pg:
        pg.cut()
        db = DatabaseSettings(
            url=make_conninfo(schema_database.url, host="127.0.0.1", port=str(pg.port))
        )
        sink = ReadingsSink(db, retry_cap_seconds=0.5)
        opening = asyncio.create_task(sink.__aenter__())
        async with asyncio.timeout(30):
            while pg.refused < 2:
                assert not opening.done(), opening.exception()
                await asyncio.sleep(0.05)
        pg.resume()
        async with asyncio.timeout(30):
            await opening
        await sink.__aexit__(None, None, None)


def _pg_target(db: DatabaseSettings) -> tuple[str, int]:
    params = conninfo_to_dict(db.url)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)


def test_kafka_and_postgres_links_cut_delayed_and_stalled(
    schema_database: DatabaseSettings,
    kafka_behind_proxy: tuple[str, TcpProxy],
    mqtt_settings: MqttSettings,
    tmp_path: Path,
) -> None:
    bootstrap, kafka = kafka_behind_proxy
    target = _pg_target(schema_database)
    workload = Workload.register(
        schema_database, rate=100, seconds=56, incident_sensors=10, lead_seconds=8
    )
    with (
        TcpProxy(*target) as pg,
        Pipeline(
            make_conninfo(schema_database.url, host="127.0.0.1", port=str(pg.port)),
            bootstrap,
            mqtt_settings.host,
            mqtt_settings.port,
            tmp_path / "logs",
        ) as pipeline,
    ):
        pipeline.start("ingest")
        pipeline.start("stream")
        pipeline.start("triggers")
        pipeline.wait_log("ingest", "mqtt subscribed")
        pipeline.wait_log("triggers", "triggers started")
        publisher = WorkloadPublisher(workload, mqtt_settings)
        publisher.start_thread()
        for tick, fault in (
            (8, kafka.cut),
            (16, kafka.resume),
            (20, lambda: kafka.delay(0.2)),
            (28, lambda: kafka.delay(0)),
            (32, pg.cut),
            (39, pg.resume),
            (43, pg.stall),
            (48, pg.resume),
        ):
            wait_ticks(publisher, pipeline, tick)
            fault()
        drain_and_check(pipeline, schema_database, bootstrap, publisher)
        print(f"connections through the proxies: kafka {kafka.connections}, pg {pg.connections}")
