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
from _ringbuf._native import ffi

pytestmark = pytest.mark.integration

#: Per child operation.  Every case finishes in well under a second; a hang
#: (an unbounded walk under the lock) is what this bound turns into a failure.
CHILD_TIMEOUT = 20
SLOTS = 64
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
