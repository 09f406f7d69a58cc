"""ingest against real Mosquitto, the Kafka-protocol broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections import Counter
from collections.abc import Callable

import aiomqtt
import psycopg
import pytest

from ingest.service import IngestService
from tests.fix_ingest import Record, Tenants, consume_until, ingest_settings, running
from tmiot.config import DatabaseSettings, MqttSettings
from tmiot.db import conninfo
from tmiot.events import DeadLetter, SensorStatusEvent, decode_reading_batch, reading_rows
from tmiot.kafka import partition_for

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.postgres]


def _readings(records: list[Record]) -> list[tuple[int, str, dt.datetime, float]]:
    assert all(r.headers["tmiot-schema"] == b"sensor.readings.raw/1" for r in records)
    return [
        (r.partition, reading["sensor_id"], reading["reading_timestamp"], reading["value"])
        for r in records
        for reading in reading_rows(decode_reading_batch(r.value))
    ]


def _count_readings(n: int) -> Callable[[list[Record]], bool]:
    return lambda records: len(_readings(records)) >= n


def _ts(i: int) -> int:
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    return int(base.timestamp() * 1000) + i * 1000


async def _publisher(mqtt: MqttSettings) -> aiomqtt.Client:
    return aiomqtt.Client(mqtt.host, mqtt.port, identifier=f"gw-{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("qos", [0, 1])
async def test_single_readings_arrive_keyed_and_ordered_per_sensor(
    tenants: Tenants,
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
    qos: int,
) -> None:
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt_settings)
    settings = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"qos": qos})})
    service = IngestService(settings)
    devices = list(tenants.a.sensors)
    n = 300
    async with running(service):
        async with await _publisher(mqtt_settings) as gw:
            for i in range(n):
                device = devices[i % len(devices)]
                await gw.publish(
                    f"tenants/{tenants.a.company_id}/sensors/{device}/readings",
                    json.dumps({"timestamp": _ts(i), "value": i, "unit": "degC"}),
                    qos=qos,
                )
        records = await consume_until(
            kafka_bootstrap, settings.kafka.topics.readings_raw, _count_readings(n)
        )
    readings = _readings(records)
    assert len(readings) == n
    assert sorted(v for *_, v in readings) == list(range(n))
    for device, sensor in tenants.a.sensors.items():
        mine = [(p, ts, v) for p, s, ts, v in readings if s == sensor]
        assert {p for p, _, _ in mine} == {partition_for(sensor, 4)}, device
        values = [v for _, _, v in mine]
        assert values == sorted(values), "order within a sensor lost"
    assert len(records) < n, "readings should be packed several to a record"
    assert service.metrics.readings._value.get() == n  # noqa: SLF001


async def test_gateway_batches_arrive_whole(
    tenants: Tenants,
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
) -> None:
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt_settings)
    devices = list(tenants.a.sensors)
    batches, size = 20, 50
    async with running(IngestService(settings)):
        async with await _publisher(mqtt_settings) as gw:
            for b in range(batches):
                items = [
                    {
                        "device_id": devices[j % len(devices)],
                        "timestamp": _ts(b * size + j),
                        "value": b * size + j,
                    }
                    for j in range(size)
                ]
                await gw.publish(
                    f"tenants/{tenants.a.company_id}/gateways/gw-1/readings",
                    json.dumps({"readings": items}),
                    qos=1,
                )
        records = await consume_until(
            kafka_bootstrap, settings.kafka.topics.readings_raw, _count_readings(batches * size)
        )
    values = [v for *_, v in _readings(records)]
    assert sorted(values) == list(range(batches * size))


async def test_bad_input_is_dead_lettered_and_good_input_around_it_arrives(
    tenants: Tenants,
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
) -> None:
    settings = ingest_settings(
        schema_database, kafka_bootstrap, mqtt_settings, max_payload_bytes=4096
    )
    a = tenants.a.company_id
    dev = next(iter(tenants.a.sensors))
    single = f"tenants/{a}/sensors/{dev}/readings"
    far_future = int((dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).timestamp() * 1000)
    bad: list[tuple[str, bytes, str]] = [
        (single, b"{oops", "malformed_json"),
        (single, b'{"value": 1}', "invalid_schema"),
        (single, b'{"timestamp": %d, "value": NaN}' % _ts(0), "non_finite_value"),
        (single, b'{"timestamp": %d, "value": 5e9}' % _ts(0), "value_out_of_range"),
        (single, b'{"timestamp": %d, "value": 1}' % far_future, "timestamp_in_future"),
        (single, b'{"timestamp": "1999-01-01T00:00:00Z", "value": 1}', "timestamp_too_old"),
        (
            single,
            b'{"timestamp": %d, "value": 1, "unit": "%s"}' % (_ts(0), b"x" * 5000),
            "payload_too_large",
        ),
        (
            f"tenants/{a}/sensors/nobody/readings",
            b'{"timestamp": %d, "value": 1}' % _ts(0),
            "unknown_sensor",
        ),
        (f"tenants/not-a-company/sensors/{dev}/readings", b"{}", "invalid_topic"),
    ]
    async with running(IngestService(settings)):
        async with await _publisher(mqtt_settings) as gw:
            for i, (topic, payload, _) in enumerate(bad):
                await gw.publish(topic, payload, qos=1)
                good = {"timestamp": _ts(100 + i), "value": 100 + i}
                await gw.publish(single, json.dumps(good), qos=1)
            # A batch with good and bad items: the good ones go through.
            await gw.publish(
                f"tenants/{a}/gateways/gw/readings",
                json.dumps(
                    {
                        "readings": [
                            {"device_id": dev, "timestamp": _ts(200), "value": 200},
                            {"device_id": dev, "timestamp": _ts(201), "value": "NaN?"},
                            {"device_id": dev, "timestamp": _ts(202), "value": 202},
                        ]
                    }
                ),
                qos=1,
            )
        letters_raw = await consume_until(
            kafka_bootstrap,
            settings.kafka.topics.readings_deadletter,
            lambda r: len(r) >= len(bad) + 1,
        )
        good_raw = await consume_until(
            kafka_bootstrap,
            settings.kafka.topics.readings_raw,
            _count_readings(len(bad) + 2),
        )
    letters = [DeadLetter.model_validate_json(r.value) for r in letters_raw]
    reasons = Counter(letter.reason.value for letter in letters)
    expected = Counter(reason for *_, reason in bad) + Counter({"invalid_schema": 1})
    assert reasons == expected
    assert all(letter.source.startswith("mqtt:tenants/") for letter in letters)
    batch_letter = next(letter for letter in letters if letter.item_index is not None)
    assert batch_letter.item_index == 1
    assert json.loads(batch_letter.payload)["value"] == "NaN?"
    values = sorted(v for *_, v in _readings(good_raw))
    assert values == [*range(100, 100 + len(bad)), 200, 202]


async def test_a_gateway_writing_another_tenants_sensor_is_refused_and_audited(
    tenants: Tenants,
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
) -> None:
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt_settings)
    service = IngestService(settings)
    b_device = next(iter(tenants.b.sensors))
    attempts = 25
    async with running(service):
        async with await _publisher(mqtt_settings) as gw:
            for i in range(attempts):
                await gw.publish(
                    f"tenants/{tenants.a.company_id}/sensors/{b_device}/readings",
                    json.dumps({"timestamp": _ts(i), "value": i}),
                    qos=1,
                )
            await gw.publish(
                f"tenants/{tenants.a.company_id}/gateways/gw/readings",
                json.dumps(
                    {"readings": [{"device_id": b_device, "timestamp": _ts(99), "value": 1}]}
                ),
                qos=1,
            )
        letters = await consume_until(
            kafka_bootstrap,
            settings.kafka.topics.readings_deadletter,
            lambda r: len(r) >= attempts + 1,
        )
        await service.flush_audit()
    assert {DeadLetter.model_validate_json(r.value).reason.value for r in letters} == {
        "tenant_mismatch"
    }
    with psycopg.connect(conninfo(schema_database)) as conn:
        rows = conn.execute(
            "SELECT company_id::text, event_type::text, risk_score, resource_id, additional_data"
            " FROM security_audit_logs"
        ).fetchall()
        readings = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()
    # Aggregated: a handful of rows for 26 attempts, not one row each.
    assert 1 <= len(rows) <= 3
    assert sum(r[4]["attempts"] for r in rows) == attempts + 1
    assert {(r[0], r[1], r[2], r[3]) for r in rows} == {
        (tenants.a.company_id, "security_violation", 80, b_device)
    }
    assert rows[0][4]["owner_company_ids"] == [tenants.b.company_id]
    assert readings == (0,)


async def test_status_messages_become_status_events(
    tenants: Tenants,
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
) -> None:
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt_settings)
    dev, sensor = next(iter(tenants.a.sensors.items()))
    async with running(IngestService(settings)):
        async with await _publisher(mqtt_settings) as gw:
            await gw.publish(
                f"tenants/{tenants.a.company_id}/sensors/{dev}/status",
                json.dumps({"timestamp": _ts(0), "battery_level_percent": 37}),
                qos=1,
            )
        [record] = await consume_until(
            kafka_bootstrap, settings.kafka.topics.sensor_status, lambda r: len(r) >= 1
        )
    event = SensorStatusEvent.model_validate_json(record.value)
    assert str(event.sensor_id) == sensor
    assert event.battery_level_percent == 37
    assert record.key == sensor.encode()


async def test_new_sensors_are_picked_up_without_restart(
    tenants: Tenants,
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
) -> None:
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt_settings)
    service = IngestService(settings)
    async with running(service):
        before = len(service.directory)
        with psycopg.connect(conninfo(schema_database), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO equipment_sensors (customer_equipment_id, sensor_type, device_id)"
                " SELECT customer_equipment_id, 'flow', 'late-dev' FROM equipment_sensors"
                " WHERE id = %s",
                (next(iter(tenants.a.sensors.values())),),
            )
        # NOTIFY reaches the directory: poll it with a deadline.
        async with asyncio.timeout(10):
            while len(service.directory) == before:
                await asyncio.sleep(0.02)
        async with await _publisher(mqtt_settings) as gw:
            await gw.publish(
                f"tenants/{tenants.a.company_id}/sensors/late-dev/readings",
                json.dumps({"timestamp": _ts(0), "value": 7}),
                qos=1,
            )
        records = await consume_until(
            kafka_bootstrap, settings.kafka.topics.readings_raw, _count_readings(1)
        )
    assert [v for *_, v in _readings(records)] == [7]


async def test_two_ingest_processes_in_one_share_group_split_the_load(
    tenants: Tenants,
    schema_database: DatabaseSettings,
    kafka_bootstrap: str,
    mqtt_settings: MqttSettings,
) -> None:
    settings = ingest_settings(schema_database, kafka_bootstrap, mqtt_settings)
    first = IngestService(settings)
    second_mqtt = settings.mqtt.model_copy(update={"client_id": settings.mqtt.client_id + "-2"})
    second = IngestService(settings.model_copy(update={"mqtt": second_mqtt}))
    devices = list(tenants.a.sensors)
    n = 400
    async with running(first), running(second):
        async with await _publisher(mqtt_settings) as gw:
            for i in range(n):
                await gw.publish(
                    f"tenants/{tenants.a.company_id}/sensors/{devices[i % len(devices)]}/readings",
                    json.dumps({"timestamp": _ts(i), "value": i}),
                    qos=1,
                )
        records = await consume_until(
            kafka_bootstrap, settings.kafka.topics.readings_raw, _count_readings(n)
        )
    assert sorted(v for *_, v in _readings(records)) == list(range(n)), "lost or duplicated"
    shares = [int(s.metrics.readings._value.get()) for s in (first, second)]  # noqa: SLF001
    assert sum(shares) == n
    assert min(shares) > n // 5, f"one process did (almost) all the work: {shares}"
