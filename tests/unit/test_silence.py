"""Silence judged on each sensor's own delivery, and our outages told apart (pure)."""

from __future__ import annotations

from stream.silence import SilenceWatch
from tmiot.config import SilenceSettings

_S = 1_000_000  # microseconds per second
T0 = 1_750_000_000 * _S


class Fleet:
    """Drive a watch in simulated time: heartbeats every 5 s, deliveries as told."""

    def __init__(self, **settings: float) -> None:
        self.watch = SilenceWatch(SilenceSettings(**settings))
        self.now = 0  # seconds since T0
        self.intervals: dict[str, int] = {}
        self.found: list[tuple[int, str]] = []  # (seconds, sensor)

    def deliver(self, sensor: str, *, partition: int = 0, gateway: str | None = None) -> None:
        at = T0 + self.now * _S
        self.watch.delivered(partition, sensor, "c1", at - _S, at, self.now, gateway)

    def run(  # noqa: PLR0913 - the scenario's knobs, each with a default
        self,
        until: int,
        every: dict[str, int],
        *,
        beats: bool = True,
        partitions: tuple[int, ...] = (0,),
        gateways: dict[str, str] | None = None,
        partition_of: dict[str, int] | None = None,
    ) -> None:
        """Advance to `until` seconds; sensor s delivers whenever now % every[s] == 0."""
        while self.now < until:
            self.now += 1
            for sensor, period in every.items():
                if self.now % period == 0:
                    self.deliver(
                        sensor,
                        partition=(partition_of or {}).get(sensor, 0),
                        gateway=(gateways or {}).get(sensor),
                    )
            if beats and self.now % 5 == 0:
                for p in partitions:
                    self.watch.beat(p, T0 + self.now * _S, self.now)
            if self.now % 2 == 0:
                silent = self.watch.find_silent(self.intervals.get, wall=self.now)
                self.found += [(self.now, s.sensor_id) for s in silent]


def test_a_steady_sensor_is_missing_after_three_intervals_once_its_pattern_is_known() -> None:
    fleet = Fleet(learning_seconds=600)
    fleet.intervals = {"a": 60, "b": 60}
    fleet.run(900, {"a": 60, "b": 60})
    assert fleet.found == []
    fleet.run(1400, {"b": 60})  # "a" last delivered at 900 s
    # 3 intervals (180 s) after 900 s: the clock reaches 1085 s with the next heartbeat.
    assert fleet.found == [(1086, "a")]


def test_store_and_forward_uploads_every_15_minutes_are_never_missing() -> None:
    fleet = Fleet()
    fleet.intervals = {"sf1": 2, "sf2": 2, "live": 60}
    # Two sensors behind a gateway that uploads every 900 s, one sensor each minute.
    fleet.run(6 * 3600, {"sf1": 900, "sf2": 900, "live": 60})
    assert fleet.found == []


def test_a_gateway_batching_every_20_s_behind_far_ahead_partition_mates_is_not_missing() -> None:
    fleet = Fleet()
    sensors = {f"g{i}": 20 for i in range(10)} | {f"s{i}": 2 for i in range(10)}
    fleet.intervals = dict.fromkeys(sensors, 2)
    fleet.run(1800, sensors)
    assert fleet.found == []


def test_a_new_store_and_forward_sensor_is_not_missing_before_its_pattern_is_learned() -> None:
    fleet = Fleet()
    fleet.intervals = {"sf": 2}
    fleet.run(900 * 4, {"sf": 900})
    assert fleet.found == []


def test_a_dead_store_and_forward_gateway_is_missing_after_its_usual_gap_times_the_factor() -> None:
    fleet = Fleet()
    fleet.intervals = {"sf": 2}
    fleet.run(900 * 6, {"sf": 900})  # pattern learned: 900 s gaps
    fleet.run(900 * 6 + 3000, {})
    assert [s for _, s in fleet.found] == ["sf"]
    assert 900 * 6 + 2250 < fleet.found[0][0] <= 900 * 6 + 2256  # 2.5 x 900 s after


