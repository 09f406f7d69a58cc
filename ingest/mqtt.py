"""The MQTT side of ingest: client construction, acknowledgements, error translation.

aiomqtt 2.5 wraps paho-mqtt but does not expose paho's manual acknowledgement,
which at-least-once needs (a message is acknowledged only after Kafka has it).
This module is the one place that reaches into the paho client: for manual
acknowledgement, and three times for single-reading messages, where paho's
per-packet work is most of ingest's time:

* :class:`Acknowledger` sends the PUBACKs of a whole epoch as one write (paho writes
  each 4-byte packet with a send of its own);
* :class:`BufferedReads` reads paho's socket 64 KiB at a time (paho asks for 1 byte,
  1 byte, then the rest: three ``recv`` calls and often one event-loop wake-up per
  message) and tells aiomqtt through ``pending()`` that whole packets are still
  buffered, so one wake-up handles all that arrived;
* :func:`share_property_tables` stops paho from building its MQTT 5 property tables
  (two dicts of 27 entries, then 27 string replaces to clear them) for every
  received packet: a third of a bare subscriber's time on single readings.
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Sequence
from typing import Final

import aiomqtt
import paho.mqtt._packet as paho_packet
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tmiot.config import IngestSettings, MqttSettings
from tmiot.errors import TmiotError

__all__ = [
    "Acknowledger",
    "BufferedReads",
    "MqttAuthError",
    "connect_error",
    "ingest_client",
    "share_property_tables",
]

# CONNACK reason codes that retrying cannot fix (v5 134/135, v3.1.1 4/5).
_AUTH_CODES: Final = frozenset({4, 5, 134, 135, 138, 140})
_READ_SIZE: Final = 65_536
# PUBACK, remaining length 2, packet id: success needs no reason code (MQTT 5 3.4.2.1).
_PUBACK: Final = struct.Struct("!BBH")
_PUBACK_BYTE: Final = PacketTypes.PUBACK << 4


class MqttAuthError(TmiotError):
    """The broker refused our credentials or certificate; retrying will not help."""


def connect_error(exc: aiomqtt.MqttError, mqtt: MqttSettings) -> MqttAuthError | None:
    """Translate a refused connection into MqttAuthError when it is about credentials.

    The message names the broker, client id and username (never the password), so
    that the failed login can be matched with the broker's own log line.
    """
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    if isinstance(code, int) and code in _AUTH_CODES:
        return MqttAuthError(
            f"MQTT broker refused the connection: {exc} (broker {mqtt.host}:{mqtt.port}, "
            f"client id {mqtt.client_id!r}, username {mqtt.username!r}; check username, "
            "password and client certificate)"
        )
    return None


def _tls(settings: MqttSettings) -> aiomqtt.TLSParameters | None:
    if settings.tls is None:
        return None
    tls = settings.tls
    return aiomqtt.TLSParameters(
        ca_certs=str(tls.ca_file) if tls.ca_file else None,
        certfile=str(tls.cert_file) if tls.cert_file else None,
        keyfile=str(tls.key_file) if tls.key_file else None,
        cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
    )


def ingest_client(mqtt: MqttSettings, limits: IngestSettings) -> aiomqtt.Client:
    """A v5 client with a persistent session and manual acknowledgement.

    Clean start off and a session expiry keep our subscriptions and queued QoS 1
    messages at the broker while we are away; Receive Maximum lets the broker
    keep up to `max_inflight_messages` unacknowledged messages on the wire.
    """
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = limits.session_expiry_seconds
    props.ReceiveMaximum = min(limits.max_inflight_messages, 65_535)
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        identifier=mqtt.client_id,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=props,
        keepalive=mqtt.keepalive_seconds,
        tls_params=_tls(mqtt),
        tls_insecure=True if mqtt.tls and mqtt.tls.insecure_skip_verify else None,
        max_inflight_messages=min(limits.max_inflight_messages, 65_535),
    )
    Acknowledger(client).enable()
    BufferedReads.install(client._client)  # noqa: SLF001 - see module docstring
    share_property_tables()
    return client


_TABLES: Final = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
_COMPRESSED_NAMES: Final = tuple(name.replace(" ", "") for name in _TABLES.names)


class _SharedTableProperties(Properties):
    """paho's Properties with its lookup tables on the class, built once.

    paho's ``__init__`` builds ``types``, ``names`` and ``properties`` per instance and
    never changes them; as class attributes every method reads the same values.
    """

    types = _TABLES.types
    names = _TABLES.names
    properties = _TABLES.properties

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's signature
        object.__setattr__(self, "packetType", packetType)

    def clear(self) -> None:
        """Drop every property, as paho's clear does (it rebuilds 27 names to find them)."""
        for name in _COMPRESSED_NAMES:
            self.__dict__.pop(name, None)


