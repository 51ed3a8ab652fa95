"""A worker blocked in ``IPCChannelLayer.receive(block=True)`` sleeps in the kernel.

Over 2 s it must use under 2% of a core, measured by the parent from
/proc/<pid>/stat and by the child with getrusage around the call; and the
call must return ``(None, None)`` at ``blocking_timeout``, not before and
not much after. Run with and without a spin budget, on one channel, on
a list mixing normal and ``!`` channels, and on 5,000 channels.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import time
from typing import Any

import pytest

from tests.support import make_layer

pytestmark = pytest.mark.integration

TICK = os.sysconf("SC_CLK_TCK")
CTX = multiprocessing.get_context("fork")
TIMEOUT = 2.5

VARIANTS: dict[str, tuple[list[str], int]] = {
    "one-channel": (["idle.work"], 0),
    "mixed-channels": (["idle.a", "idle.b", "idle.srv!", "idle.c?x"], 0),
    "spin-200us": (["idle.spin"], 200),
    # Past 64 queues the core sleeps on its waiter row's bell word: as idle.
    "5000-channels": ([f"idle.many.{i}" for i in range(5000)], 0),
}


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        raise ValueError("the process was never started")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def idle_worker(prefix: str, channels: list[str], spin_us: int, conn: Any) -> None:
    layer = make_layer(prefix, blocking_timeout=TIMEOUT, spin_us=spin_us)
    layer.receive(channels)  # warm the caches
    conn.send("ready")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    got = layer.receive(channels, block=True)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    conn.send((got, wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)))
    layer.close()


def test_blocked_receivers_use_no_cpu(layer_prefix: str) -> None:
    make_layer(layer_prefix).close()
    procs = {}
    for name, (channels, spin_us) in VARIANTS.items():
        parent, child = CTX.Pipe()
        p = CTX.Process(target=idle_worker, args=(layer_prefix, channels, spin_us, child))
        p.start()
        procs[name] = (p, parent)
    try:
        for _, parent in procs.values():
            assert parent.poll(10) and parent.recv() == "ready"
        time.sleep(0.05)
        before = {name: cpu_seconds(p.pid) for name, (p, _) in procs.items()}
        time.sleep(2.0)
        for name, (p, _) in procs.items():
            used = cpu_seconds(p.pid) - before[name]
            assert used < 0.02 * 2.0, f"{name}: blocked receive used {used:.3f} s of CPU in 2 s (/proc)"
        for name, (_, parent) in procs.items():
            assert parent.poll(5), f"{name}: receive(block=True) did not return"
            got, wall, cpu = parent.recv()
            assert got == (None, None)
            assert TIMEOUT - 0.05 <= wall < TIMEOUT + 1.0, f"{name}: returned after {wall:.2f} s"
            assert cpu < 0.02 * wall, f"{name}: used {cpu:.4f} s of CPU in {wall:.2f} s (getrusage)"
    finally:
        for p, _ in procs.values():
            p.join(5)
    assert [p.exitcode for p, _ in procs.values()] == [0] * len(VARIANTS)
