"""The load generator: publishes readings over MQTT at a steady rate, in a process of its own.

``python -m bench.e2e.load PLAN.json`` reads a :class:`Plan`, publishes for
``warmup + seconds`` at ``rate`` readings/s (QoS 1), and prints one JSON line: what
it sent in the measured phase and the excursions it injected (their device and
reading timestamp, so the orchestrator can match work orders to them). It
returns once the broker has acknowledged every message.

Each reading's ``timestamp`` is its publish time (epoch milliseconds, strictly
increasing per sensor), which is what latencies are measured from. Readings go
out in ticks of 10 ms: each tick publishes what the schedule owes, as single-reading
messages or gateway batches of ``batch`` consecutive sensors of one company.
"""

from __future__ import annotations

import contextlib
import random
import select
import sys
import time
from pathlib import Path
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel
from pydantic_core import to_json

from ingest.mqtt import BufferedReads, share_property_tables

_TICK = 0.01
_HOT = 95.0  # an excursion's value (the bench's triggers fire above 90)


class Plan(BaseModel):
    """What one generator run publishes."""

    mqtt_port: int
    form: Literal["single", "batch"]
    rate: float  # readings/s
    warmup: float  # seconds published before the measured phase
    seconds: float  # the measured phase
    devices: list[tuple[str, str]]  # (company id, device id), batches follow this order
    hot: list[tuple[str, str]] = []  # devices with a trigger, one excursion each
    excursions_per_s: float = 0.0
    batch: int = 100


class Outcome(BaseModel):
    """What a run sent."""

    measure_from_ms: int
    measure_until_ms: int
    sent: int  # readings, warm-up included
    measured: int  # readings published in the measured phase
    rate: float  # measured readings / measured seconds
    max_behind_s: float  # how far the schedule ever ran ahead of the publisher
    excursions: list[tuple[str, int]]  # (device id, reading timestamp ms)
    cpu_cores: float = 0.0  # the generator's own CPU in the measured phase (its threads too)


def _body(ts: int, value: float) -> dict[str, object]:
    return {"timestamp": ts, "value": value}


class _Socket(BufferedReads):
    """The generator's socket: reads buffered as ingest's, writes held until :meth:`flush`."""

    __slots__ = ("_out",)

    def __init__(self, sock: paho.SocketLike) -> None:
        super().__init__(sock)
        self._out = bytearray()

    def send(self, buffer: bytes | bytearray) -> int:
        """Hold the bytes; paho counts them as written."""
        self._out += buffer
        return len(buffer)

    def flush(self) -> None:
        """Write what is held, waiting for room in the socket's buffer when it is full."""
        data = bytes(self._out)
        self._out.clear()
        while data:
            try:
                data = data[self._sock.send(data) :]
            except BlockingIOError:
                select.select([], [self._sock], [], 1.0)

    def close(self) -> None:
        """Write what is held (paho closes right after queueing a DISCONNECT), then close."""
        with contextlib.suppress(OSError):
            self.flush()
        super().close()


class _Publisher:
    """QoS 1 publishes through paho in this thread, one socket write per tick.

    The generator shares the machine with what it measures: paho's network thread
    cost a socketpair wake-up, a send and a GIL hand-over per message, and paho's
    property tables, built for every PUBACK, half its time (ingest's fix serves here
    too). paho is told "no in-flight limit" (its own limit rescans the whole outgoing
    queue on every PUBACK, quadratic under load); the window keeps message ids unique.
    """

    def __init__(self, port: int, client_id: str, window: int = 20_000) -> None:
        share_property_tables()  # paho builds them for every PUBACK too
        self.sent = 0
        self.acked = 0
        self._window = window
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        _Socket.install(self._client)
        self._last_misc = time.monotonic()
        self._client.connect("127.0.0.1", port, keepalive=60)
        deadline = time.monotonic() + 10
        while not self._client.is_connected():
            self._pump(0.05)
            if time.monotonic() > deadline:
                msg = "no CONNACK from the broker in 10 s"
                raise TimeoutError(msg)

    def _on_publish(self, *_: object) -> None:
        self.acked += 1

    def _socket(self) -> _Socket:
        sock = self._client.socket()
        assert isinstance(sock, _Socket)
        return sock

    def _pump(self, timeout: float = 0.0) -> None:
        """Write what is held, then read every PUBACK that has arrived (waiting up to `timeout`)."""
        sock = self._socket()
        sock.flush()
        if select.select([sock.fileno()], [], [], timeout)[0]:
            self._client.loop_read()
            while sock.pending():
                self._client.loop_read()
        if time.monotonic() - self._last_misc > 1.0:
            self._client.loop_misc()  # keepalive
            self._last_misc = time.monotonic()

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one message; waits while the window is full."""
        while self.sent - self.acked >= self._window:
            self._pump(0.01)
        self._client.publish(topic, payload, qos=1)
        self.sent += 1

    def tick(self) -> None:
        """End of a tick: the tick's messages go out in one write, PUBACKs come in."""
        self._pump()

    def close(self, deadline_s: float = 120.0) -> None:
        """Wait for every PUBACK (up to the deadline), then disconnect."""
        deadline = time.monotonic() + deadline_s
        while self.acked < self.sent and time.monotonic() < deadline:
            self._pump(0.01)
        self._client.disconnect()  # paho closes the socket, which writes the DISCONNECT


