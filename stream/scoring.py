"""Score reading batches per sensor, and notice sensors that went silent (pure, no I/O).

The :class:`Scorer` owns one :class:`~stream.detectors.SensorDetector` per sensor
of the partitions this worker holds. It scores a decoded ``sensor.readings.raw``
record in order, remembers which sensors changed since the last checkpoint, and
feeds each delivery and ingest heartbeat to its :class:`~stream.silence.SilenceWatch`,
which judges silence (``missing``) on each sensor's own delivery pattern.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stream.detectors import SensorDetector
from stream.silence import Outage, Silence, SilenceWatch
from tmiot.config import DetectorSettings, SilenceSettings
from tmiot.events import ReadingBatch, ScoredBatch

__all__ = ["Outage", "Scorer", "SensorMeta", "Silence", "Snapshot"]


@dataclass(frozen=True, slots=True)
class SensorMeta:
    """What scoring needs of an ``equipment_sensors`` row."""

    alert_min: float | None
    alert_max: float | None
    sampling_interval_seconds: int
    maintenance: bool = False
    active: bool = True  # status active, offline or maintenance (judged for silence)


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


@dataclass(slots=True)
class Scored:
    """One scored record: what goes out, and what the sink must update."""

    batch: ScoredBatch
    anomalies: int
    back_online: list[str] = field(default_factory=list)  # sensors that were missing


class Scorer:
    """Per-sensor detectors for the partitions this worker holds."""

    def __init__(self, settings: DetectorSettings, silence: SilenceSettings | None = None) -> None:
        """Detect with `settings` (the same for every sensor); judge silence by `silence`."""
        self._settings = settings
        self._tracks: dict[str, _Track] = {}
        self._dirty: dict[int, set[str]] = {}
        self.silence = SilenceWatch(silence or SilenceSettings())
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
        return refused

    def drop(self, partition: int) -> int:
        """Forget a partition's sensors (it moved to another worker); how many."""
        gone = [s for s, t in self._tracks.items() if t.partition == partition]
        for sensor_id in gone:
            del self._tracks[sensor_id]
        self._dirty.pop(partition, None)
        self.silence.drop(partition)
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
        self._run(partition, batch, meta, None, time.monotonic())

    def score(
        self,
        partition: int,
        batch: ReadingBatch,
        meta: Mapping[str, SensorMeta],
        wall: float | None = None,
    ) -> Scored:
        """Score a batch in order (then learn it); every reading gets a verdict.

        `wall` is the monotonic time of its arrival (simulations pass their own).
        """
        n = len(batch["sensor_id"])
        out: ScoredBatch = {
            **batch,  # type: ignore[typeddict-item]
            "anomaly_score": [0.0] * n,
            "is_anomaly": [False] * n,
            "anomaly_type": [None] * n,
        }
        scored = Scored(out, 0)
        self._run(partition, batch, meta, scored, time.monotonic() if wall is None else wall)
        return scored

    def _run(
        self,
        partition: int,
        batch: ReadingBatch,
        meta: Mapping[str, SensorMeta],
        scored: Scored | None,
        wall: float,
    ) -> None:
        tracks, settings = self._tracks, self._settings
        dirty = self._dirty.setdefault(partition, set())
        snapshot = self._snapshots.get(partition)
        pending = snapshot.pending if snapshot is not None else None
        if scored is not None:
            out = scored.batch
            scores, flags, kinds = out["anomaly_score"], out["is_anomaly"], out["anomaly_type"]
        for i, (sensor_id, ts_us, value, quality) in enumerate(
            zip(
                batch["sensor_id"],
                batch["ts_us"],
                batch["value"],
                batch["quality_score"],
                strict=True,
            )
        ):
            track = tracks.get(sensor_id)
            if track is None:
                track = tracks[sensor_id] = _Track(SensorDetector(settings), partition)
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
            if scored is None:
                continue
            scores[i] = verdict.score
            if verdict.is_anomaly and not (m and m.maintenance):
                flags[i] = True
                kinds[i] = verdict.anomaly_type
                scored.anomalies += 1
        back = self.silence.observe(
            partition,
            batch["sensor_id"],
            batch["company_id"],
            batch["ts_us"],
            batch["received_us"],
            wall,
            batch.get("gateways"),
        )
        if scored is not None:
            scored.back_online = back

    # --- silence -----------------------------------------------------------------------

    def find_silent(
        self, meta: Mapping[str, SensorMeta], wall: float | None = None
    ) -> list[Silence]:
        """Sensors silent for clearly longer than they deliver, each reported once.

        A sensor is reported again only after a reading brought it back; one in
        maintenance, inactive or not in `meta` is not judged.
        """

        def interval_of(sensor_id: str) -> int | None:
            m = meta.get(sensor_id)
            if m is None or m.maintenance or not m.active:
                return None
            return m.sampling_interval_seconds

        return self.silence.find_silent(interval_of, wall)

    def take_outages(self) -> list[Outage]:
        """Pipeline outages declared since the last call (see :mod:`stream.silence`)."""
        return self.silence.take_outages()

    def sensors(self) -> Iterable[str]:
        """Sensor ids with a model in memory."""
        return self._tracks.keys()
