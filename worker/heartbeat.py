"""The per-worker liveness token: a progress timestamp the child writes and the master reads.

Theory of operation
-------------------
The master makes one anonymous shared page per worker (``memfd_create``, a
deleted temporary file where there is none) and passes its descriptor to
the child it spawns. The child maps it and writes a **progress stamp**:
a ``CLOCK_MONOTONIC`` time (``time.monotonic()``, one clock for every
process of the machine on Linux) up to which it is known to be making
progress. The master reads it: ``now - stamp > --timeout`` means the
worker is hung, and it gets SIGABRT, then SIGKILL (:mod:`worker.arbiter`).

Why a stamp in shared memory rather than gunicorn's ``fchmod``/``st_ctime``
trick: writing it is a store into a mapped page (no system call per
message), and it is monotonic time (a wall-clock step cannot make every
worker look dead at once, as it can with ``ctime``).

What the stamp means (:class:`Progress`, in the child): each thread of
the worker that takes messages records the time of its last *progress
point*: entering the layer's ``receive`` and getting a result from it
(a message, or ``(None, None)`` after the layer's ``blocking_timeout``).
The stamp is the *oldest* of those times. So:

- an idle worker, blocked in ``receive(block=True)``, passes a progress
  point every ``blocking_timeout`` (layer option, 5 s by default), which
  must be shorter than ``--timeout``: the stamp stays fresh without any
  polling of its own and without a heartbeat thread;
- a consumer hung in a view holds its thread's time at the moment it
  took the message: the stamp stops there, however busy the other threads
  are, and the master kills the worker ``--timeout`` seconds after the
  hung message started. With ``--threads T`` a hung thread is detected
  this way too: one stuck thread stops the whole worker's stamp, and the
  worker (all its threads) is replaced, as gunicorn's gthread workers are;
- a thread stuck inside ``receive`` itself (a dead Redis connection past
  its socket timeout) is caught the same way: entering ``receive`` is a
  progress point, leaving it is the next one.

The page holds the stamp twice (two aligned doubles written one after the
other); a reader that sees them differ caught a write half-way and counts
the worker as alive (it was writing), so a torn read never kills anyone.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable

__all__ = ["Heartbeat", "HeartbeatWriter", "Progress"]

_LAYOUT = struct.Struct("=dd")
SIZE = _LAYOUT.size


def _anonymous_file() -> int:
    """A descriptor of a fresh, unnamed, close-on-exec shared file of SIZE bytes."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("ipc-worker-heartbeat", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, SIZE)
    return fd


class Heartbeat:
    """The master's side: owns the shared page; :attr:`fd` goes to the child."""

    def __init__(self, now: float | None = None) -> None:
        self.fd = _anonymous_file()
        self._map = mmap.mmap(self.fd, SIZE)
        self.set(time.monotonic() if now is None else now)

    def set(self, stamp: float) -> None:
        """Stamp it (at spawn: a worker is given ``--timeout`` to boot, from now)."""
        _LAYOUT.pack_into(self._map, 0, stamp, stamp)

    def stamp(self, now: float) -> float:
        """The child's last progress stamp (``now`` when a write is half-way: it is alive)."""
        first, second = _LAYOUT.unpack_from(self._map, 0)
        return float(first) if first == second else now

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


class HeartbeatWriter:
    """The child's side: maps the descriptor it inherited and writes the stamp."""

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, SIZE)
        os.close(fd)  # the mapping keeps the page; the descriptor is not needed any more

    def write(self, stamp: float) -> None:
        _LAYOUT.pack_into(self._map, 0, stamp, stamp)

    def close(self) -> None:
        self._map.close()


class Progress:
    """The stamp of a worker with one or more threads: the oldest of their last progress points.

    Each thread calls :meth:`point` when it enters ``receive`` and when
    ``receive`` returns; :meth:`leave` when it stops for good (it no
    longer holds the stamp back).
    """

    def __init__(self, write: Callable[[float], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self._clock = clock
        self._lock = threading.Lock()
        self._points: dict[int, float] = {}
        self._written: float | None = None

    def point(self) -> None:
        now = self._clock()
        with self._lock:
            self._points[threading.get_ident()] = now
            self._publish(now)

    def leave(self) -> None:
        with self._lock:
            self._points.pop(threading.get_ident(), None)
            self._publish(self._clock())

    def stamp(self) -> float | None:
        """What was last written (for tests and logs)."""
        return self._written

    def _publish(self, now: float) -> None:
        stamp = min(self._points.values(), default=now)
        if stamp != self._written:
            self._written = stamp
            self._write(stamp)
