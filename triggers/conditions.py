"""The ``trigger_conditions`` JSON of each ``condition_type``, as validated models.

One frozen pydantic model per ``trigger_condition_type``; :func:`parse_condition`
picks the model of the row's type and turns any validation error into
:class:`InvalidCondition`, whose ``reason`` is one line for the audit log.
Durations are seconds, in event time. Every shape also takes ``cooldown_seconds``
(default 3600: after an incident clears, no new one for the same trigger and
sensor within it) and ``min_hold_seconds`` (default 300: an open incident does
not clear before it). docs/triggers.md shows each shape with examples.

Example:
    >>> parse_condition("threshold_exceeded", {"above": 90, "for_seconds": 300}).for_seconds
    300.0
    >>> parse_condition("threshold_exceeded", {"above": 10, "below": 20}).above
    Traceback (most recent call last):
    ...
    triggers.conditions.InvalidCondition: threshold_exceeded: below must be lower than above
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "CONDITION_TYPES",
    "AnomalyDetected",
    "Condition",
    "InvalidCondition",
    "MaintenanceDue",
    "MissingPattern",
    "PatternDetected",
    "RepeatedDriftPattern",
    "ServiceInterval",
    "SlopePattern",
    "ThresholdExceeded",
    "TrendForecast",
    "parse_condition",
]

AnomalyType: TypeAlias = Literal["spike", "drop", "drift", "noise", "missing"]
_MAX_OF: Final = 1000  # the count form's window, in readings
_MAX_SECONDS: Final = 90 * 86_400.0  # longest window or duration: 90 days
Seconds: TypeAlias = Annotated[float, Field(ge=0, le=_MAX_SECONDS)]
Window: TypeAlias = Annotated[float, Field(gt=0, le=_MAX_SECONDS)]


class InvalidCondition(ValueError):  # noqa: N818 - reads as what it is: an invalid condition
    """A ``trigger_conditions`` value that does not fit its ``condition_type``."""

    def __init__(self, reason: str) -> None:
        """Keep the one-line `reason`."""
        super().__init__(reason)
        self.reason = reason


class _Condition(BaseModel):
    """Fields common to every condition."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cooldown_seconds: Seconds = 3600.0
    min_hold_seconds: Seconds = 300.0


class ThresholdExceeded(_Condition):
    """The value beyond a bound, for a duration or in ``count`` of the last ``of`` readings.

    ``{"above": 90, "for_seconds": 300, "hysteresis": 2}``, ``{"below": 5, "count": 3,
    "of": 5}``, or ``{}`` (the sensor's ``alert_threshold_max`` / ``_min``). Beyond means
    ``value > above`` or ``value < below``. The incident clears once the condition no
    longer holds and the value has stayed inside the bounds by ``hysteresis`` (absolute,
    in the sensor's unit) for ``clear_seconds``.
    """

    above: float | None = None
    below: float | None = None
    for_seconds: Seconds = 0.0
    count: Annotated[int, Field(ge=1, le=_MAX_OF)] | None = None
    of: Annotated[int, Field(ge=1, le=_MAX_OF)] | None = None
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    clear_seconds: Seconds = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdExceeded:
        if self.above is not None and self.below is not None and self.below >= self.above:
            msg = "below must be lower than above"
            raise ValueError(msg)
        if (self.count is None) != (self.of is None):
            msg = "count and of go together"
            raise ValueError(msg)
        if self.count is not None and self.of is not None:
            if self.count > self.of:
                msg = "count must not exceed of"
                raise ValueError(msg)
            if self.for_seconds:
                msg = "use for_seconds or count/of, not both"
                raise ValueError(msg)
        return self


class AnomalyDetected(_Condition):
    """At least ``count`` anomalous readings within ``window_seconds``.

    ``{"anomaly_types": ["spike", "drop"], "count": 3, "window_seconds": 3600}``.
    A reading counts when the detector flagged it (``is_anomaly``), or, with
    ``min_score``, when its score is at least that. ``anomaly_types`` narrows the
    types; ``missing`` (a silent sensor) counts only when listed: silence has its own
    pattern, and our own outages must not read as anomalies. Clears when fewer than
    ``count`` remain in the window.
    """

    min_score: Annotated[float, Field(ge=0, le=1)] | None = None
    anomaly_types: Annotated[tuple[AnomalyType, ...], Field(min_length=1)] | None = None
    count: Annotated[int, Field(ge=1, le=10_000)] = 1
    window_seconds: Window = 3600.0

    @field_validator("anomaly_types")
    @classmethod
    def _sorted(cls, value: tuple[AnomalyType, ...] | None) -> tuple[AnomalyType, ...] | None:
        # One spelling per set, so that equal conditions dump (and fingerprint) alike.
        return None if value is None else tuple(sorted(set(value)))


