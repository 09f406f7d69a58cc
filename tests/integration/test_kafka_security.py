"""Kafka clients against brokers that demand mutual TLS, and SCRAM (tests/fix_kafka_secure).

What must hold: the right settings connect (producer, consumer, admin); each wrong
one (CA, missing client certificate, PLAINTEXT against TLS, a SCRAM login the broker
refuses) is refused at start, within seconds, by an error naming the setting to fix,
never a hang or a fallback to PLAINTEXT; a service started with one exits 1 with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from tests.fix_kafka_secure import SecureKafka
from tmiot.chaos.proxy import TcpProxy
from tmiot.config import KafkaSecurityProtocol, KafkaSettings, TlsFiles
from tmiot.kafka import (
    KafkaSecurityError,
    KafkaUnavailableError,
    check_connection,
    client_options,
    ensure_topics,
    producer,
)

# Each wrong setting, and the setting its error must name.
CASES = {
    "untrusted CA": "kafka.tls.ca_file",
    "no client certificate": "kafka.tls.cert_file",
    "PLAINTEXT against TLS": "kafka.security_protocol",
    "refused SCRAM login": "kafka.sasl_password",
    "SASL against a TLS-only broker": "kafka.s",
}


def wrong(kafka: SecureKafka, case: str) -> KafkaSettings:
    """The settings of `case`: one thing wrong, the rest right."""
    if case == "untrusted CA":
        tls = TlsFiles(
            ca_file=kafka.untrusted_ca_file, cert_file=kafka.cert_file, key_file=kafka.key_file
        )
        return kafka.settings(tls=tls)
    if case == "no client certificate":
        return kafka.settings(tls=TlsFiles(ca_file=kafka.ca_file))
    if case == "PLAINTEXT against TLS":
        return kafka.settings(security_protocol=KafkaSecurityProtocol.PLAINTEXT, tls=None)
    if case == "refused SCRAM login":
        return kafka.sasl_settings()
    return kafka.sasl_settings(bootstrap_servers=kafka.bootstrap)


async def test_the_right_settings_create_produce_and_consume(secure_kafka: SecureKafka) -> None:
    settings = secure_kafka.settings()
    await check_connection(settings, timeout_seconds=10)
    topic = f"secure.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    out = producer(settings, client_id="secure-test")
    await out.start()
    try:
        await out.send_and_wait(topic, b"over mutual TLS", key=b"k")
    finally:
        await out.stop()
    consumer = AIOKafkaConsumer(
        topic, **client_options(settings), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    assert [r.value for records in batch.values() for r in records] == [b"over mutual TLS"]


@pytest.mark.parametrize("case", list(CASES))
async def test_each_wrong_setting_is_refused_fast_naming_the_setting(
    secure_kafka: SecureKafka, case: str
) -> None:
    started = time.monotonic()
    with pytest.raises(KafkaSecurityError) as refused:
        await check_connection(wrong(secure_kafka, case), timeout_seconds=10)
    assert time.monotonic() - started < 10, "refused only at the timeout"
    assert CASES[case] in str(refused.value), str(refused.value)


@pytest.mark.parametrize("command", ["ingest", "stream", "triggers", "record"])
def test_a_service_with_a_wrong_setting_exits_at_start_naming_it(
    secure_kafka: SecureKafka, command: str, tmp_path: Path
) -> None:
    case = "untrusted CA" if command != "triggers" else "refused SCRAM login"
    env = {
        "PATH": os.environ.get("PATH", ""),
        **secure_kafka.env(wrong(secure_kafka, case)),
        "TMIOT_METRICS__ENABLED": "false",
    }
    args = [command]
    if command == "record":
        args += ["--topic", "sensor.readings.raw", "--out", str(tmp_path / "r.tmrec")]
    done = subprocess.run(
        [sys.executable, "-m", "tmiot.cli", *args],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, stderr[-2000:]
    assert CASES[case] in stderr, stderr[-2000:]


async def test_a_cut_link_is_unavailable_not_a_wrong_setting(kafka_bootstrap: str) -> None:
    # A link cut at start resets every connection the way a listener of another protocol
    # closes it; it must read as "not reachable yet" (the services wait), not as a setting.
    host, _, port = kafka_bootstrap.rpartition(":")
    with TcpProxy(host, int(port)) as proxy:
        proxy.cut()
        settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{proxy.port}")
        with pytest.raises(KafkaUnavailableError, match=r"kafka\.bootstrap_servers"):
            await check_connection(settings, timeout_seconds=3)
        proxy.resume()
        await check_connection(settings, timeout_seconds=10)
