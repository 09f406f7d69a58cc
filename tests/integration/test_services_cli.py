"""`tmiot services up|status|down` against the real binaries on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fix_services import docker_engine
from tmiot.services import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.slow]


def _tmiot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tmiot.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto binary not installed (apt-get install mosquitto)",
)
@pytest.mark.skipif(docker_engine() is None, reason="local-services mode only (Docker answers)")
def test_up_status_down_leaves_nothing_of_ours(tmp_path: Path, pg_admin_url: str) -> None:
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "TMIOT_SERVICES__RUN_DIR": str(run_dir),
        "TMIOT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        # A port nobody listens on, so that `up` starts a broker of its own.
        "TMIOT_MQTT__PORT": str(free_port()),
        "TMIOT_DATABASE__URL": pg_admin_url,
    }
    down = _tmiot(env, "services", "status")
    assert down.returncode == 1
    assert down.stdout.count("DOWN") == 2

    up = _tmiot(env, "services", "up")
    assert up.returncode == 0, up.stderr
    status = _tmiot(env, "services", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.strip().splitlines()
    assert [ln.split()[:2] for ln in lines] == [
        ["kafka", "healthy"],
        ["postgres", "healthy"],
        ["mqtt", "healthy"],
    ]
    pids = [int((run_dir / f"{name}.pid").read_text()) for name in ("kafka", "mqtt")]
    assert all(_alive(p) for p in pids)
    assert (run_dir / "kafka.log").is_file()

    stopped = _tmiot(env, "services", "down")
    assert stopped.returncode == 0
    assert "kafka" in stopped.stdout
    assert "mqtt" in stopped.stdout
    assert not any(_alive(p) for p in pids)
    assert not list(run_dir.glob("*.pid"))
    # PostgreSQL was already running: `down` must not have touched it.
    after = _tmiot(env, "services", "status")
    assert [ln.split()[:2] for ln in after.stdout.strip().splitlines()][1] == [
        "postgres",
        "healthy",
    ]
