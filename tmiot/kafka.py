"""Kafka clients built from the settings, and topic creation.

Every service gets its producer and consumer options here, so that security
(TLS, SASL) and tuning are configured once.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from tmiot.config import KafkaSecurityProtocol, KafkaSettings
from tmiot.errors import TmiotError

__all__ = [
    "KafkaUnavailableError",
    "client_options",
    "ensure_topics",
    "partition_for",
    "producer",
]

log = structlog.get_logger(__name__)


class KafkaUnavailableError(TmiotError):
    """Kafka could not be reached or refused a request."""

    retriable = True


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
