"""The bench's world: a private Mosquitto, a database, the fleet, the systems under test.

:class:`Rig` starts Mosquitto (private: no other subscriber sees the load),
recreates the database, registers the fleet (10 companies; a threshold trigger on
each sensor of the 10k set), and starts and stops the systems under test: the
pipeline (a fresh tansu, ``tmiot ingest``, ``stream`` x N, ``triggers``) or the
naive bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.fleet import add_sensors, add_threshold_triggers, new_equipment
from tmiot.config import DatabaseSettings, KafkaSettings
from tmiot.db import apply_schema, conninfo, create_database_if_missing
from tmiot.kafka import ensure_topics
from tmiot.services import free_port, kafka_problem, start_mosquitto, start_tansu, stop_pid

PARTITIONS = 8
COMPANIES = 10
WATCHED = 10_000  # sensors with a threshold trigger: the first 1/10 of each company's


@dataclass
class Fleet:
    """Companies and their devices; sensor ids by device; devices with a trigger."""

    devices: dict[str, list[str]]  # company -> device ids, in registration order
    sensor_id: dict[str, str]  # device id -> equipment_sensors.id
    watched: set[str]

    def active(self, sensors: int) -> list[tuple[str, str]]:
        """The first `sensors` devices, the same share of each company, company by company."""
        per = sensors // len(self.devices)
        return [(c, d) for c, ds in self.devices.items() for d in ds[:per]]


def _register(db: DatabaseSettings, sensors: int) -> Fleet:
    per = sensors // COMPANIES
    watched_per = WATCHED // COMPANIES
    tag = uuid.uuid4().hex[:6]
    devices: dict[str, list[str]] = {}
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        for c in range(COMPANIES):
            company, equipment = new_equipment(conn)
            names = [f"e2e-{tag}-{c}-{i}" for i in range(per)]
            devices[company] = names
            add_sensors(
                conn,
                equipment,
                names,
                sensor_type="temperature",
                interval_seconds=3600,
                threshold_max=100,
            )
        watched = [d for ds in devices.values() for d in ds[:watched_per]]
        add_threshold_triggers(conn, watched)
        cur = conn.execute("SELECT device_id, id::text FROM equipment_sensors")
        ids = {str(d): str(i) for d, i in cur.fetchall()}
    return Fleet(devices, ids, set(watched))


@dataclass
class Rig:
    """Brokers, database and fleet of one bench run; the systems under test on demand."""

    work: Path
    db: DatabaseSettings
    mqtt_port: int = 0
    bootstrap: str = ""
    fleet: Fleet | None = None
    starts: int = 0  # systems started so far: each start logs to its own directory
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def _client_id(self) -> str:
        """Ingest's MQTT client id in the current start (its durable session's name)."""
        return f"e2e-{self.suffix}-{self.starts}"

    async def _end_session(self) -> None:
        """Delete ingest's durable session and what Mosquitto queued for it.

        A step that fell behind leaves readings queued for the session; they must
        not flow into the next step's counts.
        """
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        async with aiomqtt.Client(
            "127.0.0.1",
            self.mqtt_port,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            properties=props,
        ):
            pass

    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    _mosquitto: subprocess.Popen[bytes] | None = None
    _kafka: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The database URL (libpq form)."""
        return conninfo(self.db)

    async def start(self, sensors: int) -> None:
        """Mosquitto up, database recreated with the schema, the fleet registered."""
        self.mqtt_port = free_port()
        self._mosquitto = start_mosquitto(
            self.mqtt_port, self.work, name="mosquitto", extra_conf="set_tcp_nodelay true\n"
        )
        name = str(conninfo_to_dict(self.db.url).get("dbname"))
        with psycopg.connect(conninfo(self.db, dbname="postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        create_database_if_missing(self.db)
        apply_schema(self.db)
        self.fleet = await asyncio.to_thread(_register, self.db, sensors)

    async def start_kafka(self) -> None:
        """A fresh tansu with the pipeline's topics (memory storage: it starts empty).

        tansu's memory storage scans a partition on every fetch, so its cost grows
        with the records it holds; a fresh broker per step keeps one step's load from
        slowing the next (a real Kafka cluster has no such growth).
        """
        self.stop_kafka()
        port = free_port()
        self._kafka = start_tansu("127.0.0.1", port, self.logs / "kafka.log")
        self.bootstrap = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while (problem := await kafka_problem(self.bootstrap)) is not None:
            if time.monotonic() > deadline:
                msg = f"tansu did not start: {problem}"
                raise SystemExit(msg)
            await asyncio.sleep(0.2)
        kafka = KafkaSettings(bootstrap_servers=self.bootstrap, partitions=PARTITIONS)
        await ensure_topics(kafka, kafka.topics.names())

    def stop_kafka(self) -> None:
        """Stop the current tansu, if any."""
        if self._kafka is not None:
            stop_pid(self._kafka.pid)
            self._kafka = None

    async def stop_systems(self) -> None:
        """Stop the systems under test, ingest's MQTT session, then the pipeline's broker."""
        had_ingest = "ingest" in self.procs
        for name in list(self.procs):
            self.stop_system(name)
        if had_ingest:
            await self._end_session()
        self.stop_kafka()

    def stop(self) -> None:
        """Stop every process this rig started."""
        for name in list(self.procs):
            self.stop_system(name)
        self.stop_kafka()
        if self._mosquitto is not None:
            stop_pid(self._mosquitto.pid)

    def _env(self) -> dict[str, str]:
        # Consumer groups are new with each (fresh, empty) broker: the database keeps
        # a group's checkpoints (offsets), which would not match the new topics.
        group = f"{self.suffix}-{self.starts}"
        return {
            **os.environ,
            "TMIOT_DATABASE__URL": self.db.url,
            "TMIOT_MQTT__PORT": str(self.mqtt_port),
            "TMIOT_MQTT__CLIENT_ID": self._client_id,
            "TMIOT_MQTT__SHARE_GROUP": f"e{group}",
            "TMIOT_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "TMIOT_KAFKA__PARTITIONS": str(PARTITIONS),
            "TMIOT_STREAM__APP_ID": f"stream-{group}",
            "TMIOT_TRIGGERS__GROUP_ID": f"triggers-{group}",
            "TMIOT_METRICS__ENABLED": "false",
            "TMIOT_LOG__LEVEL": "INFO",
            "TMIOT_LOG__FORMAT": "json",
        }

    @property
    def logs(self) -> Path:
        """The log directory of the systems started last (one per start)."""
        return self.work / f"run-{self.starts:03d}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return proc

    async def _wait_log(self, name: str, text: str, deadline_s: float = 120.0) -> None:
        path = self.logs / f"{name}.log"
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if path.exists() and text in path.read_text(errors="replace"):
                return
            for proc in self.procs.get(name.split("-", maxsplit=1)[0], []):
                if proc.poll() is not None:
                    msg = f"{name} exited {proc.returncode}: see {path}"
                    raise SystemExit(msg)
            await asyncio.sleep(0.2)
        msg = f"{name}: no {text!r} in {deadline_s} s: see {path}"
        raise SystemExit(msg)

    async def start_pipeline(self, workers: int) -> None:
        """A fresh tansu, ingest, `workers` stream workers and triggers; returns once ready.

        Ready: ingest has subscribed, triggers have loaded, and a reading went through.
        """
        self.starts += 1
        await self.start_kafka()
        env = self._env()
        cli = [sys.executable, "-m", "tmiot.cli"]
        self.procs["ingest"] = [self._spawn("ingest", [*cli, "ingest"], env)]
        self.procs["stream"] = [
            self._spawn(f"stream-{i}", [*cli, "stream"], env) for i in range(workers)
        ]
        self.procs["triggers"] = [self._spawn("triggers", [*cli, "triggers"], env)]
        await self._wait_log("ingest", "mqtt subscribed")
        await self._wait_log("triggers", "triggers started")
        await self._prime()

    async def _prime(self, deadline_s: float = 180.0) -> None:
        """Publish a reading a second until one is stored: the stream group has joined."""
        assert self.fleet is not None
        company, devices = next(iter(self.fleet.devices.items()))
        deadline = time.monotonic() + deadline_s
        ts = int(time.time() * 1000) - 60_000
        await self.truncate()
        async with aiomqtt.Client("127.0.0.1", self.mqtt_port) as client:
            while await self.rows() == 0:
                if time.monotonic() > deadline:
                    msg = f"no reading stored {deadline_s} s after start: see {self.work}"
                    raise SystemExit(msg)
                ts += 1
                body = json.dumps({"timestamp": ts, "value": 1.0})
                await client.publish(
                    f"tenants/{company}/sensors/{devices[0]}/readings", body, qos=1
                )
                await asyncio.sleep(1.0)
        await self.truncate()

    async def start_naive(self) -> None:
        """The naive bridge; returns once it has subscribed."""
        self.starts += 1
        argv = [sys.executable, "-m", "bench.e2e.naive", "--port", str(self.mqtt_port)]
        argv += ["--database-url", self.url]
        self.procs["naive"] = [self._spawn("naive", argv, dict(os.environ))]
        await self._wait_log("naive", "ready")

    def stop_system(self, name: str) -> None:
        """SIGTERM the processes of `name` (pipeline part or naive), SIGKILL after 30 s."""
        procs = self.procs.pop(name, [])
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def pids(self) -> dict[str, list[int]]:
        """Process ids by name, for the sampler: the systems, brokers and database."""
        out = {name: [p.pid for p in procs] for name, procs in self.procs.items()}
        if self._mosquitto is not None:
            out["mosquitto"] = [self._mosquitto.pid]
        if self._kafka is not None:
            out["kafka"] = [self._kafka.pid]
        out["postgres"] = self._postgres_pids()
        return out

    def rss(self, name: str) -> int:
        """Resident bytes of the processes of `name`, summed (0 when none run)."""
        total = 0
        for p in self.procs.get(name, []):
            with contextlib.suppress(FileNotFoundError):
                total += int(Path(f"/proc/{p.pid}/statm").read_text().split()[1])
        return total * os.sysconf("SC_PAGE_SIZE")

    def _postgres_pids(self) -> list[int]:
        """This database's backends and the server's writers (not other databases')."""
        name = str(conninfo_to_dict(self.db.url).get("dbname"))
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s OR backend_type IN"
                " ('walwriter', 'checkpointer', 'background writer', 'autovacuum worker')",
                (name,),
            )
            return [int(r[0]) for r in cur.fetchall()]

    async def rows(self) -> int:
        """Rows in sensor_readings."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cur = await conn.execute("SELECT count(*) FROM sensor_readings")
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def truncate(self) -> None:
        """Empty sensor_readings: every step starts from an empty table."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute("TRUNCATE sensor_readings")


@asynccontextmanager
async def rig(work: Path, db: DatabaseSettings, sensors: int) -> AsyncIterator[Rig]:
    """A started :class:`Rig`, stopped on exit."""
    r = Rig(work, db)
    try:
        await r.start(sensors)
        yield r
    finally:
        r.stop()
