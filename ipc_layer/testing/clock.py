"""A manual clock for testing expiry without sleeping."""

from __future__ import annotations

import threading

__all__ = ["ManualClock"]


class ManualClock:
    """A monotonic clock that only moves when :meth:`advance` is called.

    Pass an instance as ``clock=`` to a layer that accepts one (such as
    ``InMemoryChannelLayer``); calling it returns the current time.
    """

    def __init__(self, start: float = 1000.0) -> None:
        # Not 0: code under test may treat 0 as "unset".
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back: advance({seconds!r})")
        with self._lock:
            self._now += seconds
