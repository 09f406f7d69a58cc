"""Which sensors went silent, judged on each sensor's own delivery (pure, no I/O).

A sensor is *missing* when it has not **delivered** (reached ingest) for clearly
longer than it normally does: the larger of ``missing_factor`` sampling intervals
and ``gap_factor`` times its usual delivery gap (a decaying maximum of the gaps
between its deliveries). A gateway that uploads every 20 s, or a store-and-forward
gateway every 15 minutes, thus never makes its sensors missing, and partition-mates
far ahead in time do not matter: time is each partition's *delivery clock*, the
newest ingest receive time (``received_us``) or ingest heartbeat seen on it.

Ingest heartbeats (an empty raw record with a ``beat``, every few seconds, on
every partition, while it is connected to MQTT) keep the clock moving on quiet
partitions and tell our own outages from sensor faults. On a partition that has
shown heartbeats:

* the clock never moves by wall time: while ingest, MQTT or Kafka is down, or this
  worker is behind, nothing is judged at all;
* a clock jump longer than ``outage_seconds`` (no heartbeat in between) is an
  outage: judgement resumes from its end, each sensor with its full allowance
  again (the grace), and the gap is not learned as a delivery pattern;
* a partition with no heartbeat for ``outage_seconds`` of wall time is *stalled*:
  an outage is declared live.

One :class:`Outage` is reported per outage of the pipeline, however many
partitions it touched; it ends once every stalled partition moved again.

A sensor restored from a checkpoint, or registered (:meth:`SilenceWatch.expect`)
but never heard from, is judged from the moment its partition's clock started,
with the allowance of a sensor whose pattern is not known yet (``learning_seconds``).
A partition that never showed a heartbeat (an older ingest) keeps the older rule:
its clock advances by wall time while idle.

Example:
    >>> from tmiot.config import SilenceSettings
    >>> watch = SilenceWatch(SilenceSettings(outage_seconds=120))
    >>> meta = {"a": 60}  # sampling interval, seconds
    >>> for minute in range(1, 6):  # deliveries every minute, then silence
    ...     _ = watch.delivered(0, "a", "c1", minute * 60_000_000, minute * 60_000_000, wall=0)
    >>> for minute in (7, 8, 9):  # ingest's heartbeats move the clock on
    ...     watch.beat(0, minute * 60_000_000, wall=0)
    >>> [s.sensor_id for s in watch.find_silent(meta.get, wall=0)]
    ['a']
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from tmiot.config import SilenceSettings
from tmiot.events import PipelineHealth, ScoredBatch, from_us

__all__ = ["Outage", "Silence", "SilenceWatch", "health_event", "missing_batch"]

_OUTAGE_NS: Final = uuid.UUID("5d0c7e0a-2b8f-4f51-9a3e-7b1e6c2d4f80")

_US: Final = 1_000_000
_LEARNED_GAPS: Final = 3  # delivery gaps seen before a sensor's pattern is trusted
_GAP_DECAY: Final = 0.02  # share of the way a usual gap moves down to a shorter one


@dataclass(frozen=True, slots=True)
class Silence:
    """A sensor found silent: its last reading and delivery, and when it was established."""

    sensor_id: str
    company_id: str
    partition: int
    last_ts_us: int  # its newest reading's timestamp (0: none since this worker started)
    since_us: int  # its last delivery (or when judgement of it began)
    at_us: int  # the partition's delivery clock when the silence was established
    gateway_id: str | None = None


@dataclass(slots=True)
class Outage:
    """An outage of the pipeline (no ingest heartbeat): no sensor is judged meanwhile."""

    since_us: int  # the last heartbeat before it (delivery clock)
    partitions: set[int]
    cause: Literal["no_heartbeat", "mqtt_disconnected"]
    live: bool  # declared while it lasted (else found when the data came back)
    until_us: int = 0  # 0 while it lasts


@dataclass(slots=True)
class _Sensor:
    partition: int
    company_id: str = ""
    last_ts_us: int = 0
    last_rx_us: int = 0  # 0: not delivered since this worker holds it
    gap_us: int = 0  # usual delivery gap (decaying maximum)
    gaps: int = 0
    gateway: str | None = None
    missing: bool = False


@dataclass(slots=True)
class _Lane:
    """A partition's delivery clock and heartbeat health."""

    now_us: int = 0
    wall_at: float = 0.0
    start_us: int = 0  # judgement of the partition's sensors begins here (the grace)
    beats: bool = False  # a heartbeat was seen: the clock moves only with the data
    mqtt_down: bool = False  # the last heartbeat said ingest lost MQTT
    stalled: bool = False

    def clock(self, wall: float) -> int:
        if self.beats:
            return self.now_us
        return self.now_us + round((wall - self.wall_at) * _US)


