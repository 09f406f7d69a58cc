"""Kafka clients built from the settings, and topic creation.

Every service gets its producer and consumer options here, so that security
(TLS, SASL) and tuning are configured once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.partitioner import murmur2

from tmiot.config import KafkaSecurityProtocol, KafkaSettings
from tmiot.errors import TmiotError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = [
    "KafkaSecurityError",
    "KafkaUnavailableError",
    "check_connection",
    "client_options",
    "ensure_topics",
    "faust_credentials",
    "partition_for",
    "producer",
]

log = structlog.get_logger(__name__)


class KafkaUnavailableError(TmiotError):
    """Kafka could not be reached or refused a request."""

    retriable = True


class KafkaSecurityError(TmiotError):
    """Kafka refused our TLS or SASL: a setting is wrong, retrying will not help."""

    retriable = False


_SASL = {KafkaSecurityProtocol.SASL_PLAINTEXT, KafkaSecurityProtocol.SASL_SSL}
_PROBE_SECONDS = 3.0


def partition_for(sensor_id: str, partitions: int) -> int:
    """Kafka's default partition for the key ``sensor_id`` (murmur2, as the Java client).

    Ingest packs each sensor's readings on it; the stream finds which registered
    sensors belong to the partitions it holds.
    """
    return int(murmur2(sensor_id.encode()) & 0x7FFFFFFF) % partitions


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    if settings.security_protocol not in {
        KafkaSecurityProtocol.SSL,
        KafkaSecurityProtocol.SASL_SSL,
    }:
        return None
    tls = settings.tls
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
    if tls is not None:
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        if tls.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by producers, consumers and admin clients."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_list,
        "security_protocol": settings.security_protocol.value,
        "ssl_context": _ssl_context(settings),
    }
    if settings.sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


def faust_credentials(settings: KafkaSettings) -> CredentialsT | None:
    """The stream's Faust app connects with the TLS and SASL every other client uses."""
    from faust.auth import SASLCredentials, SSLCredentials  # noqa: PLC0415 - the stream's

    context = _ssl_context(settings)
    if settings.sasl_mechanism is not None and settings.security_protocol in _SASL:
        password = settings.sasl_password
        return SASLCredentials(
            username=settings.sasl_username,
            password=password.get_secret_value() if password is not None else None,
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


async def check_connection(settings: KafkaSettings, *, timeout_seconds: float = 10.0) -> None:
    """Connect and log in to a bootstrap server as the services will, once, before they start.

    A wrong password or an untrusted certificate otherwise shows as endless
    reconnects (aiokafka logs and retries them); here it is one error that names
    the setting to fix.

    Raises:
        KafkaSecurityError: TLS or SASL was refused (not retried: the settings are wrong).
        KafkaUnavailableError: no bootstrap server answered in `timeout_seconds`.
    """
    options = client_options(settings)
    problems = []
    for server in settings.bootstrap_list:
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    int(port),
                    client_id="tmiot-check",
                    request_timeout_ms=int(timeout_seconds * 1000),
                    ssl_context=options["ssl_context"],
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism", "PLAIN"),
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                ),
                timeout_seconds,
            )
        # KeyError: aiokafka's SCRAM reads the server's final message's verifier ("v")
        # without looking for the error ("e") a refusing broker sends instead.
        except (KafkaError, OSError, TimeoutError, KeyError) as exc:
            refused = _refusal(settings, exc)
            if refused is None and isinstance(exc, KafkaConnectionError) and "closed" in str(exc):
                refused = await _closed_on_us(settings, host, int(port))
            if refused is not None:
                raise KafkaSecurityError(refused) from exc
            problems.append(f"{server}: {type(exc).__name__}: {exc}")
            continue
        conn.close()
        return
    msg = (
        f"Kafka at {settings.bootstrap_servers} could not be reached"
        f" ({'; '.join(problems)}); check kafka.bootstrap_servers"
    )
    raise KafkaUnavailableError(msg)


async def _closed_on_us(settings: KafkaSettings, host: str, port: int) -> str | None:
    """Why a broker accepted our connection and closed it on our first request, if we can tell.

    A TLS or SASL listener closes on a client that speaks another protocol; so does a
    link being cut, which must not read as a wrong setting (the services retry it).
    """
    at = f"Kafka at {settings.bootstrap_servers}"
    if _ssl_context(settings) is not None:  # the handshake passed (else an SSLError)
        tls = settings.tls
        if tls is None or tls.cert_file is None:
            return (
                f"{at} closed the connection after the TLS handshake: it may require a client"
                " certificate (kafka.tls.cert_file and kafka.tls.key_file), or another"
                " kafka.security_protocol"
            )
        return (
            f"{at} closed the connection after the TLS handshake: check"
            " kafka.security_protocol (SASL_SSL?) and kafka.sasl_mechanism"
        )
    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # only: does it speak TLS at all?
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=probe), _PROBE_SECONDS
        )
    except (OSError, TimeoutError):
        return None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return (
        f"{at} speaks TLS and we do not: set kafka.security_protocol to SSL or SASL_SSL"
        f" (it is {settings.security_protocol.value})"
    )


def _refusal(settings: KafkaSettings, exc: BaseException) -> str | None:
    """What TLS or SASL refusal `exc` (or what caused it) is, naming the setting; None if none."""
    at = f"Kafka at {settings.bootstrap_servers}"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            ca = settings.tls.ca_file if settings.tls is not None else None
            return (
                f"{at}: the broker's certificate is not trusted"
                f" ({seen.verify_message or seen}); check kafka.tls.ca_file"
                f" ({'the system CAs' if ca is None else ca})"
            )
        if isinstance(seen, ssl.SSLError) and not isinstance(
            seen,
            ssl.SSLEOFError | ssl.SSLZeroReturnError,  # a link cut mid-handshake
        ):
            return (
                f"{at}: TLS failed ({seen.reason or seen}); check kafka.security_protocol and"
                " kafka.tls (cert_file and key_file, if the broker asks for a client certificate)"
            )
        scram_refused = isinstance(seen, KeyError) and (settings.sasl_mechanism or "").startswith(
            "SCRAM"
        )
        if scram_refused or isinstance(seen, AuthenticationFailedError | SaslAuthenticationFailed):
            return (
                f"{at} refused the {settings.sasl_mechanism} login of {settings.sasl_username!r}:"
                f" check kafka.sasl_username and kafka.sasl_password ({seen})"
            )
        if isinstance(seen, UnsupportedSaslMechanismError | IllegalSaslStateError):
            return (
                f"{at} does not take a {settings.sasl_mechanism} login ({seen}): check"
                " kafka.sasl_mechanism and kafka.security_protocol"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def producer(settings: KafkaSettings, *, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas (at-least-once)."""
    return AIOKafkaProducer(
        **client_options(settings),
        client_id=client_id,
        acks="all",
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_request_bytes,
        max_request_size=settings.max_request_bytes,
        compression_type=settings.compression_type,
        enable_idempotence=settings.enable_idempotence,
    )


async def ensure_topics(settings: KafkaSettings, names: list[str]) -> None:
    """Create the topics that do not exist yet with the configured partitions.

    Raises:
        KafkaUnavailableError: the cluster could not be reached or refused.
    """
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="tmiot-admin")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            # Another service may have created one first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing]
                )
            log.info("topics created", topics=missing, partitions=settings.partitions)
    except KafkaError as exc:
        msg = f"Kafka at {settings.bootstrap_servers} refused topic set-up: {exc}"
        raise KafkaUnavailableError(msg) from exc
    finally:
        await admin.close()