def run(plan: Plan) -> Outcome:  # noqa: PLR0915 - one paced loop, read top to bottom
    """Publish the plan; returns what was sent.

    A publish is a packet held for the tick's one write, not an awaited future.
    Every PUBACK is awaited before the end.
    """
    rng = random.Random(3)
    devices = plan.devices
    last = [0] * len(devices)  # last timestamp per device, ms
    index = {d: i for i, (_, d) in enumerate(devices)}
    hot = list(plan.hot)
    excursions: list[tuple[str, int]] = []
    client = _Publisher(plan.mqtt_port, f"load-{rng.getrandbits(32):08x}")
    try:
        t0 = time.monotonic()
        measure_at = t0 + plan.warmup
        end = measure_at + plan.seconds
        measure_from_ms = int((time.time() + plan.warmup) * 1000)
        sent = measured = 0
        cursor = 0  # next device
        next_excursion = measure_at
        max_behind = 0.0
        cpu_at = -1.0  # the process's CPU time when the measured phase began
        while (now := time.monotonic()) < end:
            if cpu_at < 0 and now >= measure_at:
                cpu_at = time.process_time()
            due = int(plan.rate * (now - t0)) - sent
            max_behind = max(max_behind, due / plan.rate)
            now_ms = int(time.time() * 1000)
            while due > 0:
                k = min(due, plan.batch if plan.form == "batch" else 1)
                company = devices[cursor][0]
                items = []
                for _ in range(k):
                    c, d = devices[cursor]
                    if c != company:
                        break
                    ts = max(now_ms, last[cursor] + 1)
                    last[cursor] = ts
                    items.append((d, ts, 70.0 + rng.random()))
                    cursor = (cursor + 1) % len(devices)
                due -= len(items)
                sent += len(items)
                if now >= measure_at:
                    measured += len(items)
                client.publish(*_message(plan, company, items))
            if hot and now >= next_excursion:
                company, device = hot.pop()
                i = index[device]
                ts = max(now_ms, last[i] + 1)
                last[i] = ts
                client.publish(*_message(plan, company, [(device, ts, _HOT)]))
                excursions.append((device, ts))
                next_excursion += 1.0 / plan.excursions_per_s
            client.tick()
            delay = _TICK - (time.monotonic() - now)
            if delay > 0:
                time.sleep(delay)
        elapsed = time.monotonic() - measure_at
        cpu = time.process_time() - cpu_at if cpu_at >= 0 else 0.0
        until_ms = int(time.time() * 1000)
    finally:
        client.close()
    return Outcome(
        measure_from_ms=measure_from_ms,
        measure_until_ms=until_ms,
        sent=sent,
        measured=measured,
        rate=round(measured / max(1e-9, elapsed), 1),
        max_behind_s=round(max_behind, 3),
        excursions=excursions,
        cpu_cores=round(cpu / max(1e-9, elapsed), 2),
    )


def _message(plan: Plan, company: str, items: list[tuple[str, int, float]]) -> tuple[str, bytes]:
    """Topic and payload of one message.

    pydantic-core's encoder (6 x stdlib json's speed on a batch of 100): the generator
    shares the machine with what it measures, and json.dumps was a third of its time.
    """
    if plan.form == "single":
        device, ts, value = items[0]
        body: object = _body(ts, value)
        return f"tenants/{company}/sensors/{device}/readings", to_json(body)
    readings = [{"device_id": d, "timestamp": ts, "value": v} for d, ts, v in items]
    gateway = f"gw-{hash(items[0][0]) % 50}"
    return (
        f"tenants/{company}/gateways/{gateway}/readings",
        to_json({"v": 1, "readings": readings}),
    )


def main() -> None:
    """Run the plan named on the command line; print the outcome as one JSON line."""
    plan = Plan.model_validate_json(Path(sys.argv[1]).read_bytes())
    outcome = run(plan)
    sys.stdout.write(outcome.model_dump_json() + "\n")


if __name__ == "__main__":
    main()
