"""The fleet simulator against real PostgreSQL, Mosquitto, ingest and the Kafka broker."""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from ingest.service import IngestService
from tests.fix_ingest import Record, consume_until, ingest_settings, running
from tmiot.config import DatabaseSettings, MqttSettings
from tmiot.db import conninfo
from tmiot.events import RAW_SCHEMA, SCHEMA_HEADER, decode_reading_batch, reading_rows
from tmiot.kafka import partition_for
from tmiot.recording import read_recording
from tmiot.simulate import (
    AnomalyType,
    PublishOptions,
    SensorType,
    publish_fleet,
    read_ground_truth,
    register_fleet,
)

pytestmark = [pytest.mark.postgres]


def test_registration_is_idempotent_and_covers_the_seed_sensor_types(
    schema_database: DatabaseSettings,
) -> None:
    first = register_fleet(schema_database, sensors=14, seed=3, company_name="Sim A")
    again = register_fleet(schema_database, sensors=14, seed=3, company_name="Sim A")
    grown = register_fleet(schema_database, sensors=20, seed=3, company_name="Sim A")
    assert first == again
    assert grown.sensors[:14] == first.sensors
    assert {s.sensor_type for s in first.sensors} == set(SensorType)
    with psycopg.connect(conninfo(schema_database)) as conn:
        rows = conn.execute(
            "SELECT s.sensor_number, s.unit_of_measure, s.alert_threshold_min,"
            " s.alert_threshold_max, s.sampling_interval_seconds, ce.company_id::text"
            " FROM equipment_sensors s"
            " JOIN customer_equipment ce ON ce.id = s.customer_equipment_id"
        ).fetchall()
    assert len(rows) == 20
    assert len({r[0] for r in rows}) == 20
    assert all(r[0].startswith("SENS-") for r in rows)
    assert all(r[1] and r[2] < r[3] and r[4] > 0 for r in rows)
    assert {r[5] for r in rows} == {first.company_id}


def _keys(path: Path) -> list[tuple[str, dt.datetime]]:
    with path.open(encoding="utf-8", newline="") as src:
        return [(row[0], dt.datetime.fromisoformat(row[2])) for row in csv.reader(src)]


def _received(records: list[Record]) -> list[tuple[str, dt.datetime]]:
    return [
        (r["sensor_id"], r["reading_timestamp"])
        for rec in records
        for r in reading_rows(decode_reading_batch(rec.value))
    ]


@pytest.mark.kafka
@pytest.mark.mqtt
@pytest.mark.parametrize("batch_size", [1, 50])
async def test_every_simulated_reading_reaches_kafka_in_order(
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
    tmp_path: Path,
    batch_size: int,
) -> None:
    fleet = register_fleet(schema_database, sensors=30, seed=9, company_name="Sim B")
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt_settings)
    options = PublishOptions(
        rate=None, readings=3000, batch_size=batch_size, qos=1, keys_out=tmp_path / "keys.csv"
    )
    async with running(IngestService(settings)):
        result = await publish_fleet(settings.mqtt, fleet, options)
        assert result.readings == 3000
        expected = _keys(tmp_path / "keys.csv")
        assert len(expected) == 3000
        records = await consume_until(
            kafka_bootstrap,
            settings.kafka.topics.readings_raw,
            lambda recs: len(_received(recs)) >= len(expected),
        )
    got = _received(records)
    assert Counter(got) == Counter(expected)
    for sensor in {s for s, _ in expected}:  # each sensor's readings in time order
        times = [t for s, t in got if s == sensor]
        assert times == sorted(times)


def _simulate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`tmiot simulate ARGS` as a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "tmiot.cli", "simulate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.kafka
@pytest.mark.mqtt
def test_simulate_command_writes_ground_truth_of_every_type(
    schema_database: DatabaseSettings, mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.csv"
    env = {
        "TMIOT_DATABASE__URL": schema_database.url,
        "TMIOT_MQTT__HOST": mqtt_settings.host,
        "TMIOT_MQTT__PORT": str(mqtt_settings.port),
        "TMIOT_LOG__FORMAT": "json",
        "PATH": str(Path(sys.executable).parent),
    }
    done = _simulate(
        env,
        *("--sensors", "40", "--readings", "20000", "--rate", "0", "--batch-size", "100"),
        *("--anomalies", "10", "--seed", "4", "--ground-truth", str(truth)),
    )
    assert done.returncode == 0, done.stderr
    assert "published 20000 readings" in done.stdout
    labels = read_ground_truth(truth)
    assert {a.anomaly_type for a in labels} == set(AnomalyType)
    now = dt.datetime.now(dt.UTC)
    assert all(a.start < a.end <= now for a in labels)


def test_simulate_record_writes_raw_records_of_the_registered_fleet(
    schema_database: DatabaseSettings, tmp_path: Path
) -> None:
    recording = tmp_path / "fleet.tmrec.gz"
    env = {
        "TMIOT_DATABASE__URL": schema_database.url,
        "TMIOT_KAFKA__PARTITIONS": "4",
        "TMIOT_LOG__FORMAT": "json",
        "PATH": str(Path(sys.executable).parent),
    }
    args = ["--sensors", "12", "--readings", "3000", "--anomalies", "5", "--seed", "9"]
    done = _simulate(env, *args, "--record", str(recording))
    assert done.returncode == 0, done.stderr
    records = list(read_recording(recording))
    batches = [decode_reading_batch(r.value or b"") for r in records]
    readings = sum(len(b["sensor_id"]) for b in batches)
    assert f"recorded {readings} readings of 12 sensors" in done.stdout
    assert readings >= 3000
    with psycopg.connect(conninfo(schema_database)) as conn:
        registered = {str(r[0]) for r in conn.execute("SELECT id FROM equipment_sensors")}
    seen: dict[str, list[int]] = {}
    for record, batch in zip(records, batches, strict=True):
        assert record.topic == "sensor.readings.raw"
        assert dict(record.headers)[SCHEMA_HEADER] == RAW_SCHEMA
        for sensor, ts in zip(batch["sensor_id"], batch["ts_us"], strict=True):
            assert partition_for(sensor, 4) == record.partition
            seen.setdefault(sensor, []).append(ts)
    assert set(seen) <= registered
    assert len(seen) == 12
    assert all(times == sorted(times) for times in seen.values())
