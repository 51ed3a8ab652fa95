"""``IPCChannelLayer``: the ASGI 1 channel layer in POSIX shared memory.

One :class:`_ringbuf.Segment` per ``prefix`` holds every queue, group and
counter; every process (and every instance) with the same prefix shares
them. The C core knows bytes; this module maps the ASGI 1 contract onto it.

Wire format
-----------
A channel's messages live in the queue named like its *non-local* name
(``"name!x"`` -> ``"name!"``, anything else as is). Each record is the
msgpack payload (:mod:`ipc_layer.serializer`) behind a tag frame, in the
core's *record format*, defined once in ``_ringbuf/include/ringbuf.h``
(versioned there: a segment written with another format is refused with
:class:`LayoutMismatch`) and read here through the binding's ``FRAME_*``
constants:

* ordinary, ``?`` and ``name!`` channels: no frame (the payload's first
  byte, a msgpack map's, is >= ``FRAME_NONE_MIN``; a payload that would
  break that rule is refused at send);
* process-specific ``name!suffix``: a single frame ``[len][suffix]``,
  written by the core (:meth:`_ringbuf.Segment.send_tagged`);
* group copies: the same frames, written by the core's fan-out
  (:mod:`ipc_layer.groups`); the members of one process queue share one
  *grouped record*, which a receive splits (:mod:`ipc_layer.grouped`: the
  first message is returned, the others wait in this process's local
  store, :mod:`ipc_layer.local_store`, for the next receives on that
  queue).

So a receive on ``"name!"`` gives back the full name ``"name!" + suffix``
without a reserved message key (asgi_ipc's ``__asgi_channel__``), and the
capacity of ``"name!x"`` is that of queue ``"name!"``.

Capacity and back-pressure
--------------------------
Every send states the channel's capacity (default or first matching glob,
looked up once per channel name and cached) and the core checks it
atomically with the enqueue: ``ChannelFull`` exactly when the queue holds
``capacity`` unexpired records. A segment out of record memory or name
rows is also ``ChannelFull`` (one kind of back-pressure for the caller).
Group members carry their own capacity (see :mod:`ipc_layer.groups`).

Expiry
------
Records carry an absolute CLOCK_MONOTONIC deadline (send time +
``expiry``); the core never delivers one past it and sweeps them when a
queue looks full or memory runs short. ``time.monotonic_ns()`` is the same
clock as the core's ``now_ns()`` on Linux.

Statistics
----------
From the core's counters, reset by :meth:`flush`:

* ``global_statistics()``: ``messages_count`` = records queued (each group
  copy counts), ``channel_full_count`` = refusals (full sends, full group
  members skipped, memory exhausted).
* ``channel_statistics(ch)``, for the queue ``ch`` sends into:
  ``messages_count`` and ``channel_full_count`` as above for that queue,
  ``messages_pending`` = records waiting (expired ones at the head are
  swept first), ``messages_max_age`` = whole seconds since the oldest
  waiting record was sent. A queue's counters live in its table row, which
  the core recycles once the queue is empty and the name table is full, so
  per-channel counters of idle channels may restart from zero.

Blocking
--------
``receive(block=True)`` sleeps on the queues' futex words in the core (no
polling; a send wakes one sleeper of that queue), up to
``blocking_timeout`` seconds, after spinning ``spin_us`` microseconds if
asked to. The GIL is released while blocked.

Processes
---------
A layer made before ``fork()`` keeps working in the child (the mapping is
shared and nothing in the handle is per-process). Instances are
thread-safe: the core serialises under its robust mutex and the binding
keeps per-thread buffers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from threading import get_ident as _get_ident
from typing import Any, ClassVar

import msgpack

import _ringbuf
from _memo import remember
from _ringbuf import QueueFull, RecordTooLarge, RingBufError, Segment

from . import names, options
from ._errors import segment_error
from .base import BaseChannelLayer, Message, ReceiveResult
from .exceptions import ChannelFull, LayoutMismatch, MessageTooLarge, SegmentError, SegmentNotTrusted
from .grouped import take_grouped
from .groups import GroupStore
from .local_store import STORE
from .options import CapacityKey

__all__ = ["DEFAULT_PREFIX", "DEFAULT_SEGMENT_SIZE", "IPCChannelLayer", "validate_prefix"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = options.PREFIX.default
#: Bytes of shared memory per prefix: room for ~240k small messages.
DEFAULT_SEGMENT_SIZE = options.SEGMENT_SIZE.default
#: Bytes of max_record reserved for a record's frame (the core's record
#: format): segments are made with max_record = max_message_size + this.
FRAME_MAX = _ringbuf.FRAME_RESERVE

_NS = 1_000_000_000

# The record format's first-byte rules (ringbuf.h says why): _GROUP_MARK
# starts a grouped record, a byte from _NONE_MIN on means no frame (the
# record is the payload), anything below the mark is a single frame's tag
# length.
_GROUP_MARK = _ringbuf.FRAME_GROUP_MARK
_NONE_MIN = _ringbuf.FRAME_NONE_MIN
_monotonic_ns = time.monotonic_ns
_unpackb = msgpack.unpackb


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can name a segment, else raise naming it."""
    return options.PREFIX.validate(prefix)


