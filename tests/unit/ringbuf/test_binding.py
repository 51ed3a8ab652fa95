"""The Python binding of the C core, against a real segment in /dev/shm.

Covers: every error code mapped to its exception (with a message that names
the culprit), bytes round trips at the cell boundaries and at max_record,
timeouts, ``wait()`` that does not consume, the segment inventory functions,
fork safety, the GIL released while blocked, and fairness across queues.
"""
from __future__ import annotations

import os
import stat as stat_mod
import struct
import threading
import time

import pytest

import _ringbuf
from _ringbuf import (
    BadName,
    LayoutMismatch,
    OutOfMemory,
    QueueFull,
    RecordTooLarge,
    RingBufError,
    Segment,
    SegmentBusy,
    SegmentNotFound,
    TableFull,
)
from _ringbuf._native import ffi
from tests.support import segment_path

CELL = 256
FIRST_PAYLOAD = CELL - 8 - 24  # rb_cell header, then rb_rec header in a record's first cell
NEXT_PAYLOAD = CELL - 8


def small(prefix: str, **options: int) -> Segment:
    """A 1 MiB segment (few slots and waiters, 4 KiB records) unless options say otherwise."""
    kw = {"size": 1 << 20, "max_record": 4096, "slots": 256, "waiters": 16}
    kw.update(options)
    return Segment(prefix, **kw)  # type: ignore[arg-type]


# -- error mapping ------------------------------------------------------------------


def test_queue_full_at_capacity_names_queue(segment: Segment) -> None:
    for i in range(3):
        segment.send(b"cap.q", b"%d" % i, capacity=3)
    with pytest.raises(QueueFull) as info:
        segment.send(b"cap.q", b"one too many")
    assert type(info.value) is QueueFull
    assert "cap.q" in str(info.value) and "capacity 3" in str(info.value)
    assert info.value.code == -2
    stats = segment.queue_stats(b"cap.q")
    assert (stats["pending"], stats["sent"], stats["full"], stats["capacity"]) == (3, 3, 1, 3)
    # Taking one makes room for exactly one.
    assert segment.receive([b"cap.q"]) == (0, b"0")
    segment.send(b"cap.q", b"3")
    with pytest.raises(QueueFull):
        segment.send(b"cap.q", b"4")


def test_capacity_is_stored_and_can_be_raised(segment: Segment) -> None:
    segment.send(b"q", b"a", capacity=1)
    with pytest.raises(QueueFull):
        segment.send(b"q", b"b")  # capacity 0 = keep the stored one
    segment.send(b"q", b"b", capacity=2)
    assert segment.queue_stats(b"q")["pending"] == 2


def test_expired_records_free_capacity(segment: Segment) -> None:
    segment.send(b"q", b"stale", deadline_ns=1, capacity=1)  # deadline in the past
    segment.send(b"q", b"fresh")  # the full check sweeps the expired record first
    assert segment.receive([b"q"]) == (0, b"fresh")
    assert segment.info()["expired"] == 1


def test_out_of_memory_on_small_segment(prefix: str) -> None:
    seg = Segment(prefix, size=96 << 10, slots=16, waiters=4, max_record=4096)
    try:
        total = seg.info()["cells_total"]
        sent = 0
        with pytest.raises(OutOfMemory) as info:
            while True:
                seg.send(b"big.%d" % (sent % 3), bytes(4000))
                sent += 1
                assert sent <= total, "never ran out of memory"
        assert isinstance(info.value, QueueFull)  # a "full"-class result
        assert prefix in str(info.value) and "cells free" in str(info.value)
        assert sent == total // 17  # 4000 bytes = 1 + ceil((4000 - 224) / 248) = 17 cells
        seg.check()
        assert seg.receive([b"big.0"]) is not None
        seg.send(b"big.0", bytes(4000))  # memory came back
        seg.check()
    finally:
        seg.close()


def test_table_full_with_few_slots(prefix: str) -> None:
    seg = small(prefix, slots=4)
    try:
        for i in range(4):
            seg.send(b"q%d" % i, b"x")  # non-empty queues: the table GC cannot free them
        with pytest.raises(TableFull) as info:
            seg.send(b"the-fifth-queue", b"x")
        assert isinstance(info.value, QueueFull)
        assert "the-fifth-queue" in str(info.value) and "4 slots" in str(info.value)
        # An emptied queue is garbage-collected to make room.
        assert seg.receive([b"q0"]) == (0, b"x")
        seg.send(b"the-fifth-queue", b"x")
        assert sorted(seg.list_queues()) == [b"q1", b"q2", b"q3", b"the-fifth-queue"]
        seg.check()
    finally:
        seg.close()