@dataclass(slots=True)
class SilenceWatch:
    """Per-sensor delivery patterns and per-partition delivery clocks."""

    settings: SilenceSettings
    _sensors: dict[str, _Sensor] = field(default_factory=dict)
    _lanes: dict[int, _Lane] = field(default_factory=dict)
    _outage: Outage | None = None  # the live outage in progress
    _last: Outage | None = None  # the last one that ended
    outages: list[Outage] = field(default_factory=list)  # declared, not yet taken

    def __len__(self) -> int:
        """Sensors watched."""
        return len(self._sensors)

    # --- what arrives -------------------------------------------------------------------

    def delivered(  # noqa: PLR0913, PLR0917 - one reading's facts (tests, examples)
        self,
        partition: int,
        sensor_id: str,
        company_id: str,
        ts_us: int,
        received_us: int,
        wall: float,
        gateway: str | None = None,
    ) -> bool:
        """A reading of `sensor_id` delivered at `received_us`; True if it was missing."""
        return bool(
            self.observe(
                partition,
                [sensor_id],
                [company_id],
                [ts_us],
                [received_us],
                wall,
                {sensor_id: gateway} if gateway is not None else None,
            )
        )

    def observe(  # noqa: C901, PLR0912, PLR0913, PLR0917 - the hot loop, in one frame
        self,
        partition: int,
        sensor_ids: Sequence[str],
        company_ids: Sequence[str],
        ts_us: Sequence[int],
        received_us: Sequence[int],
        wall: float,
        gateways: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The deliveries of one raw record, in order; the sensors that were missing."""
        if not received_us:
            return []
        newest = max(received_us)
        lane = self._lanes.get(partition)
        if lane is None:  # judged from its first delivery
            first = min(received_us)
            lane = self._lanes[partition] = _Lane(first, wall, first)
        if newest > lane.now_us:
            lane = self._advance(partition, newest, wall)
        sensors, start = self._sensors, lane.start_us
        back = []
        for sensor_id, company_id, ts, rx in zip(
            sensor_ids, company_ids, ts_us, received_us, strict=True
        ):
            s = sensors.get(sensor_id)
            if s is None:
                s = sensors[sensor_id] = _Sensor(partition)
            s.company_id = company_id
            if ts > s.last_ts_us:  # noqa: PLR1730 - a builtin call a reading
                s.last_ts_us = ts
            last = s.last_rx_us
            if rx <= last:
                continue
            if s.missing:
                s.missing = False
                back.append(sensor_id)
            elif last >= start and last:
                # A gap that spans an outage, a silence or this worker's start is not learned.
                gap = rx - last
                if gap >= s.gap_us:
                    s.gap_us = gap
                else:
                    s.gap_us -= round((s.gap_us - gap) * _GAP_DECAY)
                s.gaps += 1
            s.last_rx_us = rx
        if gateways:
            for sensor_id, gateway in gateways.items():
                s = sensors.get(sensor_id)
                if s is not None:
                    s.gateway = gateway
        return back

    def beat(self, partition: int, at_us: int, wall: float, *, mqtt: bool = True) -> None:
        """An ingest heartbeat on `partition`, sent at `at_us` (ingest's clock)."""
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = _Lane(at_us, wall, at_us)
        lane.beats = True
        lane.mqtt_down = not mqtt
        if not mqtt:  # ingest is up but receives nothing: the clock must not move
            return
        if at_us > lane.now_us:
            self._advance(partition, at_us, wall)
        elif not lane.stalled:
            lane.wall_at = wall

    def expect(self, partition: int, sensor_id: str, company_id: str) -> None:
        """A registered sensor of `partition`: judged even if it never delivers."""
        if sensor_id not in self._sensors:
            self._sensors[sensor_id] = _Sensor(partition, company_id)

    def drop(self, partition: int) -> None:
        """Forget a partition (it moved to another worker)."""
        self._lanes.pop(partition, None)
        for sensor_id in [k for k, s in self._sensors.items() if s.partition == partition]:
            del self._sensors[sensor_id]

    def _advance(self, partition: int, to_us: int, wall: float) -> _Lane:
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = _Lane(to_us, wall, to_us)
            return lane
        if lane.stalled:  # a live outage: data again
            lane.stalled = False
            lane.start_us = to_us  # the grace: judged afresh from the recovery
            lane.now_us, lane.wall_at = to_us, wall
            self._recovered(to_us)
        elif lane.beats and to_us - lane.now_us > self.settings.outage_seconds * _US:
            # An outage found in the data (this worker was down or behind meanwhile).
            self._outage_seen(partition, lane, live=False, until_us=to_us)
            lane.start_us = to_us
        lane.now_us, lane.wall_at = to_us, wall
        return lane

    # --- outages --------------------------------------------------------------------------

    def _outage_seen(self, partition: int, lane: _Lane, *, live: bool, until_us: int = 0) -> None:
        outage = self._outage
        last = self._last
        if outage is None and not live and last is not None and lane.now_us <= last.until_us:
            outage = last  # the same outage, found on another partition
        if outage is None:
            outage = Outage(
                lane.now_us, set(), "mqtt_disconnected" if lane.mqtt_down else "no_heartbeat", live
            )
            self.outages.append(outage)
            if live:
                self._outage = outage
            else:
                outage.until_us = until_us
                self._last = outage
        outage.since_us = min(outage.since_us, lane.now_us)
        outage.until_us = max(outage.until_us, until_us)
        outage.partitions.add(partition)

    def _recovered(self, at_us: int) -> None:
        outage = self._outage
        if outage is None:
            return
        outage.until_us = max(outage.until_us, at_us)
        if not any(lane.stalled for lane in self._lanes.values()):
            self._outage = None
            self._last = outage

    def take_outages(self) -> list[Outage]:
        """Outages declared since the last call (each once)."""
        out, self.outages = self.outages, []
        return out

    @property
    def outage(self) -> Outage | None:
        """The outage in progress, if any."""
        return self._outage

    # --- judgement ------------------------------------------------------------------------

    def find_silent(
        self, interval_of: Callable[[str], int | None], wall: float | None = None
    ) -> list[Silence]:
        """Sensors silent for clearly longer than they deliver, each reported once.

        Args:
            interval_of: a sensor's sampling interval in seconds; None for a sensor
                not to judge (unknown yet, in maintenance, inactive).
            wall: the monotonic time now (tests and simulations pass their own).
        """
        wall = time.monotonic() if wall is None else wall
        cfg = self.settings
        stall_after = cfg.outage_seconds
        clocks: dict[int, int] = {}
        for partition, lane in self._lanes.items():
            if lane.beats and not lane.stalled and wall - lane.wall_at > stall_after:
                lane.stalled = True
                self._outage_seen(partition, lane, live=True)
            if not lane.stalled:
                clocks[partition] = lane.clock(wall)
        learning = round(cfg.learning_seconds * _US)
        found = []
        for sensor_id, s in self._sensors.items():
            if s.missing:
                continue
            at = clocks.get(s.partition)
            if at is None:
                continue
            interval = interval_of(sensor_id)
            if interval is None:
                continue
            allowance = round(cfg.missing_factor * interval * _US)
            usual = round(cfg.gap_factor * s.gap_us)
            if s.gaps < _LEARNED_GAPS:
                usual = max(usual, learning)
            allowance = max(allowance, usual)
            lane = self._lanes[s.partition]
            since = max(s.last_rx_us, lane.start_us)
            if at - since > allowance:
                s.missing = True
                found.append(
                    Silence(
                        sensor_id,
                        s.company_id,
                        s.partition,
                        s.last_ts_us,
                        since,
                        at,
                        s.gateway,
                    )
                )
        return found


# --- what goes out -------------------------------------------------------------------------


def missing_batch(silent: list[Silence]) -> ScoredBatch:
    """The scored record of `missing` rows for these silences (one partition's).

    ``received_us`` is each sensor's last delivery (when its silence began), and
    ``gateways`` names the gateway of the sensors that delivered through one.
    """
    n = len(silent)
    batch: ScoredBatch = {
        "v": 1,
        "sensor_id": [s.sensor_id for s in silent],
        "company_id": [s.company_id for s in silent],
        "ts_us": [s.at_us for s in silent],
        "value": [None] * n,
        "unit": [None] * n,
        "quality_score": [None] * n,
        "ambient_temperature": [None] * n,
        "ambient_humidity": [None] * n,
        "weather_conditions": [None] * n,
        "received_us": [s.since_us for s in silent],
        "anomaly_score": [1.0] * n,
        "is_anomaly": [True] * n,
        "anomaly_type": ["missing"] * n,
    }
    gateways = {s.sensor_id: s.gateway_id for s in silent if s.gateway_id is not None}
    if gateways:
        batch["gateways"] = gateways
    return batch


def health_event(outage: Outage, reporter: str) -> PipelineHealth:
    """The ``pipeline.health`` event of an outage; its id is stable for (reporter, since)."""
    return PipelineHealth(
        outage_id=uuid.uuid5(_OUTAGE_NS, f"{reporter}/{outage.since_us}"),
        cause=outage.cause,
        since=from_us(outage.since_us),
        until=from_us(outage.until_us) if outage.until_us else None,
        live=outage.live,
        partitions=sorted(outage.partitions),
        reporter=reporter,
        detected_at=dt.datetime.now(dt.UTC),
    )
