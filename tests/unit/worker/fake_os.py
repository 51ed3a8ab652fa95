"""A fake :class:`worker.osapi.OSAPI` for the arbiter's unit tests (supervisor's DummyOptions pattern).

No process, signal or clock is real: ``spawn`` hands out pids and records
the argv, ``kill`` records the signal, exits and notices are scripted by
the test (:meth:`FakeOS.exit`, :meth:`FakeOS.notice`), and time moves only
when the arbiter sleeps with nothing to wake it (by the time it asked for),
or when the test says so (:meth:`FakeOS.advance`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class FakeHeartbeat:
    fd: int
    value: float
    closed: bool = False

    def set(self, stamp: float) -> None:
        self.value = stamp

    def stamp(self, now: float) -> float:
        assert not self.closed, "read after close"
        return self.value

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True


@dataclass
class Spawned:
    pid: int
    argv: list[str]
    env: dict[str, str]
    inherit: tuple[int, ...]
    heartbeat: FakeHeartbeat


@dataclass
class FakeOS:
    now: float = 1000.0
    pid: int = 1
    spawned: list[Spawned] = field(default_factory=list)
    kills: list[tuple[int, int]] = field(default_factory=list)
    #: Every call of interest in order: ("spawn", pid) / ("kill", pid, sig) / ("reaped", pid).
    events: list[tuple[object, ...]] = field(default_factory=list)
    alive: set[int] = field(default_factory=set)
    exits: list[tuple[int, int]] = field(default_factory=list)
    buffers: dict[int, bytearray] = field(default_factory=dict)
    writers: dict[int, int] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)
    handler: Callable[[int], None] | None = None
    installed: tuple[int, ...] = ()
    sleeps: list[float] = field(default_factory=list)
    spawn_error: BaseException | None = None
    _fds: itertools.count[int] = field(default_factory=lambda: itertools.count(10))
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    # -- the OSAPI surface ----------------------------------------------------------------------

    def monotonic(self) -> float:
        return self.now

    def getpid(self) -> int:
        return self.pid

    def pipe(self) -> tuple[int, int]:
        read_end, write_end = next(self._fds), next(self._fds)
        self.buffers[read_end] = bytearray()
        self.writers[write_end] = read_end
        return read_end, write_end

    def read_available(self, fd: int) -> bytes:
        data = bytes(self.buffers[fd])
        self.buffers[fd].clear()
        return data

    def write_nowait(self, fd: int, data: bytes) -> None:
        self.buffers[self.writers[fd]] += data

    def close(self, fd: int) -> None:
        assert fd not in self.closed
        self.closed.add(fd)

    def wait_readable(self, fds: Sequence[int], timeout: float) -> list[int]:
        self.sleeps.append(timeout)
        ready = [fd for fd in fds if self.buffers.get(fd)]
        if ready or self.exits:
            return ready
        self.now += timeout
        return []

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], inherit: Sequence[int]) -> int:
        if self.spawn_error is not None:
            raise self.spawn_error
        pid = next(self._pids)
        heartbeat = self._pending_heartbeat
        assert heartbeat.fd in inherit
        self.spawned.append(Spawned(pid, list(argv), dict(env), tuple(inherit), heartbeat))
        self.alive.add(pid)
        self.events.append(("spawn", pid))
        return pid

    def kill(self, pid: int, sig: int) -> bool:
        self.kills.append((pid, sig))
        self.events.append(("kill", pid, sig))
        return pid in self.alive

    def reap(self) -> list[tuple[int, int]]:
        done, self.exits = self.exits, []
        for pid, _ in done:
            self.events.append(("reaped", pid))
        return done

    def new_heartbeat(self, now: float) -> FakeHeartbeat:
        self._pending_heartbeat = FakeHeartbeat(next(self._fds), now)
        return self._pending_heartbeat

    def install_signals(self, signals: Sequence[int], handler: Callable[[int], None]) -> None:
        self.installed = tuple(signals)
        self.handler = handler

    def restore_signals(self, signals: Sequence[int]) -> None:
        self.installed = ()

    # -- what the test scripts ---------------------------------------------------------------------

    def exit(self, pid: int, code: int) -> None:
        """Worker ``pid`` exits with ``code`` (< 0: killed by signal -code)."""
        assert pid in self.alive, f"pid {pid} is not running"
        self.alive.discard(pid)
        self.exits.append((pid, code))

    def notice(self, notify_w: int, pid: int, event: str, text: str = "") -> None:
        line = f"{pid} {event} {text}".rstrip() + "\n"
        self.write_nowait(notify_w, line.encode())

    def signal(self, signum: int) -> None:
        assert self.handler is not None, "no handler installed"
        self.handler(signum)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def pids(self) -> list[int]:
        return [s.pid for s in self.spawned]

    def kills_of(self, sig: int) -> list[int]:
        return [pid for pid, s in self.kills if s == sig]

    def heartbeat_of(self, pid: int) -> FakeHeartbeat:
        return next(s.heartbeat for s in self.spawned if s.pid == pid)
