"""One work order per fault: which work order a new incident opens or joins (pure, no I/O).

A technician visits *equipment*, or a *gateway* that went offline, not a
(trigger, sensor) pair. So a live incident that would request a work order first
looks for an open work order of its subject:

* a ``missing`` incident of a sensor behind a gateway: the gateway is the subject
  when at least one other sensor of that gateway fell silent at the same moment
  (its last delivery within ``_SAME_SILENCE_US``), or when the gateway already has
  an open work order; a single sensor that dies behind a live gateway is its
  equipment's incident;
* any other incident: the sensor's ``customer_equipment``.

With an open work order of the subject (requested within the attach window, not
closed by the FSM), the incident attaches to it: a ``workorders.updated`` event
keyed by that work order's idempotency key carries the new evidence. Otherwise it
requests a new work order, whose key is the incident's key.

The store makes the decision inside the poll's transaction, holding an advisory
lock per subject, so two trigger processes cannot both open one for the same
equipment; the simulation bench calls the same :func:`decide` on its own book.

Example:
    >>> eq = Subject("equipment", "e1", "c1")
    >>> decide([eq], {}, peers=0)
    NewOrder(subject=Subject(kind='equipment', id='e1', company_id='c1'))
    >>> decide([eq], {eq: "wo-1"}, peers=0)
    Attach(order='wo-1')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from triggers.model import Opened, SensorInfo

__all__ = ["SAME_SILENCE_US", "Attach", "Decision", "NewOrder", "Subject", "decide", "subjects"]

# Sensors of one gateway whose last deliveries are this close went silent together
# (one upload carries them all; a gateway may split an upload into a few messages).
SAME_SILENCE_US: Final = 10_000_000


@dataclass(frozen=True, slots=True)
class Subject:
    """What a technician visits: a piece of equipment, or a gateway (per tenant)."""

    kind: Literal["equipment", "gateway"]
    id: str
    company_id: str

    @property
    def lock_key(self) -> str:
        """The text whose hash is the subject's advisory lock."""
        return f"{self.company_id}/{self.kind}/{self.id}"


@dataclass(frozen=True, slots=True)
class NewOrder:
    """Request a new work order for `subject` (its key: the incident's key)."""

    subject: Subject


@dataclass(frozen=True, slots=True)
class Attach:
    """Attach the incident to the open work order `order` (its idempotency key)."""

    order: str


Decision: TypeAlias = NewOrder | Attach


def subjects(o: Opened, sensor: SensorInfo, gateway: str | None) -> list[Subject]:
    """The subjects an incident may belong to, the most specific first."""
    equipment = Subject("equipment", sensor.customer_equipment_id, sensor.company_id)
    if gateway is not None and o.silent_since_us is not None:
        return [Subject("gateway", gateway, sensor.company_id), equipment]
    return [equipment]


def decide(
    candidates: Sequence[Subject], open_orders: Mapping[Subject, str], peers: int
) -> Decision:
    """The work order an incident opens or joins.

    Args:
        candidates: from :func:`subjects`.
        open_orders: the open work order of each candidate that has one.
        peers: other sensors of the candidate gateway silent since the same moment.
    """
    for subject in candidates:
        order = open_orders.get(subject)
        if order is not None:
            return Attach(order)
    gateway = next((s for s in candidates if s.kind == "gateway"), None)
    if gateway is not None and peers > 0:
        return NewOrder(gateway)
    return NewOrder(candidates[-1])
