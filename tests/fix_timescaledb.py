"""Fixture for a real TimescaleDB where neither Docker nor a TimescaleDB package exists.

tools/pglite/server.mjs serves PGlite (PostgreSQL 17 + TimescaleDB 2.23 in WASM)
over the Postgres wire protocol on a free loopback port, for the whole session.
It is ONE backend session shared by every client, so:

- a second connection waits until the first is closed (60 s, then it is dropped):
  open one connection at a time (a pool needs max_size=1);
- dbname and user in the conninfo are ignored (the database is template1, the
  user postgres), so CREATE DATABASE gives no isolation: use tables or schemas;
- COPY ... FROM STDIN kills the server (the rest of the session then fails).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PGLITE_DIR = Path(__file__).resolve().parents[1] / "tools" / "pglite"
INSTALL_COMMAND = "npm ci --prefix tools/pglite"
READY_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 10.0
POLL_SECONDS = 0.05
HOST = "127.0.0.1"


def pglite_problem() -> str | None:
    """Return None when the server can be started, else what to do about it."""
    if shutil.which("node") is None:
        return f"`node` (v20+) is not on PATH: install Node.js, then run `{INSTALL_COMMAND}`"
    if not (PGLITE_DIR / "node_modules" / "@electric-sql" / "pglite-socket").is_dir():
        return f"{PGLITE_DIR / 'node_modules'} is missing: run `{INSTALL_COMMAND}`"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path) -> str | None:
    """Poll the log for the READY line until the deadline; None when ready, else why not."""
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if b"READY " in log_path.read_bytes():
            return None
        if proc.poll() is not None:
            return f"it exited with code {proc.returncode}"
        time.sleep(POLL_SECONDS)
    return f"no READY line within {READY_DEADLINE_SECONDS:.0f} s"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def timescaledb_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Libpq conninfo of a TimescaleDB server (PGlite) started for this test session.

    The extension is available but not created: run CREATE EXTENSION IF NOT EXISTS.
    """
    problem = pglite_problem()
    if problem is not None:
        pytest.fail(f"cannot start the TimescaleDB test server: {problem}", pytrace=False)
    node = shutil.which("node")
    assert node is not None
    port = _free_port()
    log_path = tmp_path_factory.mktemp("timescaledb") / "pglite.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [node, str(PGLITE_DIR / "server.mjs"), "--port", str(port), "--host", HOST],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches pytest, which stops it in teardown
        )
    try:
        problem = _wait_ready(proc, log_path)
        if problem is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            pytest.fail(
                f"TimescaleDB test server (node {PGLITE_DIR / 'server.mjs'}) did not start: "
                f"{problem}. Log {log_path}:\n{tail}",
                pytrace=False,
            )
        # PGlite asks for a password but takes any; TLS it does not have.
        yield (
            f"host={HOST} port={port} user=postgres password=postgres dbname=postgres"
            " sslmode=disable"
        )
    finally:
        _stop(proc)
