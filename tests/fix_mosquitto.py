"""A dedicated Mosquitto with passwords, per-tenant ACLs and TLS, for the security tests.

``secure_mosquitto`` (session scope) starts one broker of its own on free loopback
ports, configured like deploy/mosquitto (no anonymous access, a password file made
with ``mosquitto_passwd -b``, an ACL file with one ``user`` block per gateway),
with four listeners:

- ``port``: plain TCP, username and password (a test convenience; production has
  no plain listener);
- ``gateway_tls_port``: TLS, a client certificate signed by the test CA plus a
  password, and ``use_username_as_clientid``: production's gateway listener;
- ``ingest_tls_port``: the same without ``use_username_as_clientid``, so that
  several ingest clients share one username: production's internal listener;
- ``identity_tls_port``: TLS, the client certificate alone, its CN as the
  username (``use_identity_as_username``): the certificate-only alternative.

The CA, server and client certificates are made by ``openssl`` in the session's
tmp dir, next to the configuration and the broker's log. A missing ``mosquitto``
or ``openssl`` fails the run with what to install; it never skips.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from tmiot.config import MqttSettings, TlsFiles
from tmiot.services import free_port

START_DEADLINE_SECONDS = 15.0
HOST = "127.0.0.1"
SHARE_GROUP = "tmiot-ingest"

# Where each tool comes from, for the failure message (Debian/Ubuntu package names).
_PACKAGES = {"mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "openssl": "openssl"}

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True, slots=True)
class MqttAccount:
    """One broker user: password, a client certificate whose CN is the username, a tenant."""

    username: str
    password: str
    cert_file: Path
    key_file: Path
    company_id: str | None = None  # the gateway's tenant; None for the ingest service


@dataclass(frozen=True, slots=True)
class SecureBroker:
    """A running Mosquitto with authentication, ACLs and TLS (see the module docstring)."""

    host: str
    port: int
    gateway_tls_port: int
    ingest_tls_port: int
    identity_tls_port: int
    ca_file: Path
    server_cert_file: Path  # CN localhost, SAN IP:127.0.0.1 and DNS:localhost
    server_key_file: Path
    ingest: MqttAccount
    observer: MqttAccount  # reads every topic: sees whatever the broker lets through
    gateway_a: MqttAccount
    gateway_b: MqttAccount
    share_group: str
    config_file: Path
    passwd_file: Path
    acl_file: Path
    log_file: Path

    @property
    def company_a(self) -> str:
        """The tenant of gateway A."""
        assert self.gateway_a.company_id is not None
        return self.gateway_a.company_id

    @property
    def company_b(self) -> str:
        """The tenant of gateway B."""
        assert self.gateway_b.company_id is not None
        return self.gateway_b.company_id

    def tls_context(self, account: MqttAccount | None = None) -> ssl.SSLContext:
        """A client context that trusts the test CA and shows `account`'s certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if account is not None:
            context.load_cert_chain(account.cert_file, account.key_file)
        return context

    def mqtt_settings(self, account: MqttAccount, *, tls: bool = False) -> MqttSettings:
        """The tmiot settings for connecting as `account`, with a client id of its own.

        With `tls`, gateways get the gateway listener and other accounts the
        ingest listener, as in production.
        """
        tls_port = self.gateway_tls_port if account.company_id else self.ingest_tls_port
        return MqttSettings(
            host=self.host,
            port=tls_port if tls else self.port,
            username=account.username,
            password=SecretStr(account.password),
            client_id=f"{account.username}-{uuid.uuid4().hex[:8]}",
            tls=TlsFiles(
                ca_file=self.ca_file, cert_file=account.cert_file, key_file=account.key_file
            )
            if tls
            else None,
            share_group=self.share_group,
        )


def tool(name: str) -> str:
    """The path of a command-line tool, or fail the test run saying what to install."""
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/local/sbin") if (p := Path(d) / name).is_file()),
        None,
    )
    if found is None:
        pytest.fail(
            f"{name} is not installed; the MQTT security tests need it: "
            f"apt-get install {_PACKAGES.get(name, name)}",
            pytrace=False,
        )
    return found


def _run(*args: str | Path) -> None:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(str(a) for a in args)} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}",
            pytrace=False,
        )


# --- certificates ---------------------------------------------------------------


