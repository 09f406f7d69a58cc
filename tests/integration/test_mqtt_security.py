"""Authentication, per-tenant ACLs and TLS of the broker, as deploy/mosquitto configures them.

Runs against the dedicated broker of tests/fix_mosquitto.py (``secure_mosquitto``).
Absence is proved with ordering, never with a sleep: a forbidden message and then
an allowed marker go out on one connection, so once the marker has arrived the
forbidden one would have arrived before it; and a client's packets come out of the
broker in order, so once its SUBACK is in, a message routed to it earlier is too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import shutil
import ssl
import traceback
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from aiomqtt import ProtocolVersion
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.fix_mosquitto import (
    HOST,
    MqttAccount,
    SecureBroker,
    run_as_user,
    running_mosquitto,
)
from tmiot.config import MqttSettings
from tmiot.payloads import TopicKind, parse_topic, subscription_filters
from tmiot.services import free_port

pytestmark = pytest.mark.mqtt

DEADLINE_SECONDS = 10.0
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87, CONNACK and PUBACK alike
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"

PROTOCOLS = [
    pytest.param(ProtocolVersion.V311, id="mqtt311"),
    pytest.param(ProtocolVersion.V5, id="mqtt5"),
]


class PubackRecordingClient(aiomqtt.Client):
    """An aiomqtt client that keeps the PUBACK reason codes, which aiomqtt drops."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pubacks: list[ReasonCode] = []

    # aiomqtt 2.5 hands paho's on_publish to this private method and ignores the
    # reason code, the only place MQTT 5 reports an ACL denial of a QoS 1 publish.
    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        self.pubacks.append(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)


def connect(
    broker: SecureBroker,
    account: MqttAccount | None,
    *,
    protocol: ProtocolVersion = ProtocolVersion.V311,
    **kwargs: Any,
) -> PubackRecordingClient:
    """A client for the plain listener, logged in as `account` (None: no credentials)."""
    if account is not None:
        kwargs.setdefault("username", account.username)
        kwargs.setdefault("password", account.password)
    kwargs.setdefault("port", broker.port)
    return PubackRecordingClient(broker.host, protocol=protocol, timeout=DEADLINE_SECONDS, **kwargs)


def client_tls(broker: SecureBroker, account: MqttAccount) -> aiomqtt.TLSParameters:
    """TLS files for `account`, as tmiot's TlsFiles name them."""
    return aiomqtt.TLSParameters(
        ca_certs=str(broker.ca_file),
        certfile=str(account.cert_file),
        keyfile=str(account.key_file),
    )


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def payload(**fields: object) -> bytes:
    """A JSON payload of the contract (tmiot/payloads.py), stamped now."""
    return json.dumps({"timestamp": datetime.now(UTC).isoformat(), **fields}).encode()


def reading() -> bytes:
    """One reading payload."""
    return payload(value=21.5)


async def messages_until(client: aiomqtt.Client, last_topic: str) -> list[aiomqtt.Message]:
    """What `client` receives up to and including a message on `last_topic`, by the deadline."""
    received: list[aiomqtt.Message] = []
    async with asyncio.timeout(DEADLINE_SECONDS):
        async for message in client.messages:
            received.append(message)
            if message.topic.value == last_topic:
                return received
    msg = "the message iterator ended"  # it only ends by raising MqttError
    raise AssertionError(msg)


async def refused(client: aiomqtt.Client) -> aiomqtt.MqttError:
    """Enter `client`, expecting the broker or the TLS handshake to refuse it; return the error."""
    try:
        async with client:
            pass
    except aiomqtt.MqttError as exc:
        return exc
    pytest.fail("the connection was accepted")


@contextlib.contextmanager
def quiet_handshake_socket(error: BaseException) -> Iterator[None]:
    """Free the socket paho leaves open after a failed TLS handshake, without its warning.

    paho-mqtt 2.2 does not close its socket when ``do_handshake`` raises; the socket
    lives on in the traceback's frames until collected, and then warns
    (ResourceWarning, an error under ``filterwarnings = error``).
    """
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            for exc in (error, error.__context__):
                if exc is not None and exc.__traceback__ is not None:
                    traceback.clear_frames(exc.__traceback__)
            gc.collect()


