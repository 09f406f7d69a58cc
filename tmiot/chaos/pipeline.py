"""The pipeline's services as real processes, for fault runs: start, kill -9, restart, RSS.

Each run gets its own topics, consumer groups and MQTT client id (a suffix), so
several runs can share one broker. Processes are ``python -m tmiot.cli <command>``
with the settings in their environment, as an operator would run them; their logs
go to ``<log_dir>/<name>-<n>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import structlog

__all__ = ["Pipeline", "ServiceExited", "rss_kib", "topics_env"]

log = structlog.get_logger(__name__)

PARTITIONS: Final = 4
_POLL: Final = 0.2


class ServiceExited(RuntimeError):  # noqa: N818 - names what happened
    """A service process ended on its own (a crash); its log tail is the message."""


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process in KiB, from /proc; (0, 0) if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0, 0
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            found[key] = int(rest.split()[0])
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


# Topic setting -> the short kind a run's topic names start with (``<kind>.<suffix>``).
_TOPIC_KINDS: Final = {
    "READINGS_RAW": "raw",
    "READINGS_SCORED": "scored",
    "READINGS_DEADLETTER": "dlq",
    "SENSOR_STATUS": "status",
    "WORKORDERS_REQUESTED": "wo",
    "WORKORDERS_OUTCOMES": "outcomes",
    "NOTIFICATIONS_REQUESTED": "notify",
    "PIPELINE_HEALTH": "health",
}


def topics_env(suffix: str) -> dict[str, str]:
    """Environment overrides giving every topic a run's own name, ``<kind>.<suffix>``."""
    return {f"TMIOT_KAFKA__TOPICS__{k}": f"{kind}.{suffix}" for k, kind in _TOPIC_KINDS.items()}


@dataclass
class _Service:
    name: str
    command: str
    extra: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_file: Path | None = None
    starts: int = 0
    peak_rss_kib: int = 0
    last_rss_kib: int = 0


