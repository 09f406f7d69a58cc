"""Trigger evaluation: scored readings in, incident transitions out (pure, no I/O).

The :class:`Evaluator` keeps a :class:`~triggers.windows.State` per (trigger,
sensor) and decides on each reading, in event time, whether the trigger's
condition holds, then applies the incident rules:

* one open incident per (trigger, sensor); while it is open nothing new opens;
* it clears when the condition no longer holds (threshold: back inside the bound by
  ``hysteresis`` for ``clear_seconds``), but not before ``min_hold_seconds``;
* after it clears (or its work order is resolved), nothing opens for
  ``cooldown_seconds``;
* nothing opens while the sensor's status is ``maintenance``.

Readings up to ``lateness_seconds`` older than the newest one seen for the pair are
put in their place in the window; older ones are dropped (``late_dropped``). The
condition is judged at the newest event time as soon as a reading arrives: no
watermark wait. An incident whose event time is older than ``now -
backfill_horizon_seconds`` is ``historical`` (recorded, no work order).

Example:
    >>> from triggers.conditions import parse_condition
    >>> from triggers.model import ScoredReading, SensorInfo, TriggerSpec
    >>> sensor = SensorInfo("s1", "c1", "e1", "SENS-001", "temperature", 60, None, 90.0,
    ...                     "°C", "active")
    >>> cond = parse_condition("threshold_exceeded", {"for_seconds": 120})
    >>> trigger = TriggerSpec("t1", "c1", "AST-1", "Overheat", "s1", "threshold_exceeded", cond)
    >>> ev = Evaluator()
    >>> out = [ev.observe(trigger, sensor, ScoredReading("s1", m * 60_000_000, v, 0.0, False,
    ...        None), now_us=0) for m, v in enumerate([80.0, 91.0, 92.0, 93.5])]
    >>> [type(t).__name__ for ts in out for t in ts], out[3][0].summary
    (['Opened'], 'value above 90 °C for 2 min (peak 93.5 °C, 3 readings)')
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Literal

from triggers.conditions import (
    AnomalyDetected,
    Condition,
    MissingPattern,
    RepeatedDriftPattern,
    ServiceInterval,
    SlopePattern,
    ThresholdExceeded,
    TrendForecast,
)
from triggers.incidents import (
    MAX_EVIDENCE,
    beyond,
    bounds,
    describe,
    inside,
    service_due,
    trend_forecast,
)
from triggers.model import (
    Cleared,
    Evidence,
    Opened,
    ScoredReading,
    SensorInfo,
    Transition,
    TriggerSpec,
    incident_key,
)
from triggers.trends import Fit
from triggers.windows import MAX_POINTS, Point, State, insert

__all__ = ["MAX_EVIDENCE", "MISSING_FACTOR", "Evaluator"]

MISSING_FACTOR: Final = 3  # an older stream sent no last delivery: assume 3 sampling intervals
_US: Final = 1_000_000
_REANCHOR: Final = 4  # rebuild a trend's sums when its anchor is this many windows old


def _us(seconds: float) -> int:
    return round(seconds * _US)


class _Plan:
    """A condition's numbers in microseconds, computed once per trigger version."""

    __slots__ = ("clear", "cond", "cool", "count", "fp", "gated", "hold", "span", "window")

    def __init__(self, cond: Condition, lateness_us: int) -> None:
        self.cond = cond
        dumped = f"{type(cond).__name__}:{cond.model_dump_json()}"
        self.fp = zlib.crc32(dumped.encode())
        self.hold = _us(cond.min_hold_seconds)
        self.cool = _us(cond.cooldown_seconds)
        self.clear = 0
        self.window = 0
        self.span = 0  # how far back a window keeps readings
        self.gated = isinstance(cond, ThresholdExceeded)  # clearing needs the clear run
        self.count = 0
        if isinstance(cond, ThresholdExceeded):
            self.window = _us(cond.for_seconds)
            self.clear = _us(cond.clear_seconds)
            self.span = max(self.window, self.clear) + lateness_us
            self.count = cond.count or 0
        elif isinstance(
            cond, AnomalyDetected | RepeatedDriftPattern | SlopePattern | TrendForecast
        ):
            self.window = self.span = _us(cond.window_seconds)
        elif isinstance(cond, MissingPattern):
            self.window = _us(cond.for_seconds)


