"""An idle blocked receiver sleeps in the kernel: under 2% of a core over 2 s.

Measured twice: by the parent from /proc/<pid>/stat (utime + stime of the
child, in clock ticks) and by the child itself with getrusage around the
receive call.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import time

import pytest

from _ringbuf import Segment

pytestmark = pytest.mark.integration

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        raise ValueError("the process was never started")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15)


def idle_receiver(prefix: str, queues: list[bytes], spin_us: int, conn) -> None:
    seg = Segment(prefix, size=8 << 20)
    conn.send("ready")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    got = seg.receive(queues, timeout=2.5, spin_us=spin_us)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    conn.send((got, wall, cpu))
    seg.close()


VARIANTS = {  # name: (queues watched, spin budget in microseconds)
    "one-queue": (1, 0),
    "eight-queues": (8, 0),  # futex_waitv over several words
    "spin-200us-then-sleep": (1, 200),
    "5000-queues": (5000, 0),  # past WAIT_MAX: asleep on the row's bell word
}


def test_idle_receivers_use_no_cpu(prefix: str) -> None:
    """The variants run side by side (they are idle, so they do not disturb each other)."""
    ctx = multiprocessing.get_context("fork")
    procs = {}
    for name, (n_queues, spin_us) in VARIANTS.items():
        parent, child = ctx.Pipe()
        queues = [b"idle.%s.%d" % (name.encode(), i) for i in range(n_queues)]
        p = ctx.Process(target=idle_receiver, args=(prefix, queues, spin_us, child))
        p.start()
        procs[name] = (p, parent)
    try:
        for _, parent in procs.values():
            assert parent.poll(10) and parent.recv() == "ready"
        time.sleep(0.05)  # let them enter the receive
        before = {name: cpu_seconds(p.pid) for name, (p, _) in procs.items()}
        time.sleep(2.0)
        for name, (p, _) in procs.items():
            used = cpu_seconds(p.pid) - before[name]
            assert used < 0.02 * 2.0, f"{name}: blocked receiver used {used:.3f} s of CPU in 2 s (/proc)"
        for name, (_, parent) in procs.items():
            assert parent.poll(5), f"{name}: receive did not return"
            got, wall, cpu = parent.recv()
            assert got is None and 2.45 <= wall < 3.5, (name, got, wall)
            assert cpu < 0.02 * wall, \
                f"{name}: blocked receiver used {cpu:.4f} s of CPU in {wall:.2f} s (getrusage)"
    finally:
        for p, _ in procs.values():
            p.join(5)
    assert [p.exitcode for p, _ in procs.values()] == [0] * len(VARIANTS)
