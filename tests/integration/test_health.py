"""/healthz and /readyz of ingest, stream and triggers, while the database or the broker goes away.

Each service serves them beside /metrics on its own port (tmiot.health). Readiness
must turn failing, naming the check, when the database or the Kafka cluster becomes
unreachable (links cut through proxies), and ok again after; liveness stays ok
throughout (restarting a process would not bring a database back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.fix_pipeline import PipelineRig
from tests.unit.test_dashboard import exported, queried_metrics
from tmiot.chaos.backends import PrivateKafka
from tmiot.chaos.proxy import TcpProxy
from tmiot.config import DatabaseSettings, MqttSettings
from tmiot.services import free_port

SERVICES = ("ingest", "stream", "triggers")
DEADLINE_S = 60.0


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET http://127.0.0.1:port/path: (status, JSON body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def probe(port: int) -> int:
    """Exit code of `tmiot probe triggers` against the triggers service on `port`."""
    env = {"PATH": os.environ.get("PATH", ""), "TMIOT_METRICS__PORT": str(port)}
    done = subprocess.run(
        [sys.executable, "-m", "tmiot.cli", "probe", "triggers"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.stdout.startswith(b"{"), done.stderr
    return done.returncode


def wait_ready(ports: dict[str, int], *, ready: bool, failing: str | None = None) -> None:
    """Poll each service's /readyz until it is (not) ready; a failing one must name `failing`."""
    pending = dict(ports)
    seen: dict[str, Any] = {}
    end = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < end:
        for name, port in list(pending.items()):
            try:
                status, body = get(port, "/readyz")
            except OSError as exc:  # not listening yet
                seen[name] = str(exc)
                continue
            seen[name] = body
            bad = [c for c, v in body["checks"].items() if not v["ok"]]
            now_ready = status == 200 and not bad
            if (ready and now_ready) or (not ready and status == 503 and failing in bad):
                del pending[name]
        time.sleep(0.3)
    assert not pending, f"still {'not ready' if ready else 'ready'}: {pending}; last: {seen}"


@pytest.fixture
def proxied(
    schema_database: DatabaseSettings, tmp_path: Path
) -> Iterator[tuple[DatabaseSettings, TcpProxy, str, TcpProxy]]:
    """The test database and a private tansu, each behind a proxy that can cut the link."""
    params = conninfo_to_dict(schema_database.url)
    target = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    kafka_port = free_port()
    with (
        TcpProxy(*target) as pg,
        PrivateKafka(tmp_path / "tansu.log", advertised=f"127.0.0.1:{kafka_port}") as kafka,
        TcpProxy("127.0.0.1", kafka.port, port=kafka_port) as kafka_link,
    ):
        db = DatabaseSettings(
            url=make_conninfo(schema_database.url, host="127.0.0.1", port=str(pg.port))
        )
        yield db, pg, f"127.0.0.1:{kafka_link.port}", kafka_link


def test_readiness_follows_the_database_and_the_broker(
    proxied: tuple[DatabaseSettings, TcpProxy, str, TcpProxy],
    mqtt_settings: MqttSettings,
    tmp_path: Path,
) -> None:
    db, pg, bootstrap, kafka = proxied
    rig = PipelineRig(db, bootstrap, mqtt_settings, tmp_path)
    ports = {name: free_port() for name in SERVICES}
    try:
        for name in SERVICES:
            rig.start(
                name,
                TMIOT_METRICS__ENABLED="true",
                TMIOT_METRICS__PORT=str(ports[name]),
                TMIOT_METRICS__PROBE_SECONDS="0.5",
            )
        wait_ready(ports, ready=True)
        scraped: set[str] = set()
        for name, port in ports.items():
            status, body = get(port, "/healthz")
            assert (status, body["status"], body["service"]) == (200, "ok", name)
            _, ready = get(port, "/readyz")
            assert {"database"} <= set(ready["checks"]), ready
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                scraped |= exported(r.read().decode())
        # Every metric the dashboard and the alert rules query is one the services export.
        assert queried_metrics() <= scraped, sorted(queried_metrics() - scraped)

        assert probe(ports["triggers"]) == 0  # `tmiot probe`: compose's healthcheck

        kafka.cut()
        wait_ready(ports, ready=False, failing="kafka")
        assert all(get(port, "/healthz")[0] == 200 for port in ports.values())
        assert probe(ports["triggers"]) == 1
        kafka.resume()
        wait_ready(ports, ready=True)

        pg.cut()
        wait_ready(ports, ready=False, failing="database")
        assert all(get(port, "/healthz")[0] == 200 for port in ports.values())
        pg.resume()
        wait_ready(ports, ready=True)
    except BaseException:
        print(rig.log_tail())
        raise
    finally:
        for name in list(rig.procs):
            if rig.procs[name].poll() is None:
                rig.kill(name)