class Evaluator:
    """Per (trigger, sensor) windows and incidents; see the module docstring.

    Attributes:
        late_dropped: readings ignored because they were older than the lateness.
        duplicates: readings ignored because the window already had one at that time.
        rejected_states: states :meth:`restore` could not load (the pair started fresh).
    """

    def __init__(
        self,
        *,
        lateness_seconds: float = 60,
        backfill_horizon_seconds: float = 3600,
        settle_seconds: float = 60,
    ) -> None:
        """Accept readings up to `lateness_seconds` late; older incidents are historical.

        A silence opens its incident no earlier than `settle_seconds` after the
        stream reported it, so that a gateway's sensors are seen silent together.
        """
        self._late = _us(lateness_seconds)
        self._settle = _us(settle_seconds)
        self._backfill = _us(backfill_horizon_seconds)
        self._states: dict[tuple[str, str], State] = {}
        self._sensors_of: dict[str, set[str]] = {}  # trigger id -> sensor ids with a state
        self._plans: dict[str, _Plan] = {}
        self._ticks: list[tuple[int, str, str]] = []  # heap of (due_us, trigger, sensor)
        self._dirty: set[tuple[str, str]] = set()
        self.late_dropped = 0
        self.duplicates = 0
        self.rejected_states = 0

    def __len__(self) -> int:
        """The number of (trigger, sensor) states in memory."""
        return len(self._states)

    # --- readings ---------------------------------------------------------------------

    def observe(
        self, trigger: TriggerSpec, sensor: SensorInfo, reading: ScoredReading, now_us: int
    ) -> list[Transition]:
        """Evaluate `trigger` on one scored `reading` of `sensor`; the transitions it causes.

        Args:
            trigger: the trigger (its condition decides).
            sensor: the sensor the reading is of (thresholds, status, dates).
            reading: the scored reading; ``ts_us`` is its event time.
            now_us: wall time, to tell historical incidents from current ones.
        """
        tid, sid = trigger.trigger_id, sensor.sensor_id
        key = (tid, sid)
        plan = self._plan(trigger)
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = State(plan.fp)
            self._sensors_of.setdefault(tid, set()).add(sid)
        elif st.fp != plan.fp:
            st.fp = plan.fp
            st.reset()
        if reading.ts_us < st.newest - self._late and not isinstance(plan.cond, MissingPattern):
            self.late_dropped += 1
            return []
        verdict = self._verdict(key, st, plan, sensor, reading)
        if verdict is None:
            return []
        self._dirty.add(key)
        at = st.newest
        if st.opened is not None:
            if not verdict and at - st.opened >= plan.hold and self._cleared(st, plan, at):
                return [self._close(key, st, at, "condition_cleared")]
        elif verdict and at >= st.until and sensor.status != "maintenance":
            return [
                self._open(
                    key,
                    st,
                    plan,
                    sensor=sensor,
                    at_us=at,
                    now_us=now_us,
                    reading=reading,
                )
            ]
        return []

    def _verdict(
        self,
        key: tuple[str, str],
        st: State,
        plan: _Plan,
        sensor: SensorInfo,
        reading: ScoredReading,
    ) -> bool | None:
        """Update the window; whether the condition holds (None: the reading is ignored)."""
        cond = plan.cond
        if isinstance(cond, ThresholdExceeded):
            return self._threshold(st, plan, cond, sensor, reading)
        if isinstance(cond, AnomalyDetected | RepeatedDriftPattern):
            return self._events(st, plan, cond, reading)
        if isinstance(cond, SlopePattern | TrendForecast):
            return self._trend(st, plan, cond, sensor, reading)
        if isinstance(cond, MissingPattern):
            armed = st.due
            holds = self._missing(st, plan, sensor, reading)
            if st.due is not None and st.due != armed:  # a new silence: tick() looks at it
                heapq.heappush(self._ticks, (st.due, *key))
            return holds
        return self._service(st, cond, sensor, reading)

    @staticmethod
    def _cleared(st: State, plan: _Plan, at_us: int) -> bool:
        """Threshold: back inside the bound (by the hysteresis) for clear_seconds."""
        if not plan.gated:
            return True
        return st.clear is not None and at_us - st.clear >= plan.clear

    def _threshold(
        self,
        st: State,
        plan: _Plan,
        cond: ThresholdExceeded,
        sensor: SensorInfo,
        reading: ScoredReading,
    ) -> bool | None:
        v = reading.value
        if v is None:
            return None
        above, below = bounds(cond, sensor)
        ts = reading.ts_us
        w = st.window
        point = (ts, v, reading.anomaly_score, reading.anomaly_type)
        margin = cond.hysteresis
        if not w or ts > w[-1][0]:
            w.append(point)
            st.newest = max(st.newest, ts)
            if beyond(v, above, below):
                st.clear = None
                if st.run is None:
                    st.run = ts
            else:
                st.run = None
                if not inside(v, above, below, margin):
                    st.clear = None
                elif st.clear is None:
                    st.clear = ts
        elif insert(w, point):
            st.run = _run_start(w, st.run, lambda x: beyond(x, above, below))
            st.clear = _run_start(w, st.clear, lambda x: inside(x, above, below, margin))
        else:
            self.duplicates += 1
            return None
        of = cond.of
        if of is not None:
            while len(w) > of:
                w.popleft()
            return _hits(w, above, below) >= plan.count
        _prune(w, st.newest - plan.span)
        return st.run is not None and st.newest - st.run >= plan.window

    def _events(
        self,
        st: State,
        plan: _Plan,
        cond: AnomalyDetected | RepeatedDriftPattern,
        reading: ScoredReading,
    ) -> bool | None:
        if isinstance(cond, AnomalyDetected):
            kinds, kind, floor = cond.anomaly_types, reading.anomaly_type, cond.min_score
            counts = (reading.is_anomaly if floor is None else reading.anomaly_score >= floor) and (
                kind in kinds if kinds is not None else kind != "missing"
            )
        else:
            counts = reading.is_anomaly and reading.anomaly_type == "drift"
        ts = reading.ts_us
        if counts:
            point = (ts, reading.value, reading.anomaly_score, reading.anomaly_type)
            if not insert(st.window, point):
                self.duplicates += 1
                return None
        st.newest = max(st.newest, ts)
        _prune(st.window, st.newest - plan.span + 1)
        return len(st.window) >= cond.count

    def _trend(
        self,
        st: State,
        plan: _Plan,
        cond: SlopePattern | TrendForecast,
        sensor: SensorInfo,
        reading: ScoredReading,
    ) -> bool | None:
        v = reading.value
        if v is None:
            return None
        ts = reading.ts_us
        w = st.window
        fit = st.fit
        if fit is None:
            fit = st.fit = Fit()
        if not insert(w, (ts, v, reading.anomaly_score, reading.anomaly_type)):
            self.duplicates += 1
            return None
        fit.add(ts, v)
        st.newest = max(st.newest, ts)
        start = st.newest - plan.span + 1
        while w and (w[0][0] < start or len(w) > MAX_POINTS):
            old = w.popleft()
            fit.add(old[0], old[1] or 0.0, -1)
        if st.newest - fit.t0 > _REANCHOR * plan.span:
            fit.rebuild((p[0], p[1] or 0.0) for p in w)
        line = fit.line()
        if line is None or line.n < cond.min_readings:
            return False
        if isinstance(cond, TrendForecast):
            return line.r2 >= cond.min_r2 and trend_forecast(st, cond, sensor, line) is not None
        return _steep(line.slope_per_hour, cond)

    def _missing(self, st: State, plan: _Plan, sensor: SensorInfo, reading: ScoredReading) -> bool:
        ts = reading.ts_us
        point = (ts, reading.value, reading.anomaly_score, reading.anomaly_type)
        st.newest = max(st.newest, ts)
        if reading.value is not None:
            if st.last is None or ts > st.last[0]:
                st.last = point
            # Delivered after the silence began (a store-and-forward upload carries
            # readings older than its delivery): the sensor is back.
            if st.silent is not None and (reading.received_us or ts) > st.silent:
                st.silent = st.miss = st.due = None
        elif reading.anomaly_type == "missing" and st.silent is None:
            if 0 < reading.received_us <= ts:  # the stream sends the last delivery's time
                since = reading.received_us
            elif st.last is not None:
                since = st.last[0]
            else:
                since = ts - MISSING_FACTOR * sensor.sampling_interval_seconds * _US
            # Opens no earlier than `settle` after the event: the other sensors of a
            # gateway that went offline report their silence meanwhile (one incident).
            st.silent, st.miss, st.due = since, point, max(since + plan.window, ts + self._settle)
        return st.due is not None and st.newest >= st.due

    @staticmethod
    def _service(
        st: State, cond: ServiceInterval, sensor: SensorInfo, reading: ScoredReading
    ) -> bool:
        st.newest = max(st.newest, reading.ts_us)
        if reading.value is not None:
            st.last = (reading.ts_us, reading.value, reading.anomaly_score, reading.anomaly_type)
        due = service_due(cond, sensor)
        return due is not None and st.newest >= due

    # --- time -------------------------------------------------------------------------

    def tick(
        self,
        now_us: int,
        triggers: Mapping[str, TriggerSpec],
        sensors: Mapping[str, SensorInfo],
    ) -> list[Transition]:
        """Open the incidents that time alone decides (a sensor silent long enough).

        Only the pairs whose deadline has passed are looked at (a heap of deadlines).
        The incident opens at the deadline: ``opened_us`` is the last reading's time
        plus ``for_seconds``, so a replay gives the same key.
        """
        out: list[Transition] = []
        ticks = self._ticks
        while ticks and ticks[0][0] <= now_us:
            due, tid, sid = heapq.heappop(ticks)
            key = (tid, sid)
            st = self._states.get(key)
            trigger, sensor = triggers.get(tid), sensors.get(sid)
            if st is None or st.due != due or st.opened is not None:
                continue
            if trigger is None or sensor is None or sensor.status == "maintenance":
                continue
            if due < st.until:  # cooling down: look again when it ends
                st.due = st.until
                heapq.heappush(ticks, (st.due, tid, sid))
                self._dirty.add(key)
                continue
            plan = self._plan(trigger)
            if plan.fp != st.fp:
                continue
            out.append(
                self._open(
                    key,
                    st,
                    plan,
                    sensor=sensor,
                    at_us=due,
                    now_us=now_us,
                    reading=None,
                )
            )
            self._dirty.add(key)
        return out

    # --- feedback and lifecycle -------------------------------------------------------

    def resolve(self, trigger_id: str, sensor_id: str, now_us: int) -> Cleared | None:
        """The incident's work order was resolved: close it; the cooldown runs from `now_us`."""
        key = (trigger_id, sensor_id)
        st = self._states.get(key)
        if st is None or st.opened is None:
            return None
        self._dirty.add(key)
        return self._close(key, st, now_us, "work_order_resolved")

    def forget_trigger(self, trigger_id: str) -> list[Cleared]:
        """Drop a deactivated trigger's states; its open incidents close (at their newest time).

        The dropped states show in the next :meth:`take_dirty` as ``{}`` (delete them).
        """
        out = []
        self._plans.pop(trigger_id, None)
        for sid in sorted(self._sensors_of.pop(trigger_id, ())):
            key = (trigger_id, sid)
            st = self._states.pop(key)
            if st.opened is not None:
                out.append(self._close(key, st, max(st.newest, st.opened), "trigger_removed"))
            self._dirty.add(key)
        return out

    def drop_sensors(self, sensor_ids: Iterable[str]) -> None:
        """Unload the states of these sensors (their partition moved away; no transitions).

        Take :meth:`take_dirty` first: their unsaved changes are forgotten, not deleted.
        """
        gone = set(sensor_ids)
        for tid in list(self._sensors_of):
            sensors = self._sensors_of[tid]
            for sid in sensors & gone:
                self._states.pop((tid, sid), None)
                self._dirty.discard((tid, sid))
            sensors -= gone
            if not sensors:
                del self._sensors_of[tid]

    def open_incident(self, trigger_id: str, sensor_id: str) -> str | None:
        """The key of the open incident of (trigger, sensor), if any."""
        st = self._states.get((trigger_id, sensor_id))
        if st is None or st.opened is None:
            return None
        return incident_key(trigger_id, sensor_id, st.opened)

    # --- persistence ------------------------------------------------------------------

    def take_dirty(self) -> dict[tuple[str, str], dict[str, object]]:
        """The JSON-able states changed since the last call (``{}``: deleted)."""
        states = self._states
        out = {k: (states[k].dump() if k in states else {}) for k in self._dirty}
        self._dirty = set()
        return out

    def restore(self, trigger_id: str, sensor_id: str, state: dict[str, object]) -> None:
        """Load a state :meth:`take_dirty` gave (``{}`` loads nothing).

        A state that does not load (malformed, another version) is counted in
        ``rejected_states`` and the pair starts fresh: a restart must not fail on it.
        """
        if not state:
            return
        try:
            st = State.load(state)
        except ValueError:
            self.rejected_states += 1
            return
        key = (trigger_id, sensor_id)
        self._states[key] = st
        self._sensors_of.setdefault(trigger_id, set()).add(sensor_id)
        if st.due is not None and st.opened is None:
            heapq.heappush(self._ticks, (st.due, trigger_id, sensor_id))

    # --- incidents --------------------------------------------------------------------

    def _plan(self, trigger: TriggerSpec) -> _Plan:
        plan = self._plans.get(trigger.trigger_id)
        if plan is None or plan.cond is not trigger.condition:
            plan = self._plans[trigger.trigger_id] = _Plan(trigger.condition, self._late)
        return plan

    @staticmethod
    def _close(
        key: tuple[str, str],
        st: State,
        at_us: int,
        reason: Literal["condition_cleared", "work_order_resolved", "trigger_removed"],
    ) -> Cleared:
        opened = st.opened
        assert opened is not None  # noqa: S101 - callers check
        st.opened = None
        st.until = at_us + st.cool
        return Cleared(
            key=incident_key(key[0], key[1], opened),
            trigger_id=key[0],
            sensor_id=key[1],
            cleared_us=at_us,
            reason=reason,
        )

    def _open(  # noqa: PLR0913 - the whole context of the decision
        self,
        key: tuple[str, str],
        st: State,
        plan: _Plan,
        *,
        sensor: SensorInfo,
        at_us: int,
        now_us: int,
        reading: ScoredReading | None,
    ) -> Opened:
        st.opened = at_us
        st.cool = plan.cool
        st.due = None
        summary, evidence, fc = describe(st, plan.cond, sensor, reading)
        return Opened(
            key=incident_key(key[0], key[1], at_us),
            trigger_id=key[0],
            sensor_id=key[1],
            opened_us=at_us,
            historical=at_us < now_us - self._backfill,
            summary=summary,
            evidence=tuple(Evidence(key[1], *p) for p in evidence),
            forecast=fc,
            silent_since_us=st.silent if isinstance(plan.cond, MissingPattern) else None,
        )


