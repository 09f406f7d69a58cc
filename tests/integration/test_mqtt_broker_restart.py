"""Why broker-restart faults run ingest without ``$share``: what Mosquitto keeps over a restart.

A persistent session (clean start off, session expiry) keeps its plain
subscriptions over a broker restart, so QoS 1 messages published before its
client is back are queued for it. Mosquitto 2.0 does not restore the session's
*shared* subscriptions: such messages find no subscriber and are dropped. If this
test starts failing on the shared case, the broker fixed it, and the fault test
and soak can run ingest with a share group again.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tmiot.chaos.backends import PrivateMosquitto

pytestmark = [pytest.mark.mqtt]


def _session(port: int) -> aiomqtt.Client:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="persistent-subscriber",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=props,
    )


async def _published_across_restart(broker: PrivateMosquitto, topic_filter: str) -> list[bytes]:
    """Subscribe, leave, restart the broker, publish, come back: what arrives."""
    async with _session(broker.port) as sub:
        await sub.subscribe(topic_filter, qos=1)
    async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
        await pub.publish("t/1", b"before", qos=1)
    await asyncio.to_thread(broker.restart)
    async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
        await pub.publish("t/1", b"after", qos=1)
    got: list[bytes] = []
    async with _session(broker.port) as sub:

        async def collect() -> None:
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                got.append(message.payload)

        # Queued messages arrive right after CONNACK; the deadline only ends the wait.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), 3)
    return got


async def test_plain_subscription_survives_a_restart(private_mosquitto: PrivateMosquitto) -> None:
    assert await _published_across_restart(private_mosquitto, "t/#") == [b"before", b"after"]


async def test_shared_subscription_is_lost_in_a_restart(
    private_mosquitto: PrivateMosquitto,
) -> None:
    assert await _published_across_restart(private_mosquitto, "$share/g/t/#") == [b"before"]