def share_property_tables() -> None:
    """Make paho decode received packets' properties into :class:`_SharedTableProperties`.

    Process-wide and idempotent: paho's packet decoder looks the class up by name in
    its module. The decoded properties are the same objects' values as before
    (``tests/unit/test_ingest_mqtt.py`` decodes both ways).
    """
    paho_packet.Properties = _SharedTableProperties  # type: ignore[attr-defined]


class BufferedReads:
    """A paho socket (plain, TLS or websocket) whose reads are served from a 64 KiB buffer.

    ``recv(n)`` returns at most ``n`` bytes, as a socket does, and raises what the
    socket raises (``BlockingIOError``, ``ssl.SSLWantReadError``) only once the buffer
    is empty, so paho's packet reader works unchanged on it. The rest of paho's
    ``SocketLike`` goes straight to the socket.
    """

    __slots__ = ("_buffer", "_pos", "_sock")

    def __init__(self, sock: paho.SocketLike) -> None:
        """Wrap a connected, non-blocking socket."""
        self._sock = sock
        self._buffer = b""
        self._pos = 0

    @classmethod
    def install(cls, client: paho.Client) -> None:
        """Make a paho client wrap every socket it opens in `cls` (reconnects included)."""
        create = client._create_socket  # noqa: SLF001

        def create_buffered() -> paho.SocketLike:
            return cls(create())

        client._create_socket = create_buffered  # type: ignore[method-assign] # noqa: SLF001

    def recv(self, size: int) -> bytes:
        """Up to `size` buffered bytes, refilling the buffer with one read when it is empty."""
        pos = self._pos
        if pos >= len(self._buffer):
            self._buffer = self._sock.recv(max(size, _READ_SIZE))
            pos = 0
        chunk = self._buffer[pos : pos + size]
        self._pos = pos + len(chunk)
        return chunk

    def pending(self) -> int:
        """Bytes readable without waiting: the buffer's and, for TLS, the decrypted record's."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buffer) - self._pos + (inner() if inner is not None else 0)

    def send(self, buffer: bytes | bytearray) -> int:
        """The socket's send."""
        return self._sock.send(buffer)

    def close(self) -> None:
        """The socket's close."""
        self._sock.close()

    def fileno(self) -> int:
        """The socket's file descriptor (what aiomqtt's event loop watches)."""
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:  # noqa: FBT001 - socket's signature
        """The socket's setblocking."""
        self._sock.setblocking(flag)


class Acknowledger:
    """Manual QoS 1/2 acknowledgements through the paho client under aiomqtt."""

    def __init__(self, client: aiomqtt.Client) -> None:
        """Wrap `client`'s paho client."""
        self._paho: paho.Client = client._client  # noqa: SLF001 - see module docstring

    def enable(self) -> None:
        """Stop paho from acknowledging on receipt (call before connecting)."""
        self._paho.manual_ack_set(on=True)

    def ack(self, message: aiomqtt.Message) -> None:
        """Acknowledge one message (no-op for QoS 0)."""
        if message.qos > 0:
            self._paho.ack(message.mid, message.qos)

    def ack_all(self, messages: Sequence[aiomqtt.Message]) -> None:
        """Acknowledge messages in their order; consecutive QoS 1 PUBACKs go out as one write."""
        pubacks = bytearray()
        for message in messages:
            if message.qos == 1:
                pubacks += _PUBACK.pack(_PUBACK_BYTE, 2, message.mid)
            elif message.qos == 2:  # noqa: PLR2004 - MQTT's QoS levels
                self._queue(pubacks)
                pubacks = bytearray()
                self._paho.ack(message.mid, 2)
        self._queue(pubacks)

    def _queue(self, pubacks: bytearray) -> None:
        # What paho's own _send_puback does, for many packets in one buffer.
        if pubacks:
            self._paho._packet_queue(_PUBACK_BYTE, bytes(pubacks), 0, 0)  # noqa: SLF001
