"""``Segment.watch()``: the FD watch binding (a FIFO senders poke once per arm).

Covers: arm reports queued records, a send pokes an armed watch once and an
unarmed one never, close unlinks the FIFO and unregisters the row (idempotent),
the watch works with ``select``/asyncio ``add_reader``, ``seq`` moves with sends only, a killed watcher's row is
swept with its FIFO, a forked child cannot arm its parent's watch, closing the
segment closes its watches, and errors come through ``_check``.
"""
from __future__ import annotations

import asyncio
import glob
import os
import select
import signal
import time

import pytest

from _ringbuf import RingBufError, Segment


def fifos(prefix: str) -> list[str]:
    return sorted(glob.glob(f"/dev/shm/rbuf.{prefix}~w~*"))


def readable(watch, timeout: float) -> bool:
    return bool(select.select([watch], [], [], timeout)[0])


def test_arm_poke_drain_close(segment, prefix):
    watch = segment.watch((b"a", b"b"))
    assert len(fifos(prefix)) == 1
    assert segment.queue_stats(b"a")["waiters"] == 1
    assert not watch.arm()
    segment.send(b"b", b"x")
    assert readable(watch, 1.0)
    segment.send(b"b", b"y")  # disarmed by the first send: no second poke
    assert watch.drain() == 1
    assert not readable(watch, 0.02)
    assert watch.arm()  # records are there: not armed
    segment.send(b"a", b"z")
    assert not readable(watch, 0.02)
    assert [segment.receive((b"a", b"b")) for _ in range(3)] == [(1, b"x"), (1, b"y"), (0, b"z")]
    assert not watch.arm()
    segment.check()
    watch.close()
    watch.close()  # idempotent
    assert watch.closed and fifos(prefix) == []
    assert segment.queue_stats(b"a")["waiters"] == 0
    with pytest.raises(ValueError):
        watch.arm()
    segment.check()


def test_batch_and_fanout_poke(segment):
    with segment.watch((b"q",)) as watch:
        assert not watch.arm()
        segment.send_batch(b"q", [b"1", b"2"])
        assert readable(watch, 1.0) and watch.drain() == 1
        while segment.receive((b"q",)) is not None:
            pass
        segment.set_add(b"g", b"q")
        assert not watch.arm()
        segment.fanout(b"g", b"m")
        assert readable(watch, 1.0) and watch.drain() == 1
        assert segment.receive((b"q",)) == (0, b"m")


def test_add_reader_wakes_loop(segment):
    watch = segment.watch((b"loop",))

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def readable() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(watch.fileno(), readable)
        try:
            assert not watch.arm()
            loop.call_later(0.05, segment.send, b"loop", b"hello")
            await asyncio.wait_for(fut, 2.0)
        finally:
            loop.remove_reader(watch.fileno())
        watch.drain()
        got = segment.receive((b"loop",))
        assert got is not None
        return got[1]

    try:
        assert asyncio.run(main()) == b"hello"
    finally:
        watch.close()


def test_poke_from_another_process(segment, prefix):
    watch = segment.watch((b"xp",))
    assert not watch.arm()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            with Segment(prefix) as other:
                other.send(b"xp", b"from child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    try:
        assert readable(watch, 2.0)
        assert segment.receive((b"xp",)) == (0, b"from child")
    finally:
        watch.close()


def test_killed_watcher_swept_and_fifo_unlinked(segment, prefix):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            watch = segment.watch((b"dead",))
            watch.arm()
            os.write(w, b"1")
            while True:
                time.sleep(1)
        finally:
            os._exit(1)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.close(r)
    assert len(fifos(prefix)) == 1
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    segment.send(b"dead", b"x")  # the poke finds no reader: ignored
    assert segment.recover() == 1
    assert fifos(prefix) == []
    assert segment.queue_stats(b"dead")["waiters"] == 0
    segment.check()


def test_forked_child_cannot_arm_parents_watch(segment, prefix):
    watch = segment.watch((b"f",))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            watch.arm()
        except ValueError as exc:  # RB_E_INVAL
            code = 0 if "not registered" in str(exc) else 2
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not watch.arm()  # still the parent's
    watch.close()
    assert fifos(prefix) == []


def test_segment_close_closes_watches(prefix):
    seg = Segment(prefix, size=8 << 20)
    watch = seg.watch((b"c",))
    seg.close()
    assert watch.closed and fifos(prefix) == []


def test_bad_names(segment):
    with pytest.raises(ValueError):
        segment.watch(())
    with pytest.raises(RingBufError):
        segment.watch((b"",))


def test_seq_moves_with_sends_only(segment):
    watch = segment.watch((b"s1", b"s2"))
    first = watch.seq()
    assert watch.seq() == first
    segment.send(b"s2", b"x")
    second = watch.seq()
    assert second != first
    segment.send(b"unwatched", b"x")
    assert segment.receive((b"s2",)) is not None
    assert watch.seq() == second  # neither another queue's send nor a receive moves it
    assert not watch.arm()  # seq never arms: the next send still pokes
    segment.send(b"s1", b"y")
    assert watch.seq() != second and readable(watch, 1.0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            watch.seq()
        except ValueError as exc:
            os._exit(0 if "not registered" in str(exc) else 2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    watch.close()
    with pytest.raises(ValueError, match="closed"):
        watch.seq()


def test_poke_reaches_a_new_fifo_at_a_path_reused_by_a_recreated_segment(prefix):
    """A segment removed and made again restarts its tokens, so a new watch can get the
    very FIFO path an old one had; senders' cached write ends must not reach the old FIFO."""
    import _ringbuf

    for round_ in range(2):
        seg = Segment(prefix, size=8 << 20)
        watch = seg.watch((b"r",))
        for _ in range(2):  # the second poke goes through the cached write end
            assert not watch.arm()
            seg.send(b"r", b"x")
            assert readable(watch, 1.0), f"round {round_}: poke lost"
            assert watch.drain() == 1
            assert seg.receive((b"r",)) is not None
        path = fifos(prefix)
        watch.close()
        seg.close()
        _ringbuf.unlink(prefix, force=True)
        if round_ == 0:
            first_path = path
        else:
            assert path == first_path  # the same path came back
