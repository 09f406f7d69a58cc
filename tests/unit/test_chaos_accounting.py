from __future__ import annotations

import datetime as dt
import itertools

from tmiot.chaos.accounting import ReadingsAccount, match_work_orders
from tmiot.chaos.workload import Excursion, Workload
from tmiot.simulate.fleet import Fleet, SimSensor
from tmiot.simulate.signals import PROFILES, SensorType

S = 1_000_000
T0 = 1_800_000_000 * S


def _order(key: str, sensor: str, at_us: int) -> dict[str, object]:
    opened = dt.datetime.fromtimestamp(at_us / S, dt.UTC)
    return {"idempotency_key": key, "sensor_id": sensor, "opened_at": opened.isoformat()}


def test_work_orders_are_matched_per_excursion() -> None:
    a, b, c = (
        Excursion("a", T0, T0 + 6 * S),
        Excursion("b", T0, T0 + 6 * S),
        Excursion("c", T0, T0 + 6 * S),
    )
    orders = [
        _order("k1", "a", T0 + 2 * S),
        _order("k1", "a", T0 + 2 * S),  # the same key again: allowed, counted
        _order("k2", "b", T0 + 2 * S),
        _order("k3", "b", T0 + 3 * S),  # a second incident in one excursion
        _order("k4", "a", T0 + 60 * S),  # in no excursion
    ]
    account = match_work_orders([a, b, c], orders)
    assert (account.incidents, account.matched) == (3, 1)
    assert account.doubled == [b]
    assert account.missing == [c]
    assert (account.spurious, account.events, account.keys, account.resent) == (1, 5, 4, 1)
    assert not account.ok()
    assert match_work_orders([a], orders[:2]).ok()


def test_readings_account() -> None:
    assert ReadingsAccount(published=10, stored=10, rows=10, outside=0).ok()
    lost = ReadingsAccount(published=10, stored=9, rows=9, outside=0)
    assert (lost.lost, lost.duplicates, lost.ok()) == (1, 0, False)


def test_excursions_are_whole_and_apart() -> None:
    profile = PROFILES[SensorType.TEMPERATURE]
    sensors = tuple(
        SimSensor(i, f"s{i}", f"d{i}", f"SENS-{i}", SensorType.TEMPERATURE, profile)
        for i in range(4)
    )
    workload = Workload(Fleet("co", 1, sensors), T0, ticks=100, incident_sensors=2)
    found = workload.excursions()
    assert found
    assert {e.sensor_id for e in found} == {"s0", "s1"}
    for e in found:
        assert e.end_us - e.start_us == workload.incident_ticks * S
        assert e.end_us <= T0 + workload.ticks * S
    for sensor in ("s0", "s1"):
        starts = sorted(e.start_us for e in found if e.sensor_id == sensor)
        assert all(b - a == workload.incident_period * S for a, b in itertools.pairwise(starts))
    assert not any(workload.excursion_at(s, t) for s in (2, 3) for t in range(100))
