"""The thin Python binding over the C core: bytes in, bytes out.

Every C return code becomes a specific exception through one helper,
:func:`_check`; constants come from C (``lib.RB_*``).  cffi's API mode
releases the GIL for the duration of every C call, so a blocked
:meth:`Segment.receive` in one thread never stalls the others.

Fork safety: a :class:`Segment` opened before ``fork()`` keeps working in the
child without re-attaching.  The mapping is ``MAP_SHARED`` (the child sees
the same pages), the lock is a robust process-shared mutex living in those
pages, and nothing in the handle is per-process state.  Per-thread receive
buffers are recreated lazily in the child.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from _memo import remember

from ._native import ffi, lib

__all__ = [
    "LAYOUT_VERSION",
    "RECORD_FORMAT",
    "FRAME_TAG_MAX",
    "FRAME_GROUP_MARK",
    "FRAME_NONE_MIN",
    "FRAME_RESERVE",
    "NAME_MAX",
    "WAIT_MAX",
    "RingBufError",
    "QueueFull",
    "OutOfMemory",
    "TableFull",
    "WaiterTableFull",
    "RecordTooLarge",
    "BadName",
    "LayoutMismatch",
    "SegmentNotFound",
    "SegmentBusy",
    "SegmentCorrupt",
    "SegmentNotTrusted",
    "LockTimeout",
    "DEFAULT_LOCK_TIMEOUT",
    "TRUSTED_MAX",
    "Segment",
    "Watch",
    "unlink",
    "attached",
    "stat",
    "list_segments",
    "now_ns",
]

#: The layout this Python code was written against; the compiled module must agree.
EXPECTED_LAYOUT_VERSION = 6
if lib.RB_LAYOUT_VERSION != EXPECTED_LAYOUT_VERSION:  # pragma: no cover - packaging error
    raise ImportError(
        f"_ringbuf._native was built for layout version {lib.RB_LAYOUT_VERSION}, "
        f"this binding expects {EXPECTED_LAYOUT_VERSION}: rebuild with `pip install -e .`"
    )

#: Corruption the core found in a segment (and repaired, or refused) is
#: logged here once, at ERROR, with the segment and what was wrong.
logger = logging.getLogger("_ringbuf")


@ffi.def_extern()
def _rb_log_to_python(msg):  # called by the core after it unlocked (cffi takes the GIL)
    logger.error("%s", ffi.string(msg).decode("utf-8", "replace"))


lib.rb_set_log_hook(lib._rb_log_to_python)

LAYOUT_VERSION: int = lib.RB_LAYOUT_VERSION
NAME_MAX: int = lib.RB_NAME_MAX
#: Up to this many names a blocking receive sleeps on the queues' own futex
#: words (futex_waitv); more are fine too, and sleep on one "bell" word that
#: senders to any of them ring.  Not a limit: a threshold of the mechanism.
WAIT_MAX: int = lib.RB_WAIT_MAX
# The record format (defined once, in ringbuf.h: read its comment): a
# record's first byte 0..FRAME_TAG_MAX starts a single frame [len][tag],
# FRAME_GROUP_MARK a grouped one, >= FRAME_NONE_MIN means no frame.  A
# segment written with another RECORD_FORMAT is refused (LayoutMismatch).
RECORD_FORMAT: int = lib.RB_RECORD_FORMAT
FRAME_TAG_MAX: int = lib.RB_FRAME_TAG_MAX
FRAME_GROUP_MARK: int = lib.RB_FRAME_GROUP_MARK
FRAME_NONE_MIN: int = lib.RB_FRAME_NONE_MIN
#: Bytes of max_record a tagged record reserves for its frame.
FRAME_RESERVE: int = lib.RB_FRAME_RESERVE
#: Most records one :meth:`Segment.receive_batch` call returns.
BATCH_MAX = 1024
#: Seconds a call waits for the segment lock before :class:`LockTimeout`.
DEFAULT_LOCK_TIMEOUT: float = lib.RB_DEFAULT_LOCK_TIMEOUT_NS / 1e9
#: Longest ``lock_timeout`` accepted (a day: "forever" is what it prevents).
LOCK_TIMEOUT_MAX = 86400.0
#: Most uids ``trusted_uids`` may list.
TRUSTED_MAX: int = lib.RB_TRUSTED_MAX
SHM_DIR = "/dev/shm"
SEGMENT_FILE_PREFIX = "rbuf."


class RingBufError(Exception):
    """Base class of every error the core reports."""

    code: int = 0


class QueueFull(RingBufError):
    """The queue holds its capacity of records."""


class OutOfMemory(QueueFull):
    """The segment's record memory is exhausted (a "full"-class result)."""