def _new_key_and_request(openssl: str, cnf: Path, stem: Path, common_name: str) -> None:
    _run(
        openssl,
        "req",
        "-new",
        "-config",
        cnf,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        stem.with_suffix(".key"),
        "-out",
        stem.with_suffix(".csr"),
        "-subj",
        f"/CN={common_name}",
    )


def make_ca(openssl: str, directory: Path, common_name: str) -> tuple[Path, Path]:
    """Make a self-signed CA in `directory`; return (certificate, key)."""
    cnf = directory / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF, encoding="utf-8")
    cert, key = directory / "ca.crt", directory / "ca.key"
    _run(
        openssl,
        "req",
        "-x509",
        "-config",
        cnf,
        "-extensions",
        "ca_ext",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        f"/CN={common_name}",
    )
    return cert, key


def make_leaf(
    openssl: str, ca: tuple[Path, Path], stem: Path, common_name: str, *, server: bool
) -> tuple[Path, Path]:
    """Make a key and a certificate signed by `ca`; return (certificate, key)."""
    cnf = ca[0].parent / "openssl.cnf"
    _new_key_and_request(openssl, cnf, stem, common_name)
    cert = stem.with_suffix(".crt")
    _run(
        openssl,
        "x509",
        "-req",
        "-in",
        stem.with_suffix(".csr"),
        "-CA",
        ca[0],
        "-CAkey",
        ca[1],
        "-set_serial",
        f"0x{secrets.token_hex(16)}",
        "-days",
        "2",
        "-extfile",
        cnf,
        "-extensions",
        "server_ext" if server else "client_ext",
        "-out",
        cert,
    )
    return cert, stem.with_suffix(".key")


# --- configuration --------------------------------------------------------------


def acl_text(ingest: str, observer: str, gateways: Sequence[MqttAccount]) -> str:
    """The ACL file: the same layout as deploy/mosquitto/acl, one block per gateway."""
    lines = [
        "# Generated by tests/fix_mosquitto.py in the style of deploy/mosquitto/acl.",
        f"user {ingest}",
        "topic read tenants/#",
        "",
        f"user {observer}",
        "topic read #",
        "",
    ]
    for gw in gateways:
        lines += [
            f"# gateway {gw.username} of company {gw.company_id}",
            f"user {gw.username}",
            f"topic write tenants/{gw.company_id}/sensors/+/readings",
            f"topic write tenants/{gw.company_id}/sensors/+/status",
            f"topic write tenants/{gw.company_id}/gateways/{gw.username}/readings",
            "",
        ]
    return "\n".join(lines)


def run_as_user() -> str:
    """The `user` for mosquitto.conf: whoever runs the tests."""
    # Run as root, mosquitto drops to the `mosquitto` user, which cannot read the
    # tmp dir; naming the current user keeps it as it is.
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass(frozen=True, slots=True)
class _Listeners:
    plain: int
    gateway_tls: int
    ingest_tls: int
    identity_tls: int


def broker_config(  # noqa: PLR0913 - one argument per file of the configuration
    *,
    run_dir: Path,
    listeners: _Listeners,
    passwd: Path,
    acl: Path,
    ca: Path,
    server: tuple[Path, Path],
    log_file: Path,
) -> str:
    """The test broker's mosquitto.conf: deploy/mosquitto's settings, loopback ports."""
    tls = (
        f"cafile {ca}\n"
        f"certfile {server[0]}\n"
        f"keyfile {server[1]}\n"
        "tls_version tlsv1.2\n"
        "require_certificate true\n"
    )
    return (
        f"user {run_as_user()}\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        f"acl_file {acl}\n"
        "persistence true\n"
        f"persistence_location {run_dir}/\n"
        "autosave_interval 60\n"
        "persistent_client_expiration 7d\n"
        "max_inflight_messages 100\n"
        "max_queued_messages 1000000\n"
        "max_queued_bytes 1073741824\n"
        "max_packet_size 4194304\n"
        "set_tcp_nodelay true\n"
        f"log_dest file {log_file}\n"
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        "connection_messages true\n"
        "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
        f"\nlistener {listeners.plain} {HOST}\n"
        f"\nlistener {listeners.gateway_tls} {HOST}\n{tls}use_username_as_clientid true\n"
        f"\nlistener {listeners.ingest_tls} {HOST}\n{tls}"
        f"\nlistener {listeners.identity_tls} {HOST}\n{tls}use_identity_as_username true\n"
    )