class SlopePattern(_Condition):
    """The least-squares slope of the readings in the window beyond a rate.

    ``{"pattern": "slope", "min_slope_per_hour": 1.5, "direction": "up",
    "window_seconds": 3600, "min_readings": 10}``: ``up`` fires when the slope is at
    least ``min_slope_per_hour`` (unit per hour), ``down`` at most its opposite,
    ``either`` (default) on its absolute value.
    """

    pattern: Literal["slope"]
    min_slope_per_hour: Annotated[float, Field(gt=0)]
    direction: Literal["up", "down", "either"] = "either"
    window_seconds: Window = 3600.0
    min_readings: Annotated[int, Field(ge=2, le=10_000)] = 10


class RepeatedDriftPattern(_Condition):
    """At least ``count`` readings flagged ``drift`` within ``window_seconds``.

    ``{"pattern": "repeated_drift", "count": 2, "window_seconds": 86400}``.
    """

    pattern: Literal["repeated_drift"]
    count: Annotated[int, Field(ge=1, le=10_000)] = 2
    window_seconds: Window = 86_400.0


class MissingPattern(_Condition):
    """The sensor silent for at least ``for_seconds`` since its last reading.

    ``{"pattern": "missing", "for_seconds": 900}``. The stream reports a ``missing``
    event once a sensor has been silent for 3 sampling intervals; a shorter
    ``for_seconds`` fires on that event, a longer one when the evaluator's tick finds
    the silence long enough. The next reading clears it.
    """

    pattern: Literal["missing"]
    for_seconds: Seconds = 900.0


PatternDetected: TypeAlias = Annotated[
    SlopePattern | RepeatedDriftPattern | MissingPattern, Field(discriminator="pattern")
]


class TrendForecast(_Condition):
    """The recent trend reaches an alert threshold within ``horizon_hours``.

    ``{"mode": "forecast", "horizon_hours": 72, "window_seconds": 86400,
    "min_readings": 20, "min_r2": 0.5}``: a least-squares line through the window's
    readings, rising towards the sensor's ``alert_threshold_max`` or falling towards its
    ``alert_threshold_min``, with at least ``min_r2`` of the variance explained.
    """

    mode: Literal["forecast"]
    horizon_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 72.0
    window_seconds: Window = 86_400.0
    min_readings: Annotated[int, Field(ge=3, le=10_000)] = 20
    min_r2: Annotated[float, Field(ge=0, le=1)] = 0.5


class ServiceInterval(_Condition):
    """More than ``interval_days`` since the equipment's last service (else its install).

    ``{"mode": "service_interval", "interval_days": 180}``, judged at each reading's
    event time. Set a long ``cooldown_seconds``: until ``last_service_date`` moves, the
    condition holds again once the cooldown after a resolved work order ends.
    """

    mode: Literal["service_interval"]
    interval_days: Annotated[float, Field(gt=0, le=3650)] = 180.0


MaintenanceDue: TypeAlias = Annotated[TrendForecast | ServiceInterval, Field(discriminator="mode")]

Condition: TypeAlias = (
    ThresholdExceeded
    | AnomalyDetected
    | SlopePattern
    | RepeatedDriftPattern
    | MissingPattern
    | TrendForecast
    | ServiceInterval
)

_ADAPTERS: Final[dict[str, TypeAdapter[Condition]]] = {
    "threshold_exceeded": TypeAdapter(ThresholdExceeded),
    "anomaly_detected": TypeAdapter(AnomalyDetected),
    "pattern_detected": TypeAdapter(PatternDetected),
    "maintenance_due": TypeAdapter(MaintenanceDue),
}
CONDITION_TYPES: Final = tuple(_ADAPTERS)


def parse_condition(condition_type: str, data: object) -> Condition:
    """Validate the ``trigger_conditions`` of a row of type `condition_type`.

    Args:
        condition_type: the row's ``trigger_condition_type``.
        data: its ``trigger_conditions`` JSON, decoded (a dict), or a JSON string.

    Raises:
        InvalidCondition: unknown type, wrong shape or inconsistent values; its
            ``reason`` reads like ``"threshold_exceeded: above: Input should be a
            valid number"``.
    """
    adapter = _ADAPTERS.get(condition_type)
    if adapter is None:
        msg = f"{condition_type}: unknown condition_type (expected one of {', '.join(_ADAPTERS)})"
        raise InvalidCondition(msg)
    try:
        if isinstance(data, str | bytes):
            return adapter.validate_json(data)
        return adapter.validate_python(data)
    except ValidationError as exc:
        msg = f"{condition_type}: {_first_error(exc)}"
        raise InvalidCondition(msg) from exc


def _first_error(exc: ValidationError) -> str:
    """One line for the first error: ``location: message``."""
    err = exc.errors(include_url=False)[0]
    # Discriminated unions prefix the tag to the location; drop it, it is in the JSON.
    loc = ".".join(str(p) for p in err["loc"] if p not in _TAGS)
    msg = str(err["msg"]).removeprefix("Value error, ")
    text = f"{loc}: {msg}" if loc else msg
    return " ".join(text.split())[:300]


_TAGS: Final = frozenset({"slope", "repeated_drift", "missing", "forecast", "service_interval"})