# --- window helpers -------------------------------------------------------------------


def _hits(w: deque[Point], above: float | None, below: float | None) -> int:
    """How many points of `w` are beyond the bounds (beyond() inlined: the count form's cost)."""
    hi = math.inf if above is None else above
    lo = -math.inf if below is None else below
    hits = 0
    for p in w:
        x = p[1]
        if x is not None and (x > hi or x < lo):
            hits += 1
    return hits


def _steep(slope: float, cond: SlopePattern) -> bool:
    limit = cond.min_slope_per_hour
    if cond.direction == "up":
        return slope >= limit
    if cond.direction == "down":
        return slope <= -limit
    return abs(slope) >= limit


def _run_start(
    w: Sequence[Point], old: int | None, member: Callable[[float | None], bool]
) -> int | None:
    """The first point of the trailing run of `w` whose values are `member`s."""
    start = None
    for i in range(len(w) - 1, -1, -1):
        if not member(w[i][1]):
            return start
        start = w[i][0]
    # The whole window is in the run: it may have begun before the window.
    return start if old is None or start is None else min(old, start)


def _prune(w: deque[Point], start_us: int) -> None:
    """Drop the points before `start_us`, and the oldest beyond MAX_POINTS."""
    while w and (w[0][0] < start_us or len(w) > MAX_POINTS):
        w.popleft()
