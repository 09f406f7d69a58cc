"""When the trigger service checkpoints: every so often, stretched by slow writes.

A state's window holds ``lateness_seconds`` of readings, so a fleet of fast sensors
makes every checkpoint rewrite large jsonb values (1,000 sensors at 40 readings/s:
2,400 points a state, tens of MB a checkpoint). Written every few seconds
regardless, such checkpoints kept the database busy back to back and, when a
write outlasted the interval, held the consumer up waiting for it.

>>> pacer = CheckpointPacer(every=5.0, duty=0.1, now=0.0)
>>> pacer.due(4.0), pacer.due(5.0)
(False, True)
>>> pacer.began(5.0); pacer.wrote(3.0)  # the next one 30 s after this one began
>>> pacer.due(34.0), pacer.due(35.0)
(False, True)
"""

from __future__ import annotations

__all__ = ["CheckpointPacer"]


class CheckpointPacer:
    """Checkpoints at least `every` seconds apart, and writes at most `duty` of the time."""

    __slots__ = ("_duty", "_every", "_last", "_wrote")

    def __init__(self, *, every: float, duty: float, now: float) -> None:
        """Count the first interval from `now` (monotonic seconds)."""
        self._every = every
        self._duty = duty
        self._last = now
        self._wrote = 0.0

    @property
    def interval(self) -> float:
        """Seconds from the start of one checkpoint to the next."""
        return max(self._every, self._wrote / self._duty)

    def due(self, now: float, *, writing: bool = False) -> bool:
        """Whether to take a checkpoint at `now`; never while one is still `writing`."""
        return not writing and now - self._last >= self.interval

    def began(self, now: float) -> None:
        """A checkpoint was taken at `now`."""
        self._last = now

    def wrote(self, seconds: float) -> None:
        """Its write took `seconds`."""
        self._wrote = seconds
