"""ingest's MQTT client against a real Mosquitto: buffered reads and one-write acknowledgements."""

from __future__ import annotations

import asyncio
import uuid

import aiomqtt
import pytest

from ingest.mqtt import Acknowledger, ingest_client
from tmiot.config import IngestSettings, MqttSettings

pytestmark = [pytest.mark.mqtt]

_N = 600  # under Mosquitto's default max_queued_messages (1000) for an offline session
_ACKED = 450


def _payload(i: int) -> bytes:
    # sizes from a few bytes to past the 64 KiB read buffer, so packets straddle refills
    return f"{i}:".encode() + b"x" * (i * 37 % 3000) + (b"y" * 70_000 if i % 200 == 3 else b"")


async def _receive(client: aiomqtt.Client, n: int) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(30):
        async for message in client.messages:
            got.append(message)
            if len(got) == n:
                break
    return got


async def test_a_backlog_arrives_whole_in_order_and_only_unacknowledged_messages_return(
    mqtt_settings: MqttSettings,
) -> None:
    topic = f"tmiot-test/{uuid.uuid4().hex[:8]}/readings"
    mqtt = mqtt_settings.model_copy(update={"client_id": f"ingest-{uuid.uuid4().hex[:8]}"})
    limits = IngestSettings(max_inflight_messages=1000, session_expiry_seconds=300)
    async with ingest_client(mqtt, limits) as client:  # create the persistent session
        await client.subscribe(topic, qos=1)
    async with aiomqtt.Client(
        mqtt.host, mqtt.port, identifier=f"pub-{uuid.uuid4().hex[:8]}"
    ) as pub:
        for i in range(_N):
            await pub.publish(topic, _payload(i), qos=1)

    async with ingest_client(mqtt, limits) as client:
        got = await _receive(client, _N)
        assert [m.payload for m in got] == [_payload(i) for i in range(_N)]
        Acknowledger(client).ack_all(got[:_ACKED])
        # a SUBSCRIBE queued behind the PUBACKs: its SUBACK means the broker has them
        await client.subscribe(topic, qos=1)

    async with ingest_client(mqtt, limits) as client:
        again = await _receive(client, _N - _ACKED)
        assert [m.payload for m in again] == [_payload(i) for i in range(_ACKED, _N)]
        Acknowledger(client).ack_all(again)
        await client.subscribe(topic, qos=1)

    async with ingest_client(mqtt, limits) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await anext(aiter(client.messages))
        await client.unsubscribe(topic)
