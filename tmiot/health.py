"""Liveness and readiness of a service, served on its metrics port beside ``/metrics``.

- ``GET /healthz`` (liveness): 200 while the service's event loop turns: a callback
  posted to it every ``probe_seconds`` must run within ``stall_seconds``; 503 when it
  did not (a blocked loop: restart the process). An unreachable broker or database
  is not a liveness failure (restarting would not help): readiness says it.
- ``GET /readyz`` (readiness): 200 when every check passes, else 503. A check is
  either a *probe* (a connection the service needs, opened again every
  ``probe_seconds``: the database, the Kafka cluster) or a *progress* check (a
  callable reading the service's own state: subscribed, delivering, committing).

Probes and the liveness ping run on a thread of their own with its own event loop,
so they answer even while the service waits for a rebalance or a reconnect; the
HTTP thread only reads their last results.

Both answer JSON: ``{"status": "ok" | "failing", "service": ..., "checks": {name:
{"ok": bool, "detail": str, "age_s": float}}}``, so an operator (or a probe's log)
sees which check failed and why.

Example:
    >>> health = Health("demo")
    >>> health.progress("subscribed", lambda: None)
    >>> health.report()[0]
    True
    >>> health.progress("delivering", lambda: "nothing delivered for 40 s")
    >>> health.report()[1]["checks"]["delivering"]["detail"]
    'nothing delivered for 40 s'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from tmiot.config import DatabaseSettings, KafkaSettings
from tmiot.db import conninfo
from tmiot.errors import TmiotError
from tmiot.kafka import check_connection
from tmiot.services import postgres_problem

__all__ = ["Health", "database_probe", "kafka_probe", "serve"]

log = structlog.get_logger(__name__)


@dataclass
class _Result:
    ok: bool
    detail: str
    at: float  # monotonic time of the result


class Health:
    """The checks of one service: probed on a thread of their own, reported from any thread."""

    def __init__(
        self, service: str, *, probe_seconds: float = 5.0, stall_seconds: float = 30.0
    ) -> None:
        """Nothing is probed until :meth:`start` (a probe reads failing until its first result)."""
        self.service = service
        self.probe_seconds = probe_seconds
        self.stall_seconds = stall_seconds
        self._probes: dict[str, Callable[[], Awaitable[str | None]]] = {}
        self._progress: dict[str, Callable[[], str | None]] = {}
        self._results: dict[str, _Result] = {}
        self._watched: asyncio.AbstractEventLoop | None = None
        self._pong = time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def probe(self, name: str, check: Callable[[], Awaitable[str | None]]) -> None:
        """Add a probe: a coroutine function returning a problem (str) or None when fine."""
        self._probes[name] = check
        self._results[name] = _Result(ok=False, detail="not probed yet", at=time.monotonic())

    def progress(self, name: str, check: Callable[[], str | None]) -> None:
        """Add a progress check: a cheap, thread-safe read of state; a problem or None."""
        self._progress[name] = check

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """The service's event loop, whose turning is the liveness."""
        self._watched = loop
        self._pong = time.monotonic()

    def start(self) -> None:
        """Run the probes and the liveness ping on a daemon thread, every ``probe_seconds``."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=lambda: asyncio.run(self._run()), name="health-probes", daemon=True
            )
            self._thread.start()

    async def _run(self) -> None:
        while True:
            loop = self._watched
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(self._answer)
            await asyncio.gather(*(self._run_probe(n, c) for n, c in self._probes.items()))
            await asyncio.sleep(self.probe_seconds)

    def _answer(self) -> None:
        self._pong = time.monotonic()

    async def _run_probe(self, name: str, check: Callable[[], Awaitable[str | None]]) -> None:
        limit = max(1.0, self.probe_seconds)
        try:
            problem = await asyncio.wait_for(check(), limit)
        except TimeoutError:
            problem = f"no answer within {limit:g} s"
        except Exception as exc:  # noqa: BLE001 - a probe's failure is its result
            problem = f"{type(exc).__name__}: {exc}"
        result = _Result(ok=problem is None, detail=problem or "ok", at=time.monotonic())
        with self._lock:
            was = self._results.get(name)
            self._results[name] = result
        if was is not None and was.ok != result.ok and was.detail != "not probed yet":
            (log.info if result.ok else log.warning)(
                "readiness changed", service=self.service, check=name, detail=result.detail
            )

    def live(self) -> tuple[bool, dict[str, Any]]:
        """Whether the service's loop answered within ``stall_seconds``, and the body."""
        age = time.monotonic() - self._pong
        ok = self._watched is None or age <= self.stall_seconds + self.probe_seconds
        detail = "ok" if ok else f"event loop blocked: no answer for {age:.0f} s"
        return ok, self._body({"loop": {"ok": ok, "detail": detail, "age_s": round(age, 1)}})

    def report(self) -> tuple[bool, dict[str, Any]]:
        """Whether every check passes, and the body naming each check's state."""
        now = time.monotonic()
        checks: dict[str, Any] = {}
        with self._lock:
            results = dict(self._results)
        for name, r in results.items():
            stale = now - r.at > 3 * self.probe_seconds + self.stall_seconds
            ok = r.ok and not stale
            detail = r.detail if not stale else f"last probed {now - r.at:.0f} s ago"
            checks[name] = {"ok": ok, "detail": detail, "age_s": round(now - r.at, 1)}
        for name, check in self._progress.items():
            try:
                problem = check()
            except Exception as exc:  # noqa: BLE001 - a check's failure is its result
                problem = f"{type(exc).__name__}: {exc}"
            checks[name] = {"ok": problem is None, "detail": problem or "ok", "age_s": 0.0}
        body = self._body(checks)
        return body["status"] == "ok", body

    def _body(self, checks: dict[str, Any]) -> dict[str, Any]:
        ok = all(c["ok"] for c in checks.values())
        return {"status": "ok" if ok else "failing", "service": self.service, "checks": checks}


def database_probe(settings: DatabaseSettings) -> Callable[[], Awaitable[str | None]]:
    """A probe that opens a connection to the service's database and runs a query."""
    dsn = conninfo(settings)

    async def probe() -> str | None:
        return await postgres_problem(dsn)

    return probe


def kafka_probe(settings: KafkaSettings) -> Callable[[], Awaitable[str | None]]:
    """A probe that connects and logs in to the Kafka cluster as the service does."""

    async def probe() -> str | None:
        try:
            await check_connection(settings, timeout_seconds=3.0)
        except TmiotError as exc:
            return str(exc)
        return None

    return probe


def _app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, body = health.live() if path == "/healthz" else health.report()
            # A new list each time: wsgiref appends the Content-Length to the one it is given.
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [json.dumps(body).encode()]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


def serve(host: str, port: int, registry: CollectorRegistry, health: Health) -> WSGIServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on host:port from a daemon thread."""
    server = make_server(
        host, port, _app(registry, health), ThreadingWSGIServer, handler_class=_SilentHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="health-http", daemon=True)
    thread.start()
    log.info(
        "metrics and health served",
        url=f"http://{host}:{port}",
        paths=["/metrics", "/healthz", "/readyz"],
    )
    return server