# --- (a) authentication ---------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param("wrong-password", id="wrong-password"),
        pytest.param("unknown-user", id="unknown-user"),
        pytest.param("username-only", id="username-only"),
        pytest.param("none", id="no-credentials"),
    ],
)
async def test_bad_credentials_are_refused_as_not_authorized(
    secure_mosquitto: SecureBroker, protocol: ProtocolVersion, credentials: str
) -> None:
    gw = secure_mosquitto.gateway_a
    kwargs: dict[str, Any] = {
        "wrong-password": {"username": gw.username, "password": gw.password + "x"},
        "unknown-user": {"username": unique("nobody"), "password": gw.password},
        "username-only": {"username": gw.username},
        "none": {},
    }[credentials]
    error = await refused(connect(secure_mosquitto, None, protocol=protocol, **kwargs))

    # Mosquitto answers CONNACK 5 (not 4, "bad username or password") under
    # MQTT 3.1.1 and 0x87 under MQTT 5; paho 2 maps 5 to ReasonCode 0x87 too, so
    # both arrive as the same ReasonCode, never as the int 4 or 5.
    assert type(error) is MqttConnectError
    assert isinstance(error.rc, ReasonCode)
    assert error.rc.value == NOT_AUTHORIZED
    assert str(error) == "[code:135] Not authorized"


async def test_a_client_certificate_does_not_replace_the_password(
    secure_mosquitto: SecureBroker,
) -> None:
    gw = secure_mosquitto.gateway_a
    client = aiomqtt.Client(
        secure_mosquitto.host,
        secure_mosquitto.gateway_tls_port,
        username=gw.username,
        password="not-" + gw.password,
        tls_params=client_tls(secure_mosquitto, gw),
        timeout=DEADLINE_SECONDS,
    )
    error = await refused(client)
    assert type(error) is MqttConnectError
    assert isinstance(error.rc, ReasonCode)
    assert error.rc.value == NOT_AUTHORIZED


# --- (b) a gateway publishes to its own tenant ----------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_gateway_publishes_to_its_tenant_and_ingest_receives_through_the_share(
    secure_mosquitto: SecureBroker, protocol: ProtocolVersion
) -> None:
    broker, gw = secure_mosquitto, secure_mosquitto.gateway_a
    device = unique("dev")
    prefix = f"tenants/{broker.company_a}"
    batch = json.dumps(
        {
            "readings": [
                {"device_id": device, "timestamp": datetime.now(UTC).isoformat(), "value": 1}
            ]
        }
    ).encode()
    sent = {
        f"{prefix}/sensors/{device}/readings": reading(),
        f"{prefix}/sensors/{device}/status": payload(battery_level_percent=80),
        f"{prefix}/gateways/{gw.username}/readings": batch,
    }
    async with (
        connect(broker, broker.ingest, protocol=protocol, identifier=unique("ingest")) as ingest,
        connect(broker, gw, protocol=protocol) as gateway,
    ):
        for topic_filter in subscription_filters(broker.share_group):
            await ingest.subscribe(topic_filter, qos=1)
        for topic, body in sent.items():
            await gateway.publish(topic, body, qos=1)
        received = await messages_until(ingest, f"{prefix}/gateways/{gw.username}/readings")

    assert {m.topic.value: m.payload for m in received} == sent
    assert all(r.value == 0 for r in gateway.pubacks)
    refs = [parse_topic(m.topic.value) for m in received]
    assert {(r.company_id, r.kind) for r in refs if r is not None} == {
        (broker.company_a, TopicKind.READING),
        (broker.company_a, TopicKind.STATUS),
        (broker.company_a, TopicKind.BATCH),
    }


