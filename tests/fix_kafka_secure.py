"""Kafka-protocol brokers behind mutual TLS, one of them demanding SASL, for the security tests.

``secure_kafka`` (session scope) runs two tansu brokers of its own, each behind a TLS
listener that requires a client certificate (mutual TLS):

- ``bootstrap``: SSL (TLS, no SASL): the whole pipeline runs through it;
- ``sasl_bootstrap``: SASL_SSL, the broker started with ``--authentication``: what
  production's listener demands (deploy/tmiot.production.toml), for the refusals.

What the bundled tansu 0.6 allows, and so what is not tested here:

- its CLI refuses ``--cert`` together with ``--key`` ("cannot be used with"), so it
  cannot serve TLS itself: TLS is terminated in front of it by
  :class:`tmiot.chaos.proxy.TcpProxy` with a server context, the address the broker
  advertises. The clients cannot tell: they verify the server's certificate and
  present theirs as to a broker's own TLS listener;
- with ``--authentication`` it offers SCRAM only (a PLAIN login is refused with
  ``NoSharedMechanism``) and keeps SCRAM users in its storage, which only an
  authenticated client may write (``tansu user create`` is refused with
  ``NotAuthenticated``); its storage here is memory, private to the process. So no
  user can exist: every login is refused, which is what the refusal tests need, and
  a successful SCRAM login cannot be shown on this machine (a Kafka of
  testcontainers, where a Docker engine answers, could).

The CA, server and client certificates are made by ``openssl`` (tests/fix_mosquitto);
a second CA that signed nothing of the brokers' stands for an untrusted one.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fix_mosquitto import make_ca, make_leaf
from tmiot.chaos.backends import port_open, wait_until
from tmiot.chaos.proxy import TcpProxy
from tmiot.config import KafkaSecurityProtocol, KafkaSettings, TlsFiles
from tmiot.services import free_port, start_tansu, stop_pid

HOST = "127.0.0.1"


@dataclass(frozen=True)
class SecureKafka:
    """The brokers' TLS addresses and the test PKI."""

    bootstrap: str  # SSL
    sasl_bootstrap: str  # SASL_SSL, SCRAM demanded
    ca_file: Path
    cert_file: Path
    key_file: Path
    untrusted_ca_file: Path

    def settings(self, **changes: Any) -> KafkaSettings:
        """The pipeline's Kafka settings for the SSL broker, with `changes` applied."""
        base: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": KafkaSecurityProtocol.SSL,
            "tls": TlsFiles(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file),
            "partitions": 4,
        }
        return KafkaSettings(**{**base, **changes})

    def sasl_settings(self, **changes: Any) -> KafkaSettings:
        """Settings for the SASL_SSL broker: SCRAM-SHA-512 as production (no user exists)."""
        return self.settings(
            **{
                "bootstrap_servers": self.sasl_bootstrap,
                "security_protocol": KafkaSecurityProtocol.SASL_SSL,
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "tmiot-pipeline",
                "sasl_password": SecretStr("not-a-password-the-broker-knows"),
                **changes,
            }
        )

    def env(self, settings: KafkaSettings | None = None) -> dict[str, str]:
        """The ``TMIOT_KAFKA__*`` environment of `settings` (default: the SSL broker's)."""
        s = settings or self.settings()
        env = {
            "TMIOT_KAFKA__BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "TMIOT_KAFKA__SECURITY_PROTOCOL": s.security_protocol.value,
        }
        if s.sasl_mechanism is not None:
            env["TMIOT_KAFKA__SASL_MECHANISM"] = s.sasl_mechanism
        if s.sasl_username is not None:
            env["TMIOT_KAFKA__SASL_USERNAME"] = s.sasl_username
        if s.sasl_password is not None:
            env["TMIOT_KAFKA__SASL_PASSWORD"] = s.sasl_password.get_secret_value()
        if s.tls is not None:
            for name in ("ca_file", "cert_file", "key_file"):
                value = getattr(s.tls, name)
                if value is not None:
                    env[f"TMIOT_KAFKA__TLS__{name.upper()}"] = str(value)
        return env


def _server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no connection
    return ctx


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """Two tansu brokers behind mutual-TLS listeners, the second demanding SASL."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail(
            "openssl is not installed (apt-get install openssl): the Kafka TLS tests need it"
        )
    pki = tmp_path_factory.mktemp("kafka-pki")
    ca = make_ca(openssl, pki, "tmiot test Kafka CA")
    server = make_leaf(openssl, ca, pki / "broker", HOST, server=True)
    client = make_leaf(openssl, ca, pki / "pipeline", "tmiot-pipeline", server=False)
    other = pki / "other"
    other.mkdir()
    untrusted, _ = make_ca(openssl, other, "a CA nobody asked for")
    logs = tmp_path_factory.mktemp("kafka-secure")
    with contextlib.ExitStack() as stack:
        addresses = []
        for name, authentication in (("tls", False), ("sasl", True)):
            port = free_port()
            proxy = stack.enter_context(TcpProxy(HOST, port, tls=_server_context(ca[0], *server)))
            proc = start_tansu(
                HOST,
                port,
                logs / f"tansu-{name}.log",
                advertised=f"{HOST}:{proxy.port}",
                authentication=authentication,
            )
            stack.callback(_stop, proc)
            wait_until(functools.partial(_up, proc, port), "tansu")
            if proc.poll() is not None:
                pytest.fail(f"tansu exited with {proc.returncode}: see {logs}")
            addresses.append(f"{HOST}:{proxy.port}")
        yield SecureKafka(addresses[0], addresses[1], ca[0], client[0], client[1], untrusted)


def _up(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Listening, or exited (then the fixture fails with its code)."""
    return proc.poll() is not None or port_open(port)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_pid(proc.pid)
    proc.wait(10)
