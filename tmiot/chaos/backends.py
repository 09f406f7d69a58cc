"""Private instances of the backing services, for faults that must not touch shared ones.

Restarting the PostgreSQL server or the Mosquitto broker that other test runs
use would fail them, so restart faults run against instances of their own:

- :class:`PrivatePostgres`: a throw-away cluster (``initdb`` with trust auth on
  loopback, ``fsync`` off), stopped with ``pg_ctl -m immediate`` (a crash: the
  next start replays the WAL) and started again on the same port. Run as root,
  the PostgreSQL binaries are run as the ``postgres`` user (they refuse root);
- :class:`PrivateMosquitto`: a broker with persistence on a port of its own,
  restarted with SIGTERM (it saves its queues on the way down);
- :class:`PrivateKafka`: a tansu broker (memory storage) that advertises another
  address, e.g. a proxy's, so that every client goes through that proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import structlog

from tmiot.errors import TmiotError
from tmiot.services import free_port, kafka_problem, start_mosquitto, start_tansu, stop_pid

__all__ = [
    "BackendError",
    "PrivateKafka",
    "PrivateMosquitto",
    "PrivatePostgres",
    "postgres_binaries",
    "wait_until",
]

log = structlog.get_logger(__name__)

START_DEADLINE: Final = 60.0
_POLL: Final = 0.1


class BackendError(TmiotError):
    """A private service could not be set up, started or stopped."""


def wait_until(ready: Callable[[], bool], what: str, deadline_s: float = START_DEADLINE) -> None:
    """Poll `ready` until it holds; raise BackendError at the deadline."""
    end = time.monotonic() + deadline_s
    while not ready():
        if time.monotonic() > end:
            msg = f"{what}: not within {deadline_s:.0f} s"
            raise BackendError(msg)
        time.sleep(_POLL)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def postgres_binaries() -> Path | None:
    """The newest installed PostgreSQL ``bin`` directory holding initdb and pg_ctl, or None."""
    found = sorted(
        (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """A PostgreSQL cluster of our own on a free loopback port; a context manager."""

    def __init__(self, *, port: int | None = None) -> None:
        """Pick the binaries and a port; nothing runs until entered.

        Raises:
            BackendError: initdb/pg_ctl are not installed.
        """
        binaries = postgres_binaries()
        if binaries is None:
            msg = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
            raise BackendError(msg)
        self._bin = binaries
        self.port = port or free_port()
        # Not under the caller's tmp dir: as root, that is often not traversable by postgres.
        self.root = Path(tempfile.mkdtemp(prefix="tmiot-pg-"))
        self.data = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            info = pwd.getpwnam("postgres")
            os.chown(self.root, info.pw_uid, info.pw_gid)
        self.root.chmod(0o700)

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL of one of its databases."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def __enter__(self) -> Self:
        """initdb, then start."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop at once and remove the cluster."""
        with contextlib.suppress(BackendError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-o", options,
            "-w", "-t", str(int(START_DEADLINE)), "start",
        )  # fmt: skip
        log.info("private postgres started", port=self.port)

    def stop(self, *, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: a crash, recovered from the WAL on start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        log.info("private postgres stopped", port=self.port, mode=mode)

    def restart(self) -> None:
        """Crash-stop and start again on the same port."""
        self.stop()
        self.start()

    def pids(self) -> list[int]:
        """The postmaster's pid (for RSS figures), if running."""
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            return [int(pid_file.read_text(encoding="utf-8").splitlines()[0])]
        return []

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self._bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(  # noqa: S603 - fixed binaries, our own arguments
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=START_DEADLINE + 30,
            cwd=self.root,
        )
        if result.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = self.log_file.read_text(encoding="utf-8", errors="replace")[-1500:]
            msg = f"{tool} failed ({result.returncode}): {result.stderr.strip()[-800:]}\n{tail}"
            raise BackendError(msg)


class PrivateMosquitto:
    """A Mosquitto of our own (persistence on) on a free loopback port; a context manager."""

    def __init__(self, run_dir: Path, *, port: int | None = None) -> None:
        """Pick a port; nothing runs until entered."""
        self.run_dir = run_dir
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> Self:
        """Start."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()

    def start(self) -> None:
        """Start and wait until the port answers.

        Raises:
            BackendError: it exited or did not listen in time.
        """
        # As root, mosquitto would drop to the `mosquitto` user, which cannot write here.
        user = pwd.getpwuid(os.geteuid()).pw_name
        proc = start_mosquitto(self.port, self.run_dir, extra_conf=f"user {user}\n", name="mqtt")
        self._proc = proc

        def up() -> bool:
            if proc.poll() is not None:
                msg = f"mosquitto exited with {proc.returncode}; see {self.run_dir / 'mqtt.log'}"
                raise BackendError(msg)
            return port_open(self.port)

        wait_until(up, f"mosquitto on port {self.port}")
        log.info("private mosquitto started", port=self.port)

    def stop(self, *, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop (SIGTERM: it saves its persistent sessions and queues first)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.info("private mosquitto stopped", port=self.port, signal=sig.name)

    def restart(self) -> None:
        """Stop gracefully and start again on the same port."""
        self.stop()
        self.start()


class PrivateKafka:
    """A tansu broker on a free port that advertises `advertised`; a context manager."""

    def __init__(self, log_file: Path, *, advertised: str | None = None) -> None:
        """Pick a port; `advertised` is the ``host:port`` clients are sent to."""
        self.port = free_port()
        self.log_file = log_file
        self.advertised = advertised or f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> Self:
        """Start and wait until it answers a metadata request on its own port."""
        self._proc = start_tansu("127.0.0.1", self.port, self.log_file, advertised=self.advertised)
        direct = f"127.0.0.1:{self.port}"

        def up() -> bool:
            assert self._proc is not None  # noqa: S101 - set just above
            if self._proc.poll() is not None:
                msg = f"tansu exited with {self._proc.returncode}; see {self.log_file}"
                raise BackendError(msg)
            return asyncio.run(functools.partial(kafka_problem, direct)()) is None

        wait_until(up, f"tansu on port {self.port}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        if self._proc is not None:
            stop_pid(self._proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
            self._proc = None
