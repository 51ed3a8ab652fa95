"""Corruption suite: a bad field written into a real segment file, then an operation.

Each case creates a segment, fills it (queues with records, a group, a
waiter row), writes ONE bad value at the field's real offset in
``/dev/shm/rbuf.<prefix>`` (offsets from the compiled struct layout through
the cffi binding's ``ffi.offsetof``/``ffi.sizeof``, never hard-coded), and
runs an operation in a child process with a timeout.  The outcome must be
a clean error that names what is wrong, or a successful repair; a signal
death (SIGSEGV, SIGBUS, an abort) or a timeout (a walk that never ends, a
lock never released) fails the test.

The layout of what is written lives in ``_ringbuf/src/internal.h``; the
fields the tests may touch are declared in ``_ringbuf/cdef.h``.
"""
from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import _ringbuf
from _ringbuf._native import ffi, lib

pytestmark = pytest.mark.integration

#: Per child operation.  Every case finishes in well under a second; a hang
#: (an unbounded walk under the lock) is what this bound turns into a failure.
CHILD_TIMEOUT = 20
SLOTS = 256
WAITERS = 8
SIZE = 1 << 20
MAX_RECORD = 4096

_FIELD_TYPES = {"uint32_t": "<I", "uint64_t": "<Q"}


class SegmentFile:
    """The segment file of a prefix, mapped for reading and writing fields by name."""

    def __init__(self, prefix: str) -> None:
        self.path = f"/dev/shm/rbuf.{prefix}"
        fd = os.open(self.path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.map.close()

    @staticmethod
    def _field(struct: str, field: str) -> tuple[int, str]:
        ctype = dict(ffi.typeof(struct).fields)[field].type
        return ffi.offsetof(struct, field), _FIELD_TYPES[ctype.cname]

    def read(self, struct: str, base: int, field: str) -> int:
        off, fmt = self._field(struct, field)
        import struct as st

        return int(st.unpack_from(fmt, self.map, base + off)[0])

    def write(self, struct: str, base: int, field: str, value: int) -> None:
        import struct as st

        off, fmt = self._field(struct, field)
        st.pack_into(fmt, self.map, base + off, value)

    # -- the header and the tables --------------------------------------------------
    def header(self, field: str) -> int:
        return self.read("rb_header", 0, field)

    def set_header(self, field: str, value: int) -> None:
        self.write("rb_header", 0, field, value)

    def slot_base(self, sid: int) -> int:
        return self.header("slots_off") + sid * ffi.sizeof("rb_slot")

    def cell_base(self, cid: int) -> int:
        return self.header("cells_off") + cid * ffi.sizeof("rb_cell")

    def rec_base(self, cid: int) -> int:
        return self.cell_base(cid) + ffi.offsetof("rb_cell", "data")

    def waiter_base(self, row: int) -> int:
        return self.header("waiters_off") + row * ffi.sizeof("rb_waiter")

    def index_entry(self, i: int) -> int:
        return self.header("index_off") + 4 * i

    def find_slot(self, state: int, name: bytes) -> int:
        name_off = ffi.offsetof("rb_slot", "name")
        for sid in range(self.header("slot_bump")):
            base = self.slot_base(sid)
            if self.read("rb_slot", base, "state") != state:
                continue
            n = self.read("rb_slot", base, "name_len")
            if self.map[base + name_off : base + name_off + n] == name:
                return sid
        raise LookupError(f"no slot of state {state} named {name!r}")


QUEUE, SET, MEMBER = 1, 2, 3


@pytest.fixture
def segfile(prefix: str) -> Iterator[SegmentFile]:
    """A filled segment on ``prefix`` (the writer detached), mapped as a file."""
    seg = _ringbuf.Segment(prefix, size=SIZE, slots=SLOTS, waiters=WAITERS, max_record=MAX_RECORD)
    try:
        for i in range(3):
            seg.send(b"good", b"g%d" % i)
            seg.send(b"bad", b"b%d" % i)
        seg.send(b"long", b"L" * 1000)  # a record of several cells
        seg.set_add(b"grp", b"good")
        seg.set_add(b"grp", b"m2")
        seg.set_add(b"grp", b"m3")
        # Free lists with entries: cells of taken records, rows of a retired group.
        for _ in range(4):
            seg.send(b"tmp", b"T" * 1000)
        while seg.receive([b"tmp"]) is not None:
            pass
        seg.set_add(b"gone", b"x")
        seg.set_discard(b"gone", b"x")
        seg.check()
    finally:
        seg.close()
    f = SegmentFile(prefix)
    yield f
    f.close()


_CHILD_PRELUDE = """
import json, sys
import _ringbuf
prefix = sys.argv[1]
def report(fn):
    try:
        value = fn()
    except Exception as exc:
        out = {"error": type(exc).__name__, "message": str(exc)}
    else:
        out = {"ok": value}
    print(json.dumps(out, default=repr))
"""


def run_child(prefix: str, code: str) -> dict[str, Any]:
    """Run ``code`` (which calls ``report(...)``) on ``prefix`` in a child process."""
    script = _CHILD_PRELUDE + textwrap.dedent(code)
    try:
        proc = subprocess.run([sys.executable, "-c", script, prefix], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child hung (> {CHILD_TIMEOUT} s): {code.strip()}")
    assert proc.returncode == 0, (
        f"the child died (exit {proc.returncode}"
        f"{f', signal {-proc.returncode}' if proc.returncode < 0 else ''}): "
        f"stdout={proc.stdout!r} stderr={proc.stderr[-2000:]!r}")
    lines = proc.stdout.strip().splitlines()
    assert lines, f"the child printed nothing; stderr={proc.stderr[-2000:]!r}"
    result: dict[str, Any] = json.loads(lines[-1])
    result["stderr"] = proc.stderr
    return result


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "ipc_layer.cli", *args], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ipc-layer {' '.join(args)} hung (> {CHILD_TIMEOUT} s)")


# ---- 2. header geometry -------------------------------------------------------------------

def _geometry_cases() -> list[Any]:
    """(field, how to make it bad from the good header) pairs."""
    return [
        pytest.param("cells_off", lambda h: h["cells_off"] + (1 << 40), id="cells_off-far"),
        pytest.param("cells_off", lambda h: h["cells_off"] + 64, id="cells_off-shifted"),
        pytest.param("slots_off", lambda h: 1 << 44, id="slots_off"),
        pytest.param("index_off", lambda h: h["index_off"] - 64, id="index_off"),
        pytest.param("waiters_off", lambda h: 1 << 33, id="waiters_off"),
        pytest.param("index_size", lambda h: 1 << 30, id="index_size-huge"),
        pytest.param("index_size", lambda h: h["index_size"] - 1, id="index_size-not-pow2"),
        pytest.param("slot_count", lambda h: 1 << 24, id="slot_count-huge"),
        pytest.param("slot_count", lambda h: 0, id="slot_count-zero"),
        pytest.param("waiter_count", lambda h: 1 << 16, id="waiter_count"),
        pytest.param("cell_count", lambda h: h["cell_count"] * 64, id="cell_count"),
        pytest.param("max_record", lambda h: 1 << 29, id="max_record"),
    ]


_GEOMETRY = ("slots_off", "index_off", "waiters_off", "cells_off", "index_size", "slot_count",
             "waiter_count", "cell_count", "max_record")


@pytest.mark.parametrize("field,bad", _geometry_cases())
@pytest.mark.parametrize("operation", ["send", "stat"])
def test_bad_geometry_is_refused_naming_the_field(segfile: SegmentFile, prefix: str, field: str,
                                                  bad: Any, operation: str) -> None:
    header = {name: segfile.header(name) for name in _GEOMETRY}
    segfile.set_header(field, bad(header))
    code = {
        "send": "report(lambda: _ringbuf.Segment(prefix, create=False).send(b'good', b'x'))",
        "stat": "report(lambda: _ringbuf.stat(prefix))",
    }[operation]
    result = run_child(prefix, code)
    assert result.get("error") == "SegmentCorrupt", result
    assert f"header field {field} is" in result["message"], result


@pytest.mark.parametrize("field,bad", _geometry_cases()[:3])
def test_bad_geometry_cli(segfile: SegmentFile, prefix: str, field: str, bad: Any) -> None:
    header = {name: segfile.header(name) for name in _GEOMETRY}
    segfile.set_header(field, bad(header))
    stats = run_cli("stats", "--prefix", prefix)
    assert stats.returncode == 2, stats
    assert f"header field {field} is" in stats.stderr, stats.stderr
    ls = run_cli("ls", "--json")
    assert ls.returncode == 0, ls
    rows = [row for row in json.loads(ls.stdout) if row["prefix"] == prefix]
    assert len(rows) == 1 and f"header field {field} is" in rows[0]["error"], rows


def test_another_layout_is_still_a_layout_mismatch(segfile: SegmentFile, prefix: str) -> None:
    segfile.set_header("slot_size", segfile.header("slot_size") + 64)
    result = run_child(prefix, "report(lambda: _ringbuf.stat(prefix))")
    assert result.get("error") == "LayoutMismatch", result


# ---- 3. indices and links read from shared memory; 5. poisoned records ----------------------

FAR = 0x7FFFFFF0  # an id far past any table: dereferenced, it is a SIGSEGV


def _slot(f: SegmentFile, name: bytes, state: int = QUEUE) -> int:
    return f.slot_base(f.find_slot(state, name))


def _head(f: SegmentFile, name: bytes) -> int:
    return f.read("rb_slot", _slot(f, name), "head")


def _index_of(f: SegmentFile, sid: int) -> int:
    import struct

    for i in range(f.header("index_size")):
        if struct.unpack_from("<I", f.map, f.index_entry(i))[0] == sid + 1:
            return i
    raise LookupError(sid)


def _write_index(f: SegmentFile, i: int, value: int) -> None:
    import struct

    struct.pack_into("<I", f.map, f.index_entry(i), value)


def _fill_index(f: SegmentFile, value: int) -> None:
    for i in range(f.header("index_size")):
        _write_index(f, i, value)


def _member(f: SegmentFile, name: bytes) -> int:
    set_id = f.find_slot(SET, b"grp")
    name_off = ffi.offsetof("rb_slot", "name")
    for sid in range(f.header("slot_bump")):
        base = f.slot_base(sid)
        if (f.read("rb_slot", base, "state") == MEMBER and f.read("rb_slot", base, "set_id") == set_id
                and f.map[base + name_off: base + name_off + len(name)] == name
                and f.read("rb_slot", base, "name_len") == len(name)):
            return base
    raise LookupError(name)


def _second_record(f: SegmentFile, name: bytes) -> int:
    return f.read("rb_rec", f.rec_base(_head(f, name)), "next")


_DRAIN = """
seg = _ringbuf.Segment(prefix, create=False)
def drain(names, limit=20):
    got = []
    while len(got) < limit:
        r = seg.receive(names)
        if r is None:
            break
        got.append(r[1].decode()[:8])
    return got
"""

SEND_THEN_DRAIN = _DRAIN + """
def op():
    seg.send(b'good', b'new')
    return {"got": drain([b'good']), "info": seg.info()}
report(op)
"""

NEW_QUEUE = _DRAIN + """
def op():
    seg.send(b'fresh', b'f0')
    return {"fresh": drain([b'fresh']), "got": drain([b'good']), "info": seg.info()}
report(op)
"""

BIG_SENDS = _DRAIN + """
def op():
    for i in range(30):
        seg.send(b'tmp2', b'%02d' % i + b'x' * 998)
    return {"got": [g[:2] for g in drain([b'tmp2'], 40)], "good": drain([b'good']), "info": seg.info()}
report(op)
"""

DRAIN_GOOD = _DRAIN + """
report(lambda: {"got": drain([b'good']), "info": seg.info()})
"""

DRAIN_ALL = _DRAIN + """
report(lambda: {"got": drain([b'good', b'bad', b'long']), "info": seg.info()})
"""

DRAIN_GOOD_BAD = _DRAIN + """
def op():
    calls = [drain([b'good', b'bad'], 1) for _ in range(8)]
    return {"got": [g for call in calls for g in call], "info": seg.info()}
report(op)
"""

CHECK_RECOVER_DRAIN = _DRAIN + """
def op():
    try:
        seg.check()
        checked = "ok"
    except _ringbuf.SegmentCorrupt as exc:
        checked = str(exc)
    seg.recover()
    return {"checked": checked, "got": drain([b'good', b'bad']), "info": seg.info()}
report(op)
"""

CHECK = """
report(lambda: _ringbuf.Segment(prefix, create=False).check())
"""

STAT_AND_LIST = """
seg = _ringbuf.Segment(prefix, create=False)
report(lambda: {"stat": _ringbuf.stat(prefix)["queues"],
                "queues": sorted(q.decode() for q in seg.list_queues())})
"""

GROUP_OPS = """
seg = _ringbuf.Segment(prefix, create=False)
def op():
    sent, skipped = seg.fanout(b'grp', b'hi')
    return {"sent": sent, "members": sorted(m.decode() for m in seg.set_members(b'grp'))}
report(op)
"""

DISCARD = """
seg = _ringbuf.Segment(prefix, create=False)
def op():
    seg.set_discard(b'grp', b'm2')
    return {"members": sorted(m.decode() for m in seg.set_members(b'grp'))}
report(op)
"""

WATCH_ROW = """
import mmap, os, struct
from _ringbuf._native import ffi
seg = _ringbuf.Segment(prefix, create=False)
w = seg.watch([b'good'])
fd = os.open('/dev/shm/rbuf.' + prefix, os.O_RDWR)
m = mmap.mmap(fd, os.fstat(fd).st_size); os.close(fd)
waiters_off = struct.unpack_from('<Q', m, ffi.offsetof('rb_header', 'waiters_off'))[0]
row = waiters_off + w._row * ffi.sizeof('rb_waiter')
struct.pack_into('<I', m, row + ffi.offsetof('rb_waiter', 'slot'), 0x7FFFFFF0)
def op():
    out = {}
    for what, fn in (("seq", w.seq), ("arm", w.arm)):
        try:
            out[what] = fn()
        except Exception as exc:
            out[what] = type(exc).__name__ + ": " + str(exc)
    seg.send(b'good', b'new')
    out["got"] = [r[1].decode() for r in iter(lambda: seg.receive([b'good']), None)]
    return out
report(op)
"""

# A watch on more queues than a row holds inline: its list lives in a chain of
# cells (waitlist.c), whose head the child points past the table.
WATCH_LIST = WATCH_ROW.replace(
    "w = seg.watch([b'good'])", "w = seg.watch([b'good'] + [b'w%d' % i for i in range(80)])"
).replace(
    "struct.pack_into('<I', m, row + ffi.offsetof('rb_waiter', 'slot'), 0x7FFFFFF0)",
    "struct.pack_into('<I', m, row + ffi.offsetof('rb_waiter', 'list'), 0x7FFFFFF0)",
)

GOOD = ["g0", "g1", "g2"]


def _ok(result: dict[str, Any]) -> Any:
    assert "ok" in result, result
    return result["ok"]


def _repaired(result: dict[str, Any], **expect: Any) -> None:
    value = _ok(result)
    for key, want in expect.items():
        assert value[key] == want, (key, value)
    if "info" in value:
        assert value["info"]["corruptions"] >= 1, value["info"]
    assert "is corrupt" in result["stderr"], result["stderr"]  # logged once, naming it


def _corrupt_cell_free_head(f: SegmentFile) -> None:
    assert f.header("cell_free_head") != lib.RB_NIL  # the fixture freed cells
    f.set_header("cell_free_head", FAR)


def _corrupt_free_cell_link(f: SegmentFile) -> None:
    head = f.header("cell_free_head")
    f.write("rb_cell", f.cell_base(head), "next", FAR)


def _slot_free_head_live(f: SegmentFile) -> None:
    assert f.header("slot_free_head") != lib.RB_NIL
    f.set_header("slot_free_head", f.find_slot(QUEUE, b"good"))


def _record_cycle(f: SegmentFile) -> None:
    second = _second_record(f, b"good")
    f.write("rb_rec", f.rec_base(second), "next", _head(f, b"good"))


def _first_member_far(f: SegmentFile) -> None:
    f.write("rb_slot", _slot(f, b"grp", SET), "first_member", FAR)


def _member_cycle(f: SegmentFile) -> None:
    first = f.read("rb_slot", _slot(f, b"grp", SET), "first_member")
    f.write("rb_slot", f.slot_base(first), "next_member", first)


def _refused(needle: str) -> Any:
    def expect(result: dict[str, Any]) -> None:
        assert result.get("error") == "SegmentCorrupt", result
        assert needle in result["message"], result
    return expect


def _repairs(dropped: int | None = None, **expect: Any) -> Any:
    def check(result: dict[str, Any]) -> None:
        _repaired(result, **expect)
        if dropped is not None:
            assert _ok(result)["info"]["dropped"] == dropped, _ok(result)["info"]
    return check


def _equals(value: Any) -> Any:
    def check(result: dict[str, Any]) -> None:
        assert _ok(result) == value, result
    return check


def _watch_row_expect(result: dict[str, Any]) -> None:
    value = _ok(result)
    assert value["seq"].startswith("ValueError"), value  # no lock-free read through a bad id
    assert value["arm"].startswith("SegmentCorrupt") and "broken queue list" in value["arm"], value
    _repaired(result, got=GOOD + ["new"])


def _check_recover_expect(result: dict[str, Any]) -> None:
    value = _ok(result)
    assert "length" in value["checked"], value  # check() names it ...
    _repaired(result, got=["g0", "g1", "b1", "g2", "b2"])  # ... recover() drops it
    assert value["info"]["dropped"] == 1, value


def _fresh_expect(result: dict[str, Any]) -> None:
    assert _ok(result)["fresh"] == ["f0"] and _ok(result)["got"] == GOOD, result


CASES = [
    # (corrupt, child code, expectation)
    pytest.param(lambda f: _write_index(f, _index_of(f, f.find_slot(QUEUE, b"good")), FAR),
                 SEND_THEN_DRAIN, _repairs(got=GOOD + ["new"]), id="index-entry-far-send"),
    pytest.param(lambda f: _write_index(f, _index_of(f, f.find_slot(QUEUE, b"good")), FAR),
                 CHECK, _refused("index entry"), id="index-entry-far-check"),
    pytest.param(lambda f: _fill_index(f, 1), NEW_QUEUE, _repairs(fresh=["f0"], got=GOOD),
                 id="index-all-ones-new-channel"),
    pytest.param(lambda f: _fill_index(f, 0xFFFFFFFF), NEW_QUEUE, _fresh_expect,
                 id="index-all-tombs"),
    pytest.param(_corrupt_cell_free_head, SEND_THEN_DRAIN, _repairs(got=GOOD + ["new"]),
                 id="cell-free-head-far"),
    pytest.param(_corrupt_free_cell_link, BIG_SENDS,
                 _repairs(got=[f"{i:02d}" for i in range(30)], good=GOOD), id="free-cell-link-far"),
    pytest.param(lambda f: f.set_header("cell_bump", 0xFFFFFFF0), BIG_SENDS,
                 _repairs(got=[f"{i:02d}" for i in range(30)], good=GOOD), id="cell-bump-far"),
    pytest.param(lambda f: f.set_header("slot_free_head", FAR), NEW_QUEUE,
                 _repairs(fresh=["f0"], got=GOOD), id="slot-free-head-far"),
    pytest.param(_slot_free_head_live, NEW_QUEUE, _repairs(fresh=["f0"], got=GOOD),
                 id="slot-free-list-live-row"),
    pytest.param(lambda f: f.set_header("slot_bump", 0xFFFFFFF0), STAT_AND_LIST,
                 _equals({"stat": 4, "queues": ["bad", "good", "long", "tmp"]}), id="slot-bump-far"),
    pytest.param(lambda f: f.write("rb_cell", f.cell_base(_head(f, b"long")), "next", FAR),
                 DRAIN_ALL, _repairs(dropped=1, got=["g0", "b0", "g1", "b1", "g2", "b2"]),
                 id="record-chain-cell-far"),
    pytest.param(lambda f: f.write("rb_rec", f.rec_base(_head(f, b"good")), "next", FAR),
                 DRAIN_GOOD, _repairs(got=["g0"]), id="record-link-far"),
    pytest.param(_record_cycle, DRAIN_GOOD, _repairs(got=["g0", "g1"]), id="record-link-cycle"),
    pytest.param(_first_member_far, GROUP_OPS, _repairs(sent=3, members=["good", "m2", "m3"]),
                 id="member-list-head-far"),
    pytest.param(_member_cycle, GROUP_OPS, _repairs(sent=3, members=["good", "m2", "m3"]),
                 id="member-list-cycle"),
    pytest.param(lambda f: f.write("rb_slot", _member(f, b"m2"), "prev_member", FAR), DISCARD,
                 _repairs(members=["good", "m3"]), id="member-link-far-discard"),
    pytest.param(lambda f: None, WATCH_ROW, _watch_row_expect, id="waiter-slot-id-far"),
    pytest.param(lambda f: None, WATCH_LIST, _watch_row_expect, id="waiter-list-head-far"),
    # 5. a head record with an impossible length: dropped, the others go on.
    pytest.param(lambda f: f.write("rb_rec", f.rec_base(_head(f, b"bad")), "len", 0xFFFFFF00),
                 DRAIN_GOOD_BAD, _repairs(dropped=1, got=["g0", "g1", "b1", "g2", "b2"]),
                 id="poisoned-head-receive"),
    pytest.param(lambda f: f.write("rb_rec", f.rec_base(_head(f, b"bad")), "len", 0xFFFFFF00),
                 CHECK_RECOVER_DRAIN, _check_recover_expect, id="poisoned-head-check-recover"),
]


@pytest.mark.parametrize("corrupt,code,expect", CASES)
def test_corruption_is_repaired_or_refused(segfile: SegmentFile, prefix: str, corrupt: Any,
                                           code: str, expect: Any) -> None:
    corrupt(segfile)
    result = run_child(prefix, code)
    expect(result)
    # Whatever the operation did, the segment is whole again after a recover().
    after = run_child(prefix, "seg = _ringbuf.Segment(prefix, create=False)\n"
                              "report(lambda: (seg.recover(), seg.check()))")
    assert "ok" in after, after


def test_cli_reads_a_segment_whose_bump_mark_is_corrupt(segfile: SegmentFile, prefix: str) -> None:
    segfile.set_header("slot_bump", 0xFFFFFFF0)
    stats = run_cli("stats", "--prefix", prefix, "--json")
    assert stats.returncode == 0, stats
    assert sorted(q["channel"] for q in json.loads(stats.stdout)["channels"]) == [
        "bad", "good", "long", "tmp"]
    ls = run_cli("ls", "--json")
    assert ls.returncode == 0, ls