# --- (c) a gateway publishing outside its tenant is dropped ---------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "forbidden",
    [
        pytest.param("tenants/{b}/sensors/{dev}/readings", id="other-tenant-reading"),
        pytest.param("tenants/{b}/sensors/{dev}/status", id="other-tenant-status"),
        pytest.param("tenants/{b}/gateways/{gw}/readings", id="own-id-under-other-tenant"),
        pytest.param("tenants/{a}/gateways/{other_gw}/readings", id="other-gateway-batch"),
        pytest.param("devices/{dev}/readings", id="outside-tenants"),
    ],
)
async def test_publish_outside_the_gateways_tenant_is_not_delivered(
    secure_mosquitto: SecureBroker, protocol: ProtocolVersion, forbidden: str
) -> None:
    broker, gw = secure_mosquitto, secure_mosquitto.gateway_a
    device = unique("dev")
    forbidden_topic = forbidden.format(
        a=broker.company_a,
        b=broker.company_b,
        dev=device,
        gw=gw.username,
        other_gw=broker.gateway_b.username,
    )
    marker = f"tenants/{broker.company_a}/sensors/{device}/readings"
    nonce = unique("forbidden").encode()
    async with (
        connect(broker, broker.ingest, protocol=protocol, identifier=unique("ingest")) as ingest,
        # The observer reads every topic, so a denial cannot hide behind ingest's ACL.
        connect(broker, broker.observer, protocol=protocol) as observer,
        connect(broker, gw, protocol=protocol) as gateway,
    ):
        await ingest.subscribe("tenants/#", qos=1)
        await observer.subscribe("#", qos=1)
        await gateway.publish(forbidden_topic, nonce, qos=1)
        await gateway.publish(marker, reading(), qos=1)
        for reader in (ingest, observer):
            received = await messages_until(reader, marker)
            assert nonce not in [m.payload for m in received]
            assert forbidden_topic not in [m.topic.value for m in received]

    # The broker acknowledges the denied QoS 1 PUBLISH and drops it. Under MQTT
    # 3.1.1 the PUBACK cannot say so: the gateway believes it was delivered.
    # Under MQTT 5 the PUBACK carries 0x87, which aiomqtt's publish() ignores.
    denied, allowed = (r.value for r in gateway.pubacks)
    assert allowed == 0
    assert denied == (NOT_AUTHORIZED if protocol is ProtocolVersion.V5 else 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_denied_qos0_publish_is_dropped_and_the_gateway_stays_connected(
    secure_mosquitto: SecureBroker, protocol: ProtocolVersion
) -> None:
    broker = secure_mosquitto
    device = unique("dev")
    marker = f"tenants/{broker.company_a}/sensors/{device}/readings"
    nonce = unique("forbidden").encode()
    async with (
        connect(broker, broker.ingest, protocol=protocol, identifier=unique("ingest")) as ingest,
        connect(broker, broker.gateway_a, protocol=protocol) as gateway,
    ):
        await ingest.subscribe("tenants/#", qos=1)
        await gateway.publish(f"tenants/{broker.company_b}/sensors/{device}/readings", nonce)
        await gateway.publish(marker, reading(), qos=1)
        received = await messages_until(ingest, marker)
    assert nonce not in [m.payload for m in received]


# --- (d) a gateway cannot read another tenant -----------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "topic_filter",
    [
        pytest.param("tenants/{b}/#", id="tenant-filter"),
        pytest.param("$share/spy/tenants/{b}/#", id="shared-subscription"),
        pytest.param("#", id="everything"),
    ],
)
async def test_gateway_cannot_read_another_tenants_messages(
    secure_mosquitto: SecureBroker, protocol: ProtocolVersion, topic_filter: str
) -> None:
    broker = secure_mosquitto
    topic = f"tenants/{broker.company_b}/sensors/{unique('dev')}/readings"
    async with (
        connect(broker, broker.ingest, protocol=protocol, identifier=unique("ingest")) as ingest,
        connect(broker, broker.gateway_a, protocol=protocol) as spy,
        connect(broker, broker.gateway_b, protocol=protocol) as owner,
    ):
        await ingest.subscribe("tenants/#", qos=1)
        # Mosquitto 2.0's acl_file grants every SUBSCRIBE (SUBACK QoS 1) and checks
        # `read` on each delivery instead; a broker that refused the SUBACK (0x80 or
        # 0x87) would be as safe, so only the delivery is asserted.
        (granted,) = await spy.subscribe(topic_filter.format(b=broker.company_b), qos=1)
        assert isinstance(granted, ReasonCode)
        await owner.publish(topic, reading(), qos=1)
        assert [m.topic.value for m in await messages_until(ingest, topic)][-1] == topic
        # The broker routed the message to every subscriber before ingest got it,
        # and writes a client's packets in order: once the spy's next SUBACK is in,
        # a message routed to it would already sit in its queue.
        await spy.subscribe(unique("sync"), qos=1)
        assert len(spy.messages) == 0