def test_an_ingest_outage_is_one_outage_and_no_sensor_is_missing() -> None:
    fleet = Fleet(learning_seconds=0)
    every = {f"s{i}": 2 for i in range(8)}
    fleet.intervals = dict.fromkeys(every, 2)
    partition_of = {s: i % 4 for i, s in enumerate(every)}
    fleet.run(120, every, partitions=(0, 1, 2, 3), partition_of=partition_of)
    fleet.run(150, {}, beats=False)  # ingest down 30 s: no beats, no deliveries
    assert fleet.found == []
    live = fleet.watch.take_outages()
    assert [(o.cause, o.live, sorted(o.partitions)) for o in live] == [
        ("no_heartbeat", True, [0, 1, 2, 3])
    ]
    assert fleet.watch.outage is live[0]  # still going
    fleet.run(600, every, partitions=(0, 1, 2, 3), partition_of=partition_of)  # back
    assert fleet.found == []
    assert fleet.watch.outage is None
    assert live[0].until_us >= T0 + 151 * _S
    assert fleet.watch.take_outages() == []  # one outage, declared once


def test_an_outage_found_in_the_data_after_a_stream_restart_is_one_outage() -> None:
    # The worker sees the gap only as a jump of the clock: heartbeats at 5 s, then
    # none for 40 s, then everything again (the stream was down as well).
    watch = SilenceWatch(SilenceSettings(learning_seconds=0))
    for p in (0, 1):
        for t in range(5, 101, 5):
            watch.beat(p, T0 + t * _S, wall=0)
    for p in (0, 1):
        watch.delivered(p, f"s{p}", "c1", T0, T0 + 140 * _S, wall=0.1)
        watch.beat(p, T0 + 140 * _S, wall=0.1)
    outages = watch.take_outages()
    assert [(o.live, o.since_us, o.until_us, sorted(o.partitions)) for o in outages] == [
        (False, T0 + 100 * _S, T0 + 140 * _S, [0, 1])
    ]


def test_a_sensor_silent_across_an_outage_gets_its_allowance_again_after_it() -> None:
    fleet = Fleet(learning_seconds=0)
    fleet.intervals = {"a": 10, "b": 10}
    fleet.run(300, {"a": 10, "b": 10})
    fleet.run(400, {}, beats=False)  # outage of 100 s
    fleet.run(460, {"b": 10})  # "a" never comes back
    assert [s for _, s in fleet.found] == ["a"]
    assert fleet.found[0][0] > 400 + 30  # not before 3 intervals after the recovery


def test_mqtt_disconnected_heartbeats_do_not_move_the_clock() -> None:
    watch = SilenceWatch(SilenceSettings(learning_seconds=0))
    watch.delivered(0, "a", "c1", T0, T0, wall=0)
    for t in range(5, 400, 5):
        watch.beat(0, T0 + t * _S, wall=t, mqtt=False)
        assert watch.find_silent({"a": 10}.get, wall=t) == []


def test_a_registered_sensor_that_never_reported_is_judged() -> None:
    fleet = Fleet(learning_seconds=600)
    fleet.intervals = {"a": 60, "new": 60}
    fleet.watch.expect(0, "new", "c1")
    fleet.run(700, {"a": 60})
    # Judged from the partition's first heartbeat (5 s), with the learning allowance.
    assert fleet.found == [(610, "new")]


def test_a_silence_carries_the_gateway_and_the_last_delivery() -> None:
    watch = SilenceWatch(SilenceSettings(learning_seconds=0))
    for t in range(10, 101, 10):
        watch.delivered(3, "a", "c1", T0 + t * _S, T0 + t * _S, 0, "gw-7")
    for t in range(105, 200, 5):
        watch.beat(3, T0 + t * _S, wall=0)
    (s,) = watch.find_silent({"a": 10}.get, wall=0)
    assert (s.gateway_id, s.since_us, s.partition) == ("gw-7", T0 + 100 * _S, 3)


def test_the_gaps_within_a_partitions_first_record_are_learned() -> None:
    # One record holding a sensor's first ten deliveries, 1 s apart (a backlog, or
    # records merged by the worker): its pattern is known at once.
    watch = SilenceWatch(SilenceSettings(learning_seconds=600))
    times = [T0 + i * _S for i in range(10)]
    watch.observe(0, ["a"] * 10, ["c1"] * 10, times, times, wall=0)
    assert [s.sensor_id for s in watch.find_silent({"a": 1}.get, wall=4)] == ["a"]
