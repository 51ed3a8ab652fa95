"""``InMemoryChannelLayer``: the single-process reference implementation.

Same contract as the shared-memory layer, for server and worker unit tests
and as the executable definition of the semantics the conformance suite
checks. All state lives in this instance, guarded by one lock; instances
never share state, even within a process.

Theory of operation
-------------------
* Messages are encoded with the same :class:`~ipc_layer.serializer.Serializer`
  as the IPC layer, so validation errors, ``MessageTooLarge`` and the copy on
  send behave identically, and a test passing here is not relying on the
  message object being shared.
* Each queue is keyed by the *non-local* name (``name!x`` -> ``name!``) and
  holds ``(sent_at, full channel name, payload)`` in send order. The expiry
  is the same for every message, so expired records are always at the head
  and are purged there, lazily, whenever a queue is touched.
* Capacity counts unexpired records of the queue, checked and appended under
  the lock, so a channel never overshoots (asgi_ipc checked and appended
  under two lock acquisitions).
* ``receive`` over several channels takes the oldest head among them: no
  channel starves, and the choice is deterministic (no ``random``).
* ``receive(block=True)`` waits on a ``Condition`` notified by every send,
  bounded by ``blocking_timeout``; no polling.
* Group members carry a deadline (last ``group_add`` + ``group_expiry``),
  pruned lazily; a member's messages expiring does not remove it.
* ``clock`` (default ``time.monotonic``) stamps messages and memberships;
  tests pass a manual clock to test expiry without sleeping. Blocking waits
  always use real time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from . import names, options
from .base import BaseChannelLayer, Message, ReceiveResult
from .exceptions import ChannelFull
from .options import CapacityKey

__all__ = ["InMemoryChannelLayer"]

logger = logging.getLogger(__name__)

# (sent_at, full channel name, encoded message)
_Record = tuple[float, str, bytes]

# Counters of queues with nothing pending are dropped once this many queues
# have counters, so unique "name?xyz" channels cannot grow memory forever.
_STATS_SOFT_LIMIT = 10_000


class _Counters:
    __slots__ = ("full", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.full = 0


class InMemoryChannelLayer(BaseChannelLayer):
    """A thread-safe, single-process ASGI 1 channel layer.

    Takes :class:`~ipc_layer.base.BaseChannelLayer`'s options plus
    ``clock``, a zero-argument callable returning seconds (monotonic).
    """

    extensions = ("groups", "flush", "statistics", "twisted")
    #: The options this class takes, as declared in :mod:`ipc_layer.options`.
    option_kind: ClassVar[str] = "inmemory"

    def __init__(
        self,
        expiry: float = options.EXPIRY.default,
        group_expiry: float = options.GROUP_EXPIRY.default,
        capacity: int = options.CAPACITY.default,
        channel_capacity: Mapping[CapacityKey, int] | None = options.CHANNEL_CAPACITY.default,
        max_message_size: int = options.MAX_MESSAGE_SIZE.default,
        blocking_timeout: float = options.BLOCKING_TIMEOUT.default,
        clock: Callable[[], float] = options.CLOCK.default,
    ) -> None:
        # First statement: locals() holds exactly the parameters.
        config = options.validate("inmemory", locals(), owner=type(self).__name__)
        super().__init__(**config.subset("base"))
        self._clock = config[options.CLOCK]
        self._lock = threading.Lock()
        # Shares _lock: a waiter releases it while asleep, and a sender
        # notifies while holding it, so no wake-up is lost between a failed
        # pop and the wait.
        self._arrived = threading.Condition(self._lock)
        self._queues: dict[str, deque[_Record]] = {}
        self._groups: dict[str, dict[str, float]] = {}
        self._counters: dict[str, _Counters] = {}
        self._stats_limit = _STATS_SOFT_LIMIT
        self._sent = 0
        self._full = 0

    # -- core API ------------------------------------------------------------

    def send(self, channel: str, message: Message) -> None:
        names.validate_channel(channel)
        payload = self.serializer.encode(message, channel)
        queue = names.non_local_name(channel)
        capacity = self.capacities.get(queue)
        with self._lock:
            if not self._enqueue(queue, channel, payload, capacity, self._clock()):
                raise ChannelFull(
                    f"channel {channel!r} is full: {capacity} unexpired messages are waiting in {queue!r}"
                )
            self._arrived.notify_all()

    def receive(self, channels: Iterable[str], block: bool = False) -> ReceiveResult:
        wanted = names.validate_receive_channels(channels)
        deadline: float | None = None
        with self._lock:
            found = self._pop(wanted, self._clock())
            while found is None:
                if not block:
                    return None, None
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.blocking_timeout
                elif now >= deadline:
                    return None, None
                self._arrived.wait(deadline - now)
                found = self._pop(wanted, self._clock())
        channel, payload = found
        # Decoded outside the lock: it is the costly part and needs no state.
        return channel, self.serializer.decode(payload)

    def receive_twisted(self, channels: Iterable[str], reactor: Any = None) -> Any:
        """The ASGI 1 ``twisted`` extension: a Deferred firing with ``(channel, message)``
        or ``(None, None)`` after ``blocking_timeout``; a blocking receive in a reactor
        pool thread (:func:`ipc_layer.twisted_ext.receive_in_thread`), never a poll.
        """
        from .twisted_ext import receive_in_thread

        return receive_in_thread(self, channels, reactor)

    def new_channel(self, pattern: str) -> str:
        names.validate_new_channel_pattern(pattern)
        while True:
            name = pattern + names.random_suffix()
            with self._lock:
                if name not in self._queues:
                    return name

    # -- groups ----------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        names.validate_group(group)
        names.validate_channel(channel)
        with self._lock:
            self._groups.setdefault(group, {})[channel] = self._clock() + self.group_expiry

    def group_discard(self, group: str, channel: str) -> None:
        names.validate_group(group)
        names.validate_channel(channel)
        with self._lock:
            members = self._groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._groups[group]

    def group_channels(self, group: str) -> list[str]:
        names.validate_group(group)
        with self._lock:
            return list(self._live_members(group, self._clock()))

    def send_group(self, group: str, message: Message) -> None:
        names.validate_group(group)
        payload = self.serializer.encode(message, group, kind="group")
        delivered = False
        with self._lock:
            now = self._clock()
            for channel in self._live_members(group, now):
                queue = names.non_local_name(channel)
                if self._enqueue(queue, channel, payload, self.capacities.get(queue), now):
                    delivered = True
                else:
                    logger.debug("send_group(%r): skipped full channel %r", group, channel)
            if delivered:
                self._arrived.notify_all()

    # -- flush and statistics ----------------------------------------------

    def flush(self) -> None:
        with self._lock:
            self._queues.clear()
            self._groups.clear()
            self._counters.clear()
            self._stats_limit = _STATS_SOFT_LIMIT
            self._sent = 0
            self._full = 0

    def global_statistics(self) -> dict[str, int]:
        with self._lock:
            return {"messages_count": self._sent, "channel_full_count": self._full}

    def channel_statistics(self, channel: str) -> dict[str, int]:
        names.validate_channel(channel)
        queue_name = names.non_local_name(channel)
        with self._lock:
            now = self._clock()
            queue = self._purged(queue_name, now)
            counters = self._counters.get(queue_name)
            return {
                "messages_count": counters.sent if counters else 0,
                "messages_pending": len(queue) if queue else 0,
                "messages_max_age": int(now - queue[0][0]) if queue else 0,
                "channel_full_count": counters.full if counters else 0,
            }

    # -- internals (call with self._lock held) --------------------------------

    def _purged(self, queue_name: str, now: float) -> deque[_Record] | None:
        """The queue with expired heads dropped; None (and forgotten) if empty."""
        queue = self._queues.get(queue_name)
        if queue is None:
            return None
        oldest_alive = now - self.expiry
        while queue and queue[0][0] <= oldest_alive:
            queue.popleft()
        if not queue:
            del self._queues[queue_name]
            return None
        return queue

    def _enqueue(self, queue_name: str, channel: str, payload: bytes, capacity: int, now: float) -> bool:
        queue = self._purged(queue_name, now)
        counters = self._counters_for(queue_name)
        if queue is not None and len(queue) >= capacity:
            counters.full += 1
            self._full += 1
            return False
        if queue is None:
            queue = self._queues[queue_name] = deque()
        queue.append((now, channel, payload))
        counters.sent += 1
        self._sent += 1
        return True

    def _pop(self, wanted: list[str], now: float) -> tuple[str, bytes] | None:
        best: deque[_Record] | None = None
        best_name = ""
        for queue_name in wanted:
            queue = self._purged(queue_name, now)
            if queue is not None and (best is None or queue[0][0] < best[0][0]):
                best, best_name = queue, queue_name
        if best is None:
            return None
        _, channel, payload = best.popleft()
        if not best:
            del self._queues[best_name]
        return channel, payload

    def _live_members(self, group: str, now: float) -> list[str]:
        members = self._groups.get(group)
        if members is None:
            return []
        expired = [channel for channel, deadline in members.items() if deadline <= now]
        for channel in expired:
            del members[channel]
        if not members:
            del self._groups[group]
            return []
        return list(members)

    def _counters_for(self, queue_name: str) -> _Counters:
        counters = self._counters.get(queue_name)
        if counters is None:
            if len(self._counters) >= self._stats_limit:
                self._forget_idle_counters()
            counters = self._counters[queue_name] = _Counters()
        return counters

    def _forget_idle_counters(self) -> None:
        for queue_name in [name for name in self._counters if name not in self._queues]:
            del self._counters[queue_name]
        # If most queues are busy, raise the bar so the scan stays amortised O(1).
        self._stats_limit = max(_STATS_SOFT_LIMIT, 2 * len(self._counters))


options.document(InMemoryChannelLayer, "inmemory")
