"""When the trigger service checkpoints: every `checkpoint_seconds`, stretched by slow writes."""

from __future__ import annotations

import pytest

from tmiot.config import Settings
from triggers.pacing import CheckpointPacer


def test_fast_writes_keep_the_configured_interval() -> None:
    pacer = CheckpointPacer(every=5.0, duty=0.1, now=100.0)
    assert not pacer.due(104.9)
    assert pacer.due(105.0)
    pacer.began(105.0)
    pacer.wrote(0.2)  # 0.2 / 0.1 = 2 s, under the 5 s
    assert pacer.interval == 5.0
    assert not pacer.due(109.0)
    assert pacer.due(110.0)


def test_a_slow_write_spaces_the_next_checkpoints_out() -> None:
    pacer = CheckpointPacer(every=5.0, duty=0.1, now=0.0)
    pacer.began(5.0)
    pacer.wrote(3.0)  # at most 10 % of the time: 30 s from one start to the next
    assert pacer.interval == pytest.approx(30.0)
    assert not pacer.due(10.0)
    assert not pacer.due(34.9)
    assert pacer.due(35.0)
    pacer.began(35.0)
    pacer.wrote(0.1)  # the fleet slowed down: back to every 5 s
    assert pacer.due(40.0)


def test_never_while_a_write_is_in_flight() -> None:
    pacer = CheckpointPacer(every=5.0, duty=0.1, now=0.0)
    assert not pacer.due(60.0, writing=True)
    assert pacer.due(60.0)


def test_the_default_duty_is_a_tenth() -> None:
    triggers = Settings().triggers
    assert triggers.checkpoint_seconds == 5.0
    assert triggers.checkpoint_duty == 0.1