# --- (e) TLS --------------------------------------------------------------------


def client_from_settings(
    settings: MqttSettings, protocol: ProtocolVersion
) -> PubackRecordingClient:
    """A client built from tmiot's settings, the way the ingest service reads them."""
    assert settings.tls is not None
    assert settings.password is not None
    tls_files = (settings.tls.ca_file, settings.tls.cert_file, settings.tls.key_file)
    ca_file, cert_file, key_file = (str(p) for p in tls_files if p is not None)
    return PubackRecordingClient(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password.get_secret_value(),
        identifier=settings.client_id,
        protocol=protocol,
        tls_params=aiomqtt.TLSParameters(ca_certs=ca_file, certfile=cert_file, keyfile=key_file),
        timeout=DEADLINE_SECONDS,
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tls_clients_with_the_ca_and_a_client_certificate_connect_and_publish(
    secure_mosquitto: SecureBroker, protocol: ProtocolVersion
) -> None:
    broker = secure_mosquitto
    topic = f"tenants/{broker.company_a}/sensors/{unique('dev')}/readings"
    ingest_settings = broker.mqtt_settings(broker.ingest, tls=True)
    gateway_settings = broker.mqtt_settings(broker.gateway_a, tls=True)
    assert (ingest_settings.port, gateway_settings.port) == (
        broker.ingest_tls_port,
        broker.gateway_tls_port,
    )
    async with (
        client_from_settings(ingest_settings, protocol) as ingest,
        client_from_settings(gateway_settings, protocol) as gateway,
    ):
        for topic_filter in subscription_filters(ingest_settings.share_group):
            await ingest.subscribe(topic_filter, qos=1)
        await gateway.publish(topic, reading(), qos=1)
        received = await messages_until(ingest, topic)
    assert received[-1].topic.value == topic
    assert [r.value for r in gateway.pubacks] == [0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tls_identity_listener_takes_the_username_from_the_certificate(
    secure_mosquitto: SecureBroker, protocol: ProtocolVersion
) -> None:
    broker, gw = secure_mosquitto, secure_mosquitto.gateway_a
    device = unique("dev")
    forbidden = f"tenants/{broker.company_b}/sensors/{device}/readings"
    marker = f"tenants/{broker.company_a}/sensors/{device}/readings"
    nonce = unique("forbidden").encode()
    async with (
        connect(broker, broker.ingest, protocol=protocol, identifier=unique("ingest")) as ingest,
        # No username or password: the CN of the certificate is the username, and
        # the ACL applies to it.
        PubackRecordingClient(
            broker.host,
            broker.identity_tls_port,
            protocol=protocol,
            tls_params=client_tls(broker, gw),
            timeout=DEADLINE_SECONDS,
        ) as gateway,
    ):
        await ingest.subscribe("tenants/#", qos=1)
        await gateway.publish(forbidden, nonce, qos=1)
        await gateway.publish(marker, reading(), qos=1)
        received = await messages_until(ingest, marker)
    assert nonce not in [m.payload for m in received]
    denied = NOT_AUTHORIZED if protocol is ProtocolVersion.V5 else 0
    assert [r.value for r in gateway.pubacks] == [denied, 0]


async def test_tls_client_without_a_certificate_is_refused_in_the_tls12_handshake(
    secure_mosquitto: SecureBroker,
) -> None:
    broker, gw = secure_mosquitto, secure_mosquitto.gateway_a
    context = broker.tls_context(account=None)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    error = await refused(
        aiomqtt.Client(
            broker.host,
            broker.gateway_tls_port,
            username=gw.username,
            password=gw.password,
            tls_context=context,
            timeout=DEADLINE_SECONDS,
        )
    )
    with quiet_handshake_socket(error):
        # aiomqtt turns the OSError of paho's connect() into a bare MqttError with
        # its text; the ssl.SSLError stays reachable as __context__ only.
        assert type(error) is aiomqtt.MqttError
        assert "SSLV3_ALERT_HANDSHAKE_FAILURE" in str(error)
        assert isinstance(error.__context__, ssl.SSLError)


async def test_tls_client_without_a_certificate_is_refused_after_the_tls13_handshake(
    secure_mosquitto: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker, gw = secure_mosquitto, secure_mosquitto.gateway_a
    # In TLS 1.3 the client finishes its handshake before the server has checked
    # the client's certificate; the refusal comes as an alert on the first read.
    # paho logs it and drops the socket, but aiomqtt only learns of it when no
    # CONNACK has come by its timeout, so keep that short here.
    error = await refused(
        aiomqtt.Client(
            broker.host,
            broker.gateway_tls_port,
            username=gw.username,
            password=gw.password,
            tls_context=broker.tls_context(account=None),
            timeout=2,
        )
    )
    assert type(error) is aiomqtt.MqttError
    assert str(error) == "Operation timed out"
    assert any("TLSV13_ALERT_CERTIFICATE_REQUIRED" in r.getMessage() for r in caplog.records)


async def test_tls_client_that_does_not_trust_the_ca_fails_verification(
    secure_mosquitto: SecureBroker,
) -> None:
    broker, gw = secure_mosquitto, secure_mosquitto.gateway_a
    # No ca_certs: paho verifies against the system's CAs, which never signed the
    # test broker's certificate.
    untrusting = aiomqtt.TLSParameters(certfile=str(gw.cert_file), keyfile=str(gw.key_file))
    error = await refused(
        aiomqtt.Client(
            broker.host,
            broker.gateway_tls_port,
            username=gw.username,
            password=gw.password,
            tls_params=untrusting,
            timeout=DEADLINE_SECONDS,
        )
    )
    with quiet_handshake_socket(error):
        assert type(error) is aiomqtt.MqttError
        assert str(error).startswith("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
        assert isinstance(error.__context__, ssl.SSLCertVerificationError)


# --- client ids and limits ------------------------------------------------------


async def test_gateway_cannot_take_over_the_ingest_session_on_the_gateway_listener(
    secure_mosquitto: SecureBroker,
) -> None:
    broker, gw = secure_mosquitto, secure_mosquitto.gateway_a
    ingest_id = unique("tmiot-ingest")
    marker = f"tenants/{broker.company_a}/sensors/{unique('dev')}/readings"
    async with connect(broker, broker.ingest, identifier=ingest_id) as ingest:
        await ingest.subscribe("tenants/#", qos=1)
        # use_username_as_clientid: the broker replaces the id with "gw-a-0001".
        async with connect(
            broker,
            gw,
            port=broker.gateway_tls_port,
            tls_params=client_tls(broker, gw),
            identifier=ingest_id,
            clean_session=True,
        ) as hijacker:
            await hijacker.publish(marker, reading(), qos=1)
        assert (await messages_until(ingest, marker))[-1].topic.value == marker


async def test_without_use_username_as_clientid_a_gateway_can_kick_the_ingest(
    secure_mosquitto: SecureBroker,
) -> None:
    # Why the gateway listener sets use_username_as_clientid: the plain test
    # listener does not, and there a gateway that borrows ingest's client id
    # disconnects it (and, with a clean session, would discard its queue).
    broker = secure_mosquitto
    ingest_id = unique("tmiot-ingest")
    async with (
        connect(broker, broker.ingest, identifier=ingest_id) as ingest,
        connect(broker, broker.gateway_a, identifier=ingest_id),
    ):
        with pytest.raises(aiomqtt.MqttError, match="Disconnected during message iteration"):
            await asyncio.wait_for(anext(ingest.messages), DEADLINE_SECONDS)


async def test_oversized_publish_disconnects_the_gateway_without_a_puback(
    secure_mosquitto: SecureBroker,
) -> None:
    broker = secure_mosquitto
    topic = f"tenants/{broker.company_a}/gateways/{broker.gateway_a.username}/readings"
    async with connect(broker, broker.gateway_a, protocol=ProtocolVersion.V5) as gateway:
        publish = asyncio.create_task(
            gateway.publish(topic, b"x" * 4_194_304, qos=1, timeout=DEADLINE_SECONDS)
        )
        try:
            # paho sends the packet even though CONNACK announced the limit; the
            # broker closes the connection instead of acknowledging it, and
            # aiomqtt's publish() would only notice by its timeout.
            with pytest.raises(aiomqtt.MqttError, match="Disconnected during message iteration"):
                await asyncio.wait_for(anext(gateway.messages), DEADLINE_SECONDS)
            assert gateway.pubacks == []
            # aiomqtt leaves the publish waiting for its timeout; failing it early is fine.
            assert not publish.done() or publish.exception() is not None
        finally:
            publish.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publish


async def test_shared_subscription_queues_for_an_offline_durable_member(
    secure_mosquitto: SecureBroker,
) -> None:
    # Why ingest keeps a stable client id per process and persistent_client_expiration
    # is long: Mosquitto 2.0 goes on giving an offline durable member of a share group
    # its turn, and queues those messages until it comes back or its session expires.
    broker = secure_mosquitto
    share = f"$share/{unique('group')}/tenants/{broker.company_a}/#"
    absent_id, present_id = unique("ingest-absent"), unique("ingest-present")
    topic = f"tenants/{broker.company_a}/sensors/{unique('dev')}/readings"
    sent = [str(i).encode() for i in range(10)]
    async with connect(broker, broker.ingest, identifier=absent_id, clean_session=False) as c:
        await c.subscribe(share, qos=1)
    async with (
        connect(broker, broker.ingest, identifier=present_id, clean_session=False) as present,
        connect(broker, broker.gateway_a) as gateway,
    ):
        await present.subscribe(share, qos=1)
        for body in sent:
            # The broker routes a QoS 1 PUBLISH before it sends the PUBACK.
            await gateway.publish(topic, body, qos=1)
        await present.subscribe(unique("sync"), qos=1)  # what was routed to it is queued now
        to_present = [(await anext(present.messages)).payload for _ in range(len(present.messages))]
    async with connect(broker, broker.ingest, identifier=absent_id, clean_session=False) as back:
        async with asyncio.timeout(DEADLINE_SECONDS):
            to_absent = [(await anext(back.messages)).payload for _ in sent[len(to_present) :]]
    for identifier in (absent_id, present_id):  # drop both durable sessions
        async with connect(broker, broker.ingest, identifier=identifier, clean_session=True):
            pass
    assert to_absent, "nothing was queued for the offline member"
    assert sorted(to_present + to_absent) == sorted(sent)


# --- the deploy configuration ---------------------------------------------------


def _render_deploy_config(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"deploy/mosquitto/mosquitto.conf no longer contains {old!r}"
        text = text.replace(old, new)
    return text


async def test_deploy_config_runs_on_this_mosquitto_and_refuses_anonymous_clients(
    secure_mosquitto: SecureBroker, tmp_path: Path
) -> None:
    broker = secure_mosquitto
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(broker.ca_file, certs / "ca.crt")
    shutil.copy(broker.server_cert_file, certs / "server.crt")
    shutil.copy(broker.server_key_file, certs / "server.key")
    gateway_port, ingest_port = free_port(HOST), free_port(HOST)
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        # Started as root, mosquitto would drop to a user that cannot read tmp_path.
        f"user {run_as_user()}\n"
        + _render_deploy_config(
            (DEPLOY_DIR / "mosquitto.conf").read_text(encoding="utf-8"),
            {
                "listener 8883 203.0.113.10": f"listener {gateway_port} {HOST}",
                "listener 8883 10.0.0.10": f"listener {ingest_port} {HOST}",
                "/etc/mosquitto/certs/": f"{certs}/",
                "/etc/mosquitto/passwd": str(broker.passwd_file),
                "/etc/mosquitto/acl": str(DEPLOY_DIR / "acl"),
                "/var/lib/mosquitto/": f"{tmp_path}/",
            },
        ),
        encoding="utf-8",
    )
    with running_mosquitto(config, [gateway_port, ingest_port], tmp_path / "mosquitto.log"):
        ingest = broker.ingest
        async with aiomqtt.Client(
            broker.host,
            ingest_port,
            username=ingest.username,
            password=ingest.password,
            tls_params=client_tls(broker, ingest),
            timeout=DEADLINE_SECONDS,
        ) as client:
            await client.subscribe(f"$share/{broker.share_group}/tenants/+/sensors/+/readings")
        anonymous = aiomqtt.Client(
            broker.host,
            gateway_port,
            tls_params=client_tls(broker, broker.gateway_a),
            timeout=DEADLINE_SECONDS,
        )
        error = await refused(anonymous)
        assert type(error) is MqttConnectError
        assert isinstance(error.rc, ReasonCode)
        assert error.rc.value == NOT_AUTHORIZED
