"""Grouped records: one ``send_group`` record carrying the messages of several channels of one queue.

A group's members that share a queue (the ``name!x`` channels of one
process, all in queue ``name!``) get ONE record from the core's grouped
fan-out, not one copy each::

    b"\\x7f" + k.to_bytes(2, "little") + (bytes([len(tag)]) + tag) * k + payload

(``0x7f`` is never a single frame's tag length: names are at most 100
characters). The receiving process splits it: the first channel's message
is returned at once, the others wait in a **process-wide pending store**,
keyed by (prefix, queue) and shared by every layer instance of the prefix
in the process, as the queue itself is. Every receive on that queue looks
there first: those messages are older than anything still in the segment,
so FIFO order per channel is kept.

What this trades, knowingly:

* A pending message lives in one process's memory: if the process dies it
  is lost, with the record it came from (delivery is at most once anyway).
* Another thread of the same process that is already blocked in the kernel
  on that queue is not woken for them; it gets them on its next receive.
  (A process channel has one reader in practice: the server's reader
  thread, or the Channels 4 adapter, which passes wake-ups on itself.)
* A pending message expires ``expiry`` seconds after it was taken.
* The core's statistics count records: one grouped record is one message.
* Capacity counts records too: a process queue of capacity 100 can hold 100
  group sends to all of its channels, not 100 messages (the Channels 4
  adapter's per-channel buffers still bound each channel).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any, Callable

__all__ = ["GROUP_MARK", "PENDING", "PendingStore", "split"]

#: First byte of a grouped record (a single frame's tag length is < 0x7f).
GROUP_MARK = 0x7F

Message = dict[str, Any]


def split(queue: str, data: bytes) -> tuple[list[str], bytes]:
    """The channel names a grouped record is for (``queue`` + each tag), and its payload."""
    count = offset = 0
    channels = []
    try:
        count = data[1] | data[2] << 8
        offset = 3
        for _ in range(count):
            length = data[offset]
            tag = data[offset + 1 : offset + 1 + length]
            if len(tag) != length:
                raise IndexError("tag runs past the record")
            channels.append(queue + tag.decode("ascii"))
            offset += 1 + length
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed grouped record on queue {queue!r} ({len(data)} bytes, "
                         f"{count} tags): {exc}") from None
    if count < 2 or offset >= len(data):
        raise ValueError(f"malformed grouped record on queue {queue!r} ({len(data)} bytes, {count} tags)")
    return channels, data[offset:]


class PendingStore:
    """Messages split off grouped records and not returned yet, per (prefix, queue), in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], deque[tuple[int, str, Message]]] = {}
        os.register_at_fork(after_in_child=self._after_fork)

    def __bool__(self) -> bool:
        """Anything pending at all (the receive hot path tests this first, without the lock)."""
        return bool(self._queues)

    def _after_fork(self) -> None:
        # The parent took those messages: its copy of them is its own to hand out.
        self._lock = threading.Lock()
        self._queues = {}

    def put(self, prefix: str, queue: str, items: list[tuple[str, Message]], deadline_ns: int) -> None:
        with self._lock:
            pending = self._queues.get((prefix, queue))
            if pending is None:
                pending = self._queues[(prefix, queue)] = deque()
            pending.extend((deadline_ns, channel, message) for channel, message in items)

    def take(self, prefix: str, queues: tuple[str, ...]) -> tuple[str, Message] | None:
        """The oldest live pending message of the first of ``queues`` that has one."""
        now = time.monotonic_ns()
        with self._lock:
            for queue in queues:
                key = (prefix, queue)
                pending = self._queues.get(key)
                while pending:
                    deadline, channel, message = pending.popleft()
                    if deadline > now:
                        if not pending:
                            del self._queues[key]
                        return channel, message
                if pending is not None:
                    del self._queues[key]
        return None

    def count(self, prefix: str, queue: str) -> int:
        with self._lock:
            return len(self._queues.get((prefix, queue), ()))

    def clear(self, prefix: str) -> None:
        with self._lock:
            for key in [key for key in self._queues if key[0] == prefix]:
                del self._queues[key]


#: The process's store (one per process, reset in a forked child).
PENDING = PendingStore()


def take_grouped(
    prefix: str, queue: str, data: bytes, decode: Callable[[bytes], Message], deadline_ns: int
) -> tuple[str, Message]:
    """Split a grouped record: the first channel's message now, the others into :data:`PENDING`."""
    channels, payload = split(queue, data)
    first = decode(payload)  # validates (and raises naming the problem) once
    rest = [(channel, decode(payload)) for channel in channels[1:]]  # each its own dict
    PENDING.put(prefix, queue, rest, deadline_ns)
    return channels[0], first