def test_record_too_large(prefix: str) -> None:
    seg = small(prefix, max_record=1000)
    try:
        seg.send(b"q", bytes(1000))
        with pytest.raises(RecordTooLarge) as info:
            seg.send(b"q", bytes(1001))
        assert isinstance(info.value, ValueError)
        assert "1001" in str(info.value) and "1000" in str(info.value)
        seg.set_add(b"g", b"q")
        with pytest.raises(RecordTooLarge, match="1001"):
            seg.fanout(b"g", bytes(1001))
        assert seg.queue_stats(b"q")["pending"] == 1
    finally:
        seg.close()


@pytest.mark.parametrize("name", [b"", b"n" * 257], ids=["empty", "257-bytes"])
def test_bad_queue_names(segment: Segment, name: bytes) -> None:
    with pytest.raises(BadName, match=f"got {len(name)}$") as info:
        segment.send(name, b"x")
    assert isinstance(info.value, ValueError)
    assert "queue name" in str(info.value)
    with pytest.raises(BadName, match="queue name"):
        segment.receive([b"fine", name])
    with pytest.raises(BadName, match="queue name"):
        segment.queue_stats(name)
    with pytest.raises(BadName, match="set name"):
        segment.set_add(name, b"member")
    with pytest.raises(BadName, match="member name"):
        segment.set_add(b"set", name)
    with pytest.raises(BadName, match="set name"):
        segment.fanout(name, b"x")


def test_longest_name_is_fine(segment: Segment) -> None:
    name = bytes(range(256))  # any bytes, 256 of them
    segment.send(name, b"x")
    assert segment.list_queues() == [name]
    assert segment.receive([name]) == (0, b"x")


@pytest.mark.parametrize(
    "bad, culprit",
    [("", "1..200 characters, got 0"), ("a" * 201, "got 201"), ("a/b", "character 47"),
     ("a b", "character 32"), ("é", "character 63")],
    ids=["empty", "201-chars", "slash", "space", "non-ascii"],
)
def test_bad_prefix(bad: str, culprit: str) -> None:
    with pytest.raises(BadName, match=culprit):
        Segment(bad, size=1 << 20, max_record=4096)
    with pytest.raises(BadName):
        _ringbuf.unlink(bad)
    with pytest.raises(BadName):
        _ringbuf.attached(bad)


def test_segment_not_found(prefix: str) -> None:
    with pytest.raises(SegmentNotFound) as info:
        Segment(prefix, create=False)
    assert isinstance(info.value, FileNotFoundError)
    assert prefix in str(info.value)
    for fn in (_ringbuf.stat, _ringbuf.attached, _ringbuf.unlink):
        with pytest.raises(SegmentNotFound, match=prefix):
            fn(prefix)
    assert not os.path.exists(segment_path(prefix))