class TableFull(QueueFull):
    """The segment's name table has no free row (a "full"-class result)."""


class WaiterTableFull(RingBufError):
    """Every waiter row is in use: too many receivers are blocked at once."""


class RecordTooLarge(RingBufError, ValueError):
    """The record is larger than the segment's ``max_record``."""


class BadName(RingBufError, ValueError):
    """A queue, set or member name (or a segment prefix) is empty or too long."""


class LayoutMismatch(RingBufError):
    """The segment has another magic number, layout version, record format or struct sizes."""


class SegmentNotFound(RingBufError, FileNotFoundError):
    """No segment exists for the prefix (and ``create`` was false)."""


class SegmentBusy(RingBufError):
    """The segment is still attached by some process."""


class SegmentCorrupt(RingBufError):
    """The segment's memory is damaged: a header field that does not match the
    file (refused on attach), a broken invariant (:meth:`Segment.check`), or
    damage an operation found and could not repair.  Damage that could be
    repaired is not raised: it is logged once on the ``_ringbuf`` logger and
    counted in :meth:`Segment.info` (``corruptions``, ``dropped``)."""


class SegmentNotTrusted(RingBufError, PermissionError):
    """The segment file (or a watch FIFO) is not ours to use, so it was refused.

    ``/dev/shm`` is world-writable: another local user can create
    ``rbuf.<prefix>`` before the site does and read every message sent
    through it. A file is used only if it is of the expected type, owned by
    this process's effective uid or one of ``trusted_uids``, and grants no
    permission beyond ``mode``. The message names the file, its owner and
    mode, and the fix.
    """


class LockTimeout(QueueFull):
    """The segment lock stayed held past ``lock_timeout`` by a live process.

    A process stopped (SIGSTOP, Ctrl-Z, a debugger) while it holds the lock
    keeps it until it runs again; rather than wait without bound, the call
    gives up having changed nothing. Retryable back-pressure, hence a
    :class:`QueueFull`. ``pid`` is the holder (0 if unknown) and ``state``
    its state as ``/proc`` words it (``"stopped"``, ``"tracing stop"``, ...).
    """

    pid: int = 0
    state: str = "unknown"


class _Interrupted(RingBufError):
    """A signal arrived during a wait; internal, the binding retries."""


_ERRORS: dict[int, type[Exception]] = {
    lib.RB_E_FULL: QueueFull,
    lib.RB_E_NOMEM: OutOfMemory,
    lib.RB_E_NOSLOT: TableFull,
    lib.RB_E_WAITERS: WaiterTableFull,
    lib.RB_E_TOOLARGE: RecordTooLarge,
    lib.RB_E_NAME: BadName,
    lib.RB_E_MAGIC: LayoutMismatch,
    lib.RB_E_VERSION: LayoutMismatch,
    lib.RB_E_NOTFOUND: SegmentNotFound,
    lib.RB_E_BUSY: SegmentBusy,
    lib.RB_E_CORRUPT: SegmentCorrupt,
    lib.RB_E_INTR: _Interrupted,
    lib.RB_E_TRUST: SegmentNotTrusted,
    lib.RB_E_LOCKED: LockTimeout,
    lib.RB_E_SYS: OSError,
    lib.RB_E_INVAL: ValueError,
}


# Hot-path globals: one dict lookup instead of an attribute chain per call.
_rb_send = lib.rb_send
_rb_send_tagged = lib.rb_send_tagged
_rb_receive = lib.rb_receive
_unpack = ffi.unpack
_E_EMPTY = lib.RB_E_EMPTY
_E_INTR = lib.RB_E_INTR
#: rb_watch_seq's "not this process's watch" (RB_SEQ_INVALID in ringbuf.h).
_SEQ_INVALID = 1 << 63


def _check(rc: int) -> int:
    """Map a C return code to an exception carrying the C error message."""
    if rc >= 0:
        return rc
    message = ffi.string(lib.rb_last_error()).decode("utf-8", "replace")
    exc_type = _ERRORS.get(rc, RingBufError)
    exc = exc_type(message)
    if isinstance(exc, RingBufError):
        exc.code = rc
    if isinstance(exc, LockTimeout):
        state = ffi.new("char[]", 64)
        exc.pid = int(lib.rb_last_lock_holder(state, 64))
        exc.state = ffi.string(state).decode("ascii", "replace")
    raise exc


