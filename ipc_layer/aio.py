"""``IPCChannelLayer`` for Django Channels 4: the shared-memory layer as a ``CHANNEL_LAYERS`` backend.

::

    CHANNEL_LAYERS = {"default": {
        "BACKEND": "ipc_layer.aio.IPCChannelLayer",
        "CONFIG": {"prefix": "mysite", "capacity": 100, "expiry": 60, "group_expiry": 86400,
                   "channel_capacity": {"chat.*": 500}},
    }}

This is the only module of the package that imports ``channels``. It is an
adapter: every send, group operation and flush goes through a synchronous
:class:`ipc_layer.layer.IPCChannelLayer` on the same prefix (composed, not
copied), so the wire format, the group representation, capacities, expiry
and statistics are exactly the sync layer's, and Channels 4 processes share
channels and groups with ASGI 1 processes of the same prefix. The C calls
take microseconds and never block, so the coroutines run them inline.

Theory of operation: receive
----------------------------
``receive()`` never blocks the event loop and never polls. A waiting
receive registers a *waiter* (its loop and a future) on the *watch* of the
shared-memory queue its channel lives in. With ``wakeup="fd"`` (the
default) each event loop waiting on the queue owns a core FD watch
(:meth:`_ringbuf.Segment.watch`: a waiter row and a FIFO) registered with
``loop.add_reader``. Arming it under the segment lock either reports that
records are already there (a waiter is woken at once) or makes the next
sender write one byte to the FIFO: the loop's own selector wakes, its
reader callback resolves the first waiter's future - one kernel wake-up per
message, no thread. A poke is lost only if a sender dies between unlocking
and poking; a per-watch timer (``_FD_SLICE``) looks anyway, and closes the
watch after ``_IDLE_EXIT`` seconds without waiters. With ``wakeup="thread"``
(and for a loop whose watch cannot be opened, e.g. the waiter table is
full), a helper thread per watch sleeps in :meth:`_ringbuf.Segment.wait`
(GIL released, futex) while any waiter is registered and wakes those loops
with ``call_soon_threadsafe``. Either way the woken coroutine then takes
the record itself with a non-blocking receive, on its loop's thread, and
**one waiter per event loop** is woken. Nothing is taken off shared memory
until a coroutine is running and can return it, so a receive cancelled at
any ``await`` loses no message.

Waking one waiter per loop (not all) keeps a thousand idle consumers from
waking for every message; waking one per *loop* (not one in all) means a
loop that stopped running, or closed, can only strand its own waiters. A
closed loop is noticed when ``call_soon_threadsafe`` refuses, and its
waiters are dropped. The woken waiter passes the baton on: after taking a
record, or when cancelled, it re-arms the watch if other waiters remain, so
a record no one took wakes the next one. Watches and helper threads belong
to the layer and the process, never to a loop, so one layer serves
``async_to_sync`` callers, several loops in turn, and several threads' loops
at once: FD watches are per (loop, queue), made on that loop's thread. An
idle helper thread exits after a while and is started again on demand; a
closed loop's FD watch is closed when the next wait notices it, and every
watch is closed at exit (a killed process's rows and FIFOs are swept by the
core).

Theory of operation: ``new_channel()`` and routing
--------------------------------------------------
``new_channel()`` returns ``"specific.<process id>!<random>"``: every
consumer of a process shares the *process queue* ``"specific.<process id>!"``
(one shared-memory queue, one helper thread, one capacity), as in
channels_redis. A receive on such a channel first looks in the local store
for that channel; if nothing is held it takes records off the process
queue (non-blocking, under the process lock) until one is its own, putting
the others in the process's local store (:mod:`ipc_layer.local_store`) and
waking their waiters. Receives on ordinary channels (and on a name ending
at its ``!``) take from their own queue directly (the sync layer's receive,
which looks in the local store first).

The local store's rules apply (one owner per prefix and queue, one expiry,
one bound, one fork rule: see :mod:`ipc_layer.local_store`): a channel
holds at most the capacity of its process queue (``capacity`` or the
matching ``channel_capacity`` glob, default 100); a message arriving for a
channel already holding that many is dropped, like a send to a full channel
(DEBUG log, counted in :attr:`IPCChannelLayer.buffer_dropped`). A held
message is dropped ``expiry`` seconds after it was taken off shared memory,
and the store sweeps expired ones, so an abandoned channel leaks nothing. A
held message is held only by this process: if the process dies it is lost
(delivery is at most once).

Names
-----
A name is valid when Channels 4's own layers accept it *and* the segment can
store it: ASCII letters, digits, ``-``, ``_``, ``.``, at most 99 characters
(Channels' ``len < 100`` rule), channels with one optional ``!``, no ``?``
(Channels 4 has no single-reader channels). Bad names raise ``TypeError``
naming the culprit. Names are made with :mod:`secrets`, never :mod:`random`.

Processes
---------
A layer made before ``fork()`` keeps working in the child: the child gets a
fresh process id for ``new_channel()``, fresh locks and no helper threads
(the parent's are not inherited), and the segment mapping is shared.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

from channels.exceptions import ChannelFull as _ChannelsChannelFull  # type: ignore[import-untyped]
from channels.exceptions import MessageTooLarge as _ChannelsMessageTooLarge
from channels.layers import BaseChannelLayer  # type: ignore[import-untyped]

from . import exceptions, names, options
from .layer import IPCChannelLayer as SyncIPCChannelLayer
from .local_store import STORE
from .options import CapacityKey

__all__ = ["ChannelFull", "IPCChannelLayer", "MessageTooLarge"]

logger = logging.getLogger(__name__)

Message = dict[str, Any]

#: Channels 4 accepts names with ``len(name) < 100``.
CHANNELS_MAX_NAME_LENGTH = 99
#: Default ``new_channel()`` prefix, as in Channels 4's layers.
DEFAULT_CHANNEL_PREFIX = "specific."

#: Longest single sleep of a helper thread; it only bounds how long a thread
#: whose waiters all left keeps a waiter row of the segment.
_WATCH_SLICE = 5.0
#: A helper thread with no waiter for this long exits (a new one starts on demand);
#: likewise a loop's FD watch of a queue is closed after this long without waiters.
_IDLE_EXIT = 30.0
#: Longest an armed FD watch waits for a poke before its loop looks anyway: a
#: poke is lost only if a sender dies between unlocking and poking.
_FD_SLICE = 1.0
#: The ways a waiting receive is woken (the layer's ``wakeup`` option).
WAKEUPS = options.WAKEUPS
#: Most records one routing pass takes off a process queue while holding the
#: process lock; the rest wake the next pass at once.
_DRAIN_MAX = 256
#: Validated names kept (send/receive/group hot paths); cleared when full.
_CACHE_LIMIT = 4096

_EMPTY: Any = object()
_monotonic = time.monotonic
_monotonic_ns = time.monotonic_ns
_perf_counter = time.perf_counter


class ChannelFull(_ChannelsChannelFull, exceptions.ChannelFull):  # type: ignore[misc]
    """The channel holds ``capacity`` messages (or the segment is out of room).

    Both ``except channels.exceptions.ChannelFull`` and
    ``except ipc_layer.ChannelFull`` catch it.
    """


class MessageTooLarge(_ChannelsMessageTooLarge, exceptions.MessageTooLarge):  # type: ignore[misc]
    """The encoded message exceeds ``max_message_size`` (also a ``ValueError``)."""


# -- names -------------------------------------------------------------------------


@functools.lru_cache(maxsize=_CACHE_LIMIT)
def _channels4_rules(name: str, kind: str) -> None:
    """The two rules Channels 4 adds to :mod:`ipc_layer.names`: ``len < 100`` and no ``?``."""
    if "?" in name:
        raise TypeError(
            f"{kind} name {name!r} contains '?': Channels 4 has no single-reader channels; "
            "use new_channel() for a channel of your own"
        )
    if len(name) > CHANNELS_MAX_NAME_LENGTH:
        raise TypeError(
            f"{kind} name {name!r} is {len(name)} characters long; Channels 4 allows at most "
            f"{CHANNELS_MAX_NAME_LENGTH}"
        )


def validate_channel(name: object) -> str:
    """Return ``name`` if Channels 4 and the segment both accept it as a channel, else ``TypeError``."""
    checked = names.validate_channel(name)
    _channels4_rules(checked, "channel")
    return checked


def validate_group(name: object) -> str:
    """Return ``name`` if Channels 4 and the segment both accept it as a group, else ``TypeError``."""
    checked = names.validate_group(name)
    _channels4_rules(checked, "group")
    return checked


# -- waiting -------------------------------------------------------------------------


def _set_done(future: asyncio.Future[None]) -> None:
    """Wake a waiter (on its loop's thread); a cancelled or already woken one stays as it is."""
    if not future.done():
        future.set_result(None)


class _Waiter:
    """One coroutine awaiting a message: its loop, its future, its channel (routed only)."""

    __slots__ = ("channel", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: str | None) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.channel = channel


class _LoopWatch:
    """One event loop's FD watch of one queue: a core :class:`_ringbuf.Watch` the loop polls.

    Made and registered (``add_reader``) on the loop's own thread when a
    coroutine of that loop first waits on the queue; kept while the loop
    has waiters, closed on the loop's thread after ``_IDLE_EXIT`` seconds
    without any, or by anyone once the loop is closed. ``armed`` mirrors the
    core row's word as this process last set it: a poke (or the timer) is
    due, so arming again would only cost a lock. Guarded by the process lock.
    """

    __slots__ = ("armed", "core", "fd", "idle_since", "loop", "owner", "timer")

    def __init__(self, owner: _Watch, loop: asyncio.AbstractEventLoop, core: Any) -> None:
        self.owner = owner
        self.loop = loop
        self.core = core
        self.fd = core.fileno()
        self.armed = False
        self.idle_since: float | None = None
        loop.add_reader(self.fd, self._on_poke)
        self.timer: asyncio.TimerHandle | None = loop.call_later(_FD_SLICE, self._on_timer)

    def _on_poke(self) -> None:
        """The FIFO is readable: a sender found the row armed (loop thread)."""
        self.core.drain()
        with self.owner.cond:
            self.armed = False
            self.owner.wake_loop(self.loop, self.loop)

    def _on_timer(self) -> None:
        """Every ``_FD_SLICE``: cover a lost poke, close when idle (loop thread)."""
        owner = self.owner
        with owner.cond:
            if owner.fd_watches.get(self.loop) is not self:
                return
            if self.loop in owner.by_loop:
                self.idle_since = None
                if self.armed:  # no poke for a whole slice: look anyway
                    self.armed = False
                    owner.wake_loop(self.loop, self.loop)
            else:
                now = _monotonic()
                if self.idle_since is None:
                    self.idle_since = now
                elif now - self.idle_since >= _IDLE_EXIT:
                    del owner.fd_watches[self.loop]
                    self.close()
                    return
            self.timer = self.loop.call_later(_FD_SLICE, self._on_timer)

    def arm(self, running: asyncio.AbstractEventLoop | None) -> None:
        """Arm the core watch, or wake a waiter now if records are there (lock held)."""
        if self.armed:
            return
        try:
            ready = self.core.arm()
        except Exception:
            # The row was swept (a repair found this process's row bad) or the
            # segment closed: wake a waiter, whose take retries (and raises),
            # and open a fresh watch at the next wait.
            logger.debug("queue %r: FD watch lost; reopening", self.owner.queue, exc_info=True)
            self.owner.drop_fd_watch(self.loop)
            ready = True
        if ready:
            self.owner.wake_loop(self.loop, running)
        else:
            self.armed = True

    def close(self) -> None:
        """Unregister from the loop (when it still runs) and close the core watch."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.loop.is_closed():
            try:
                self.loop.remove_reader(self.fd)
            except Exception:  # pragma: no cover - a loop closing meanwhile
                pass
        try:
            self.core.close()
        except Exception:  # pragma: no cover - the segment closed first
            logger.debug("closing the FD watch of %r failed", self.owner.queue, exc_info=True)


class _Watch:
    """The waiters of one shared-memory queue in this process, and the thread that waits for it.

    Every attribute is guarded by the process lock (``cond``'s lock); the
    helper thread holds it only between kernel sleeps.

    ``armed`` means "a waiter wants to hear when the queue holds a record".
    The thread clears it when it wakes waiters, because the record stays in
    the queue until a coroutine takes it (re-waiting at once would spin);
    coroutines set it again (:meth:`arm`) when they start waiting or pass
    the baton on.
    """

    __slots__ = ("armed", "by_channel", "by_loop", "cond", "expiry_ns", "fd_watches", "limit",
                 "open_watch", "prefix", "queue", "spin_us", "thread", "wait")

    def __init__(self, lock: threading.Lock, prefix: str, queue: str, wait: Any, spin_us: int,
                 limit: int, expiry_ns: int, open_watch: Any = None) -> None:
        self.cond = threading.Condition(lock)
        self.prefix = prefix
        self.queue = queue
        # FD wake-ups: segment.watch, or None for the helper thread only.
        self.open_watch = open_watch
        self.fd_watches: dict[asyncio.AbstractEventLoop, _LoopWatch] = {}
        self.wait = wait
        self.spin_us = spin_us
        self.armed = False
        self.thread: threading.Thread | None = None
        # loop -> its waiters, oldest first (a dict as an ordered set)
        self.by_loop: dict[asyncio.AbstractEventLoop, dict[_Waiter, None]] = {}
        # channel -> its waiters (None: direct receives of the whole queue).
        self.by_channel: dict[str | None, dict[_Waiter, None]] = {}
        # Messages taken for other channels go to the local store, bounded
        # by the process queue's capacity and expiring expiry_ns after.
        self.limit = limit
        self.expiry_ns = expiry_ns

    # -- waiters (lock held) ---------------------------------------------------------

    def add(self, waiter: _Waiter) -> None:
        """Register a waiter (on its loop's thread: an FD watch is registered there)."""
        loop = waiter.loop
        if self.open_watch is not None and loop not in self.fd_watches:
            self.open_fd_watch(loop)
        self.by_loop.setdefault(loop, {})[waiter] = None
        self.by_channel.setdefault(waiter.channel, {})[waiter] = None

    def discard(self, waiter: _Waiter) -> None:
        same_loop = self.by_loop.get(waiter.loop)
        if same_loop is not None:
            same_loop.pop(waiter, None)
            if not same_loop:
                del self.by_loop[waiter.loop]
        same_channel = self.by_channel.get(waiter.channel)
        if same_channel is not None:
            same_channel.pop(waiter, None)
            if not same_channel:
                del self.by_channel[waiter.channel]
        if not self.by_loop:
            # Nobody listens: the thread parks after its current sleep.
            self.armed = False

    def forget_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drop every waiter of a closed loop: none of them can ever run again."""
        for waiter in list(self.by_loop.get(loop, ())):
            self.discard(waiter)
        self.drop_fd_watch(loop)

    # -- FD watches (lock held) --------------------------------------------------------

    def open_fd_watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give ``loop`` its FD watch of this queue (on ``loop``'s thread); the thread if that fails."""
        for other in [other for other in self.fd_watches if other.is_closed()]:
            self.forget_loop(other)
        try:
            core = self.open_watch((self.queue.encode("ascii"),))
        except Exception:
            # The waiter table is full, /dev/shm refuses FIFOs, ...: this loop
            # is served by the helper thread instead.
            logger.debug("queue %r: no FD watch, using the helper thread", self.queue, exc_info=True)
            return
        try:
            self.fd_watches[loop] = _LoopWatch(self, loop, core)
        except Exception:  # pragma: no cover - a loop without add_reader (e.g. Windows proactor)
            core.close()
            logger.debug("queue %r: loop cannot poll an fd, using the helper thread", self.queue)

    def drop_fd_watch(self, loop: asyncio.AbstractEventLoop) -> None:
        lw = self.fd_watches.pop(loop, None)
        if lw is not None:
            lw.close()

    def close_fd_watches(self) -> None:
        for loop in list(self.fd_watches):
            self.drop_fd_watch(loop)

    def wake_loop(self, loop: asyncio.AbstractEventLoop,
                  running: asyncio.AbstractEventLoop | None) -> None:
        """Wake the first pending waiter of ``loop``, if it has any (``running``: the caller's loop)."""
        waiters = self.by_loop.get(loop)
        if waiters:
            self.wake(_first_pending(waiters), running)

    def arm(self) -> None:
        """Wake a waiter per loop once the queue holds a record.

        Loops with an FD watch arm it (or are woken at once when records are
        already there); the others are served by the helper thread. Messages
        already in the local store are not in the segment, so no arm would
        ever fire for them: their channels' waiters (and a direct receiver
        of the whole queue) are woken at once instead, and only them, so
        a held message nobody waits for never wakes anyone.
        """
        if STORE:
            held = STORE.channels(self.prefix, self.queue)
            if held:
                running = asyncio._get_running_loop()
                for channel in (*held, None):
                    waiters = self.by_channel.get(channel)
                    if waiters:
                        self.wake(_first_pending(waiters), running)
        fd_watches = self.fd_watches
        if fd_watches:
            running = asyncio._get_running_loop()
            need_thread = False
            for loop in list(self.by_loop):
                lw = fd_watches.get(loop)
                if lw is None:
                    need_thread = True
                elif loop.is_closed():
                    self.forget_loop(loop)
                else:
                    lw.arm(running)
            if not need_thread:
                return
        if self.armed:
            return
        self.armed = True
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"ipc-aio-wait {self.queue}",
                                           daemon=True)
            self.thread.start()
        else:
            self.cond.notify()

    def wake(self, waiter: _Waiter, running: asyncio.AbstractEventLoop | None) -> None:
        """Resolve ``waiter``'s future from any thread (``running``: the caller's loop, if any)."""
        if waiter.loop is running:
            _set_done(waiter.future)
            return
        try:
            waiter.loop.call_soon_threadsafe(_set_done, waiter.future)
        except RuntimeError:  # the loop is closed
            logger.debug("queue %r: dropping the waiters of a closed event loop", self.queue)
            self.forget_loop(waiter.loop)

    # -- the helper thread -----------------------------------------------------------

    def _run(self) -> None:
        names_ = (self.queue.encode("ascii"),)
        while True:
            with self.cond:
                while not self.armed:
                    if not self.cond.wait(_IDLE_EXIT) and not self.armed:
                        self.thread = None
                        return
            try:
                ready = self.wait(names_, _WATCH_SLICE, self.spin_us)
            except Exception:
                # The segment was closed or broke: wake everyone, so that each
                # receive retries its take and raises the error itself.
                logger.exception("waiting on queue %r failed; waking its receivers", self.queue)
                ready = True
            if not ready:
                with self.cond:
                    # A loop closed while its coroutines waited here never
                    # says so: drop its waiters, so an idle thread can park.
                    for loop in [loop for loop in self.by_loop if loop.is_closed()]:
                        self.forget_loop(loop)
                continue
            with self.cond:
                if not self.armed:
                    continue
                self.armed = False
                # Loops with an FD watch are woken by their own fd.
                targets = [_first_pending(waiters) for loop, waiters in self.by_loop.items()
                           if loop not in self.fd_watches]
                for waiter in targets:
                    self.wake(waiter, None)

    # -- routing (process queues; lock held) ------------------------------------------

    def pop(self, channel: str) -> Any:
        """The oldest unexpired held message of ``channel``, or ``_EMPTY``."""
        if not STORE:
            return _EMPTY
        message = STORE.take(self.prefix, self.queue, channel)
        return _EMPTY if message is None else message

    def deliver(self, channel: str, message: Message, running: asyncio.AbstractEventLoop) -> None:
        """Hold a message taken for another channel of this queue and wake its receiver."""
        if not STORE.put(self.prefix, self.queue, channel, message,
                         _monotonic_ns() + self.expiry_ns, self.limit):
            return  # the channel already holds its capacity: dropped (counted by the store)
        waiters = self.by_channel.get(channel)
        if waiters:
            self.wake(_first_pending(waiters), running)


def _first_pending(waiters: dict[_Waiter, None]) -> _Waiter:
    """The oldest waiter not woken yet (else the oldest): the one to hand a wake-up to."""
    for waiter in waiters:
        if not waiter.future.done():
            return waiter
    return next(iter(waiters))


class _ProcessState:
    """Everything of a layer that belongs to one process (rebuilt in a forked child)."""

    __slots__ = ("client", "lock", "queues", "watches")

    def __init__(self) -> None:
        #: The process-unique part of new_channel() names.
        self.client = names.random_suffix()
        self.lock = threading.Lock()
        self.watches: dict[str, _Watch] = {}
        #: new_channel() prefix -> this process's queue for it ("specific.<client>!").
        self.queues: dict[str, str] = {}


_LAYERS: weakref.WeakSet[IPCChannelLayer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's helper threads do not exist here, its locks may be held
    # by threads that do not exist either, and its new_channel() names
    # belong to the parent's process queues.
    for layer in list(_LAYERS):
        layer._state = _ProcessState()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_fd_watches() -> None:
    """At exit: unregister this process's FD watches and unlink their FIFOs."""
    for layer in list(_LAYERS):
        state = layer._state
        with state.lock:
            for watch in state.watches.values():
                watch.close_fd_watches()


atexit.register(_close_fd_watches)


# -- the layer -------------------------------------------------------------------------


class IPCChannelLayer(BaseChannelLayer):  # type: ignore[misc]
    """A Channels 4 channel layer over the shared-memory segment of ``prefix``.

    ``prefix`` names the segment (``/dev/shm/rbuf.<prefix>``); every layer
    (this one or :class:`ipc_layer.IPCChannelLayer`) with the same prefix on
    this host shares its channels and groups. All ``new_channel()``
    channels of a process share one queue, hence one ``capacity``.
    ``spin_us``: with ``wakeup="fd"`` the coroutine looks between loop
    iterations (``await asyncio.sleep(0)``), so other tasks and I/O keep
    running; with ``wakeup="thread"`` the helper thread busy-waits (GIL
    released) before its kernel sleep. ``wakeup="fd"`` (default): each
    event loop polls one FIFO per queue it waits on, written by the senders
    (one kernel wake-up per message); ``"thread"``: a helper thread per
    queue waits in the kernel and wakes the loops (two). A loop whose FD
    watch cannot be opened (waiter table full) falls back to the thread.
    The segment sizing options are used only when this layer creates the
    segment (see :mod:`ipc_layer.layer`).
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]  # a list, as Channels' layers have
    #: The options this class takes, as declared in :mod:`ipc_layer.options`.
    option_kind: ClassVar[str] = "aio"

    ChannelFull = ChannelFull
    MessageTooLarge = MessageTooLarge

    def __init__(
        self,
        prefix: str = options.PREFIX.default,
        expiry: float = options.EXPIRY.default,
        group_expiry: float = options.GROUP_EXPIRY.default,
        capacity: int = options.CAPACITY.default,
        channel_capacity: Mapping[CapacityKey, int] | None = options.CHANNEL_CAPACITY.default,
        max_message_size: int = options.MAX_MESSAGE_SIZE.default,
        spin_us: int = options.SPIN_US.default,
        segment_size: int = options.SEGMENT_SIZE.default,
        mode: int = options.MODE.default,
        slots: int = options.SLOTS.default,
        waiters: int = options.WAITERS.default,
        wakeup: str = options.WAKEUP.default,
    ) -> None:
        # First statement: locals() holds exactly the parameters.
        config = options.validate("aio", locals(), owner=type(self).__name__)
        #: "fd": each event loop polls a FIFO senders poke (one kernel wake-up);
        #: "thread": a helper thread per queue waits and wakes the loops.
        self.wakeup = config[options.WAKEUP]
        # Every option the sync layer also takes goes to it as validated here.
        self._sync = SyncIPCChannelLayer(**config.subset("ipc"))
        super().__init__(expiry=self._sync.expiry, capacity=self._sync.capacity)
        self.prefix = self._sync.prefix
        self.group_expiry = self._sync.group_expiry
        self.max_message_size = self._sync.max_message_size
        self.spin_us = self._sync.spin_us
        # FD mode spins on the loop (cooperatively, see _spin); the thread mode
        # hands spin_us to its helper thread's kernel wait instead.
        self._spin_s = self.spin_us / 1e6 if self.wakeup == "fd" else 0.0
        # As given (compiled once, inside the sync layer's ChannelCapacities);
        # get_capacity() below reads the compiled rules.
        self.channel_capacity = self._sync.channel_capacity
        self._capacities = self._sync.capacities
        self._state = _ProcessState()
        # Validated names (hot paths): channel -> None for send, channel ->
        # (queue, routed) for receive.
        self._send_ok: dict[str, None] = {}
        self._receive_plans: dict[str, tuple[str, bool]] = {}
        # Hot-path bindings.
        self._sync_send = self._sync.send
        self._sync_receive = self._sync.receive
        self._sync_take_records = self._sync.take_records
        _LAYERS.add(self)

    # -- names -------------------------------------------------------------------------

    def require_valid_channel_name(self, name: object, receive: bool = False) -> bool:
        """Channels 4's check, with the segment's rules (ASCII only) and culprit-naming errors."""
        checked = validate_channel(name)
        if receive and "!" in checked and not checked.endswith("!"):
            raise TypeError(f"specific channel names in receive() must end at the '!': {checked!r}")
        return True

    def require_valid_group_name(self, name: object) -> bool:
        validate_group(name)
        return True

    def get_capacity(self, channel: str) -> int:
        """Capacity of the queue ``channel`` sends into (``name!x`` counts against ``name!``)."""
        return self._capacities.get(channel)

    @property
    def buffer_dropped(self) -> int:
        """Messages this process dropped because a channel's local buffer was full."""
        return sum(STORE.dropped(self.prefix, queue) for queue in self._state.watches)

    # -- send ----------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message`` on ``channel``.

        :raises ChannelFull: the channel's queue is at capacity.
        :raises MessageTooLarge: the encoded message exceeds ``max_message_size``.
        :raises TypeError: a bad channel name or a message that is not an ASGI dict.
        """
        try:
            self._send_ok[channel]
        except (KeyError, TypeError):
            self._check_send(channel)
        try:
            self._sync_send(channel, message)
        except exceptions.ChannelFull as exc:
            raise ChannelFull(str(exc)) from None
        except exceptions.MessageTooLarge as exc:
            raise MessageTooLarge(str(exc)) from None

    def _check_send(self, channel: object) -> None:
        name = validate_channel(channel)
        if len(self._send_ok) >= _CACHE_LIMIT:
            self._send_ok.clear()
        self._send_ok[name] = None

    # -- receive ---------------------------------------------------------------------------

    async def receive(self, channel: str) -> Message:
        """The next message of ``channel``, waiting (without blocking the loop) until one comes.

        Cancellation-safe: a cancelled receive takes nothing off the channel.
        """
        try:
            queue, routed = self._receive_plans[channel]
        except (KeyError, TypeError):
            queue, routed = self._plan_receive(channel)
        loop = asyncio.get_running_loop()
        if routed:
            return await self._receive_routed(channel, queue, loop)
        return await self._receive_direct(queue, loop)

    def _plan_receive(self, channel: object) -> tuple[str, bool]:
        name = validate_channel(channel)
        queue = names.non_local_name(name)
        # "name!x" is routed through the process queue "name!"; "name!" itself
        # (everything of that queue, as in ASGI 1) and ordinary channels are direct.
        plan = (queue, queue != name)
        if len(self._receive_plans) >= _CACHE_LIMIT:
            self._receive_plans.clear()
        self._receive_plans[name] = plan
        return plan

    def _watch(self, state: _ProcessState, queue: str) -> _Watch:
        """The watch of ``queue`` (process lock held)."""
        watch = state.watches.get(queue)
        if watch is None:
            segment = self._sync.segment
            watch = state.watches[queue] = _Watch(
                state.lock, self.prefix, queue, segment.wait, self.spin_us,
                self._capacities.get(queue), int(self.expiry * 1e9),
                segment.watch if self.wakeup == "fd" else None)
        return watch

    def _spin_seq(self, queue: str, loop: asyncio.AbstractEventLoop) -> Any:
        """``seq`` of ``loop``'s FD watch of ``queue`` (opened if need be), or None.

        What a spinning receive polls: it changes when a record is sent to
        the queue and is read without the segment lock, so a spinner never
        contends with the senders it waits for (a locked take per look
        slowed a 100-member group_send from ~38 to ~69 us while its drainer
        spun). None where there is no FD watch (thread mode, or the watch
        could not be opened): the spin then takes under the lock each look.
        """
        state = self._state
        with state.lock:
            watch = self._watch(state, queue)
            if watch.open_watch is None:
                return None
            if loop not in watch.fd_watches:
                watch.open_fd_watch(loop)
            lw = watch.fd_watches.get(loop)
            if lw is None:
                return None
            lw.idle_since = None  # in use: the idle timer must not close it under us
            return lw.core.seq

    async def _spin(self, look: Any, seq: Any, last: Any) -> Any:
        """Look for a message for up to ``spin_us``, yielding to the loop between looks.

        The FD-watch mode's spin: each ``await asyncio.sleep(0)`` lets every
        other ready task and the loop's own I/O poll (a zero-timeout select)
        run first, so other consumers are never held up, and a record that
        comes within the budget costs no kernel sleep and wake-up on either
        side. ``look()`` (a message or ``_EMPTY``) runs only when ``seq()``
        moved past ``last`` (its value before the caller's own first look,
        so nothing sent after that look is missed), or every time when
        ``seq`` is None. It runs on the loop's thread, so a receive cancelled
        while spinning takes nothing.
        """
        deadline = _perf_counter() + self._spin_s
        while True:
            await asyncio.sleep(0)
            if seq is not None:
                try:
                    current = seq()
                except ValueError:  # the watch was closed or swept: look every time
                    seq = None
                else:
                    if current == last:
                        if _perf_counter() >= deadline:
                            return _EMPTY
                        continue
                    last = current
            message = look()
            if message is not _EMPTY or _perf_counter() >= deadline:
                return message

    async def _spin_take(self, queue: str, loop: asyncio.AbstractEventLoop, look: Any) -> Any:
        """One look, then a spin if it found nothing: a message, or ``_EMPTY`` when the budget ran out."""
        seq = self._spin_seq(queue, loop)
        last = seq() if seq is not None else None  # before the first look: no send is missed
        message = look()
        if message is _EMPTY:
            message = await self._spin(look, seq, last)
        return message

    async def _receive_direct(self, queue: str, loop: asyncio.AbstractEventLoop) -> Message:
        take = self._sync_receive
        key = (queue,)
        watch: _Watch | None = None
        if self._spin_s:

            def look() -> Any:
                got, message = take(key)
                return _EMPTY if got is None else message

            message = await self._spin_take(queue, loop, look)
            if message is not _EMPTY:
                return message  # type: ignore[no-any-return]
        while True:
            got, message = take(key)
            if got is not None:
                if watch is not None and watch.by_loop:
                    # Others of this process wait on the queue and the
                    # wake-up was ours: let the thread look again.
                    with watch.cond:
                        if watch.by_loop:
                            watch.arm()
                return message  # type: ignore[return-value]
            state = self._state
            with state.lock:
                watch = self._watch(state, queue)
                waiter = _Waiter(loop, None)
                watch.add(waiter)
                # A record sent since the take makes the thread's wait return
                # at once: no wake-up is lost between the take and here.
                watch.arm()
            await self._await(watch, waiter)

    async def _receive_routed(self, channel: str, queue: str,
                              loop: asyncio.AbstractEventLoop) -> Message:
        state = self._state
        if self._spin_s:

            def look() -> Any:
                with state.lock:
                    return self._take_routed(self._watch(state, queue), channel, loop)

            message = await self._spin_take(queue, loop, look)
            if message is not _EMPTY:
                return message  # type: ignore[no-any-return]
        while True:
            state = self._state
            with state.lock:
                watch = self._watch(state, queue)
                message = self._take_routed(watch, channel, loop)
                if message is not _EMPTY:
                    return message  # type: ignore[no-any-return]
                # Buffer check, drain and registration under one lock hold: a
                # message routed to us by another thread is either already in
                # the buffer or finds our waiter.
                waiter = _Waiter(loop, channel)
                watch.add(waiter)
                watch.arm()
            await self._await(watch, waiter)

    def _take_routed(self, watch: _Watch, channel: str, loop: asyncio.AbstractEventLoop) -> Any:
        """``channel``'s next message from its buffer or the process queue, or ``_EMPTY`` (lock held)."""
        message = watch.pop(channel)
        if message is _EMPTY:
            message = self._drain(watch, channel, loop)
        if message is not _EMPTY and watch.by_loop:
            watch.arm()  # pass the baton: more records may wait
        return message

    @staticmethod
    async def _await(watch: _Watch, waiter: _Waiter) -> None:
        try:
            await waiter.future
        except BaseException:
            # Cancelled (possibly right after being woken for a record): pass
            # the wake-up on to the next waiter. Nothing was taken.
            with watch.cond:
                watch.discard(waiter)
                if watch.by_loop:
                    watch.arm()
                channel = waiter.channel
                if (channel is not None and channel in watch.by_channel
                        and STORE.has(watch.prefix, watch.queue, channel)):
                    watch.wake(_first_pending(watch.by_channel[channel]), waiter.loop)
            raise
        with watch.cond:
            watch.discard(waiter)

    def _drain(self, watch: _Watch, channel: str, loop: asyncio.AbstractEventLoop) -> Any:
        """Take records off the process queue until one is for ``channel`` (lock held).

        The others go to the local store (:meth:`_Watch.deliver`), each
        waking its channel's receiver; the rest of a grouped record too.
        """
        take = self._sync_take_records
        queue = watch.queue
        rest: list[tuple[str, Message]] = []
        found: Any = _EMPTY
        for _ in range(_DRAIN_MAX):
            got, message = take(queue, rest)
            if got is None:
                break
            if found is _EMPTY and got == channel:
                found = message
            else:
                watch.deliver(got, message, loop)  # type: ignore[arg-type]
            if rest:
                for other, held in rest:
                    if found is _EMPTY and other == channel:
                        found = held
                    else:
                        watch.deliver(other, held, loop)
                rest.clear()
            if found is not _EMPTY:
                break
        return found

    # -- new_channel ---------------------------------------------------------------------

    async def new_channel(self, prefix: str = DEFAULT_CHANNEL_PREFIX) -> str:
        """A new ``"<prefix><process id>!<random>"`` channel for a consumer of this process.

        All channels made here with the same ``prefix`` share this process's
        queue ``"<prefix><process id>!"``.
        """
        state = self._state
        try:
            queue = state.queues[prefix]
        except (KeyError, TypeError):
            queue = self._process_queue(state, prefix)
        return queue + names.random_suffix()

    def _process_queue(self, state: _ProcessState, prefix: object) -> str:
        if not isinstance(prefix, str):
            raise TypeError(f"new_channel() prefix must be a str, not {type(prefix).__name__}: {prefix!r}")
        base = prefix.removesuffix(".")
        names.validate_process_prefix(base)
        queue = f"{base}.{state.client}!"
        longest = len(queue) + names.SUFFIX_LENGTH
        if longest > CHANNELS_MAX_NAME_LENGTH:
            raise TypeError(
                f"new_channel() prefix {prefix!r} is too long: the channel names would be {longest} "
                f"characters, Channels 4 allows {CHANNELS_MAX_NAME_LENGTH}"
            )
        with state.lock:
            state.queues[prefix] = queue
        return queue

    # -- groups ----------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or refresh it) for ``group_expiry`` seconds."""
        validate_group(group)
        validate_channel(channel)
        try:
            self._sync.group_add(group, channel)
        except exceptions.ChannelFull as exc:  # the segment's name table is full
            raise ChannelFull(str(exc)) from None

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; a no-op if it is not a member."""
        validate_group(group)
        validate_channel(channel)
        self._sync.group_discard(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every member of ``group`` in one C call.

        Members whose channel is full are skipped (a DEBUG log); never raises
        :class:`ChannelFull`.
        """
        validate_group(group)
        try:
            self._sync.send_group(group, message)
        except exceptions.MessageTooLarge as exc:
            raise MessageTooLarge(str(exc)) from None

    async def group_channels(self, group: str) -> list[str]:
        """The live members of ``group`` (not part of Channels' API; for tools and tests)."""
        validate_group(group)
        return self._sync.group_channels(group)

    # -- flush and lifecycle ---------------------------------------------------------------

    async def flush(self) -> None:
        """Drop every message and group of this prefix (all processes) and this process's buffers."""
        self._sync.flush()  # also drops what the local store holds for this prefix

    async def close(self) -> None:
        """Nothing to close: the segment stays mapped for the process's lifetime."""

    async def close_pools(self) -> None:
        """Nothing to close (channels_redis API compatibility)."""

    @property
    def sync_layer(self) -> SyncIPCChannelLayer:
        """The synchronous layer this adapter sends through (statistics, tools)."""
        return self._sync

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prefix={self.prefix!r}, expiry={self.expiry!r}, "
            f"group_expiry={self.group_expiry!r}, capacity={self.capacity!r}, "
            f"channel_capacity={self.channel_capacity!r})"
        )


options.document(IPCChannelLayer, "aio")