def _overwrite(prefix: str, offset: int, data: bytes) -> None:
    with open(segment_path(prefix), "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_layout_mismatch_magic(prefix: str) -> None:
    small(prefix).close()
    _overwrite(prefix, 0, struct.pack("<Q", 0xDEADBEEF))
    with pytest.raises(LayoutMismatch) as info:
        Segment(prefix)
    message = str(info.value)
    assert "0xdeadbeef" in message and f"0x{0x52494E47425546:x}" in message
    assert prefix in message
    with pytest.raises(LayoutMismatch):
        _ringbuf.stat(prefix)
    assert any(row["prefix"] == prefix and "0xdeadbeef" in str(row["error"])
               for row in _ringbuf.list_segments())


def test_layout_mismatch_version(prefix: str) -> None:
    small(prefix).close()
    _overwrite(prefix, 8, struct.pack("<I", 99))
    with pytest.raises(LayoutMismatch) as info:
        Segment(prefix, create=False)
    message = str(info.value)
    assert "version 99" in message and f"version {_ringbuf.LAYOUT_VERSION}" in message
    assert prefix in message


def test_record_format_mismatch_is_a_layout_mismatch(prefix: str) -> None:
    """A segment whose records were written in another record format is refused, both named."""
    small(prefix).close()
    assert _ringbuf.stat(prefix)["record_format"] == _ringbuf.RECORD_FORMAT
    offset = ffi.offsetof("rb_header", "record_format")
    _overwrite(prefix, offset, struct.pack("<I", _ringbuf.RECORD_FORMAT + 40))
    with pytest.raises(LayoutMismatch) as info:
        Segment(prefix, create=False)
    message = str(info.value)
    assert f"record format {_ringbuf.RECORD_FORMAT + 40}" in message
    assert f"reads format {_ringbuf.RECORD_FORMAT}" in message and prefix in message
    _overwrite(prefix, offset, struct.pack("<I", _ringbuf.RECORD_FORMAT))
    Segment(prefix, create=False).close()


def test_layout_mismatch_struct_sizes(prefix: str) -> None:
    small(prefix).close()
    _overwrite(prefix, ffi.offsetof("rb_header", "header_size"), struct.pack("<I", 1))
    with pytest.raises(LayoutMismatch, match="sizes 1/"):
        Segment(prefix)


def test_truncated_file_is_refused(prefix: str) -> None:
    with open(segment_path(prefix), "wb") as f:
        f.write(b"short")
    os.chmod(segment_path(prefix), 0o600)  # ours and private: only the size is wrong
    with pytest.raises(LayoutMismatch, match="too small"):
        Segment(prefix)


def test_unlink_while_attached_is_busy(prefix: str) -> None:
    seg = small(prefix)
    with pytest.raises(SegmentBusy) as info:
        _ringbuf.unlink(prefix)
    assert prefix in str(info.value)
    assert os.path.exists(segment_path(prefix))
    seg.close()
    _ringbuf.unlink(prefix)
    assert not os.path.exists(segment_path(prefix))


def test_unlink_force_while_attached(prefix: str) -> None:
    seg = small(prefix)
    try:
        _ringbuf.unlink(prefix, force=True)
        assert not os.path.exists(segment_path(prefix))
        seg.send(b"q", b"still mapped")  # the mapping outlives the name
        assert seg.receive([b"q"]) == (0, b"still mapped")
    finally:
        seg.close()


def test_closed_segment_raises(prefix: str) -> None:
    seg = small(prefix)
    seg.close()
    seg.close()  # idempotent
    with pytest.raises(ValueError, match=f"{prefix}.*closed"):
        seg.send(b"q", b"x")


def test_bad_arguments(segment: Segment, prefix: str) -> None:
    with pytest.raises(ValueError, match="timeout"):
        segment.receive([b"q"], timeout=-1)
    with pytest.raises(ValueError, match="at least one"):
        segment.receive([])
    # No upper bound on the list any more (tests/unit/ringbuf/test_many_queues.py).
    assert segment.receive([b"q%d" % i for i in range(65)]) is None
    with pytest.raises(ValueError, match="size"):
        Segment(prefix, size=-1)
    with pytest.raises(TypeError, match="prefix"):
        Segment(b"bytes-prefix")  # type: ignore[arg-type]
    assert issubclass(QueueFull, RingBufError) and issubclass(SegmentBusy, RingBufError)


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, FIRST_PAYLOAD - 1, FIRST_PAYLOAD, FIRST_PAYLOAD + 1, FIRST_PAYLOAD + NEXT_PAYLOAD,
     FIRST_PAYLOAD + NEXT_PAYLOAD + 1, 10_000, 1 << 20],
)
def test_round_trip(segment: Segment, size: int) -> None:
    data = os.urandom(size)
    segment.send(b"rt", data)
    assert segment.receive([b"rt"]) == (0, data)
    assert segment.receive([b"rt"]) is None
    info = segment.info()
    assert info["cells_free"] == info["cells_total"]
    segment.check()


def test_max_record_exactly(prefix: str) -> None:
    seg = small(prefix, max_record=5000)
    try:
        data = os.urandom(5000)
        seg.send(b"q", data)
        assert seg.receive([b"q"]) == (0, data)
    finally:
        seg.close()


def test_fifo_and_binary_payloads(segment: Segment) -> None:
    payloads = [b"", b"\x00", b"\x00" * 300, bytes(range(256)) * 3, b"end"]
    for p in payloads:
        segment.send(b"fifo", p)
    got = [segment.receive([b"fifo"]) for _ in payloads]
    assert got == [(0, p) for p in payloads]


def test_str_names_are_rejected_cleanly(segment: Segment) -> None:
    with pytest.raises(TypeError):
        segment.send("text", b"x")  # type: ignore[arg-type]


