"""The MQTT side of ingest: client construction, acknowledgements, error translation.

aiomqtt 2.5 wraps paho-mqtt but does not expose paho's manual acknowledgement,
which at-least-once needs (a message is acknowledged only after Kafka has it).
:class:`Acknowledger` is the one place that reaches into the paho client.
"""

from __future__ import annotations

import ssl
from typing import Final

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tmiot.config import IngestSettings, MqttSettings
from tmiot.errors import TmiotError

__all__ = ["Acknowledger", "MqttAuthError", "connect_error", "ingest_client"]

# CONNACK reason codes that retrying cannot fix (v5 134/135, v3.1.1 4/5).
_AUTH_CODES: Final = frozenset({4, 5, 134, 135, 138, 140})


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
    return client


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
