"""Delayed messages: run a message on a channel after N milliseconds (the ASGI 1 ``asgi.delay`` contract).

::

    Channel("asgi.delay").send({"channel": "reminders", "content": {"id": 3}, "delay": 10_000})
    # or
    send_delayed("reminders", {"id": 3}, delay_ms=10_000)

Theory of operation
-------------------
Channels 1.x stored each delayed message as a database row and had a ``rundelay`` process
poll the table about once a second (so delays were late by up to a second, and a database
was needed). Here the workers hold them, with no database and no poll:

* ``asgi.delay`` is one of the default routes of every worker (``worker.routing``); its
  consumer, :func:`delay_consumer`, checks the message (``channel`` a valid channel name,
  ``content`` a dict, ``delay`` milliseconds, an int or float in ``0 .. MAX_DELAY_MS``; a
  bad one is logged naming the key and dropped) and hands it to the process's
  :class:`DelayScheduler`;
* the scheduler is a heap ordered by due time and one daemon thread that sleeps on a
  condition variable until the earliest due time (or a new earlier entry), then sends the
  content to its channel, retrying ``ChannelFull`` for up to ``retry_time`` seconds before it
  logs and drops it. Its lateness is the thread's wake-up latency (well under a
  millisecond on an idle host), not a polling period;
* when the worker process exits normally (TERM, a HUP reload, ``--max-requests``), the
  entries not yet due are sent back to ``asgi.delay`` with the time they still have to
  wait, so another worker (a reloaded one) takes them over; a worker killed with SIGKILL
  loses the ones it held (at most once, as the layer itself);
* a fork empties the child's scheduler: the thread does not survive it, and the parent
  still owns the entries.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ipc_layer import ChannelFull, names

from .channel import Channel

__all__ = ["DELAY_CHANNEL", "MAX_DELAY_MS", "DelayScheduler", "delay_consumer", "scheduler", "send_delayed"]

logger = logging.getLogger(__name__)

#: The channel of the ASGI 1 delay protocol.
DELAY_CHANNEL = "asgi.delay"
#: Longest delay accepted: one day (a message held longer belongs in a database).
MAX_DELAY_MS = 86_400_000

# (due monotonic time, sequence, layer, channel, content)
_Entry = tuple[float, int, Any, str, dict[str, Any]]


def send_delayed(channel: str, content: dict[str, Any], delay_ms: float, *, channel_layer: Any = None,
                 immediately: bool = False) -> None:
    """Have ``content`` sent to ``channel`` in ``delay_ms`` milliseconds (deferred inside a consumer)."""
    problem = _check(channel, content, delay_ms)
    if problem is not None:
        raise ValueError(f"send_delayed: {problem}")
    Channel(DELAY_CHANNEL, channel_layer=channel_layer).send(
        {"channel": channel, "content": content, "delay": delay_ms}, immediately=immediately
    )


def _check(channel: Any, content: Any, delay: Any) -> str | None:
    """What is wrong with a delay request, or None."""
    try:
        names.validate_channel(channel)
    except TypeError as exc:
        return f"'channel': {exc}"
    if not isinstance(content, dict):
        return f"'content' must be a dict, got {type(content).__name__}"
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_DELAY_MS:
        return f"'delay' must be milliseconds from 0 to {MAX_DELAY_MS}, got {delay!r}"
    return None


class DelayScheduler:
    """The process's held messages and the thread that sends each when it is due."""

    #: Seconds a due message keeps retrying ChannelFull before it is dropped.
    retry_time = 2.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, layer: Any, channel: str, content: dict[str, Any], delay_ms: float) -> None:
        """Send ``content`` to ``channel`` on ``layer`` in ``delay_ms`` milliseconds."""
        due = self.clock() + delay_ms / 1000.0
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), layer, channel, content))
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="worker-delay", daemon=True)
                self._thread.start()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        wait = self._heap[0][0] - self.clock()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                _, _, layer, channel, content = heapq.heappop(self._heap)
            self._deliver(layer, channel, content)

    def _deliver(self, layer: Any, channel: str, content: dict[str, Any]) -> None:
        full = getattr(layer, "ChannelFull", ChannelFull)
        deadline = self.clock() + self.retry_time
        pause = 0.005
        while True:
            try:
                layer.send(channel, content)
                return
            except full:
                if self.clock() >= deadline:
                    logger.error("dropped a delayed message for %r: the channel stayed full for %g s",
                                 channel, self.retry_time)
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
            except Exception:
                logger.exception("dropped a delayed message for %r: the layer refused it", channel)
                return

    def hand_back(self) -> int:
        """Stop the thread; send what is not due yet back to ``asgi.delay`` (for another worker)."""
        with self._cond:
            self._closed = True
            entries, self._heap = self._heap, []
            self._cond.notify_all()
        now = self.clock()
        handed = 0
        for due, _, layer, channel, content in sorted(entries):
            remaining = max(0.0, (due - now) * 1000.0)
            try:
                layer.send(DELAY_CHANNEL, {"channel": channel, "content": content, "delay": remaining})
                handed += 1
            except Exception:
                logger.exception("lost a delayed message for %r while the worker stopped", channel)
        if handed:
            logger.info("handed %d delayed message(s) back to %s before exiting", handed, DELAY_CHANNEL)
        return handed

    def _forget_after_fork(self) -> None:
        self._heap = []
        self._cond = threading.Condition()
        self._thread = None
        self._closed = False


#: The process's scheduler.
scheduler = DelayScheduler()
os.register_at_fork(after_in_child=scheduler._forget_after_fork)
atexit.register(scheduler.hand_back)


def delay_consumer(message: Any, **kwargs: Any) -> None:
    """The ``asgi.delay`` consumer: hold ``content`` for ``delay`` ms, then send it to ``channel``."""
    channel, content, delay = message.get("channel"), message.get("content"), message.get("delay")
    problem = _check(channel, content, delay)
    if problem is not None:
        logger.warning("dropped an asgi.delay message: %s", problem)
        return
    scheduler.schedule(message.channel_layer, channel, content, delay)
