"""A stopped lock holder no longer blocks the prefix forever (issue 11, point 4).

A process stopped (SIGSTOP, Ctrl-Z, a debugger) while it holds the segment
lock keeps it until it runs again. Other processes used to hang in every
send and in ``ipc-layer ls``; now each call gives up after ``lock_timeout``
with :class:`LockTimeout` naming the holder's pid and state, and the CLI
reports "locked by pid N (stopped)". After SIGCONT everything works.

The holder is made deterministic: a forked child takes the lock through the
test hook ``Segment._debug_lock()`` and stops itself with SIGSTOP while
holding it; the parent waits until the kernel reports it stopped.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

import _ringbuf
from _ringbuf import LockTimeout, QueueFull, Segment

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[3]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipc_layer.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def stopped_holder(prefix: str) -> Iterator[int]:
    """The pid of a child stopped while holding the lock of ``prefix``'s segment."""
    seg = Segment(prefix, size=4 << 20, slots=64, waiters=8)
    seg.send(b"q", b"before")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(ready_r)
            seg._debug_lock()
            os.write(ready_w, b"L")
            os.kill(os.getpid(), signal.SIGSTOP)  # stopped, holding the lock
            seg._debug_unlock()
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"L"
        _, status = os.waitpid(pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        yield pid
    finally:
        os.close(ready_r)
        os.kill(pid, signal.SIGCONT)
        _, status = os.waitpid(pid, 0)
        seg.close()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def resume(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def test_send_names_the_stopped_holder(prefix: str, stopped_holder: int) -> None:
    pid = stopped_holder
    other = Segment(prefix, create=False, lock_timeout=0.2)  # attaching takes no lock
    try:
        for call in (lambda: other.send(b"q", b"x"), lambda: other.receive([b"q"]), other.info):
            with pytest.raises(LockTimeout) as info:
                call()
            exc = info.value
            assert (exc.pid, exc.state) == (pid, "stopped")
            assert f"segment lock of prefix {prefix} is held by pid {pid} (stopped)" in str(exc)
            assert f"kill -CONT {pid}" in str(exc)
            assert isinstance(exc, QueueFull)  # retryable back-pressure
        resume(pid)
        other.send(b"q", b"after")  # waits for the resumed holder, then goes through
        assert other.receive([b"q"]) == (0, b"before")
        assert other.receive([b"q"]) == (0, b"after")
    finally:
        other.close()


def test_layer_raises_retryable_lock_timeout(prefix: str, stopped_holder: int) -> None:
    from ipc_layer import ChannelFull, SegmentError
    from ipc_layer import LockTimeout as LayerLockTimeout
    from tests.support import make_layer

    layer = make_layer(prefix, lock_timeout=0.2)
    try:
        calls = {
            "send": lambda: layer.send("chan", {"cookie": "x"}),
            "receive": lambda: layer.receive(["chan"]),
            "group_add": lambda: layer.group_add("g", "chan"),
            "send_group": lambda: layer.send_group("g", {}),
            "flush": layer.flush,
            "global_statistics": layer.global_statistics,
        }
        for name, call in calls.items():
            with pytest.raises(LayerLockTimeout) as info:
                call()
            exc = info.value
            assert isinstance(exc, ChannelFull) and isinstance(exc, SegmentError), name
            assert (exc.pid, exc.state) == (stopped_holder, "stopped"), name
            assert f"held by pid {stopped_holder} (stopped)" in str(exc), name
        resume(stopped_holder)
        layer.send("chan", {"n": 1})
        assert layer.receive(["chan"]) == ("chan", {"n": 1})
    finally:
        layer.close()


def test_cli_reports_the_holder_instead_of_hanging(prefix: str, stopped_holder: int) -> None:
    pid = stopped_holder
    ls = cli("ls", "--lock-timeout", "0.2")
    assert ls.returncode == 0, ls.stderr
    row = [line for line in ls.stdout.splitlines() if line.startswith(prefix + " ")]
    assert len(row) == 1 and row[0].endswith(f"locked by pid {pid} (stopped)"), ls.stdout
    stats = cli("stats", "--prefix", prefix)  # the default --lock-timeout (1 s)
    assert stats.returncode == 2
    assert stats.stderr.startswith(f"ipc-layer stats: error: segment {prefix!r} is locked by pid "
                                   f"{pid} (stopped): ")
    assert len(stats.stderr.strip().splitlines()) == 1
    top = cli("top", "--prefix", prefix, "-n", "1", "--no-clear", "--lock-timeout", "0.2")
    assert top.returncode == 2 and f"locked by pid {pid} (stopped)" in top.stdout
    resume(pid)
    assert cli("stats", "--prefix", prefix).returncode == 0
    ls = cli("ls")
    row = [line for line in ls.stdout.splitlines() if line.startswith(prefix + " ")]
    assert len(row) == 1 and "locked" not in row[0] and "1 sent" in row[0]


def test_lock_timeout_option_is_checked(prefix: str) -> None:
    for bad in (0, -1, float("inf"), float("nan"), 86401, "5"):
        with pytest.raises(ValueError, match="lock_timeout must be a number of seconds"):
            Segment(prefix, lock_timeout=bad)  # type: ignore[arg-type]
    assert _ringbuf.DEFAULT_LOCK_TIMEOUT == 5.0
