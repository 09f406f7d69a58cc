"""ingest/mqtt.py's reach into paho: shared property tables and buffered reads, no I/O."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt._packet as paho_packet
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt import BufferedReads, share_property_tables


def _publish_packet(props: Properties | None) -> tuple[int, bytes]:
    """A QoS 1 PUBLISH's fixed-header byte and body (topic, packet id, properties, payload)."""
    topic = b"tenants/c/sensors/d/readings"
    packed = props.pack() if props is not None else b"\x00"  # type: ignore[no-untyped-call]
    body = len(topic).to_bytes(2, "big") + topic + (7).to_bytes(2, "big") + packed + b'{"v":1}'
    return 0x32, body


def _rich() -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/json"
    props.MessageExpiryInterval = 30
    props.UserProperty = ("site", "north")
    props.UserProperty = ("gw", "7")
    props.CorrelationData = b"\x01\x02"
    return props


@pytest.fixture
def stock_decoder() -> Iterator[None]:
    """Leave paho's decoder as it was found, whatever a test installs."""
    before = paho_packet.Properties  # type: ignore[attr-defined]
    paho_packet.Properties = Properties  # type: ignore[attr-defined]
    yield
    paho_packet.Properties = before  # type: ignore[attr-defined]


@pytest.mark.parametrize("props", [None, _rich()], ids=["no-properties", "five-properties"])
@pytest.mark.usefixtures("stock_decoder")
def test_shared_tables_decode_a_publish_as_paho_does(props: Properties | None) -> None:
    header, body = _publish_packet(props)
    stock = paho_packet.decode_publish(header, body, MQTTProtocolVersion.MQTTv5)
    share_property_tables()
    shared = paho_packet.decode_publish(header, body, MQTTProtocolVersion.MQTTv5)
    theirs: Any = stock.properties
    ours: Any = shared.properties
    assert type(ours) is not Properties, "the shared-table class was not installed"
    assert issubclass(type(ours), Properties)
    assert ours.json() == theirs.json()
    assert str(ours) == str(theirs)
    assert (shared.topic, shared.mid, shared.payload) == (stock.topic, stock.mid, stock.payload)
    if props is not None:
        assert ours.UserProperty == [("site", "north"), ("gw", "7")]


@pytest.mark.usefixtures("stock_decoder")
def test_shared_tables_unpack_clears_what_an_earlier_unpack_set() -> None:
    share_property_tables()
    _, rich = _publish_packet(_rich())
    _, bare = _publish_packet(None)
    props: Any = paho_packet.decode_publish(0x32, rich, MQTTProtocolVersion.MQTTv5).properties
    assert props.json() != {}
    props.unpack(bare[len(bare) - len(b'{"v":1}') - 1 :])  # just the empty property block
    assert props.isEmpty()
    assert props.json() == {}


def test_buffered_reads_serve_small_reads_from_one_large_read() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)  # noqa: FBT003 - socket's signature
        reads = BufferedReads(ours)
        with pytest.raises(BlockingIOError):
            reads.recv(1)
        theirs.sendall(b"\x32\x05hello\x40\x02")
        assert reads.recv(1) == b"\x32"
        assert reads.pending() == 8, "the rest was read into the buffer at once"
        assert reads.recv(1) == b"\x05"
        assert reads.recv(5) == b"hello"
        assert reads.recv(10) == b"\x40\x02", "at most what is buffered, as a socket does"
        assert reads.pending() == 0
        with pytest.raises(BlockingIOError):
            reads.recv(2)
        big = bytes(range(256)) * 1000  # more than one buffer's worth
        sender = threading.Thread(target=theirs.sendall, args=(big,))
        sender.start()
        got = bytearray()
        while len(got) < len(big):
            try:
                got += reads.recv(7)
            except BlockingIOError:
                select.select([ours], [], [], 5)
        sender.join()
        assert bytes(got) == big
        assert reads.send(b"ok") == 2
        assert theirs.recv(2) == b"ok"
        assert reads.fileno() == ours.fileno()
        theirs.close()
        assert reads.recv(1) == b"", "end of stream reads as paho expects"