# -- timeouts and wait ------------------------------------------------------------------


def test_receive_timeout(segment: Segment) -> None:
    t0 = time.monotonic()
    assert segment.receive([b"empty"], timeout=0.2) is None
    elapsed = time.monotonic() - t0
    assert 0.19 <= elapsed < 0.6, elapsed
    t0 = time.monotonic()
    assert segment.receive([b"empty", b"other"], timeout=0.0) is None
    assert time.monotonic() - t0 < 0.05


def test_receive_timeout_longer_than_one_sleep(segment: Segment) -> None:
    # Each kernel sleep is bounded (200 ms); the binding still honours 0.5 s.
    t0 = time.monotonic()
    assert segment.receive([b"a", b"b"], timeout=0.5) is None
    assert 0.49 <= time.monotonic() - t0 < 1.0


def test_wait_does_not_consume(segment: Segment) -> None:
    t0 = time.monotonic()
    assert segment.wait([b"w"], timeout=0.2) is False
    assert time.monotonic() - t0 >= 0.19
    segment.send(b"w", b"kept")
    assert segment.wait([b"other", b"w"], timeout=1.0) is True
    assert segment.wait([b"w"], timeout=0) is True
    assert segment.queue_stats(b"w")["pending"] == 1
    assert segment.receive([b"w"]) == (0, b"kept")
    assert segment.wait([b"w"], timeout=0) is False


def test_blocked_receive_is_woken_by_send(segment: Segment) -> None:
    got: list[object] = []

    def receiver() -> None:
        t0 = time.monotonic()
        got.append(segment.receive([b"x", b"wake"], timeout=5.0))
        got.append(time.monotonic() - t0)

    t = threading.Thread(target=receiver)
    t.start()
    deadline = time.monotonic() + 2
    while segment.queue_stats(b"wake")["waiters"] == 0:
        assert time.monotonic() < deadline, "the receiver never registered as a waiter"
        time.sleep(0.005)
    segment.send(b"wake", b"up")
    t.join(5)
    assert got[0] == (1, b"up")
    assert got[1] < 1.0  # type: ignore[operator]
    assert segment.info()["waiters_used"] == 0


def test_blocked_receive_releases_the_gil(segment: Segment) -> None:
    done = threading.Event()
    counted = [0]

    def blocked() -> None:
        segment.receive([b"nothing"], timeout=1.0)
        done.set()

    def counter() -> None:
        while not done.is_set():
            counted[0] += 1

    t_block = threading.Thread(target=blocked)
    t_count = threading.Thread(target=counter)
    t0 = time.monotonic()
    t_block.start()
    t_count.start()
    # Pure Python work in this thread while the other one sleeps in C.
    spins = 0
    while time.monotonic() - t0 < 0.3:
        spins += 1
    mid = counted[0]
    assert not done.is_set(), "receive returned early"
    assert time.monotonic() - t0 < 0.8, "this thread was stalled behind the blocked receive"
    assert spins > 10_000 and mid > 10_000, (spins, mid)
    segment.send(b"nothing", b"wake up")
    t_block.join(3)
    t_count.join(3)
    assert done.is_set()


# -- sets -----------------------------------------------------------------------------


def test_sets_and_fanout(segment: Segment) -> None:
    for m in (b"m1", b"m2", b"m3"):
        segment.set_add(b"grp", m)
    segment.set_add(b"grp", b"gone", deadline_ns=1)  # already expired
    segment.send(b"m3", b"x", capacity=1)  # m3 is full
    assert sorted(segment.set_members(b"grp")) == [b"m1", b"m2", b"m3"]
    assert segment.fanout(b"grp", b"hello") == (2, 1)
    assert segment.receive([b"m1"]) == (0, b"hello")
    assert segment.receive([b"m2"]) == (0, b"hello")
    assert segment.queue_stats(b"m3")["full"] == 1
    segment.set_discard(b"grp", b"m1")
    segment.set_discard(b"grp", b"never-there")
    assert sorted(segment.set_members(b"grp")) == [b"m2", b"m3"]
    assert segment.list_sets() == [b"grp"]
    for m in (b"m2", b"m3"):
        segment.set_discard(b"grp", m)
    assert segment.set_members(b"grp") == [] and segment.list_sets() == []
    assert segment.fanout(b"grp", b"nobody") == (0, 0)
    assert segment.fanout(b"never-made", b"nobody") == (0, 0)
    segment.check()


