"""A set member may state the capacity of its queue for fan-out copies.

``Segment.set_add(..., capacity=N)`` (C ``rb_set_add_member``): the
member's capacity wins over the queue's stored one and over the fan-out's
argument, and is stored on the queue as a send's would be, so a queue only
ever reached through a group still gets its configured capacity.
"""
from __future__ import annotations

import pytest

from _ringbuf import QueueFull, Segment


def test_member_capacity_wins_over_fanout_default(segment: Segment) -> None:
    segment.set_add(b"g", b"small", capacity=2)
    segment.set_add(b"g", b"plain")
    for _ in range(4):
        segment.fanout(b"g", b"x", capacity=3)
    assert segment.queue_stats(b"small")["pending"] == 2
    assert segment.queue_stats(b"plain")["pending"] == 3
    assert segment.queue_stats(b"small")["full"] == 2
    # Stored on the queue like a send's capacity.
    assert segment.queue_stats(b"small")["capacity"] == 2
    with pytest.raises(QueueFull):
        segment.send(b"small", b"y")


def test_member_capacity_wins_over_stored_queue_capacity(segment: Segment) -> None:
    segment.send(b"q!", b"direct", capacity=10)
    segment.set_add(b"g", b"q!tag", queue_len=2, capacity=1)
    assert segment.fanout(b"g", b"x", tagged=True) == (0, 1)
    segment.receive([b"q!"])
    assert segment.fanout(b"g", b"x", tagged=True) == (1, 0)
    assert segment.receive([b"q!"]) == (0, b"\x03tagx")


def test_readd_updates_member_capacity(segment: Segment) -> None:
    segment.set_add(b"g", b"m", capacity=1)
    segment.set_add(b"g", b"m", capacity=3)
    assert segment.fanout(b"g", b"x") == (1, 0)
    assert segment.fanout(b"g", b"x") == (1, 0)
    assert segment.fanout(b"g", b"x") == (1, 0)
    assert segment.fanout(b"g", b"x") == (0, 1)


def test_member_capacity_out_of_range(segment: Segment) -> None:
    with pytest.raises(ValueError, match="capacity"):
        segment.set_add(b"g", b"m", capacity=-1)
    with pytest.raises(ValueError, match="capacity"):
        segment.set_add(b"g", b"m", capacity=2**32)
