"""Groups on top of the C core's sets: membership, expiry and one-call fan-out.

A group is a C *set* named like the group (sets and queues are separate
namespaces in the core, so a group and a channel may share a name). Each
member row is the full channel name, with three facts stored beside it:

* a **deadline** (``group_add`` time + ``group_expiry``): re-adding
  refreshes it; the core drops the row lazily once it passes. Nothing ties
  it to the member's messages, so membership survives their expiry.
* a **route** (``queue_len``): a process-specific member ``name!x`` lives
  in queue ``name!``, so its row says "the queue is the first
  ``len("name!")`` bytes, the rest is the tag". Fan-out copies carry the
  tag frame of the core's record format (``_ringbuf/include/ringbuf.h``;
  the layer reads it, see :mod:`ipc_layer.layer`).
* a **capacity**: the member channel's capacity from the layer's config
  (default or first matching glob), computed here once per ``group_add``.
  The core checks each fan-out copy against it (and stores it on the
  queue as a send would), so a channel that is only ever reached through
  groups still gets its per-glob capacity.

``send_group`` is one C call (:meth:`_ringbuf.Segment.fanout`): every copy
is queued under one lock hold, full members are skipped (counted in the
statistics as refusals) and only the queues with sleepers are woken. The
members that share a queue (a process's ``name!x`` channels) get ONE
grouped record carrying all their tags, which the receiving process splits
(:mod:`ipc_layer.grouped`): a group of a hundred consumers in one process
costs one record, not a hundred.
"""

from __future__ import annotations

import logging

from _memo import remember
from _ringbuf import LockTimeout, QueueFull, RingBufError, Segment

from . import names
from ._errors import segment_error
from .capacity import ChannelCapacities
from .exceptions import ChannelFull

__all__ = ["GroupStore"]

logger = logging.getLogger(__name__)


class GroupStore:
    """The group operations of one layer over its segment.

    :param seg: the layer's attached segment.
    :param capacities: the layer's capacities (default plus globs).
    :param group_expiry_ns: membership lifetime after the last add.
    """

    __slots__ = ("_capacities", "_expiry_ns", "_group_bytes", "_seg")

    def __init__(self, seg: Segment, capacities: ChannelCapacities, group_expiry_ns: int) -> None:
        self._seg = seg
        self._capacities = capacities
        self._expiry_ns = group_expiry_ns
        # Group names looked up on the hot path (send_group) -> their bytes.
        self._group_bytes: dict[str, bytes] = {}

    def _group(self, group: object) -> bytes:
        try:
            return self._group_bytes[group]  # type: ignore[index]
        except (KeyError, TypeError):
            pass
        name = names.validate_group(group)
        return remember(self._group_bytes, name, name.encode("ascii"))

    def add(self, group: str, channel: str, now_ns: int) -> None:
        """Add ``channel`` to ``group`` (or refresh it) until ``now_ns`` + expiry."""
        set_name = self._group(group)
        names.validate_channel(channel)
        queue = names.non_local_name(channel)
        member = channel.encode("ascii")
        queue_len = len(queue) if queue != channel else None
        try:
            self._seg.set_add(set_name, member, now_ns + self._expiry_ns, queue_len,
                              self._capacities.get(channel))
        except RingBufError as exc:
            raise _membership_error(group, channel, exc) from exc

    def discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; absent is fine."""
        set_name = self._group(group)
        names.validate_channel(channel)
        try:
            self._seg.set_discard(set_name, channel.encode("ascii"))
        except RingBufError as exc:
            raise segment_error(f"group_discard({group!r}, {channel!r})", exc) from exc

    def channels(self, group: str) -> list[str]:
        """The live members of ``group`` (expired rows are dropped on the way)."""
        set_name = self._group(group)
        try:
            members = self._seg.set_members(set_name)
        except RingBufError as exc:
            raise segment_error(f"group_channels({group!r})", exc) from exc
        return [member.decode("ascii") for member in members]

    def fanout(self, group: str, payload: bytes, deadline_ns: int, default_capacity: int) -> tuple[int, int]:
        """Queue ``payload`` (tag frames added by the core) for every member.

        Returns ``(sent, skipped)``; never raises for full members.
        ``default_capacity`` only applies to members added without one
        (by another tool on the raw segment).
        """
        sent, skipped = self._seg.fanout(self._group(group), payload, deadline_ns, default_capacity,
                                         grouped=True)
        if skipped:
            logger.debug("send_group(%r): %d member(s) full, skipped; %d delivered", group, skipped, sent)
        return sent, skipped


def _membership_error(group: str, channel: str, exc: RingBufError) -> Exception:
    """A failed ``group_add``: a full name table is back-pressure, the rest is the segment's fault."""
    if isinstance(exc, QueueFull) and not isinstance(exc, LockTimeout):
        return ChannelFull(f"cannot add {channel!r} to group {group!r}: {exc}")
    return segment_error(f"group_add({group!r}, {channel!r})", exc)