def test_record_format_constants_come_from_c() -> None:
    """The one definition (ringbuf.h), read through the binding: tags stop below the group
    mark, which stops below the first byte of a payload stored without a frame."""
    assert _ringbuf.FRAME_TAG_MAX < _ringbuf.FRAME_GROUP_MARK < _ringbuf.FRAME_NONE_MIN
    assert _ringbuf.FRAME_RESERVE >= 1 + _ringbuf.FRAME_TAG_MAX
    assert _ringbuf.RECORD_FORMAT >= 1


def test_send_tagged_frames_in_the_core(segment: Segment) -> None:
    segment.send_tagged(b"tq!", b"abc", b"\x81\xa1k\x01")
    segment.send_tagged(b"tq!", b"", b"p")
    assert segment.receive([b"tq!"]) == (0, b"\x03abc\x81\xa1k\x01")
    assert segment.receive([b"tq!"]) == (0, b"\x00p")
    tag = b"t" * _ringbuf.FRAME_TAG_MAX
    segment.send_tagged(b"tq!", tag, b"p")
    assert segment.receive([b"tq!"]) == (0, bytes([len(tag)]) + tag + b"p")
    with pytest.raises(ValueError, match="0..126 bytes"):
        segment.send_tagged(b"tq!", tag + b"t", b"p")
    assert segment.receive([b"tq!"]) is None


def test_a_member_tag_must_fit_a_frame(segment: Segment) -> None:
    """A tag of FRAME_TAG_MAX + 1 (0x7f) bytes would be read as the group mark: refused at add."""
    long_tag = b"q!" + b"t" * (_ringbuf.FRAME_TAG_MAX + 1)
    with pytest.raises(ValueError, match="tag of at most 126 bytes"):
        segment.set_add(b"g", long_tag, queue_len=2)
    segment.set_add(b"g", long_tag[:-1], queue_len=2)
    assert segment.fanout(b"g", b"\x80", tagged=True) == (1, 0)
    assert segment.receive([b"q!"]) == (0, bytes([_ringbuf.FRAME_TAG_MAX]) + long_tag[2:-1] + b"\x80")


def test_many_set_members_need_a_bigger_buffer(segment: Segment) -> None:
    members = [b"member-%04d-" % i + b"x" * 200 for i in range(40)]  # > 4096 bytes listed
    for m in members:
        segment.set_add(b"big", m)
    assert sorted(segment.set_members(b"big")) == sorted(members)
    assert segment.fanout(b"big", b"x") == (40, 0)


def test_flush_and_stats_reset(segment: Segment) -> None:
    segment.send(b"a", b"1")
    segment.send(b"b", b"2", capacity=5)
    segment.set_add(b"g", b"a")
    segment.stats_reset()
    assert segment.info()["sent"] == 0 and segment.queue_stats(b"a")["sent"] == 0
    assert segment.queue_stats(b"a")["pending"] == 1
    segment.flush()
    info = segment.info()
    assert (info["queues"], info["sets"], info["members"]) == (0, 0, 0)
    assert info["cells_free"] == info["cells_total"]
    assert segment.receive([b"a", b"b"]) is None
    assert segment.queue_stats(b"b")["capacity"] == 0


# -- inventory ---------------------------------------------------------------------------


def test_list_segments_stat_attached(prefix: str) -> None:
    seg = Segment(prefix, size=1 << 20, mode=0o640, max_record=2048, slots=64, waiters=8)
    try:
        st = os.stat(segment_path(prefix))
        assert stat_mod.S_IMODE(st.st_mode) == 0o640
        assert _ringbuf.attached(prefix) is True
        seg.send(b"q", b"x")
        facts = _ringbuf.stat(prefix)
        assert facts["version"] == _ringbuf.LAYOUT_VERSION
        assert (facts["size"], facts["max_record"], facts["slots_total"], facts["waiters_total"]) \
            == (1 << 20, 2048, 64, 8)
        assert facts["queues"] == 1 and facts["sent"] == 1
        assert facts["creator_pid"] == os.getpid()
        rows = [r for r in _ringbuf.list_segments() if r["prefix"] == prefix]
        assert len(rows) == 1
        row = rows[0]
        assert row["path"] == segment_path(prefix) and row["mode"] == 0o640
        assert row["attached"] is True and row["file_size"] == 1 << 20 and "error" not in row
        # Another attach sees the existing segment, whatever sizing options it
        # passes (its mode must admit the segment's 0640: see test_trust.py).
        other = Segment(prefix, size=4 << 20, create=False, mode=0o640)
        assert other.size == 1 << 20 and other.receive([b"q"]) == (0, b"x")
        other.close()
    finally:
        seg.close()
    assert _ringbuf.attached(prefix) is False
    assert [r["attached"] for r in _ringbuf.list_segments() if r["prefix"] == prefix] == [False]