class IPCChannelLayer(BaseChannelLayer):
    """ASGI 1 channel layer over one shared-memory segment per ``prefix``.

    ``prefix`` names the segment (``/dev/shm/rbuf.<prefix>``); every layer
    with the same prefix on this host shares all state. The sizing options
    (``segment_size``, ``mode``, ``slots``, ``waiters``) apply only when the
    segment does not exist yet; an existing segment is attached as it is.

    Whose segment it attaches to: ``/dev/shm`` is world-writable, and
    whoever creates the segment first reads all its traffic, so a segment
    (or watch FIFO) is used only if its owner is this process's effective
    uid or one of ``trusted_uids`` and its mode grants nothing beyond
    ``mode`` (:class:`~ipc_layer.exceptions.SegmentNotTrusted` otherwise).
    A process stopped while holding the segment lock makes operations raise
    :class:`~ipc_layer.exceptions.LockTimeout` after ``lock_timeout``.
    """

    extensions = ("groups", "flush", "statistics", "twisted", "twisted_stream")
    #: The options this class takes, as declared in :mod:`ipc_layer.options`.
    option_kind: ClassVar[str] = "ipc"

    def __init__(
        self,
        prefix: str = options.PREFIX.default,
        expiry: float = options.EXPIRY.default,
        group_expiry: float = options.GROUP_EXPIRY.default,
        capacity: int = options.CAPACITY.default,
        channel_capacity: Mapping[CapacityKey, int] | None = options.CHANNEL_CAPACITY.default,
        max_message_size: int = options.MAX_MESSAGE_SIZE.default,
        blocking_timeout: float = options.BLOCKING_TIMEOUT.default,
        spin_us: int = options.SPIN_US.default,
        segment_size: int = options.SEGMENT_SIZE.default,
        mode: int = options.MODE.default,
        slots: int = options.SLOTS.default,
        waiters: int = options.WAITERS.default,
        trusted_uids: Sequence[int] = options.TRUSTED_UIDS.default,
        lock_timeout: float = options.LOCK_TIMEOUT.default,
    ) -> None:
        # First statement: locals() holds exactly the parameters.
        config = options.validate("ipc", locals(), owner=type(self).__name__)
        super().__init__(**config.subset("base"))
        self.prefix = config[options.PREFIX]
        self.spin_us = config[options.SPIN_US]
        self.mode = config[options.MODE]
        self.trusted_uids = config[options.TRUSTED_UIDS]
        self.lock_timeout = config[options.LOCK_TIMEOUT]
        self._seg = self._attach(config[options.SEGMENT_SIZE], config[options.MODE],
                                 config[options.SLOTS], config[options.WAITERS])
        self._expiry_ns = int(self.expiry * _NS)
        self._groups = GroupStore(self._seg, self.capacities, int(self.group_expiry * _NS))
        # channel -> (queue name bytes, tag (process channels) or None, capacity)
        self._routes: dict[str, tuple[bytes, bytes | None, int]] = {}
        # (channels tuple, block, thread id) -> (prepared core receiver, channel names)
        self._receivers: dict[tuple[Any, ...], tuple[Any, tuple[str, ...]]] = {}
        # Hot-path bindings: one attribute lookup instead of a chain per call.
        self._encode = self.serializer.encode
        self._decode = self.serializer.decode
        self._seg_send = self._seg.send
        self._seg_send_tagged = self._seg.send_tagged
        self._seg_receive = self._seg.receive

    def _attach(self, size: int, mode: int, slots: int, waiters: int) -> Segment:
        max_record = self.max_message_size + FRAME_MAX
        try:
            seg = Segment(self.prefix, size=size, mode=mode, max_record=max_record, slots=slots,
                          waiters=waiters, trusted_uids=self.trusted_uids,
                          lock_timeout=self.lock_timeout)
        except _ringbuf.LayoutMismatch as exc:
            raise LayoutMismatch(f"segment for prefix {self.prefix!r}: {exc}") from exc
        except _ringbuf.SegmentNotTrusted as exc:
            raise SegmentNotTrusted(f"segment for prefix {self.prefix!r}: {exc}") from exc
        except (RingBufError, OSError) as exc:
            raise SegmentError(f"cannot open the segment for prefix {self.prefix!r}: {exc}") from exc
        except ValueError as exc:  # sizing options the core refuses
            raise ValueError(f"segment options for prefix {self.prefix!r}: {exc}") from exc
        if seg.max_record < max_record:
            logger.warning(
                "segment %r takes records of at most %d bytes, less than max_message_size=%d needs; "
                "larger messages raise MessageTooLarge (remove the segment to resize it)",
                self.prefix, seg.max_record, self.max_message_size,
            )
        logger.debug("attached segment %r (%d bytes, max_record %d)", self.prefix, seg.size, seg.max_record)
        return seg

    # -- core API ------------------------------------------------------------

    def send(self, channel: str, message: Message) -> None:
        try:
            queue, tag, capacity = self._routes[channel]
        except (KeyError, TypeError):
            queue, tag, capacity = self._route(channel)
        payload = self._encode(message, channel)
        try:
            if tag is None:
                # No frame: the payload must not look like one (record format).
                if not payload or payload[0] < _NONE_MIN:
                    raise self._unframeable(channel, payload)
                self._seg_send(queue, payload, _monotonic_ns() + self._expiry_ns, capacity)
            else:
                self._seg_send_tagged(queue, tag, payload, _monotonic_ns() + self._expiry_ns,
                                      capacity)
        except QueueFull as exc:
            if isinstance(exc, _ringbuf.LockTimeout):
                raise segment_error(f"send to {channel!r}", exc) from None
            raise ChannelFull(f"channel {channel!r} is full: {exc}") from None
        except RecordTooLarge as exc:
            raise self._too_large(channel, len(payload), exc) from None
        except RingBufError as exc:
            raise segment_error(f"send to {channel!r} on segment {self.prefix!r}", exc) from exc

    def _route(self, channel: object) -> tuple[bytes, bytes | None, int]:
        """Validate ``channel`` and cache (queue bytes, tag or None, capacity) for it."""
        name = names.validate_channel(channel)
        queue, suffix = names.split_process_channel(name)
        return remember(self._routes, name, (queue.encode("ascii"), suffix.encode("ascii") if suffix else None,
                                             self.capacities.get(name)))

    @staticmethod
    def _unframeable(channel: str, payload: bytes) -> TypeError:
        first = f"0x{payload[0]:02x}" if payload else "nothing"
        return TypeError(
            f"message for channel {channel!r}: the serializer produced {len(payload)} bytes starting "
            f"with {first}, not a msgpack map (first byte >= 0x{_NONE_MIN:02x}); the record format "
            "stores such payloads unframed, so this one would be misread as a tag frame"
        )

    def _too_large(self, what: str, size: int, exc: Exception) -> MessageTooLarge:
        return MessageTooLarge(
            f"message for {what!r} is {size:,} bytes encoded, more than segment {self.prefix!r} "
            f"takes ({self._seg.max_record - FRAME_MAX:,} bytes; it was created with a smaller "
            f"max_message_size): {exc}"
        )

    def receive(self, channels: Iterable[str], block: bool = False) -> ReceiveResult:
        # No exception on the hot path: a list is looked up as a tuple (a
        # str must never be, or "abc" would mean ["a", "b", "c"]).  Each
        # (channels, block, thread) gets a prepared core receiver.
        kind = type(channels)
        fast = None
        key: tuple[Any, ...] | None = None
        try:
            if kind is tuple:
                key = (channels, block, _get_ident())
            elif kind is list:
                key = (tuple(channels), block, _get_ident())
            if key is not None:
                fast = self._receivers.get(key)
        except TypeError:  # an unhashable item: _plan names it
            key = None
        if fast is None:
            fast = self._receiver(channels, block, key)
        receive_once, wanted = fast
        if STORE:  # messages this process already took off a queue come first (older)
            held = STORE.take_any(self.prefix, wanted)
            if held is not None:
                return held
        return self._take(receive_once, wanted, None)

    def _take(self, receive_once: Any, wanted: tuple[str, ...],
              rest: list[tuple[str, Message]] | None) -> ReceiveResult:
        """Take one record and read it by the record format (``ringbuf.h``).

        A grouped record's first message is returned; the others go to
        ``rest`` when given (the Channels 4 adapter routes them itself),
        else to the local store (:data:`ipc_layer.local_store.STORE`).

        A record that does not read as a message (bytes another program put
        in the segment, or damage the core's checks cannot see) is dropped
        with an error naming its queue, and the next record is taken: one
        bad record must not fail every receive of the queue's readers.  A
        blocking receive then waits afresh.
        """
        while True:
            try:
                got = receive_once()
            except RingBufError as exc:
                raise segment_error(f"receive on segment {self.prefix!r}", exc) from exc
            if got is None:
                return None, None
            index, data = got
            try:
                tag = data[0]
                if tag >= _NONE_MIN:  # no frame: the record is the msgpack map itself
                    channel = wanted[index]
                    payload = data
                elif tag == _GROUP_MARK:
                    queue = wanted[index]
                    first, others = take_grouped(queue, data, self._decode)
                    if rest is not None:
                        rest.extend(others)
                    else:
                        STORE.put_many(self.prefix, queue, others,
                                       _monotonic_ns() + self._expiry_ns, self.capacities.get(queue))
                    return first
                elif tag:
                    channel = wanted[index] + data[1 : 1 + tag].decode("ascii")
                    payload = data[1 + tag :]
                else:  # an empty frame (fan-out copy for an ordinary member)
                    channel = wanted[index]
                    payload = data[1:]
                # msgpack's defaults (raw=False, strict_map_key=True, use_list=True
                # since 1.0) are the serializer's decode options; calling unpackb
                # here saves a call per message. Anything odd goes through the
                # serializer, which raises naming the problem.
                try:
                    message = _unpackb(payload)
                except Exception:
                    message = None
                if type(message) is not dict:
                    message = self._decode(payload)
            except (ValueError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
                logger.error("dropped a record of %d bytes on queue %r of segment %r that is not "
                             "a message: %s", len(data), wanted[index], self.prefix, exc)
                continue
            return channel, message

    def take_records(self, queue: str, rest: list[tuple[str, Message]]) -> ReceiveResult:
        """Take the next record of ``queue`` (non-blocking), bypassing the local store.

        For the Channels 4 adapter, which keeps messages it took for other
        channels in the local store itself: the other messages of a grouped
        record are appended to ``rest`` instead of being stored.
        """
        key = ((queue,), False, _get_ident())
        fast = self._receivers.get(key)
        if fast is None:
            fast = self._receiver((queue,), False, key)
        return self._take(fast[0], fast[1], rest)

    def _receiver(self, channels: object, block: bool, key: tuple[Any, ...] | None) -> tuple[Any, tuple[str, ...]]:
        """Validate a receive list and cache a prepared core receiver for it (per thread).

        ``blocking_timeout`` and ``spin_us`` are read here, when a receive
        list is first used (per thread).
        """
        queues, wanted = self._plan(channels)
        if block:
            fast = (self._seg.receiver(queues, self.blocking_timeout, self.spin_us), wanted)
        else:
            fast = (self._seg.receiver(queues, 0.0, 0), wanted)
        if key is not None:
            remember(self._receivers, key, fast)
        return fast

    def _plan(self, channels: object) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
        """Validate a receive list: (its queue names as bytes, its channel names)."""
        wanted = tuple(names.validate_receive_channels(channels))
        # Not memoised: only a new receiver (itself remembered) needs a plan.
        return tuple(name.encode("ascii") for name in wanted), wanted

    def receive_twisted(self, channels: Iterable[str], reactor: Any = None) -> Any:
        """The ASGI 1 ``twisted`` extension: a Deferred firing with ``(channel, message)``.

        Served by the core's FD watches registered as reactor readers (no
        thread, one kernel wake-up per message; :mod:`ipc_layer.twisted_ext`).
        ``reactor``: the global one by default. Twisted is imported on the
        first call only.
        """
        from .twisted_ext import bridge_for

        return bridge_for(self, reactor).receive(channels)

    def receive_twisted_stream(self, channels: Iterable[str], on_message: Any, on_error: Any = None,
                               reactor: Any = None) -> Any:
        """The ``twisted_stream`` extension (ours): every message of ``channels`` to a callback.

        ``on_message(channel, message)`` runs on the reactor thread for each
        message as it arrives, until the returned stream's ``stop()``; a
        failing receive calls ``on_error(exc)`` and the stream waits for its
        ``resume()``. What a server's reply loop wants: one standing wait
        instead of a Deferred and a re-armed FD watch per message
        (:class:`ipc_layer.twisted_ext.Stream`).
        """
        from .twisted_ext import bridge_for

        return bridge_for(self, reactor).stream(channels, on_message, on_error)

    def new_channel(self, pattern: str) -> str:
        names.validate_new_channel_pattern(pattern)
        while True:
            name = pattern + names.random_suffix()
            # 71 random bits make a clash vanishingly rare; a queue that
            # holds something proves the name taken.
            try:
                if self._seg.queue_stats(name.encode("ascii"))["pending"] == 0:
                    return name
            except RingBufError as exc:
                raise segment_error(f"new_channel({pattern!r})", exc) from exc

    # -- groups ------------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        self._groups.add(group, channel, time.monotonic_ns())

    def group_discard(self, group: str, channel: str) -> None:
        self._groups.discard(group, channel)

    def group_channels(self, group: str) -> list[str]:
        return self._groups.channels(group)

    def send_group(self, group: str, message: Message) -> None:
        names.validate_group(group)
        payload = self._encode(message, group, kind="group")
        try:
            self._groups.fanout(group, payload, time.monotonic_ns() + self._expiry_ns, self.capacity)
        except RecordTooLarge as exc:
            raise self._too_large(group, len(payload), exc) from None
        except RingBufError as exc:
            raise segment_error(f"send_group to {group!r} on segment {self.prefix!r}", exc) from exc

    # -- flush and statistics ------------------------------------------------------

    def flush(self) -> None:
        """Drop every message, group and counter of this prefix (all processes).

        Messages this process split off grouped records and has not handed
        out yet go too; other processes' go at their next flush.
        """
        STORE.clear(self.prefix)
        try:
            self._seg.flush()
        except RingBufError as exc:
            raise segment_error(f"flush of segment {self.prefix!r}", exc) from exc

    def pending_count(self, queue: str) -> int:
        """Messages of ``queue`` this process took off shared memory and has not handed out."""
        return STORE.count(self.prefix, queue) if STORE else 0

    def global_statistics(self) -> dict[str, int]:
        try:
            info = self._seg.info()
        except RingBufError as exc:
            raise segment_error(f"global_statistics() of segment {self.prefix!r}", exc) from exc
        return {"messages_count": info["sent"], "channel_full_count": info["full"]}

    def channel_statistics(self, channel: str) -> dict[str, int]:
        queue = names.non_local_name(names.validate_channel(channel))
        try:
            stats = self._seg.queue_stats(queue.encode("ascii"))
        except RingBufError as exc:
            raise segment_error(f"channel_statistics({channel!r})", exc) from exc
        return {
            "messages_count": stats["sent"],
            "messages_pending": stats["pending"],
            "messages_max_age": stats["oldest_age_ns"] // _NS,
            "channel_full_count": stats["full"],
        }

    # -- lifecycle -------------------------------------------------------------------

    @property
    def segment(self) -> Segment:
        """The attached :class:`_ringbuf.Segment` (for tools and tests)."""
        return self._seg

    def close(self) -> None:
        """Unmap the segment from this instance; shared state stays.

        FD watches a reactor bridge (``receive_twisted``) opened for this
        layer are closed first (their rows and FIFOs go).
        """
        twisted_ext = sys.modules.get("ipc_layer.twisted_ext")  # never imports Twisted itself
        if twisted_ext is not None:
            twisted_ext.close_bridge(self)
        self._seg.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prefix={self.prefix!r}, expiry={self.expiry!r}, "
            f"group_expiry={self.group_expiry!r}, capacity={self.capacity!r}, "
            f"channel_capacity={self.channel_capacity!r})"
        )

    def __reduce__(self) -> Any:
        raise TypeError(
            f"{type(self).__name__} cannot be pickled; make one per process with prefix={self.prefix!r}"
        )


options.document(IPCChannelLayer, "ipc")
