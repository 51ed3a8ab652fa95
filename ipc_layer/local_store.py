"""The local store: messages this process took off shared memory and has not handed out yet.

Two things take messages off a queue before their receiver asks for them:

* the split of a *grouped record* (:mod:`ipc_layer.grouped`): one record
  carries the messages of several channels of one process queue; a
  receive returns the first and the others wait here;
* the Channels 4 adapter's routing (:mod:`ipc_layer.aio`): a receive on
  ``name!a`` takes records off the process queue ``name!`` until one is
  its own, and the others (``name!b``, ...) wait here for their receivers.

Both keep them in the one :data:`STORE` of the process, under these rules:

Owner
    One store per process, keyed by ``(prefix, queue)`` and, inside, by
    full channel name: every layer instance of a prefix in the process
    (sync or async) reads the same messages, as they read the same queue.
    Within a queue, messages keep the order they were taken in, per
    channel and across the queue (a receive on ``name!`` gets the oldest
    held message of any of its channels first); held messages are older
    than anything still in the segment, so every receive looks here first.
Expiry
    A held message expires ``expiry`` seconds (the taking layer's) after
    it was **taken off shared memory**, not after it was sent: the
    segment already dropped anything past its send deadline, and a
    process that holds a message for longer than ``expiry`` is not
    handing it out. Expired messages are dropped when met, and swept by
    the first put or take after the earliest held deadline passed (at
    most once every ``SWEEP_INTERVAL`` seconds), so the messages of
    channels nobody receives on any more are released.
Bound
    A channel holds at most ``limit`` messages here, the capacity of its
    process queue (``capacity`` or the matching ``channel_capacity`` glob,
    stated by the layer that puts them). A message beyond it is dropped,
    like a send to a full channel, and counted (:meth:`LocalStore.dropped`,
    DEBUG log).
Fork
    Cleared in a forked child (with a fresh lock): the parent took those
    messages and hands them out itself; a child doing it too would deliver
    them twice (delivery is at most once, never twice). The lock may have
    been held by a parent thread that does not exist in the child.
Loss
    A held message lives in one process's memory: if the process dies, it
    is lost (at most once delivery, as for the record it came from).

Thread-safe (one lock; no callback runs under it). The hot paths test
``bool(STORE)`` first, without the lock: an empty store costs one check.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = ["SWEEP_INTERVAL", "STORE", "LocalStore"]

logger = logging.getLogger(__name__)

Message = dict[str, Any]

#: Shortest time (seconds) between two sweeps of expired held messages.
SWEEP_INTERVAL = 0.05
_SWEEP_NS = int(SWEEP_INTERVAL * 1e9)

_NEVER = 1 << 63
_monotonic_ns = time.monotonic_ns


class _Held:
    """One held message; ``message`` is None once it was handed out (lazily unlinked)."""

    __slots__ = ("channel", "deadline", "message")

    def __init__(self, deadline: int, channel: str, message: Message) -> None:
        self.deadline = deadline
        self.channel = channel
        self.message: Message | None = message


class _Queue:
    """The held messages of one (prefix, queue): in take order, and per channel."""

    __slots__ = ("by_channel", "live", "order")

    def __init__(self) -> None:
        # Every held message in take order (handed-out ones are skipped and
        # compacted away), and the same objects per channel (live only).
        self.order: deque[_Held] = deque()
        self.by_channel: dict[str, deque[_Held]] = {}
        self.live = 0

    def pop_channel(self, channel: str, now: int) -> Message | None:
        held = self.by_channel.get(channel)
        while held:
            item = held.popleft()
            message = item.message
            item.message = None
            self.live -= 1
            if item.deadline > now:
                if not held:
                    del self.by_channel[channel]
                self._compact()
                return message
        if held is not None:
            del self.by_channel[channel]
        return None

    def pop_any(self, now: int) -> tuple[str, Message] | None:
        order = self.order
        while order:
            item = order.popleft()
            message = item.message
            if message is None:
                continue  # handed out through its channel already
            # The oldest live message of any channel is its channel's oldest.
            channel = item.channel
            held = self.by_channel[channel]
            held.popleft()
            if not held:
                del self.by_channel[channel]
            item.message = None
            self.live -= 1
            if item.deadline > now:
                return channel, message
        return None

    def _compact(self) -> None:
        # Channel takes leave handed-out items in ``order``: rebuild it when
        # they outnumber the live ones, so it never grows without bound.
        if len(self.order) > 2 * self.live + 64:
            self.order = deque(item for item in self.order if item.message is not None)

    def sweep(self, now: int) -> int:
        """Drop expired messages; the earliest deadline left (``_NEVER`` if none)."""
        earliest = _NEVER
        for channel in list(self.by_channel):
            held = self.by_channel[channel]
            kept: deque[_Held] = deque()
            for item in held:
                if item.deadline > now:
                    kept.append(item)
                    earliest = min(earliest, item.deadline)
                else:
                    item.message = None
                    self.live -= 1
            if kept:
                self.by_channel[channel] = kept
            else:
                del self.by_channel[channel]
        self.order = deque(item for item in self.order if item.message is not None)
        return earliest


class LocalStore:
    """Messages taken off shared memory and held by this process; see the module docstring."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # The fork rule (module docstring): a child starts empty, with its own lock.
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._dropped: dict[tuple[str, str], int] = {}
        # When the earliest held message expires (no sweep before: nothing to drop).
        self._next_sweep = _NEVER

    def __bool__(self) -> bool:
        """Anything held at all (read without the lock: the hot paths' first test)."""
        return bool(self._queues)

    # -- putting ------------------------------------------------------------------

    def put(self, prefix: str, queue: str, channel: str, message: Message, deadline_ns: int,
            limit: int) -> bool:
        """Hold ``message`` for ``channel`` until ``deadline_ns``; False if the channel was full."""
        with self._lock:
            return self._put(prefix, queue, channel, message, deadline_ns, limit)

    def put_many(self, prefix: str, queue: str, items: Iterable[tuple[str, Message]],
                 deadline_ns: int, limit: int) -> None:
        """:meth:`put` for several messages of one queue, in order, under one lock hold."""
        with self._lock:
            for channel, message in items:
                self._put(prefix, queue, channel, message, deadline_ns, limit)

    def _put(self, prefix: str, queue: str, channel: str, message: Message, deadline_ns: int,
             limit: int) -> bool:
        key = (prefix, queue)
        held = self._queues.get(key)
        if held is None:
            held = self._queues[key] = _Queue()
        mine = held.by_channel.get(channel)
        if mine is None:
            mine = held.by_channel[channel] = deque()
        elif limit and len(mine) >= limit:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            logger.debug("channel %r: local buffer full (%d messages held in this process, its "
                         "queue's capacity), message dropped", channel, limit)
            return False
        item = _Held(deadline_ns, channel, message)
        mine.append(item)
        held.order.append(item)
        held.live += 1
        if deadline_ns < self._next_sweep:
            self._next_sweep = deadline_ns
        return True

    # -- taking -------------------------------------------------------------------

    def take(self, prefix: str, queue: str, channel: str) -> Message | None:
        """The oldest live held message of ``channel`` (in ``queue``), or None."""
        key = (prefix, queue)
        with self._lock:
            now = _monotonic_ns()
            if now >= self._next_sweep:
                self._sweep(now)
            held = self._queues.get(key)
            if held is None:
                return None
            message = held.pop_channel(channel, now)
            if not held.live:
                del self._queues[key]
            return message

    def take_any(self, prefix: str, queues: Iterable[str]) -> tuple[str, Message] | None:
        """The oldest live held message of the first of ``queues`` that has one."""
        now = _monotonic_ns()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            for queue in queues:
                key = (prefix, queue)
                held = self._queues.get(key)
                if held is None:
                    continue
                got = held.pop_any(now)
                if not held.live:
                    del self._queues[key]
                if got is not None:
                    return got
        return None

    # -- looking ------------------------------------------------------------------

    def count(self, prefix: str, queue: str) -> int:
        """Messages held for ``queue`` (expired ones not yet swept included)."""
        with self._lock:
            held = self._queues.get((prefix, queue))
            return 0 if held is None else held.live

    def has(self, prefix: str, queue: str, channel: str) -> bool:
        """Whether anything is held for ``channel`` (expired ones not yet swept included)."""
        with self._lock:
            held = self._queues.get((prefix, queue))
            return held is not None and channel in held.by_channel

    def channels(self, prefix: str, queue: str) -> list[str]:
        """The channels of ``queue`` that have held messages."""
        with self._lock:
            held = self._queues.get((prefix, queue))
            return [] if held is None else list(held.by_channel)

    def dropped(self, prefix: str, queue: str) -> int:
        """Messages for ``queue``'s channels dropped because their channel was full here."""
        with self._lock:
            return self._dropped.get((prefix, queue), 0)

    # -- maintenance --------------------------------------------------------------

    def clear(self, prefix: str) -> None:
        """Drop everything held for ``prefix`` (the layer's flush)."""
        with self._lock:
            for key in [key for key in self._queues if key[0] == prefix]:
                del self._queues[key]
            if not self._queues:
                self._next_sweep = _NEVER

    def sweep(self) -> None:
        """Drop expired held messages now (also done on the way, at most every SWEEP_INTERVAL)."""
        with self._lock:
            self._sweep(_monotonic_ns())

    def _sweep(self, now: int) -> None:
        earliest = _NEVER
        for key in list(self._queues):
            held = self._queues[key]
            earliest = min(earliest, held.sweep(now))
            if not held.live:
                del self._queues[key]
        self._next_sweep = max(earliest, now + _SWEEP_NS) if earliest != _NEVER else _NEVER


#: The process's store (one per process, cleared in a forked child).
STORE = LocalStore()
