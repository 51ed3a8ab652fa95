"""Receive, wait and watch over any number of queues (issue 10).

Up to ``WAIT_MAX`` (64) queues a sleeper uses futex_waitv on the queues'
own words; past it the core sleeps on one "bell" word of the waiter row,
its queue list stored in the segment's cells.  These tests cross that
threshold (1, 64, 65, 500, 5,000 queues), blocking and not, and check that
the list's cells come back and the segment stays consistent.
"""
from __future__ import annotations

import os
import select
import threading

import pytest

from _ringbuf import WAIT_MAX, Segment

COUNTS = [1, WAIT_MAX, WAIT_MAX + 1, 500, 5000]


@pytest.fixture
def seg(prefix: str):
    s = Segment(prefix, size=16 << 20, max_record=4096)
    try:
        yield s
    finally:
        s.close()


def names(n: int, tag: str = "mq") -> list[bytes]:
    return [b"%s.%d" % (tag.encode(), i) for i in range(n)]


def wait_for_waiter(seg: Segment, queue: bytes) -> None:
    """Until a receiver is registered on queue (not a timing assertion: an event)."""
    done = threading.Event()
    for _ in range(20000):
        if seg.queue_stats(queue)["waiters"]:
            return
        done.wait(0.0005)
    raise AssertionError(f"no receiver registered on {queue!r}")


@pytest.mark.parametrize("n", COUNTS)
def test_nonblocking_receive_over_n(seg: Segment, n: int) -> None:
    qs = names(n)
    free0 = seg.info()["cells_free"]
    assert seg.receive(qs) is None
    seg.send(qs[-1], b"last")
    assert seg.receive(qs) == (n - 1, b"last")
    seg.send(qs[n // 2], b"mid")
    seg.send(qs[0], b"first")
    assert seg.receive(qs) == (n // 2, b"mid")  # oldest first across the list
    assert seg.receive(qs) == (0, b"first")
    for q in qs[-3:]:
        seg.send(q, b"b")
    got = seg.receive_batch(qs, 10)
    assert [data for _, data in got] == [b"b"] * min(3, n)
    assert seg.receive(qs) is None
    assert seg.wait(qs) is False
    assert seg.info()["cells_free"] == free0
    seg.check()


@pytest.mark.parametrize("n", COUNTS)
def test_blocking_receive_over_n_woken_by_send_to_last(seg: Segment, n: int) -> None:
    qs = names(n)
    free0 = seg.info()["cells_free"]
    out: list[object] = []
    # No timeout: a receive that was not woken would find the record at its
    # deadline and pass; this one must be woken (the join's bound is generous).
    t = threading.Thread(target=lambda: out.append(seg.receive(qs, timeout=None)), daemon=True)
    t.start()
    try:
        wait_for_waiter(seg, qs[-1])
        info = seg.info()
        assert info["waiters_used"] == 1
        # A long list lives in cells while the receiver sleeps, 62 ids a cell.
        assert info["cells_free"] == free0 - (0 if n <= WAIT_MAX else -(-n // 62))
        seg.check()
        seg.send(qs[-1], b"wake")
    finally:
        t.join(30)
    assert out == [(n - 1, b"wake")]
    assert seg.info()["waiters_used"] == 0
    assert seg.info()["cells_free"] == free0
    seg.check()


@pytest.mark.parametrize("n", [WAIT_MAX + 1, 5000])
def test_blocking_wait_over_n_and_fanout(seg: Segment, n: int) -> None:
    qs = names(n)
    for q in qs:
        seg.set_add(b"all", q)
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(seg.wait(qs, timeout=None)), daemon=True)
    t.start()
    try:
        wait_for_waiter(seg, qs[0])
        sent, skipped = seg.fanout(b"all", b"fan")
        assert (sent, skipped) == (n, 0)
    finally:
        t.join(30)
    assert woke == [True]
    got = 0
    while seg.receive(qs) is not None:
        got += 1
    assert got == n  # wait does not consume
    seg.check()


@pytest.mark.parametrize("n", [WAIT_MAX + 1, 5000])
def test_watch_over_n(seg: Segment, n: int) -> None:
    qs = names(n)
    free0 = seg.info()["cells_free"]
    w = seg.watch(qs)
    try:
        seq0 = w.seq()
        assert w.arm() is False
        seg.send(b"elsewhere", b"x")
        assert select.select([w], [], [], 0.02)[0] == []
        seg.send(qs[-1], b"poke")
        assert select.select([w], [], [], 10)[0] == [w]
        os.read(w.fileno(), 16)
        assert w.seq() == seq0 + 1
        assert w.arm() is True  # a record is there
        assert seg.receive(qs) == (n - 1, b"poke")
        seg.check()
    finally:
        w.close()
    assert seg.receive([b"elsewhere"]) == (0, b"x")
    assert seg.info()["cells_free"] == free0
    seg.check()


def test_too_many_queues_for_the_name_table(prefix: str) -> None:
    s = Segment(prefix, size=4 << 20, slots=256)
    try:
        with pytest.raises(Exception, match="table"):
            s.receive(names(300), timeout=1)
        assert s.receive(names(200)) is None  # a non-blocking look creates nothing
        s.check()
    finally:
        s.close()