@dataclass
class Pipeline:
    """The run's service processes; a context manager that kills what is left on exit."""

    database_url: str
    bootstrap: str
    mqtt_host: str
    mqtt_port: int
    log_dir: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # "" subscribes ingest without $share: Mosquitto 2.0 does not restore a persistent
    # session's shared subscriptions after a restart (see docs/architecture.md).
    share_group: str | None = None  # None: a group of the run's own
    extra_env: dict[str, str] = field(default_factory=dict)
    _services: dict[str, _Service] = field(default_factory=dict)

    def __enter__(self) -> Self:
        """Nothing to start: services start one by one."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """SIGKILL every service still running."""
        for service in self._services.values():
            if service.proc is not None and service.proc.poll() is None:
                service.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    service.proc.wait(10)

    def topic(self, kind: str) -> str:
        """The run's name of a topic kind (raw, scored, wo, ...)."""
        return f"{kind}.{self.suffix}"

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        """The environment of a service process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMIOT_")}
        env.update(
            {
                "TMIOT_DATABASE__URL": self.database_url,
                "TMIOT_DATABASE__CONNECT_TIMEOUT_SECONDS": "5",
                "TMIOT_MQTT__HOST": self.mqtt_host,
                "TMIOT_MQTT__PORT": str(self.mqtt_port),
                "TMIOT_MQTT__CLIENT_ID": f"ingest-{self.suffix}",
                "TMIOT_MQTT__SHARE_GROUP": (
                    f"g{self.suffix}" if self.share_group is None else self.share_group
                ),
                "TMIOT_MQTT__KEEPALIVE_SECONDS": "5",
                "TMIOT_INGEST__SESSION_EXPIRY_SECONDS": "3600",
                "TMIOT_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "TMIOT_KAFKA__PARTITIONS": str(PARTITIONS),
                **topics_env(self.suffix),
                "TMIOT_STREAM__APP_ID": f"stream-{self.suffix}",
                "TMIOT_STREAM__SESSION_TIMEOUT_SECONDS": "6",
                "TMIOT_STREAM__CHECKPOINT_SECONDS": "2",
                "TMIOT_STREAM__SENSOR_FLUSH_SECONDS": "2",
                "TMIOT_STREAM__TICK_SECONDS": "1",
                "TMIOT_TRIGGERS__GROUP_ID": f"triggers-{self.suffix}",
                "TMIOT_TRIGGERS__REFRESH_SECONDS": "2",
                "TMIOT_TRIGGERS__CHECKPOINT_SECONDS": "1",
                "TMIOT_TRIGGERS__TICK_SECONDS": "1",
                "TMIOT_TRIGGERS__SESSION_TIMEOUT_SECONDS": "6",
                "TMIOT_METRICS__ENABLED": "false",
                "TMIOT_LOG__FORMAT": "json",
            }
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    # --- processes ------------------------------------------------------------------

    def start(self, name: str, command: str | None = None, **extra: str) -> None:
        """Start service `name` (``tmiot <command>``, default the name) or start it again."""
        service = self._services.get(name)
        if service is None:
            service = self._services[name] = _Service(name, command or name, dict(extra))
        service.starts += 1
        service.log_file = self.log_dir / f"{name}-{service.starts}.log"
        with service.log_file.open("wb") as out:
            service.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "tmiot.cli", service.command],
                env=self.env(service.extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        log.info("service started", service=name, pid=service.proc.pid, start=service.starts)

    def kill(self, name: str) -> None:
        """Send SIGKILL (kill -9) to a service and reap it."""
        service = self._services[name]
        assert service.proc is not None  # noqa: S101 - started before
        self.sample_rss()
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(30)
        log.info("service killed", service=name, pid=service.proc.pid)

    def stop(self, name: str) -> int:
        """SIGTERM a service, wait for it; its exit code."""
        service = self._services[name]
        assert service.proc is not None  # noqa: S101 - started before
        self.sample_rss()
        service.proc.send_signal(signal.SIGTERM)
        try:
            return service.proc.wait(60)
        except subprocess.TimeoutExpired:
            service.proc.kill()
            return service.proc.wait(10)

    def names(self) -> list[str]:
        """Every service started so far."""
        return list(self._services)

    def pid(self, name: str) -> int | None:
        """The pid of a running service."""
        proc = self._services[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def exited(self) -> list[str]:
        """Services whose process ended without being killed or stopped here."""
        return [
            s.name
            for s in self._services.values()
            if s.proc is not None
            and s.proc.poll() is not None
            and s.proc.returncode != -signal.SIGKILL
        ]

    def check_alive(self) -> None:
        """Raise ServiceExited when a service ended on its own."""
        for name in self.exited():
            msg = f"{name} exited with {self.returncode(name)}\n{self.tail(name)}"
            raise ServiceExited(msg)

    def returncode(self, name: str) -> int | None:
        """The exit code of a service's last process (None while it runs)."""
        proc = self._services[name].proc
        return None if proc is None else proc.poll()

    def tail(self, name: str, chars: int = 4000) -> str:
        """The end of a service's newest log."""
        log_file = self._services[name].log_file
        if log_file is None or not log_file.exists():
            return ""
        return log_file.read_text(encoding="utf-8", errors="replace")[-chars:]

    def tails(self, chars: int = 2500) -> str:
        """The end of every service's newest log."""
        return "\n".join(f"--- {n}\n{self.tail(n, chars)}" for n in self._services)

    def wait_log(self, name: str, text: str, deadline_s: float = 90.0) -> None:
        """Poll the newest log of a service until it holds `text`.

        Raises:
            ServiceExited: the service ended first.
            TimeoutError: not within the deadline.
        """
        service = self._services[name]
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            log_file = service.log_file
            if log_file is not None and log_file.exists() and text in _read(log_file):
                return
            self.check_alive()
            time.sleep(_POLL)
        msg = f"{name} never logged {text!r} within {deadline_s:.0f} s\n{self.tail(name)}"
        raise TimeoutError(msg)

    # --- memory ---------------------------------------------------------------------

    def sample_rss(self) -> dict[str, int]:
        """Read every running service's RSS (KiB); keep the peak per service."""
        now = {}
        for service in self._services.values():
            if service.proc is None or service.proc.poll() is not None:
                continue
            current, peak = rss_kib(service.proc.pid)
            service.last_rss_kib = current
            service.peak_rss_kib = max(service.peak_rss_kib, peak, current)
            now[service.name] = current
        return now

    def peak_rss_mib(self) -> dict[str, float]:
        """Peak RSS per service over the run (every process of it), MiB."""
        self.sample_rss()
        return {s.name: round(s.peak_rss_kib / 1024, 1) for s in self._services.values()}

    def last_rss_mib(self) -> dict[str, float]:
        """RSS per service at the last sample, MiB."""
        self.sample_rss()
        return {s.name: round(s.last_rss_kib / 1024, 1) for s in self._services.values()}

    def starts(self) -> dict[str, int]:
        """How many processes each service had."""
        return {s.name: s.starts for s in self._services.values()}


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")
