"""Grouped records: one ``send_group`` record carrying the messages of several channels of one queue.

A group's members that share a queue (the ``name!x`` channels of one
process, all in queue ``name!``) get ONE record from the core's grouped
fan-out, not one copy each. Its frame is the record format's grouped frame,
defined once in ``_ringbuf/include/ringbuf.h`` (first byte
:data:`_ringbuf.FRAME_GROUP_MARK`, a little-endian u16 count, then a
``[len][tag]`` per channel, then the payload). The receiving process splits
it: the first channel's message is returned at once, the others wait in the
process's local store (:mod:`ipc_layer.local_store`), keyed by (prefix,
queue) and shared by every layer instance of the prefix in the process, as
the queue itself is. Every receive on that queue looks there first: those
messages are older than anything still in the segment, so FIFO order per
channel is kept.

What this trades, knowingly:

* A held message lives in one process's memory: if the process dies it
  is lost, with the record it came from (delivery is at most once anyway).
* Another thread of the same process that is already blocked in the kernel
  on that queue is not woken for them; it gets them on its next receive.
  (A process channel has one reader in practice: the server's reader
  thread, or the Channels 4 adapter, which passes wake-ups on itself.)
* A held message expires ``expiry`` seconds after it was taken off shared
  memory (the local store's one expiry rule).
* The core's statistics count records: one grouped record is one message.
* Capacity counts records too: a process queue of capacity 100 can hold 100
  group sends to all of its channels, not 100 messages; the local store
  still bounds each channel to its queue's capacity (the store's one bound
  rule, for the sync layer and the Channels 4 adapter alike).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["split", "take_grouped"]

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


def take_grouped(
    queue: str, data: bytes, decode: Callable[[bytes], Message]
) -> tuple[tuple[str, Message], list[tuple[str, Message]]]:
    """Split a grouped record: the first ``(channel, message)``, and the others (each its own dict)."""
    channels, payload = split(queue, data)
    first = decode(payload)  # validates (and raises naming the problem) once
    rest = [(channel, decode(payload)) for channel in channels[1:]]
    return (channels[0], first), rest
