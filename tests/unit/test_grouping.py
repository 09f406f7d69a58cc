"""One work order per fault: which order an incident opens or joins (pure)."""

from __future__ import annotations

from triggers.grouping import Attach, NewOrder, Subject, decide, subjects
from triggers.model import Opened, SensorInfo

SENSOR = SensorInfo("s1", "c1", "e1", "SENS-1", "temperature", 60, None, None, None, "active")


def _opened(*, silent_since_us: int | None = None) -> Opened:
    return Opened(
        "k1",
        "t1",
        "s1",
        10,
        historical=False,
        summary="x",
        evidence=(),
        silent_since_us=silent_since_us,
    )


EQUIPMENT = Subject("equipment", "e1", "c1")
GATEWAY = Subject("gateway", "gw-1", "c1")


def test_a_silence_behind_a_gateway_may_be_the_gateways_anything_else_is_the_equipments() -> None:
    assert subjects(_opened(silent_since_us=5), SENSOR, "gw-1") == [GATEWAY, EQUIPMENT]
    assert subjects(_opened(), SENSOR, "gw-1") == [EQUIPMENT]  # an anomaly: the equipment
    assert subjects(_opened(silent_since_us=5), SENSOR, None) == [EQUIPMENT]


def test_a_gateway_order_needs_another_sensor_silent_since_the_same_delivery() -> None:
    both = [GATEWAY, EQUIPMENT]
    assert decide(both, {}, peers=1) == NewOrder(GATEWAY)
    assert decide(both, {}, peers=0) == NewOrder(EQUIPMENT)  # one dead sensor, live gateway


def test_an_open_order_of_a_subject_gathers_the_incident() -> None:
    both = [GATEWAY, EQUIPMENT]
    assert decide(both, {GATEWAY: "wo-g"}, peers=0) == Attach("wo-g")
    assert decide(both, {EQUIPMENT: "wo-e"}, peers=3) == Attach("wo-e")
    assert decide([EQUIPMENT], {EQUIPMENT: "wo-e"}, peers=0) == Attach("wo-e")
    assert decide([EQUIPMENT], {GATEWAY: "wo-g"}, peers=0) == NewOrder(EQUIPMENT)