def _short(value: object) -> str:
    """``repr(value)``, cut to a readable length (a 70,000-byte name is not)."""
    text = repr(value)
    if len(text) <= 60:
        return text
    return text[:45] + f"... ({len(value)} long)" if isinstance(value, (bytes, str)) else text[:57] + "..."


def _name(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif not isinstance(value, bytes):
        raise TypeError(f"{what} name must be bytes or str, got {type(value).__name__}: {_short(value)}")
    if not 1 <= len(value) <= NAME_MAX:
        raise BadName(f"{what} name must be 1..{NAME_MAX} bytes, got {len(value)}: {_short(value)}")
    return value


def _require_bytes(value: object, what: str) -> None:
    """Raise naming ``what`` unless ``value`` is bytes (what the C calls take)."""
    if type(value) is not bytes and not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, got {type(value).__name__}: {_short(value)}")


def _mode(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise ValueError(
            f"mode must be an int in 0..0o777 (permission bits only: no setuid, setgid or sticky "
            f"bit), got {value!r}" + (f" = {oct(value)}" if isinstance(value, int) else ""))
    return value


def _lock_timeout_ns(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value <= LOCK_TIMEOUT_MAX):
        raise ValueError(f"lock_timeout must be a number of seconds in (0, {LOCK_TIMEOUT_MAX:g}], "
                         f"got {value!r}")
    return max(1, int(value * 1e9))


def _trusted_uids(value: object) -> list[int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"trusted_uids must be a sequence of uids (ints), got {value!r}")
    uids = list(value)
    for uid in uids:
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < 0xFFFFFFFF:
            raise ValueError(f"trusted_uids: {uid!r} is not a uid (an int in 0..2**32-2)")
    if len(uids) > TRUSTED_MAX:
        raise ValueError(f"trusted_uids lists {len(uids)} uids, at most {TRUSTED_MAX} are allowed")
    return uids


def _prefix(prefix: str) -> bytes:
    if not isinstance(prefix, str):
        raise TypeError(f"segment prefix must be str, got {type(prefix).__name__}: {prefix!r}")
    return prefix.encode("ascii", "replace")


def _pack_names(names: Sequence[bytes]) -> bytes:
    parts = []
    for n in names:
        n = _name(n, "queue")  # also bounds it: the blob stores a u16 length
        parts.append(len(n).to_bytes(2, "little"))
        parts.append(n)
    return b"".join(parts)


def _unpack_names(blob: bytes, count: int) -> list[bytes]:
    out, off = [], 0
    for _ in range(count):
        n = blob[off] | blob[off + 1] << 8
        out.append(blob[off + 2 : off + 2 + n])
        off += 2 + n
    return out


def _timeout_ns(timeout: float | None) -> int:
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    return int(timeout * 1e9)


def now_ns() -> int:
    """CLOCK_MONOTONIC in nanoseconds: the clock record deadlines use."""
    return lib.rb_now_ns()


def _info_dict(info) -> dict[str, int]:
    return {field: int(getattr(info, field)) for field, _ in ffi.typeof("rb_info").fields
            if field != "pad"}


class Segment:
    """One attached shared-memory segment (created on first use).

    :param mode: permission bits of a segment this call creates, and the
        widest ones accepted when attaching to an existing one (0..0o777).
    :param trusted_uids: owners whose segment (and watch FIFOs) are used
        besides this process's effective uid; anyone else's file is refused
        with :class:`SegmentNotTrusted`.
    :param lock_timeout: seconds a call waits for the segment lock before it
        raises :class:`LockTimeout` (the holder is alive but not running).
    """

    def __init__(
        self,
        prefix: str,
        *,
        size: int = 0,
        mode: int = 0o600,
        max_record: int = 0,
        slots: int = 0,
        waiters: int = 0,
        create: bool = True,
        trusted_uids: Sequence[int] = (),
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        for arg, value in (("size", size), ("max_record", max_record), ("slots", slots),
                           ("waiters", waiters)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{arg} must be a non-negative int, got {value!r}")
        uids = _trusted_uids(trusted_uids)
        opts = ffi.new("rb_options *")
        opts.size = size
        opts.mode = _mode(mode)
        opts.max_record = max_record
        opts.slots = slots
        opts.waiters = waiters
        opts.create = 1 if create else 0
        uid_array = ffi.new("uint32_t[]", uids or [0])
        opts.n_trusted = len(uids)
        opts.trusted_uids = uid_array
        opts.lock_timeout_ns = _lock_timeout_ns(lock_timeout)
        out = ffi.new("rb_seg **")
        _check(lib.rb_open(_prefix(prefix), opts, out))
        self._seg = out[0]
        self.prefix = prefix
        self.trusted_uids: tuple[int, ...] = tuple(uids)
        self.lock_timeout: float = float(lock_timeout)
        # The geometry is fixed at creation: read without the lock, so that
        # attaching never waits on (or fails for) a lock holder.
        max_rec = ffi.new("uint32_t *")
        seg_size = ffi.new("uint64_t *")
        lib.rb_limits(self._seg, max_rec, seg_size)
        self.max_record: int = int(max_rec[0])
        self.size: int = int(seg_size[0])
        self._local = threading.local()
        self._blobs: dict[tuple[bytes, ...], tuple[bytes, int]] = {}
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()

    # -- lifecycle ----------------------------------------------------------
    def close(self) -> None:
        if self._seg is not None:
            # Watches hold the handle (and a process-local C entry keyed by it).
            for watch in list(getattr(self, "_watches", ())):
                watch.close()
            lib.rb_close(self._seg)
            self._seg = None

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    @property
    def _handle(self):
        if self._seg is None:
            self._closed()
        return self._seg

    def _closed(self):
        raise ValueError(f"segment {self.prefix!r} is closed")

    def _new_buffers(self):
        """Per-thread receive buffer of max_record bytes plus out-params."""
        bufs = (ffi.new("char[]", self.max_record), ffi.new("size_t *"), ffi.new("uint32_t *"))
        self._local.bufs = bufs
        return bufs

    def _blob(self, names: Sequence[bytes]) -> tuple[bytes, int]:
        """The packed names blob for a receive list, cached per tuple of names."""
        key = tuple(names)
        hit = self._blobs.get(key)
        if hit is not None:
            return hit
        if not key:
            raise ValueError("receive needs at least one queue name")
        # Any number of names: past WAIT_MAX the core sleeps on one word of
        # its own waiter row that senders ring, instead of futex_waitv on
        # every queue's word (see _ringbuf/src/internal.h, "BELL").
        return remember(self._blobs, key, (_pack_names(key), len(key)))

    # -- queues --------------------------------------------------------------
    def send(self, name: bytes, data: bytes, deadline_ns: int = 0, capacity: int = 0) -> None:
        """Append ``data`` to queue ``name``.

        ``deadline_ns`` is an absolute :func:`now_ns` time after which the
        record is dropped (0 = never); ``capacity`` (0 = keep the queue's
        stored capacity, initially unlimited) is checked atomically with the
        enqueue.  Raises :class:`QueueFull` (or :class:`OutOfMemory`),
        :class:`RecordTooLarge`, :class:`BadName`.
        """
        seg = self._seg
        if seg is None:
            self._closed()
        try:
            rc = _rb_send(seg, name, len(name), data, len(data), deadline_ns, capacity)
        except (TypeError, OverflowError):
            # Off the hot path (zero-cost until raised): say which argument.
            _require_bytes(name, "queue name")
            _require_bytes(data, "data")
            raise
        if rc:
            _check(rc)

    def send_tagged(self, name: bytes, tag: bytes, data: bytes, deadline_ns: int = 0,
                    capacity: int = 0) -> None:
        """:meth:`send` of one record ``bytes([len(tag)]) + tag + data``, framed by the core.

        The single frame of the record format (``tag`` is at most
        :data:`FRAME_TAG_MAX` bytes, else ``ValueError``), built in the
        enqueue's copy: no concatenation here.
        """
        seg = self._seg
        if seg is None:
            self._closed()
        rc = _rb_send_tagged(seg, name, len(name), tag, len(tag), data, len(data), deadline_ns,
                             capacity)
        if rc:
            _check(rc)

    def send_batch(self, name: bytes, records: Sequence[bytes], deadline_ns: int = 0,
                   capacity: int = 0) -> int:
        """Append several records to queue ``name`` in one lock hold.

        Returns how many went in (in order); stops at the first refusal
        (queue full or memory exhausted) without raising, so the caller can
        retry the rest.  Other errors (too large, bad name) raise.
        """
        seg = self._seg
        if seg is None:
            self._closed()
        _require_bytes(name, "queue name")
        n = len(records)
        if n == 0:
            return 0
        try:
            joined = b"".join(records)
        except TypeError:
            # Off the hot path (no per-record check when all are bytes): name it.
            for i, record in enumerate(records):
                _require_bytes(record, f"records[{i}]")
            raise
        lens = ffi.new("uint32_t[]", [len(r) for r in records])
        out = ffi.new("uint32_t *")
        rc = lib.rb_send_batch(seg, name, len(name), joined, lens, n, deadline_ns, capacity, out)
        if rc and rc not in (lib.RB_E_FULL, lib.RB_E_NOMEM):
            _check(rc)
        return out[0]

    def receive(
        self, names: Sequence[bytes], timeout: float | None = 0.0, spin_us: int = 0
    ) -> tuple[int, bytes] | None:
        """Take the oldest live record of any of ``names``.

        Returns ``(index into names, data)``, or ``None`` if nothing arrived
        within ``timeout`` seconds (0 = do not wait, None = wait until a
        record comes; either way each kernel sleep is bounded).
        ``spin_us`` busy-waits that long before sleeping.  Pass ``names`` as
        a tuple on hot paths: its packed form is cached.  Any number of
        names (a look costs O(len(names))); a blocking receive over more
        than :data:`WAIT_MAX` keeps its list in the segment's cells while it
        sleeps (:class:`OutOfMemory` if none are left).
        """
        # The hot path: every attribute lookup here costs throughput.
        try:
            blob, count = self._blobs[names]  # type: ignore[index]  # a list raises TypeError: _blob
        except (KeyError, TypeError):
            blob, count = self._blob(names)
        try:
            buf, out_len, out_index = self._local.bufs
        except AttributeError:
            buf, out_len, out_index = self._new_buffers()
        seg = self._seg
        if seg is None:
            self._closed()
        if timeout is None:
            tns = -1
        elif timeout >= 0:
            tns = int(timeout * 1e9)
        else:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        end = None
        while True:
            rc = _rb_receive(seg, blob, len(blob), count, buf, self.max_record, out_len,
                             out_index, tns, spin_us)
            if rc == 0:
                return out_index[0], _unpack(buf, out_len[0])
            if rc == _E_EMPTY:
                return None
            if rc != _E_INTR:
                _check(rc)
            # A signal: returning to the interpreter lets its handler run
            # (KeyboardInterrupt surfaces here), then wait out the rest.
            if end is None and timeout is not None:
                end = time.monotonic() + tns / 1e9
            tns = self._remaining(end)

    def receiver(
        self, names: Sequence[bytes], timeout: float | None = 0.0, spin_us: int = 0
    ) -> Callable[[], tuple[int, bytes] | None]:
        """A callable doing :meth:`receive` with these fixed arguments, faster.

        Everything per-call is bound once (packed names, this thread's
        buffers, the timeout in ns), leaving one C call and the result
        conversion on the hot path.  Use it from the thread that made it
        (it writes that thread's buffers).  Errors and signals take the
        ordinary :meth:`receive` path.
        """
        blob, count = self._blob(names)
        try:
            buf, out_len, out_index = self._local.bufs
        except AttributeError:
            buf, out_len, out_index = self._new_buffers()
        seg = self._handle
        tns = _timeout_ns(timeout)
        cap = self.max_record
        blen = len(blob)
        me = self

        def receive_once() -> tuple[int, bytes] | None:
            if me._seg is not seg:  # closed: never touch a freed handle
                me._closed()
            rc = _rb_receive(seg, blob, blen, count, buf, cap, out_len, out_index, tns, spin_us)
            if rc == 0:
                return out_index[0], _unpack(buf, out_len[0])
            if rc == _E_EMPTY:
                return None
            return me.receive(names, timeout, spin_us)

        return receive_once

    def receive_batch(
        self, names: Sequence[bytes], max_records: int = 64, timeout: float | None = 0.0,
        spin_us: int = 0,
    ) -> list[tuple[int, bytes]]:
        """Take up to ``max_records`` records in one lock hold (oldest first).

        Returns a list of ``(index into names, data)``, empty on timeout.
        Much cheaper per record than :meth:`receive` under load, but a
        process killed while holding a batch loses the whole batch, not one
        record: use it where that trade is acceptable.
        """
        if not isinstance(max_records, int) or not 1 <= max_records <= BATCH_MAX:
            raise ValueError(f"max_records must be an int in 1..{BATCH_MAX}, got {max_records!r}")
        try:
            blob, count = self._blobs[names]  # type: ignore[index]  # a list raises TypeError: _blob
        except (KeyError, TypeError):
            blob, count = self._blob(names)
        local = self._local
        try:
            batch = local.batch
        except AttributeError:
            batch = local.batch = (ffi.new("char[]", self.max_record),
                                   ffi.new("uint32_t[]", BATCH_MAX),
                                   ffi.new("uint32_t[]", BATCH_MAX),
                                   ffi.new("uint32_t *"), ffi.new("size_t *"))
        buf, lens, idxs, out_n, out_len = batch
        seg = self._seg
        if seg is None:
            self._closed()
        tns = _timeout_ns(timeout)
        end = None
        while True:
            rc = lib.rb_receive_batch(seg, blob, len(blob), count, buf, self.max_record, lens,
                                      idxs, max_records, out_n, out_len, tns, spin_us)
            if rc == 0:
                break
            if rc == _E_EMPTY:
                return []
            if rc != _E_INTR:
                _check(rc)
            if end is None and timeout is not None:
                end = time.monotonic() + tns / 1e9
            tns = self._remaining(end)
        n = out_n[0]
        n_lens = ffi.unpack(lens, n)
        total = sum(n_lens)
        raw = _unpack(buf, total)
        out = []
        off = 0
        for i, length in zip(ffi.unpack(idxs, n), n_lens, strict=True):
            out.append((i, raw[off:off + length]))
            off += length
        return out

    def wait(self, names: Sequence[bytes], timeout: float | None = 0.0, spin_us: int = 0) -> bool:
        """Block until one of ``names`` holds a live record, without taking it.

        Made for event loops: a helper thread waits (GIL released), then the
        loop's own thread receives with ``timeout=0`` - so a cancelled wait
        can never lose a record.
        """
        blob, count = self._blob(names)
        handle = self._handle
        tns = _timeout_ns(timeout)
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            rc = lib.rb_wait(handle, blob, len(blob), count, tns, spin_us)
            if rc == 0:
                return True
            if rc == _E_EMPTY:
                return False
            if rc != _E_INTR:
                _check(rc)
            tns = self._remaining(end)

    def watch(self, names: Sequence[bytes]) -> Watch:
        """A :class:`Watch` on ``names`` (any number of them): a file descriptor
        senders make readable."""
        blob, count = self._blob(names)
        fd = ffi.new("int *")
        row = ffi.new("uint32_t *")
        token = ffi.new("uint64_t *")
        _check(lib.rb_watch_open(self._handle, blob, len(blob), count, fd, row, token))
        watch = Watch(self, tuple(names), fd[0], row[0], token[0])
        self._watches.add(watch)
        return watch

    @staticmethod
    def _remaining(end: float | None) -> int:
        """Nanoseconds left until ``end`` (a time.monotonic() value), -1 if none."""
        if end is None:
            return -1
        return max(0, int((end - time.monotonic()) * 1e9))

    def queue_stats(self, name: bytes) -> dict[str, int]:
        _require_bytes(name, "queue name")
        st = ffi.new("rb_queue_stats *")
        _check(lib.rb_queue_stats_get(self._handle, name, len(name), st))
        return {
            "sent": st.sent,
            "full": st.full,
            "pending": st.pending,
            "oldest_age_ns": st.oldest_age_ns,
            "capacity": st.capacity,
            "waiters": st.waiters,
        }

    # -- sets ------------------------------------------------------------------
    def set_add(self, set_name: bytes, member: bytes, deadline_ns: int = 0,
                queue_len: int | None = None, capacity: int = 0) -> None:
        """Add ``member`` to ``set_name`` (re-adding refreshes its deadline).

        ``queue_len`` routes the member: fan-out copies for it go to queue
        ``member[:queue_len]`` and, with ``fanout(tagged=True)``, carry the
        tag ``member[queue_len:]`` (at most :data:`FRAME_TAG_MAX` bytes, else
        ``ValueError``).  Default: the whole
        name is the queue.  ``capacity`` (0 = none) is the capacity fan-out
        copies for this member state for its queue, as a send's would; it
        wins over the queue's stored capacity and the fan-out's argument.
        """
        _require_bytes(set_name, "set name")
        _require_bytes(member, "member name")
        qlen = len(member) if queue_len is None else queue_len
        if not isinstance(capacity, int) or not 0 <= capacity <= 0xFFFFFFFF:
            raise ValueError(f"capacity must be an int in 0..2**32-1, got {capacity!r}")
        _check(lib.rb_set_add_member(self._handle, set_name, len(set_name), member, len(member),
                                     qlen, capacity, deadline_ns))

    def set_discard(self, set_name: bytes, member: bytes) -> None:
        """Remove ``member`` from ``set_name``; absent is fine."""
        _require_bytes(set_name, "set name")
        _require_bytes(member, "member name")
        _check(lib.rb_set_discard(self._handle, set_name, len(set_name), member, len(member)))

    def set_members(self, set_name: bytes) -> list[bytes]:
        """Live members of ``set_name`` (expired ones are dropped on the way)."""
        _require_bytes(set_name, "set name")
        return self._names_call(
            lambda buf, cap, out_len, out_count: lib.rb_set_members(
                self._handle, set_name, len(set_name), buf, cap, out_len, out_count))

    def fanout(self, set_name: bytes, data: bytes, deadline_ns: int = 0,
               capacity: int = 0, tagged: bool = False, grouped: bool = False) -> tuple[int, int]:
        """Put one copy of ``data`` in every live member's queue, in one C call.

        Members whose queue is full (their stored capacity, else
        ``capacity``) are skipped.  With ``tagged``, each copy starts with
        the member's single frame (see :meth:`set_add`).  With ``grouped``
        (implies ``tagged``), the members sharing a queue get one grouped
        record carrying all their tags (a lone member gets its single
        frame); both frames are the record format's (``ringbuf.h``).
        Returns ``(sent, skipped)``, counting members.
        """
        _require_bytes(set_name, "set name")
        _require_bytes(data, "data")
        out = ffi.new("uint32_t[2]")
        mode = (lib.RB_FANOUT_GROUPED if grouped else lib.RB_FANOUT_TAGGED if tagged
                else lib.RB_FANOUT_PLAIN)
        _check(lib.rb_fanout_tagged(self._handle, set_name, len(set_name), data, len(data),
                                    deadline_ns, capacity, mode, out, out + 1))
        return out[0], out[1]

    # -- maintenance -------------------------------------------------------------
    def _names_call(self, fn) -> list[bytes]:
        cap = 4096
        out_len = ffi.new("size_t *")
        out_count = ffi.new("uint32_t *")
        while True:
            buf = ffi.new("char[]", cap)
            rc = fn(buf, cap, out_len, out_count)
            if rc == lib.RB_E_BUFSMALL:
                cap = out_len[0] * 2  # it may grow meanwhile
                continue
            _check(rc)
            return _unpack_names(ffi.unpack(buf, out_len[0]), out_count[0])

    def list_queues(self) -> list[bytes]:
        return self._names_call(lambda b, c, length, n: lib.rb_list_names(
            self._handle, lib.RB_KIND_QUEUE, b, c, length, n))

    def list_sets(self) -> list[bytes]:
        return self._names_call(lambda b, c, length, n: lib.rb_list_names(
            self._handle, lib.RB_KIND_SET, b, c, length, n))

    def info(self) -> dict[str, int]:
        info = ffi.new("rb_info *")
        _check(lib.rb_info_get(self._handle, info))
        return _info_dict(info)

    def stats_reset(self) -> None:
        _check(lib.rb_stats_reset(self._handle))

    def flush(self) -> None:
        """Drop every record, set and statistic of this segment."""
        _check(lib.rb_flush(self._handle))

    def recover(self) -> int:
        """Sweep dead waiters, expired records and members; returns waiters swept."""
        out = ffi.new("uint32_t *")
        _check(lib.rb_recover(self._handle, out))
        return out[0]

    def check(self) -> None:
        """Verify every invariant of the segment; raise :class:`SegmentCorrupt` if one fails."""
        report = ffi.new("char[]", 512)
        _check(lib.rb_check(self._handle, report, 512))

    def _debug_lock(self) -> None:
        """Tests only: take the segment lock as an operation would (and keep it)."""
        _check(lib.rb_debug_lock(self._handle))

    def _debug_unlock(self) -> None:
        """Tests only: release the lock :meth:`_debug_lock` took."""
        lib.rb_debug_unlock(self._handle)


class Watch:
    """A waiter row of kind FD on some queues, and the FIFO senders poke.

    Protocol (one kernel wake-up per message, no helper thread)::

        while True:
            try receiving (timeout=0); on a record: done
            if watch.arm(): continue          # records already there
            poll watch.fileno() for reading (bounded: a poke can be lost
                                             if a sender dies mid-send)
            watch.drain()

    A watch belongs to the process that opened it: after ``fork()`` the
    child must open its own (``arm`` raises in the child).
    """

    __slots__ = ("__weakref__", "_fd", "_row", "_seg", "_token", "names", "pid")

    def __init__(self, seg: Segment, names: tuple[bytes, ...], fd: int, row: int, token: int) -> None:
        self._seg: Segment | None = seg
        self.names = names
        self._fd = fd
        self._row = row
        self._token = token
        self.pid = os.getpid()

    def fileno(self) -> int:
        """The read end of the FIFO (non-blocking): readable after a poke."""
        if self._seg is None:
            raise ValueError("watch is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._seg is None

    def arm(self) -> bool:
        """True: a watched queue holds a record now (not armed; receive at once).

        False: armed; the next send to a watched queue makes the fd readable.
        """
        seg = self._seg
        if seg is None:
            raise ValueError("watch is closed")
        return bool(_check(lib.rb_watch_arm(seg._handle, self._row, self._token)))

    def seq(self) -> int:
        """A number that changes whenever a record is sent to a watched queue (no lock taken).

        What an event loop polls while it spins before arming: equal to the
        last value means nothing was sent since; a change means "receive now"
        (the record may already be taken by someone else).
        """
        seg = self._seg
        if seg is None:
            raise ValueError("watch is closed")
        value = lib.rb_watch_seq(seg._handle, self._row, self._token)
        if value == _SEQ_INVALID:
            raise ValueError("watch is not registered any more (swept by a repair, or "
                             "opened by another process)")
        return int(value)

    def drain(self) -> int:
        """Read and discard pending poke bytes; returns how many."""
        if self._seg is None:
            return 0
        n = 0
        while True:
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                return n
            n += len(chunk)
            if len(chunk) < 4096:  # the pipe is empty now: spare the EAGAIN read
                return n

    def close(self) -> None:
        """Unregister the row, close both ends of the FIFO and unlink it. Idempotent."""
        seg, self._seg = self._seg, None
        if seg is None or seg._seg is None:
            return
        _check(lib.rb_watch_close(seg._seg, self._row, self._token))

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._seg is None else f"fd={self._fd}"
        return f"<Watch {list(self.names)!r} {state}>"


def unlink(prefix: str, force: bool = False) -> None:
    """Remove the segment of ``prefix``; refuses (:class:`SegmentBusy`) while attached unless ``force``."""
    _check(lib.rb_unlink(_prefix(prefix), 1 if force else 0))


def attached(prefix: str) -> bool:
    """True if some process has the segment of ``prefix`` open."""
    return bool(_check(lib.rb_attached(_prefix(prefix))))


def stat(prefix: str, *, trusted_uids: Sequence[int] = (),
         lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> dict[str, int]:
    """Header facts and totals of an existing segment (attaches briefly).

    Only reads, so any permission bits are accepted; the owner must still be
    this uid or one of ``trusted_uids`` (:class:`SegmentNotTrusted`).
    :class:`LockTimeout` after ``lock_timeout`` seconds if a live process
    keeps the lock.
    """
    with Segment(prefix, create=False, mode=0o777, trusted_uids=trusted_uids,
                 lock_timeout=lock_timeout) as seg:
        return seg.info()


def list_segments(*, trusted_uids: Sequence[int] = (),
                  lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> list[dict[str, object]]:
    """Every ring-buffer segment file on this host, with its facts.

    A file that is not readable as one of ours is still listed, with an
    ``error`` entry saying why (and ``locked_by`` = ``{"pid", "state"}`` when
    a live process kept the lock past ``lock_timeout``). The options are
    :func:`stat`'s.
    """
    out: list[dict[str, object]] = []
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return out
    for entry in entries:
        if not entry.startswith(SEGMENT_FILE_PREFIX) or "~" in entry:  # "~": a companion file
            continue
        prefix = entry[len(SEGMENT_FILE_PREFIX):]
        path = os.path.join(SHM_DIR, entry)
        row: dict[str, object] = {"prefix": prefix, "path": path}
        try:
            st = os.stat(path)
            row.update(owner_uid=st.st_uid, mode=st.st_mode & 0o7777, file_size=st.st_size)
            row.update(stat(prefix, trusted_uids=trusted_uids, lock_timeout=lock_timeout))
            row["attached"] = attached(prefix)
        except LockTimeout as exc:
            row["error"] = str(exc)
            row["locked_by"] = {"pid": exc.pid, "state": exc.state}
        except (RingBufError, OSError) as exc:
            row["error"] = str(exc)
        out.append(row)
    return out

