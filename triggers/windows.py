"""The state of one (trigger, sensor) pair: its window of readings and its incident.

A :class:`State` is small and flat (``__slots__``, tuples in a deque) because there
is one per trigger and sensor it watches; :meth:`State.dump` gives a compact JSON
object (short keys, defaults left out) and :meth:`State.load` reads it back exactly,
so an evaluator restored from it continues as if it had never stopped.

State JSON (every key optional but ``v``)::

    {"v": 1, "fp": condition fingerprint, "n": newest event time (us),
     "o": opened_us of the open incident, "oc": its cooldown (us),
     "u": no new incident before this event time (us),
     "w": [[ts_us, value, anomaly_score, anomaly_type], ...] the window,
     "r": start of the run of readings beyond the bound, "c": of readings cleared,
     "l": the last reading (a window row), "s": silent since (us),
     "m": the missing event (a window row), "d": when the tick fires (us),
     "f": [t0, v0, n, sx, sy, sxx, sxy, syy] trend sums}
"""

from __future__ import annotations

from collections import deque
from typing import Final, TypeAlias

from triggers.trends import Fit

__all__ = ["MAX_POINTS", "NEVER", "Point", "State", "insert"]

MAX_POINTS: Final = 10_000  # the longest window, in readings
NEVER: Final = -(1 << 62)  # an event time before any other
_VERSION: Final = 1

# (ts_us, value, anomaly_score, anomaly_type): a reading as a window keeps it.
Point: TypeAlias = tuple[int, float | None, float, str | None]


class State:
    """What evaluation remembers of one (trigger, sensor)."""

    __slots__ = (
        "clear",
        "cool",
        "due",
        "fit",
        "fp",
        "last",
        "miss",
        "newest",
        "opened",
        "run",
        "silent",
        "until",
        "window",
    )

    def __init__(self, fp: int) -> None:
        """A fresh state for the condition of fingerprint `fp`."""
        self.fp = fp
        self.newest = NEVER  # newest event time seen
        self.opened: int | None = None  # opened_us of the open incident
        self.cool = 0  # the open incident's cooldown, us
        self.until = NEVER  # no new incident before this event time
        self.reset()

    def reset(self) -> None:
        """Forget the window (the condition changed); keep the incident and cooldown."""
        self.window: deque[Point] = deque()
        self.run: int | None = None  # first reading of the trailing run beyond the bound
        self.clear: int | None = None  # first reading of the trailing run back inside
        self.last: Point | None = None  # newest real reading (pattern "missing")
        self.silent: int | None = None  # silent since (the last reading's time)
        self.miss: Point | None = None  # the missing event that said so
        self.due: int | None = None  # when tick() must look again
        self.fit: Fit | None = None

    def dump(self) -> dict[str, object]:
        """A compact JSON-able object (see the module docstring)."""
        d: dict[str, object] = {"v": _VERSION, "fp": self.fp, "n": self.newest}
        if self.opened is not None:
            d["o"] = self.opened
            d["oc"] = self.cool
        if self.until != NEVER:
            d["u"] = self.until
        if self.window:
            d["w"] = list(self.window)  # tuples: JSON arrays, without a list per point
        runs = {"r": self.run, "c": self.clear, "s": self.silent, "d": self.due}
        d.update({k: v for k, v in runs.items() if v is not None})
        if self.last is not None:
            d["l"] = list(self.last)
        if self.miss is not None:
            d["m"] = list(self.miss)
        if self.fit is not None:
            d["f"] = self.fit.dump()
        return d

    @classmethod
    def load(cls, data: dict[str, object]) -> State:
        """The state :meth:`dump` wrote.

        Raises:
            ValueError: not a state of this version, or a malformed one.
        """
        try:
            if data.get("v") != _VERSION:
                msg = f"state version {data.get('v')!r}, expected {_VERSION}"
                raise ValueError(msg)  # noqa: TRY301 - one message for every malformed state
            st = cls(_int(data["fp"]))
            st.newest = _int(data["n"])
            if "o" in data:
                st.opened = _int(data["o"])
                st.cool = _int(data["oc"])
            st.until = _int(data.get("u", NEVER))
            st.window = deque(_point(p) for p in _list(data.get("w", [])))
            st.run = _opt_int(data.get("r"))
            st.clear = _opt_int(data.get("c"))
            st.silent = _opt_int(data.get("s"))
            st.due = _opt_int(data.get("d"))
            st.last = None if data.get("l") is None else _point(data["l"])
            st.miss = None if data.get("m") is None else _point(data["m"])
            if data.get("f") is not None:
                st.fit = Fit.load([_num(x) for x in _list(data["f"])])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"malformed trigger state: {exc}"
            raise ValueError(msg) from exc
        return st


def insert(window: deque[Point], point: Point) -> bool:
    """Insert `point` in event-time order; False if the window has one at that time."""
    ts = point[0]
    if not window or window[-1][0] < ts:
        window.append(point)
        return True
    i = len(window) - 1
    while i >= 0 and window[i][0] > ts:  # late readings land near the end
        i -= 1
    if i >= 0 and window[i][0] == ts:
        return False
    window.insert(i + 1, point)
    return True


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"expected an integer, got {value!r}"
        raise TypeError(msg)
    return int(value)


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _list(value: object) -> list[object]:
    if isinstance(value, tuple):  # a point of a dump that did not go through JSON
        return list(value)
    if not isinstance(value, list):
        msg = f"expected a list, got {type(value).__name__}"
        raise TypeError(msg)
    return value


def _point(value: object) -> Point:
    ts, v, score, kind = _list(value)
    if kind is not None and not isinstance(kind, str):
        msg = f"bad anomaly type {kind!r}"
        raise TypeError(msg)
    return (_int(ts), None if v is None else _num(v), _num(score), kind)


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"expected a number, got {value!r}"
        raise TypeError(msg)
    return float(value)
