"""The arbiter's one seam to the operating system: spawn, signal, reap, wait, clocks.

:class:`OSAPI` is what the master really calls; the unit tests hand the
arbiter a fake with the same methods (supervisor's ``DummyOptions``
pattern), so every decision of :mod:`worker.arbiter` is tested without a
real process, a real signal or a real clock.

Workers are started with ``posix_spawn`` (fork + exec of a fresh
interpreter, done by the C library): nothing of the master's Python state,
imported code or threads reaches the child, which is why a HUP reload runs
freshly imported code. Every descriptor Python makes is close-on-exec
(PEP 446); :meth:`OSAPI.spawn` marks only the ones the child must have
inheritable, for the duration of the call (the master has one thread, so
no other spawn can see them).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Protocol

from .heartbeat import Heartbeat

__all__ = ["OSAPI", "HeartbeatSlot", "System", "exit_description"]


class HeartbeatSlot(Protocol):
    """What the arbiter needs of a worker's heartbeat (:class:`worker.heartbeat.Heartbeat`)."""

    fd: int

    def set(self, stamp: float) -> None: ...
    def stamp(self, now: float) -> float: ...
    def close(self) -> None: ...


class System(Protocol):
    """The seam: what the arbiter calls (:class:`OSAPI`, or a test's fake)."""

    def monotonic(self) -> float: ...
    def getpid(self) -> int: ...
    def pipe(self) -> tuple[int, int]: ...
    def read_available(self, fd: int) -> bytes: ...
    def write_nowait(self, fd: int, data: bytes) -> None: ...
    def close(self, fd: int) -> None: ...
    def wait_readable(self, fds: Sequence[int], timeout: float) -> list[int]: ...
    def spawn(self, argv: Sequence[str], env: Mapping[str, str], inherit: Sequence[int]) -> int: ...
    def kill(self, pid: int, sig: int) -> bool: ...
    def reap(self) -> list[tuple[int, int]]: ...
    def new_heartbeat(self, now: float) -> HeartbeatSlot: ...
    def install_signals(self, signals: Sequence[int], handler: Callable[[int], None]) -> None: ...
    def restore_signals(self, signals: Sequence[int]) -> None: ...


def exit_description(code: int) -> str:
    """``exit code 3`` / ``killed by SIGKILL`` for a code as :meth:`OSAPI.reap` reports it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class OSAPI:
    """The real operating system."""

    def monotonic(self) -> float:
        return time.monotonic()

    def getpid(self) -> int:
        return os.getpid()

    def pipe(self) -> tuple[int, int]:
        """A non-blocking, close-on-exec pipe (read end, write end)."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        return read_end, write_end

    def read_available(self, fd: int) -> bytes:
        """Everything readable on non-blocking ``fd`` now (b"" if nothing)."""
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write_nowait(self, fd: int, data: bytes) -> None:
        """Write unless the pipe is full (a full self-pipe already wakes the loop)."""
        try:
            os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            pass

    def close(self, fd: int) -> None:
        os.close(fd)

    def wait_readable(self, fds: Sequence[int], timeout: float) -> list[int]:
        """The descriptors of ``fds`` readable within ``timeout`` seconds (select retries EINTR)."""
        try:
            readable, _, _ = select.select(list(fds), [], [], max(0.0, timeout))
        except InterruptedError:  # pragma: no cover - PEP 475 retries; a handler may still interrupt
            return []
        return list(readable)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], inherit: Sequence[int]) -> int:
        """Start ``argv`` (a fresh program) with ``inherit`` open in it; its pid."""
        for fd in inherit:
            os.set_inheritable(fd, True)
        try:
            # setsigdef: the child starts with the default disposition of the signals the
            # master handles or ignores (Python ignores SIGPIPE; exec keeps ignored ones).
            return os.posix_spawn(argv[0], list(argv), dict(env), setsigdef=_CHILD_DEFAULT_SIGNALS)
        finally:
            for fd in inherit:
                os.set_inheritable(fd, False)

    def kill(self, pid: int, sig: int) -> bool:
        """Send ``sig`` to ``pid``; False if it is gone already (not reaped yet is still there)."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> list[tuple[int, int]]:
        """(pid, code) of every exited child, without waiting; code < 0: killed by signal -code."""
        done = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except OSError as exc:  # pragma: no cover - EINTR is retried by PEP 475
                if exc.errno == errno.EINTR:
                    continue
                raise
            if pid == 0:
                break
            done.append((pid, os.waitstatus_to_exitcode(status)))
        return done

    def new_heartbeat(self, now: float) -> HeartbeatSlot:
        return Heartbeat(now)

    def install_signals(self, signals: Sequence[int], handler: Callable[[int], None]) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            handler(signum)

        for sig in signals:
            signal.signal(sig, on_signal)

    def restore_signals(self, signals: Sequence[int]) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_DFL)


_CHILD_DEFAULT_SIGNALS = (
    signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGTTIN, signal.SIGTTOU,
    signal.SIGCHLD, signal.SIGPIPE, signal.SIGABRT, signal.SIGUSR1, signal.SIGUSR2,
)