def test_default_mode_is_0600(prefix: str) -> None:
    old = os.umask(0)
    try:
        small(prefix).close()
    finally:
        os.umask(old)
    assert stat_mod.S_IMODE(os.stat(segment_path(prefix)).st_mode) == 0o600


def test_now_ns_is_monotonic_clock() -> None:
    a = _ringbuf.now_ns()
    b = time.monotonic_ns()
    c = _ringbuf.now_ns()
    assert a <= b <= c


# -- fork safety --------------------------------------------------------------------------


def _in_child(fn) -> int:
    """Run fn() in a forked child; return its exit status (0 = fn returned)."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            fn()
            code = 0
        except BaseException:  # noqa: BLE001 - report through the exit code
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def test_segment_survives_fork(segment: Segment) -> None:
    segment.send(b"to.child.early", b"before fork")

    def child() -> None:
        assert segment.receive([b"to.child.early"]) == (0, b"before fork")
        segment.send(b"to.parent", b"from child %d" % os.getpid())
        got = segment.receive([b"to.child"], timeout=10)
        assert got == (0, b"from parent"), got
        segment.send(b"to.parent", b"child done")

    pid = _in_child(child)
    got = segment.receive([b"to.parent"], timeout=10)
    assert got == (0, b"from child %d" % pid)
    segment.send(b"to.child", b"from parent")
    assert segment.receive([b"to.parent"], timeout=10) == (0, b"child done")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _ringbuf.attached(segment.prefix) is True  # the parent is still attached
    info = segment.info()
    assert info["waiters_used"] == 0 and info["cells_free"] == info["cells_total"]
    segment.check()


def test_child_blocked_in_receive_is_woken_by_parent(segment: Segment) -> None:
    def child() -> None:
        got = segment.receive([b"a", b"b", b"c"], timeout=10)
        assert got == (2, b"wake"), got

    pid = _in_child(child)
    deadline = time.monotonic() + 5
    while segment.queue_stats(b"c")["waiters"] == 0:
        assert time.monotonic() < deadline, "child never blocked"
        time.sleep(0.005)
    segment.send(b"c", b"wake")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert segment.info()["waiters_used"] == 0


def test_attached_follows_children(prefix: str) -> None:
    """A child that inherited the segment keeps it attached after the parent closes it."""
    seg = small(prefix)
    r, w = os.pipe()

    def child() -> None:
        os.close(w)
        os.read(r, 1)  # wait for the parent

    pid = _in_child(child)
    os.close(r)
    seg.close()
    assert _ringbuf.attached(prefix) is True
    os.write(w, b"x")
    os.close(w)
    os.waitpid(pid, 0)
    assert _ringbuf.attached(prefix) is False


# -- fairness across queues ------------------------------------------------------------------


def test_multi_queue_receive_takes_the_oldest_first(segment: Segment) -> None:
    order = [b"q2", b"q1", b"q3", b"q1", b"q2", b"q3", b"q3", b"q1"]
    for i, q in enumerate(order):
        segment.send(q, b"%d" % i)
    names = [b"q1", b"q2", b"q3"]
    got = [segment.receive(names) for _ in order]
    assert got == [(names.index(q), b"%d" % i) for i, q in enumerate(order)]
    assert segment.receive(names) is None


def test_multi_queue_receive_does_not_starve_a_quiet_queue(segment: Segment) -> None:
    for i in range(100):
        segment.send(b"busy", b"%d" % i)
    segment.send(b"quiet", b"Q")
    taken = []
    for i in range(100, 300):  # the busy queue keeps getting traffic
        segment.send(b"busy", b"%d" % i)
        got = segment.receive([b"busy", b"quiet"])
        assert got is not None
        taken.append(got)
        if got[0] == 1:
            break
    assert taken[-1] == (1, b"Q")
    assert len(taken) == 101  # exactly the 100 older records came first
    assert [d for _, d in taken[:-1]] == [b"%d" % i for i in range(100)]


def test_expired_records_are_never_returned(segment: Segment) -> None:
    segment.send(b"q", b"dead", deadline_ns=1)
    segment.send(b"q", b"alive", deadline_ns=_ringbuf.now_ns() + 60 * 10**9)
    segment.send(b"q", b"dying", deadline_ns=_ringbuf.now_ns() + 50_000_000)
    time.sleep(0.06)
    assert segment.receive([b"q"]) == (0, b"alive")
    assert segment.receive([b"q"]) is None
    info = segment.info()
    assert info["expired"] == 2 and info["cells_free"] == info["cells_total"]


def test_queue_stats_age(segment: Segment) -> None:
    assert segment.queue_stats(b"never") == {
        "sent": 0, "full": 0, "pending": 0, "oldest_age_ns": 0, "capacity": 0, "waiters": 0}
    segment.send(b"q", b"x")
    time.sleep(0.02)
    stats = segment.queue_stats(b"q")
    assert stats["pending"] == 1 and 20_000_000 <= stats["oldest_age_ns"] < 5 * 10**9


def test_recover_sweeps_dead_waiters(segment: Segment) -> None:
    """A receiver SIGKILLed while asleep leaves a waiter row that recover() clears."""
    import signal

    def child() -> None:
        segment.receive([b"sleep.here"], timeout=30)

    pid = _in_child(child)
    deadline = time.monotonic() + 5
    while segment.info()["waiters_used"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert segment.info()["waiters_used"] == 1
    segment.check()  # a dead waiter is stale, not an inconsistency
    assert segment.recover() == 1
    assert segment.info()["waiters_used"] == 0
    assert segment.queue_stats(b"sleep.here")["waiters"] == 0
    segment.check()


BIG_NAME = b"n" * 70_000


@pytest.mark.parametrize(("call", "error", "text"), [
    (lambda s: s.send(None, b"x"), TypeError, "queue name must be bytes, got NoneType: None"),
    (lambda s: s.send(b"q", None), TypeError, "data must be bytes, got NoneType: None"),
    (lambda s: s.send("q", b"x"), TypeError, "queue name must be bytes, got str: 'q'"),
    (lambda s: s.send(BIG_NAME, b"x"), BadName, "queue name must be 1..256 bytes, got 70000"),
    (lambda s: s.send_batch(None, [b"x"]), TypeError, "queue name must be bytes, got NoneType"),
    (lambda s: s.send_batch(b"q", [b"x", None]), TypeError, "records[1] must be bytes, got NoneType"),
    (lambda s: s.receive([BIG_NAME]), BadName, "queue name must be 1..256 bytes, got 70000: b'nnn"),
    (lambda s: s.receive((BIG_NAME,)), BadName, "queue name must be 1..256 bytes, got 70000"),
    (lambda s: s.receiver([BIG_NAME]), BadName, "queue name must be 1..256 bytes, got 70000"),
    (lambda s: s.receive_batch([BIG_NAME]), BadName, "queue name must be 1..256 bytes, got 70000"),
    (lambda s: s.wait([BIG_NAME]), BadName, "queue name must be 1..256 bytes, got 70000"),
    (lambda s: s.watch([BIG_NAME]), BadName, "queue name must be 1..256 bytes, got 70000"),
    (lambda s: s.receive([None]), TypeError, "queue name must be bytes or str, got NoneType"),
    (lambda s: s.queue_stats(None), TypeError, "queue name must be bytes, got NoneType"),
    (lambda s: s.set_add(None, b"m"), TypeError, "set name must be bytes, got NoneType"),
    (lambda s: s.set_add(b"s", None), TypeError, "member name must be bytes, got NoneType"),
    (lambda s: s.set_discard(None, b"m"), TypeError, "set name must be bytes, got NoneType"),
    (lambda s: s.set_members(None), TypeError, "set name must be bytes, got NoneType"),
    (lambda s: s.fanout(None, b"x"), TypeError, "set name must be bytes, got NoneType"),
    (lambda s: s.fanout(b"g", None), TypeError, "data must be bytes, got NoneType"),
])
def test_bad_names_and_data_raise_naming_the_argument(segment, call, error, text) -> None:
    """cffi's OverflowError / "object of type 'NoneType' has no len()" never leak through."""
    with pytest.raises(error) as info:
        call(segment)
    assert str(info.value).startswith(text), str(info.value)
    assert len(str(info.value)) < 200  # a 70,000-byte name is cut, not quoted whole
