"""Score reading batches per sensor, and notice sensors that went silent (pure, no I/O).

The :class:`Scorer` owns one :class:`~stream.detectors.SensorDetector` per sensor
of the partitions this worker holds. It scores a decoded ``sensor.readings.raw``
record in order, remembers which sensors changed since the last checkpoint, and
keeps each partition's event-time clock for the silence (``missing``) check.

Silence is judged in event time, so that a backfill does not declare every
sensor missing: a partition's clock is the newest reading timestamp it has seen,
advanced by the wall time elapsed since then (an idle partition still ages).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from stream.detectors import SensorDetector
from tmiot.config import DetectorSettings
from tmiot.events import ReadingBatch, ScoredBatch

__all__ = ["Scorer", "SensorMeta", "Silence", "Snapshot"]

MISSING_FACTOR: Final = 3  # silent for more than this many sampling intervals: missing
_NEVER: Final = 2**63


@dataclass(frozen=True, slots=True)
class SensorMeta:
    """What scoring needs of an ``equipment_sensors`` row."""

    alert_min: float | None
    alert_max: float | None
    sampling_interval_seconds: int
    maintenance: bool = False


@dataclass(frozen=True, slots=True)
class Silence:
    """A sensor found silent: its last reading and when the silence was established."""

    sensor_id: str
    company_id: str
    partition: int
    last_ts_us: int
    at_us: int


@dataclass(slots=True)
class Snapshot:
    """A partition's changed detector states as of one moment, serialised lazily.

    Copy on write: a state still ``pending`` is serialised before the next reading
    of its sensor is learned, so every state is the one of the moment the snapshot
    began, however many buffers it takes to finish it.
    """

    partition: int
    pending: set[str]
    states: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class _Track:
    detector: SensorDetector
    partition: int
    company_id: str = ""
    last_ts_us: int = 0
    missing: bool = False


@dataclass(slots=True)
class _Clock:
    newest_us: int = 0
    wall_at: float = 0.0

    def now_us(self, wall: float) -> int:
        return self.newest_us + round((wall - self.wall_at) * 1_000_000)


@dataclass(slots=True)
class Scored:
    """One scored record: what goes out, and what the sink must update."""

    batch: ScoredBatch
    anomalies: int
    back_online: list[str] = field(default_factory=list)  # sensors that were missing


class Scorer:
    """Per-sensor detectors for the partitions this worker holds."""

    def __init__(self, settings: DetectorSettings) -> None:
        """Detect with `settings` (one configuration for every sensor)."""
        self._settings = settings
        self._tracks: dict[str, _Track] = {}
        self._dirty: dict[int, set[str]] = {}
        self._clocks: dict[int, _Clock] = {}
        # Per partition, a lower bound of the event time at which one of its sensors
        # may become silent: find_silent skips the partition's sensors until then.
        # Readings only move deadlines later; a new or returning sensor drops the bound.
        self._due: dict[int, int] = {}
        self._snapshots: dict[int, Snapshot] = {}  # open ones, by partition

    def __len__(self) -> int:
        """Sensors with a model in memory."""
        return len(self._tracks)

    # --- state -------------------------------------------------------------------------

    def load(self, partition: int, states: Mapping[str, bytes]) -> dict[str, str]:
        """Install checkpointed detector states of a partition's sensors.

        Returns:
            The sensors whose state was refused, each with the reason (a state of an
            earlier detector version or another configuration): they start afresh, and
            the caller logs and counts them.
        """
        refused: dict[str, str] = {}
        for sensor_id, data in states.items():
            try:
                detector = SensorDetector.loads(self._settings, data)
            except ValueError as exc:
                refused[sensor_id] = str(exc)
                detector = SensorDetector(self._settings)
            self._tracks[sensor_id] = _Track(detector, partition)
        self._due.pop(partition, None)
        return refused

    def drop(self, partition: int) -> int:
        """Forget a partition's sensors (it moved to another worker); how many."""
        gone = [s for s, t in self._tracks.items() if t.partition == partition]
        for sensor_id in gone:
            del self._tracks[sensor_id]
        self._dirty.pop(partition, None)
        self._clocks.pop(partition, None)
        self._due.pop(partition, None)
        self._snapshots.pop(partition, None)
        return len(gone)

    def take_dirty(self, partition: int) -> dict[str, bytes]:
        """States of the partition's sensors changed since the last call, serialised now."""
        snapshot = self.begin_snapshot(partition)
        self.serialise(snapshot)
        return snapshot.states

    def begin_snapshot(self, partition: int) -> Snapshot:
        """Snapshot the partition's states changed since the last snapshot, as of now.

        Nothing is serialised yet: :meth:`serialise` does it in steps, and scoring a
        sensor still pending serialises its state first. One open snapshot per partition.
        """
        if partition in self._snapshots:
            msg = f"partition {partition} already has an open snapshot"
            raise RuntimeError(msg)
        dirty = self._dirty.pop(partition, set())
        snapshot = Snapshot(partition, {s for s in dirty if s in self._tracks})
        self._snapshots[partition] = snapshot
        return snapshot

    def serialise(self, snapshot: Snapshot, budget: int | None = None) -> bool:
        """Serialise up to `budget` pending states (all with None); True once complete."""
        pending, tracks = snapshot.pending, self._tracks
        for _ in range(len(pending) if budget is None else min(budget, len(pending))):
            sensor_id = pending.pop()
            snapshot.states[sensor_id] = tracks[sensor_id].detector.dumps()
        if pending:
            return False
        if self._snapshots.get(snapshot.partition) is snapshot:
            del self._snapshots[snapshot.partition]
        return True

    def dirty_partitions(self) -> list[int]:
        """Partitions with changes not yet checkpointed."""
        return [p for p, d in self._dirty.items() if d]

    # --- scoring -----------------------------------------------------------------------

    def learn(self, partition: int, batch: ReadingBatch, meta: Mapping[str, SensorMeta]) -> None:
        """Replay: update the models with a batch already scored and written earlier."""
        self._run(partition, batch, meta, None)

    def score(self, partition: int, batch: ReadingBatch, meta: Mapping[str, SensorMeta]) -> Scored:
        """Score a batch in order (then learn it); every reading gets a verdict."""
        n = len(batch["sensor_id"])
        out: ScoredBatch = {
            **batch,  # type: ignore[typeddict-item]
            "anomaly_score": [0.0] * n,
            "is_anomaly": [False] * n,
            "anomaly_type": [None] * n,
        }
        scored = Scored(out, 0)
        self._run(partition, batch, meta, scored)
        return scored

    def _run(  # noqa: C901 - one loop over the batch, read top to bottom
        self,
        partition: int,
        batch: ReadingBatch,
        meta: Mapping[str, SensorMeta],
        scored: Scored | None,
    ) -> None:
        tracks, settings = self._tracks, self._settings
        dirty = self._dirty.setdefault(partition, set())
        snapshot = self._snapshots.get(partition)
        pending = snapshot.pending if snapshot is not None else None
        if scored is not None:
            out = scored.batch
            scores, flags, kinds = out["anomaly_score"], out["is_anomaly"], out["anomaly_type"]
        newest = 0
        for i, (sensor_id, ts_us, value, quality, company_id) in enumerate(
            zip(
                batch["sensor_id"],
                batch["ts_us"],
                batch["value"],
                batch["quality_score"],
                batch["company_id"],
                strict=True,
            )
        ):
            track = tracks.get(sensor_id)
            if track is None:
                track = tracks[sensor_id] = _Track(SensorDetector(settings), partition)
                self._due.pop(partition, None)
            if pending and sensor_id in pending:  # copy on write: the snapshot's state first
                pending.discard(sensor_id)
                snapshot.states[sensor_id] = track.detector.dumps()  # type: ignore[union-attr]
            m = meta.get(sensor_id)
            verdict = (
                track.detector.update(ts_us // 1000, value, quality, m.alert_min, m.alert_max)
                if m is not None
                else track.detector.update(ts_us // 1000, value, quality)
            )
            dirty.add(sensor_id)
            track.company_id = company_id
            if not track.last_ts_us:  # restored from a checkpoint, first reading since
                self._due.pop(partition, None)
            if ts_us > track.last_ts_us:  # noqa: PLR1730 - a builtin call a reading
                track.last_ts_us = ts_us
            if ts_us > newest:  # noqa: PLR1730
                newest = ts_us
            if scored is None:
                track.missing = False
                continue
            if track.missing:
                track.missing = False
                scored.back_online.append(sensor_id)
                self._due.pop(partition, None)
            scores[i] = verdict.score
            if verdict.is_anomaly and not (m and m.maintenance):
                flags[i] = True
                kinds[i] = verdict.anomaly_type
                scored.anomalies += 1
        clock = self._clocks.setdefault(partition, _Clock())
        if newest > clock.newest_us:
            clock.newest_us, clock.wall_at = newest, time.monotonic()

    # --- silence -----------------------------------------------------------------------

    def find_silent(self, meta: Mapping[str, SensorMeta]) -> list[Silence]:
        """Sensors silent for more than 3 sampling intervals, each reported once.

        A sensor is reported again only after a reading brought it back.
        """
        wall = time.monotonic()
        clocks = {p: c.now_us(wall) for p, c in self._clocks.items()}
        # Partitions where nothing can be due yet are skipped.
        now = {p: at for p, at in clocks.items() if at >= self._due.get(p, at)}
        if not now:
            return []
        due = dict.fromkeys(now, _NEVER)
        found = []
        for sensor_id, track in self._tracks.items():
            at = now.get(track.partition)
            if at is None or track.missing or not track.last_ts_us:
                continue
            m = meta.get(sensor_id)
            if m is None:
                due[track.partition] = at  # unknown yet: look again next time
                continue
            deadline = track.last_ts_us + MISSING_FACTOR * m.sampling_interval_seconds * 1_000_000
            if at > deadline:
                track.missing = True
                found.append(
                    Silence(sensor_id, track.company_id, track.partition, track.last_ts_us, at)
                )
            elif deadline < due[track.partition]:
                due[track.partition] = deadline
        self._due.update(due)
        return found

    def sensors(self) -> Iterable[str]:
        """Sensor ids with a model in memory."""
        return self._tracks.keys()
