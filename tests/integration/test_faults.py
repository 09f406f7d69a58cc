"""Process faults under a steady QoS 1 load: kill -9 of each service, database and broker restarts.

The workload (tmiot.chaos.workload) publishes one reading per second per sensor
and excursions that must each give one work order; after the faults the run is
drained and accounted: every reading stored once, every excursion one work
order, no service crashed on its own, and each stays under a resident-size bound.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fix_chaos import drain_and_check, wait_ticks
from tmiot.chaos.backends import PrivateMosquitto, PrivatePostgres
from tmiot.chaos.pipeline import Pipeline
from tmiot.chaos.workload import Workload, WorkloadPublisher
from tmiot.config import DatabaseSettings, MqttSettings

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.slow]

RATE = 100  # readings/s: one a second from each of 100 sensors
INCIDENT_SENSORS = 10


def _start_all(pipeline: Pipeline, *, workers: int) -> None:
    pipeline.start("ingest")
    for i in range(workers):
        pipeline.start(f"stream-{i}", "stream")
    pipeline.start("triggers")
    pipeline.wait_log("ingest", "mqtt subscribed")
    pipeline.wait_log("triggers", "triggers started")


def test_kill_9_each_service_in_turn(
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
    tmp_path: Path,
) -> None:
    workload = Workload.register(
        schema_database, rate=RATE, seconds=50, incident_sensors=INCIDENT_SENSORS, lead_seconds=8
    )
    with Pipeline(
        schema_database.url, kafka_bootstrap, mqtt_settings.host, mqtt_settings.port, tmp_path
    ) as pipeline:
        _start_all(pipeline, workers=2)
        publisher = WorkloadPublisher(workload, mqtt_settings)
        publisher.start_thread()
        wait_ticks(publisher, pipeline, 8)
        pipeline.kill("ingest")
        pipeline.start("ingest")
        wait_ticks(publisher, pipeline, 20)
        pipeline.kill("stream-1")  # stream-0 takes its partitions over meanwhile
        pipeline.start("stream-1")
        wait_ticks(publisher, pipeline, 32)
        pipeline.kill("triggers")
        pipeline.start("triggers")
        drain_and_check(pipeline, schema_database, kafka_bootstrap, publisher)


def test_postgres_and_mosquitto_restart(
    private_postgres: PrivatePostgres,
    private_database: DatabaseSettings,
    private_mosquitto: PrivateMosquitto,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    workload = Workload.register(
        private_database, rate=RATE, seconds=50, incident_sensors=INCIDENT_SENSORS, lead_seconds=8
    )
    mqtt = MqttSettings(host="127.0.0.1", port=private_mosquitto.port)
    with Pipeline(
        private_database.url,
        kafka_bootstrap,
        mqtt.host,
        mqtt.port,
        tmp_path / "logs",
        # Without $share: Mosquitto 2.0 does not restore a persistent session's shared
        # subscriptions after a restart, so what is published before ingest subscribes
        # again is dropped (tests/integration/test_mqtt_broker_restart.py shows it).
        share_group="",
    ) as pipeline:
        _start_all(pipeline, workers=1)
        publisher = WorkloadPublisher(workload, mqtt)
        publisher.start_thread()
        wait_ticks(publisher, pipeline, 10)
        private_postgres.restart()
        wait_ticks(publisher, pipeline, 28)
        private_mosquitto.restart()
        drain_and_check(pipeline, private_database, kafka_bootstrap, publisher)