# --- process --------------------------------------------------------------------


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def running_mosquitto(config: Path, ports: Sequence[int], log_file: Path) -> Iterator[int]:
    """Run ``mosquitto -c config`` until the block ends; yield its pid once all ports answer.

    Fails the test with the log's tail when it exits early or misses the deadline.
    """
    binary = tool("mosquitto")
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            [binary, "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        waiting = list(ports)
        while waiting:
            if proc.poll() is not None:
                pytest.fail(
                    f"mosquitto exited with {proc.returncode}: {_tail(log_file)}", pytrace=False
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mosquitto did not listen on {waiting} within "
                    f"{START_DEADLINE_SECONDS:.0f} s: {_tail(log_file)}",
                    pytrace=False,
                )
            waiting = [p for p in waiting if not _port_open(p)]
            if waiting:
                time.sleep(0.05)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _tail(log_file: Path, lines: int = 15) -> str:
    text = log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# --- the fixture ----------------------------------------------------------------


def _account(
    openssl: str, ca: tuple[Path, Path], certs: Path, username: str, company: str | None
) -> MqttAccount:
    cert, key = make_leaf(openssl, ca, certs / username, username, server=False)
    return MqttAccount(
        username=username,
        password=secrets.token_urlsafe(18),
        cert_file=cert,
        key_file=key,
        company_id=company,
    )


@contextlib.contextmanager
def secure_broker(run_dir: Path) -> Iterator[SecureBroker]:
    """Make the certificates, password and ACL files in `run_dir`, then run the broker."""
    openssl, passwd_tool = tool("openssl"), tool("mosquitto_passwd")
    tool("mosquitto")
    certs = run_dir / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = make_ca(openssl, certs, "tmiot test CA")
    server = make_leaf(openssl, ca, certs / "server", "localhost", server=True)
    ingest = _account(openssl, ca, certs, "tmiot-ingest", None)
    observer = _account(openssl, ca, certs, "tmiot-observer", None)
    gateway_a = _account(openssl, ca, certs, "gw-a-0001", str(uuid.uuid4()))
    gateway_b = _account(openssl, ca, certs, "gw-b-0001", str(uuid.uuid4()))

    passwd = run_dir / "passwd"
    for i, account in enumerate((ingest, observer, gateway_a, gateway_b)):
        create = ("-c",) if i == 0 else ()
        _run(passwd_tool, *create, "-b", passwd, account.username, account.password)
    passwd.chmod(0o600)
    acl = run_dir / "acl"
    acl.write_text(
        acl_text(ingest.username, observer.username, [gateway_a, gateway_b]), encoding="utf-8"
    )

    listeners = _Listeners(free_port(HOST), free_port(HOST), free_port(HOST), free_port(HOST))
    config = run_dir / "mosquitto.conf"
    log_file = run_dir / "mosquitto.log"
    config.write_text(
        broker_config(
            run_dir=run_dir,
            listeners=listeners,
            passwd=passwd,
            acl=acl,
            ca=ca[0],
            server=server,
            log_file=log_file,
        ),
        encoding="utf-8",
    )
    ports = (listeners.plain, listeners.gateway_tls, listeners.ingest_tls, listeners.identity_tls)
    with running_mosquitto(config, ports, log_file):
        yield SecureBroker(
            host=HOST,
            port=listeners.plain,
            gateway_tls_port=listeners.gateway_tls,
            ingest_tls_port=listeners.ingest_tls,
            identity_tls_port=listeners.identity_tls,
            ca_file=ca[0],
            server_cert_file=server[0],
            server_key_file=server[1],
            ingest=ingest,
            observer=observer,
            gateway_a=gateway_a,
            gateway_b=gateway_b,
            share_group=SHARE_GROUP,
            config_file=config,
            passwd_file=passwd,
            acl_file=acl,
            log_file=log_file,
        )


@pytest.fixture(scope="session")
def secure_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A Mosquitto of this session's own with passwords, per-tenant ACLs and TLS."""
    with secure_broker(tmp_path_factory.mktemp("secure-mosquitto")) as broker:
        yield broker
