"""The wake-up engine: waiting for a shared-memory queue from any event loop, without a poll.

An event loop must never block in the kernel, and a waiting receive must
never poll. This module is the machinery that gets a loop woken when a
queue it waits on gets a record, for **any** event loop: it knows no loop
in particular and talks to one only through a :class:`Loops` object the
adapter provides (add a reader, schedule a timer, call from another thread,
make and resolve a future-like). :mod:`ipc_layer.aio` (asyncio) is a thin
adapter over it, and a Twisted adapter (``reactor.addReader``,
``callLater``, ``callFromThread``, Deferreds) is another; the tests drive it
from a plain :mod:`selectors` loop and from Twisted's reactor too.

Theory of operation
-------------------
A waiting receive registers a :class:`Waiter` (its loop, a future-like, its
channel) on the :class:`QueueWatch` of the queue its channel lives in, one
per queue per :class:`Engine` (one engine per layer instance, per process).
With FD watches (``fd=True``, the default of the asyncio adapter), each
loop waiting on the queue owns a :class:`LoopFdWatch`: a core FD watch
(:meth:`_ringbuf.Segment.watch`: a waiter row and a FIFO) registered with
the loop as a reader. Arming it under the segment lock either reports that
records are already there (a waiter is woken at once) or makes the next
sender write one byte to the FIFO: the loop's own poller wakes, the reader
resolves the first waiter's future - one kernel wake-up per message, no
thread. A poke is lost only if a sender dies between unlocking and poking;
a per-watch timer (``FD_SLICE``) looks anyway, and closes the watch after
``IDLE_EXIT`` seconds without waiters. Without FD watches (``fd=False``),
and for a loop whose watch cannot be opened (e.g. the waiter table is
full), a helper thread per queue sleeps in :meth:`_ringbuf.Segment.wait`
(GIL released, futex) while any waiter wants it and wakes those loops with
``call_soon_threadsafe``. Either way the woken receive then takes the
record itself with a non-blocking receive, on its loop's thread, and
**one waiter per loop** is woken. Nothing is taken off shared memory until
a receive is running and can return it, so a receive cancelled while it
waits loses no message.

A *standing* waiter (:meth:`Engine.wait_standing`, a stream's) stays
registered while messages flow: woken, its owner takes until the queue is
empty (wake-ups meanwhile find its future done and are absorbed) and then
waits again with a fresh future (:meth:`Engine.rewait`, which re-arms): one
arm per burst of messages instead of a waiter, a future and an arm each.

Waking one waiter per loop (not all) keeps a thousand idle consumers from
waking for every message; one per *loop* (not one in all) means a loop
that stopped running, or closed, can only strand its own waiters. A closed
loop is noticed when ``call_soon_threadsafe`` refuses (``RuntimeError``)
or by the timer and helper-thread slices, and its waiters are dropped.
**The baton**: the woken waiter passes the wake-up on: after taking a
record, or when cancelled, it re-arms the watch if other waiters remain, so
a record no one took wakes the next one. Watches and helper threads belong
to the engine and the process, never to a loop, so one layer serves
several loops in turn, and several threads' loops at once: FD watches are
per (loop, queue), made on that loop's thread.

Routing (process queues): a receive on ``name!x`` takes from the local
store (:mod:`ipc_layer.local_store`) first, then takes records off the
process queue ``name!`` until one is its own, putting the others in the
store and waking their channels' waiters. A message in the store is not in
the segment, so no arm fires for it: :meth:`QueueWatch.arm` wakes the
waiters of the channels the store holds messages for instead.

State tables
------------
Every attribute below is guarded by the engine's lock (the helper thread
holds it only between kernel sleeps); each transition is marked
``# state: A -> B`` where it happens in the code.

:class:`LoopFdWatch` (one loop's FD watch of one queue), ``state``:

=========  ===============================================================
IDLE       registered with the loop (reader, timer); the core row is not
           armed: no send will poke the FIFO.
ARMED      the core row is armed (set under the segment lock by
           :meth:`LoopFdWatch.arm`): the next send to the queue disarms it
           and pokes; arming again would only cost a lock.
CLOSED     reader and timer gone, core watch closed (final).
=========  ===============================================================

==================  =========  =============================================
from                to         when
==================  =========  =============================================
(open)              IDLE       a waiter of the loop first waits on the queue
IDLE                ARMED      ``arm()``: the core found no record
IDLE                IDLE       ``arm()``: records are there: wake a waiter
ARMED               IDLE       ``_on_poke``: the FIFO was written (a sender
                               disarmed the row)
ARMED               IDLE       ``_on_timer``: a whole ``FD_SLICE`` with
                               waiters and no poke (a lost poke): wake one
IDLE/ARMED          CLOSED     ``IDLE_EXIT`` seconds without waiters, the
                               loop closed, the row was swept (arm failed),
                               or exit
==================  =========  =============================================

:class:`QueueWatch`'s helper thread, ``thread`` and ``thread_wanted``:

=========  ===============================================================
STOPPED    ``thread is None``: no helper thread.
WATCHING   ``thread_wanted``: a waiter (of a loop without an FD watch) wants
           to hear of the next record; the thread sleeps in the kernel on
           the queue (bounded by ``WATCH_SLICE``).
PARKED     thread alive, not wanted: it sleeps on the engine's condition
           (records stay in the queue until a receive takes them, so
           waiting again at once would spin).
=========  ===============================================================

==================  =========  =============================================
from                to         when
==================  =========  =============================================
STOPPED             WATCHING   ``arm()`` starts the thread
PARKED              WATCHING   ``arm()`` notifies it
WATCHING            PARKED     the kernel wait saw a record: wake a waiter
                               per loop; or the last waiter left
PARKED              STOPPED    ``IDLE_EXIT`` seconds parked: the thread exits
==================  =========  =============================================

Processes
---------
Fork and exit are handled here, once for every engine of the process
(``os.register_at_fork``, ``atexit``): a forked child gets a fresh lock, no
watches and no helper threads (the parent's are not inherited; its FD
watches are the parent's rows and FIFOs), and the engine's owner is told
(``after_fork``) so it can renew what is per process (e.g. the asyncio
adapter's ``new_channel()`` names). At exit every FD watch is closed (its
row unregistered, its FIFO unlinked); a killed process's are swept by the
core.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .local_store import STORE

if TYPE_CHECKING:
    from .layer import IPCChannelLayer

__all__ = [
    "EMPTY",
    "FD_SLICE",
    "IDLE_EXIT",
    "WATCH_SLICE",
    "Engine",
    "LoopFdWatch",
    "Loops",
    "QueueWatch",
    "Timer",
    "Waiter",
]

logger = logging.getLogger(__name__)

Message = dict[str, Any]
#: An event loop, as the adapter's :class:`Loops` knows it (compared by identity).
Loop = Any
#: A future-like the adapter made for a waiter (an asyncio Future, a Deferred, ...).
FutureLike = Any

#: Longest single sleep of a helper thread; it only bounds how long a thread
#: whose waiters all left keeps a waiter row of the segment.
WATCH_SLICE = 5.0
#: A helper thread with no waiter for this long exits (a new one starts on demand);
#: likewise a loop's FD watch of a queue is closed after this long without waiters.
IDLE_EXIT = 30.0
#: Longest an armed FD watch waits for a poke before its loop looks anyway: a
#: poke is lost only if a sender dies between unlocking and poking.
FD_SLICE = 1.0
#: Most records one routing pass takes off a process queue while holding the
#: lock; the rest wake the next pass at once.
DRAIN_MAX = 256

#: "No message" (a message may be any dict, so None is not used for it).
EMPTY: Any = object()

_monotonic = time.monotonic
_monotonic_ns = time.monotonic_ns

# LoopFdWatch states (see the module docstring's table).
IDLE = "IDLE"
ARMED = "ARMED"
CLOSED = "CLOSED"


class Timer(Protocol):
    """A scheduled call the engine may cancel (asyncio's TimerHandle, Twisted's DelayedCall)."""

    def cancel(self) -> None: ...


class Loops(Protocol):
    """Everything the engine needs from one kind of event loop; the adapter implements it.

    ``loop`` arguments are the adapter's loop objects (compared by
    identity). Every method but :meth:`call_soon_threadsafe` and
    :meth:`running` is called on ``loop``'s own thread.
    """

    def running(self) -> Loop | None:
        """The loop running in the calling thread, or None."""

    def create_future(self, loop: Loop) -> FutureLike:
        """A new unresolved future-like of ``loop`` for a waiter to await."""

    def future_done(self, future: FutureLike) -> bool:
        """Whether ``future`` was resolved or cancelled."""

    def resolve(self, future: FutureLike) -> None:
        """Resolve ``future`` (on its loop's thread); a no-op when it is done already.

        Called with the engine's lock held: it must mark ``future`` done at
        once (:meth:`future_done` true) but must not run the waiter's
        continuation synchronously, which would re-enter the engine. An
        asyncio future's ``set_result`` schedules its callbacks, as needed;
        a Twisted Deferred runs them at once, so a reactor adapter marks its
        future-like and fires the Deferred from ``callLater(0, ...)``.
        """

    def call_soon_threadsafe(self, loop: Loop, callback: Callable[[Any], None], arg: Any) -> None:
        """Run ``callback(arg)`` on ``loop``'s thread soon; ``RuntimeError`` if the loop is closed."""

    def call_later(self, loop: Loop, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` on ``loop`` after ``delay`` seconds."""

    def add_reader(self, loop: Loop, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever ``fd`` is readable (raises if the loop cannot poll fds)."""

    def remove_reader(self, loop: Loop, fd: int) -> None:
        """Stop watching ``fd``."""

    def is_closed(self, loop: Loop) -> bool:
        """Whether ``loop`` was closed (it will never run a callback again)."""


class Waiter:
    """One receive awaiting a message: its loop, its future-like, its channel (None: direct)."""

    __slots__ = ("channel", "future", "loop", "watch")

    def __init__(self, watch: QueueWatch, loop: Loop, future: FutureLike, channel: str | None) -> None:
        self.watch = watch
        self.loop = loop
        self.future = future
        self.channel = channel


class LoopFdWatch:
    """One event loop's FD watch of one queue: a core :class:`_ringbuf.Watch` the loop polls.

    Made and registered (``add_reader``) on the loop's own thread when a
    receive of that loop first waits on the queue; kept while the loop has
    waiters, closed on the loop's thread after ``IDLE_EXIT`` seconds without
    any, or by anyone once the loop is closed. ``state`` is one of the
    module docstring's table (IDLE, ARMED, CLOSED). Guarded by the lock.
    """

    __slots__ = ("core", "fd", "idle_since", "loop", "owner", "state", "timer")

    def __init__(self, owner: QueueWatch, loop: Loop, core: Any) -> None:
        self.owner = owner
        self.loop = loop
        self.core = core
        self.fd: int = core.fileno()
        self.idle_since: float | None = None
        loops = owner.engine.loops
        loops.add_reader(loop, self.fd, self._on_poke)
        self.state = IDLE  # state: (open) -> IDLE
        self.timer: Timer | None = loops.call_later(loop, FD_SLICE, self._on_timer)

    def _on_poke(self) -> None:
        """The FIFO is readable: a sender found the row armed and disarmed it (loop thread)."""
        self.core.drain()
        owner = self.owner
        with owner.cond:
            if self.state is ARMED:
                self.state = IDLE  # state: ARMED -> IDLE (poked)
            owner.wake_loop(self.loop, self.loop)

    def _on_timer(self) -> None:
        """Every ``FD_SLICE``: cover a lost poke, close when idle (loop thread)."""
        owner = self.owner
        with owner.cond:
            if owner.fd_watches.get(self.loop) is not self:
                return
            if self.loop in owner.by_loop:
                self.idle_since = None
                if self.state is ARMED:  # no poke for a whole slice: look anyway
                    self.state = IDLE  # state: ARMED -> IDLE (lost poke covered)
                    owner.wake_loop(self.loop, self.loop)
            else:
                now = _monotonic()
                if self.idle_since is None:
                    self.idle_since = now
                elif now - self.idle_since >= IDLE_EXIT:
                    del owner.fd_watches[self.loop]
                    self.close()  # state: IDLE/ARMED -> CLOSED (idle)
                    return
            self.timer = owner.engine.loops.call_later(self.loop, FD_SLICE, self._on_timer)

    def arm(self, running: Loop | None) -> None:
        """Arm the core watch, or wake a waiter now if records are there (lock held)."""
        if self.state is not IDLE:
            return
        try:
            ready = self.core.arm()
        except Exception:
            # The row was swept (a repair found this process's row bad) or the
            # segment closed: wake a waiter, whose take retries (and raises),
            # and open a fresh watch at the next wait.
            logger.debug("queue %r: FD watch lost; reopening", self.owner.queue, exc_info=True)
            self.owner.drop_fd_watch(self.loop)  # state: IDLE -> CLOSED (row lost)
            ready = True
        if ready:
            self.owner.wake_loop(self.loop, running)  # state: IDLE -> IDLE (records there)
        elif self.state is IDLE:
            self.state = ARMED  # state: IDLE -> ARMED

    def close(self) -> None:
        """Unregister from the loop (when it still runs) and close the core watch."""
        self.state = CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        loops = self.owner.engine.loops
        if not loops.is_closed(self.loop):
            try:
                loops.remove_reader(self.loop, self.fd)
            except Exception:  # pragma: no cover - a loop closing meanwhile
                pass
        try:
            self.core.close()
        except Exception:  # pragma: no cover - the segment closed first
            logger.debug("closing the FD watch of %r failed", self.owner.queue, exc_info=True)


class QueueWatch:
    """The waiters of one shared-memory queue in this engine, its FD watches and helper thread.

    Every attribute is guarded by the engine's lock (``cond``'s lock).
    ``thread_wanted`` is "a waiter served by the helper thread wants to
    hear when the queue holds a record" (the thread's table in the module
    docstring).
    """

    __slots__ = ("by_channel", "by_loop", "cond", "engine", "fd_watches", "limit", "queue",
                 "thread", "thread_wanted")

    def __init__(self, engine: Engine, queue: str, limit: int) -> None:
        self.engine = engine
        self.cond = threading.Condition(engine.lock)
        self.queue = queue
        #: The most messages a channel of this queue may hold in the local store.
        self.limit = limit
        self.fd_watches: dict[Loop, LoopFdWatch] = {}
        self.thread_wanted = False
        self.thread: threading.Thread | None = None
        # loop -> its waiters, oldest first (a dict as an ordered set)
        self.by_loop: dict[Loop, dict[Waiter, None]] = {}
        # channel -> its waiters (None: receives of the whole queue)
        self.by_channel: dict[str | None, dict[Waiter, None]] = {}

    # -- waiters (lock held) ---------------------------------------------------------

    def add(self, waiter: Waiter) -> None:
        """Register a waiter (on its loop's thread: an FD watch is registered there)."""
        loop = waiter.loop
        if self.engine.fd and loop not in self.fd_watches:
            self.open_fd_watch(loop)
        self.by_loop.setdefault(loop, {})[waiter] = None
        self.by_channel.setdefault(waiter.channel, {})[waiter] = None

    def discard(self, waiter: Waiter) -> None:
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
        if not self.by_loop and self.thread_wanted:
            # Nobody listens: the thread parks after its current sleep.
            self.thread_wanted = False  # state: WATCHING -> PARKED (last waiter left)

    def forget_loop(self, loop: Loop) -> None:
        """Drop every waiter of a closed loop: none of them can ever run again."""
        for waiter in list(self.by_loop.get(loop, ())):
            self.discard(waiter)
        self.drop_fd_watch(loop)

    def first_pending(self, waiters: dict[Waiter, None]) -> Waiter:
        """The oldest waiter not woken yet (else the oldest): the one to hand a wake-up to."""
        done = self.engine.loops.future_done
        for waiter in waiters:
            if not done(waiter.future):
                return waiter
        return next(iter(waiters))

    # -- FD watches (lock held) --------------------------------------------------------

    def open_fd_watch(self, loop: Loop) -> None:
        """Give ``loop`` its FD watch of this queue (on ``loop``'s thread); the thread if that fails."""
        loops = self.engine.loops
        for other in [other for other in self.fd_watches if loops.is_closed(other)]:
            self.forget_loop(other)
        try:
            core = self.engine.open_watch((self.queue.encode("ascii"),))
        except Exception:
            # The waiter table is full, /dev/shm refuses FIFOs, ...: this loop
            # is served by the helper thread instead.
            logger.debug("queue %r: no FD watch, using the helper thread", self.queue, exc_info=True)
            return
        try:
            self.fd_watches[loop] = LoopFdWatch(self, loop, core)
        except Exception:  # pragma: no cover - a loop without add_reader (e.g. Windows proactor)
            core.close()
            logger.debug("queue %r: loop cannot poll an fd, using the helper thread", self.queue)

    def drop_fd_watch(self, loop: Loop) -> None:
        lw = self.fd_watches.pop(loop, None)
        if lw is not None:
            lw.close()  # state: IDLE/ARMED -> CLOSED

    def close_fd_watches(self) -> None:
        for loop in list(self.fd_watches):
            self.drop_fd_watch(loop)

    # -- waking (lock held) ------------------------------------------------------------

    def wake_loop(self, loop: Loop, running: Loop | None) -> None:
        """Wake the first pending waiter of ``loop``, if it has any (``running``: the caller's loop)."""
        waiters = self.by_loop.get(loop)
        if waiters:
            self.wake(self.first_pending(waiters), running)

    def wake(self, waiter: Waiter, running: Loop | None) -> None:
        """Resolve ``waiter``'s future from any thread (``running``: the caller's loop, if any)."""
        loops = self.engine.loops
        if waiter.loop is running:
            loops.resolve(waiter.future)
            return
        try:
            loops.call_soon_threadsafe(waiter.loop, loops.resolve, waiter.future)
        except RuntimeError:  # the loop is closed
            logger.debug("queue %r: dropping the waiters of a closed event loop", self.queue)
            self.forget_loop(waiter.loop)

    def arm(self) -> None:
        """Wake a waiter per loop once the queue holds a record.

        Loops with an FD watch arm it (or are woken at once when records are
        already there); the others are served by the helper thread. Messages
        already in the local store are not in the segment, so no arm would
        ever fire for them: their channels' waiters (and a receiver of the
        whole queue) are woken at once instead, and only them, so a held
        message nobody waits for never wakes anyone.
        """
        loops = self.engine.loops
        if STORE:
            held = STORE.channels(self.engine.prefix, self.queue)
            if held:
                running = loops.running()
                for channel in (*held, None):
                    waiters = self.by_channel.get(channel)
                    if waiters:
                        self.wake(self.first_pending(waiters), running)
        fd_watches = self.fd_watches
        if fd_watches:
            running = loops.running()
            need_thread = False
            for loop in list(self.by_loop):
                lw = fd_watches.get(loop)
                if lw is None:
                    need_thread = True
                elif loops.is_closed(loop):
                    self.forget_loop(loop)
                else:
                    lw.arm(running)
            if not need_thread:
                return
        if self.thread_wanted:
            return
        self.thread_wanted = True
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"ipc-wait {self.queue}",
                                           daemon=True)
            self.thread.start()  # state: STOPPED -> WATCHING
        else:
            self.cond.notify()  # state: PARKED -> WATCHING

    # -- the helper thread -----------------------------------------------------------

    def _run(self) -> None:
        names_ = (self.queue.encode("ascii"),)
        engine = self.engine
        loops = engine.loops
        while True:
            with self.cond:
                while not self.thread_wanted:
                    if not self.cond.wait(IDLE_EXIT) and not self.thread_wanted:
                        self.thread = None  # state: PARKED -> STOPPED
                        return
            try:
                ready = engine.wait(names_, WATCH_SLICE, engine.spin_us)
            except Exception:
                # The segment was closed or broke: wake everyone, so that each
                # receive retries its take and raises the error itself.
                logger.exception("waiting on queue %r failed; waking its receivers", self.queue)
                ready = True
            if not ready:
                with self.cond:
                    # A loop closed while its receives waited here never
                    # says so: drop its waiters, so an idle thread can park.
                    for loop in [loop for loop in self.by_loop if loops.is_closed(loop)]:
                        self.forget_loop(loop)
                continue
            with self.cond:
                if not self.thread_wanted:
                    continue
                self.thread_wanted = False  # state: WATCHING -> PARKED (record seen)
                # Loops with an FD watch are woken by their own fd.
                targets = [self.first_pending(waiters) for loop, waiters in self.by_loop.items()
                           if loop not in self.fd_watches]
                for waiter in targets:
                    self.wake(waiter, None)

    # -- routing (process queues; lock held) ------------------------------------------

    def deliver(self, channel: str, message: Message, running: Loop | None) -> None:
        """Hold a message taken for another channel of this queue and wake its receiver."""
        engine = self.engine
        if not STORE.put(engine.prefix, self.queue, channel, message,
                         _monotonic_ns() + engine.expiry_ns, self.limit):
            return  # the channel already holds its capacity: dropped (counted by the store)
        waiters = self.by_channel.get(channel)
        if waiters:
            self.wake(self.first_pending(waiters), running)


class Engine:
    """The wake-up machinery of one layer instance in this process (see the module docstring).

    :param sync: the synchronous layer whose segment and receives it uses.
    :param loops: the adapter's :class:`Loops` for its kind of event loop.
    :param fd: FD watches per loop (else helper threads only).
    :param after_fork: called in a forked child, after the engine was reset.
    """

    def __init__(self, sync: IPCChannelLayer, loops: Loops, *, fd: bool = True,
                 after_fork: Callable[[], None] | None = None) -> None:
        self.loops = loops
        self.fd = fd
        self.prefix = sync.prefix
        self.spin_us = sync.spin_us
        self.expiry_ns = int(sync.expiry * 1e9)
        segment = sync.segment
        self.open_watch = segment.watch
        self.wait = segment.wait
        self._capacities = sync.capacities
        self._take = sync.receive
        self._take_records = sync.take_records
        self._after_fork = after_fork
        self.lock = threading.Lock()
        self.watches: dict[str, QueueWatch] = {}
        _ENGINES.add(self)

    def watch(self, queue: str) -> QueueWatch:
        """The watch of ``queue`` (lock held)."""
        watch = self.watches.get(queue)
        if watch is None:
            watch = self.watches[queue] = QueueWatch(self, queue, self._capacities.get(queue))
        return watch

    # -- receiving: the steps an adapter's receive loop runs -----------------------------

    def take_direct(self, queue: str, woken: QueueWatch | None) -> Any:
        """One non-blocking take of ``queue`` (the local store first): a message or :data:`EMPTY`.

        ``woken``: the watch, when the caller was woken for this take; if
        others of this process wait on the queue, the baton passes on.
        """
        got = self.take_any((queue,), woken)
        return EMPTY if got is None else got[1]

    def take_any(self, channels: tuple[str, ...], woken: QueueWatch | None) -> tuple[str, Message] | None:
        """One non-blocking ASGI 1 receive over ``channels``: ``(full channel name, message)`` or None.

        What :meth:`take_direct` does for one queue, for a list (the ASGI 1
        ``receive_twisted`` takes any number of channels); the baton as there.
        """
        got, message = self._take(channels)
        if got is None or message is None:
            return None
        if woken is not None and woken.by_loop:
            with woken.cond:
                if woken.by_loop:
                    woken.arm()  # the baton: others wait, the wake-up was ours
        return got, message

    def wait_direct(self, queue: str, loop: Loop) -> Waiter:
        """Register a waiter of ``loop`` for ``queue`` and arm (after a take found nothing)."""
        with self.lock:
            watch = self.watch(queue)
            waiter = Waiter(watch, loop, self.loops.create_future(loop), None)
            watch.add(waiter)
            # A record sent since the take makes the arm wake at once: no
            # wake-up is lost between the take and here.
            watch.arm()
        return waiter

    def wait_standing(self, queue: str, loop: Loop, future: FutureLike) -> Waiter:
        """Register a *standing* waiter of ``loop`` for ``queue`` with ``future``, and arm.

        A standing waiter belongs to a stream (a consumer that takes every
        message as it comes, e.g. :meth:`ipc_layer.twisted_ext.ReactorBridge.stream`):
        it stays registered while messages flow instead of one waiter per
        message. Woken, its owner takes until the queue is empty (pokes
        meanwhile find its future done and cost nothing), then calls
        :meth:`rewait` with a fresh future; :meth:`cancelled` ends it.
        """
        with self.lock:
            watch = self.watch(queue)
            waiter = Waiter(watch, loop, future, None)
            watch.add(waiter)
            watch.arm()  # records already there resolve ``future`` at once
        return waiter

    def rewait(self, waiter: Waiter, future: FutureLike) -> bool:
        """A standing waiter's owner took everything: wait again with ``future`` (re-arm).

        Arming checks for records under the segment lock, so one sent since
        the owner's last take resolves ``future`` at once: no wake-up is lost
        between that take and here. False when the waiter is no longer
        registered (cancelled, or its loop was found closed): nothing armed.
        """
        with self.lock:
            watch = waiter.watch
            same_loop = watch.by_loop.get(waiter.loop)
            if same_loop is None or waiter not in same_loop:
                return False
            waiter.future = future
            if self.fd and waiter.loop not in watch.fd_watches:
                # Its FD watch was dropped (a swept row): a fresh one, as a
                # new waiter's first wait would open.
                watch.open_fd_watch(waiter.loop)
            watch.arm()
        return True

    def take_routed(self, queue: str, channel: str, loop: Loop) -> Any:
        """``channel``'s next message from the local store or the process queue, or :data:`EMPTY`."""
        with self.lock:
            return self._take_routed(self.watch(queue), channel, loop)

    def take_or_wait_routed(self, queue: str, channel: str, loop: Loop) -> tuple[Any, Waiter | None]:
        """:meth:`take_routed`, registering a waiter when nothing is there (one lock hold)."""
        with self.lock:
            watch = self.watch(queue)
            message = self._take_routed(watch, channel, loop)
            if message is not EMPTY:
                return message, None
            # Store check, drain and registration under one lock hold: a
            # message routed to us by another thread is either already in
            # the store or finds our waiter.
            waiter = Waiter(watch, loop, self.loops.create_future(loop), channel)
            watch.add(waiter)
            watch.arm()
        return EMPTY, waiter

    def _take_routed(self, watch: QueueWatch, channel: str, loop: Loop) -> Any:
        message = STORE.take(self.prefix, watch.queue, channel) if STORE else None
        if message is None:
            message = self._drain(watch, channel, loop)
        if message is not EMPTY and watch.by_loop:
            watch.arm()  # the baton: more records may wait
        return message

    def _drain(self, watch: QueueWatch, channel: str, loop: Loop) -> Any:
        """Take records off the process queue until one is for ``channel`` (lock held).

        The others go to the local store (:meth:`QueueWatch.deliver`), each
        waking its channel's receiver; the rest of a grouped record too.
        """
        take = self._take_records
        queue = watch.queue
        rest: list[tuple[str, Message]] = []
        found: Any = EMPTY
        for _ in range(DRAIN_MAX):
            got, message = take(queue, rest)
            if got is None:
                break
            if found is EMPTY and got == channel:
                found = message
            else:
                watch.deliver(got, message, loop)  # type: ignore[arg-type]
            if rest:
                for other, held in rest:
                    if found is EMPTY and other == channel:
                        found = held
                    else:
                        watch.deliver(other, held, loop)
                rest.clear()
            if found is not EMPTY:
                break
        return found

    def finished(self, waiter: Waiter) -> None:
        """The waiter's future fired and its receive goes on: unregister it."""
        with self.lock:
            waiter.watch.discard(waiter)

    def cancelled(self, waiter: Waiter) -> None:
        """The waiter's receive was cancelled (maybe right after being woken): pass the wake-up on.

        Nothing was taken for it, so the next waiter gets the chance.
        """
        watch = waiter.watch
        with self.lock:
            watch.discard(waiter)
            if watch.by_loop:
                watch.arm()
            channel = waiter.channel
            if (channel is not None and channel in watch.by_channel
                    and STORE.has(self.prefix, watch.queue, channel)):
                watch.wake(watch.first_pending(watch.by_channel[channel]), waiter.loop)

    def spin_seq(self, queue: str, loop: Loop) -> Callable[[], int] | None:
        """``seq`` of ``loop``'s FD watch of ``queue`` (opened if need be), or None.

        What a spinning receive polls: it changes when a record is sent to
        the queue and is read without the segment lock, so a spinner never
        contends with the senders it waits for (a locked take per look
        slowed a 100-member group_send from ~38 to ~69 us while its drainer
        spun). None where there is no FD watch (helper-thread mode, or the
        watch could not be opened): the spin then takes under the lock each
        look.
        """
        with self.lock:
            watch = self.watch(queue)
            if not self.fd:
                return None
            if loop not in watch.fd_watches:
                watch.open_fd_watch(loop)
            lw = watch.fd_watches.get(loop)
            if lw is None:
                return None
            lw.idle_since = None  # in use: the idle timer must not close it under us
            seq: Callable[[], int] = lw.core.seq
            return seq

    # -- process lifecycle -----------------------------------------------------------

    def dropped(self) -> int:
        """Messages the local store dropped for this engine's queues (their channel was full)."""
        return sum(STORE.dropped(self.prefix, queue) for queue in list(self.watches))

    def close_fd_watches(self) -> None:
        """Unregister every FD watch of this engine and unlink its FIFOs."""
        with self.lock:
            for watch in self.watches.values():
                watch.close_fd_watches()

    def _reset_in_child(self) -> None:
        # The parent's helper threads do not exist here, its lock may be held
        # by a thread that does not exist either, and its FD watches are the
        # parent's rows and FIFOs.
        self.lock = threading.Lock()
        self.watches = {}
        if self._after_fork is not None:
            self._after_fork()


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine._reset_in_child()


def _at_exit() -> None:
    """At exit: unregister this process's FD watches and unlink their FIFOs."""
    for engine in list(_ENGINES):
        engine.close_fd_watches()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
