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
``receive()`` never blocks the event loop and never polls. The waiting is
done by the loop-agnostic wake-up engine, :mod:`ipc_layer.wakeup` (its
docstring has the theory of operation and the state tables of its
watches); this module is its asyncio adapter (:class:`AsyncioLoops`:
``add_reader``, ``call_later``, ``call_soon_threadsafe`` and futures) plus
the Channels 4 names. With ``wakeup="fd"`` (the default) each event loop
waiting on a queue polls a FIFO the senders poke: one kernel wake-up per
message, no thread; with ``wakeup="thread"`` (and for a loop whose FD watch
cannot be opened, e.g. the waiter table is full) a helper thread per queue
sleeps in the kernel and wakes the loops. Either way the woken coroutine
takes the record itself with a non-blocking receive, on its loop's thread,
and one waiter per event loop is woken, which passes the baton on. Nothing
is taken off shared memory until a coroutine is running and can return it,
so a receive cancelled at any ``await`` loses no message. One layer serves
``async_to_sync`` callers, several loops in turn, and several threads'
loops at once.

With ``spin_us`` in FD mode, a receive first looks cooperatively for up to
``spin_us`` microseconds (``await asyncio.sleep(0)`` between looks, polling
the watch's lock-free sequence number) before it sleeps: other tasks and
I/O keep running, and a message that comes within the budget costs no
kernel wake-up.

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
fresh process id for ``new_channel()``, fresh locks and no helper threads or
FD watches (the engine's fork rule, :mod:`ipc_layer.wakeup`), no held
messages (the local store's, :mod:`ipc_layer.local_store`), and the segment
mapping is shared.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from channels.exceptions import ChannelFull as _ChannelsChannelFull  # type: ignore[import-untyped]
from channels.exceptions import MessageTooLarge as _ChannelsMessageTooLarge
from channels.layers import BaseChannelLayer  # type: ignore[import-untyped]

from _memo import remember

from . import exceptions, names, options
from .layer import IPCChannelLayer as SyncIPCChannelLayer
from .options import CapacityKey
from .wakeup import EMPTY as _EMPTY
from .wakeup import Engine, QueueWatch, Timer, Waiter

__all__ = ["ChannelFull", "IPCChannelLayer", "MessageTooLarge"]

Message = dict[str, Any]

#: Channels 4 accepts names with ``len(name) < 100``.
CHANNELS_MAX_NAME_LENGTH = 99
#: Default ``new_channel()`` prefix, as in Channels 4's layers.
DEFAULT_CHANNEL_PREFIX = "specific."

#: The ways a waiting receive is woken (the layer's ``wakeup`` option).
WAKEUPS = options.WAKEUPS

_perf_counter = time.perf_counter


class ChannelFull(_ChannelsChannelFull, exceptions.ChannelFull):  # type: ignore[misc]
    """The channel holds ``capacity`` messages (or the segment is out of room).

    Both ``except channels.exceptions.ChannelFull`` and
    ``except ipc_layer.ChannelFull`` catch it.
    """


class MessageTooLarge(_ChannelsMessageTooLarge, exceptions.MessageTooLarge):  # type: ignore[misc]
    """The encoded message exceeds ``max_message_size`` (also a ``ValueError``)."""


# -- names -------------------------------------------------------------------------


def _channels4_rules(name: str, kind: str) -> None:
    """The two rules Channels 4 adds to :mod:`ipc_layer.names`: ``len < 100`` and no ``?``.

    Not memoised: the two tests cost less than a cache lookup would.
    """
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


# -- the asyncio adapter of the wake-up engine ------------------------------------------


def _resolve(future: asyncio.Future[None]) -> None:
    """Wake a waiter (on its loop's thread); a cancelled or already woken one stays as it is."""
    if not future.done():
        future.set_result(None)


class AsyncioLoops:
    """:class:`ipc_layer.wakeup.Loops` for asyncio: the whole of what the engine needs of a loop."""

    __slots__ = ()

    running = staticmethod(asyncio._get_running_loop)
    resolve = staticmethod(_resolve)

    @staticmethod
    def create_future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        return loop.create_future()

    @staticmethod
    def future_done(future: asyncio.Future[None]) -> bool:
        return future.done()

    @staticmethod
    def call_soon_threadsafe(loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None],
                             arg: Any) -> None:
        loop.call_soon_threadsafe(callback, arg)  # RuntimeError once the loop is closed

    @staticmethod
    def call_later(loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], None]) -> Timer:
        return loop.call_later(delay, callback)

    @staticmethod
    def add_reader(loop: asyncio.AbstractEventLoop, fd: int, callback: Callable[[], None]) -> None:
        loop.add_reader(fd, callback)

    @staticmethod
    def remove_reader(loop: asyncio.AbstractEventLoop, fd: int) -> None:
        loop.remove_reader(fd)

    @staticmethod
    def is_closed(loop: asyncio.AbstractEventLoop) -> bool:
        return loop.is_closed()


_LOOPS = AsyncioLoops()


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
    segment; ``trusted_uids`` and ``lock_timeout`` say whose segment is used
    and how long an operation waits for a lock a stopped process holds (see
    :mod:`ipc_layer.layer`).
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
        trusted_uids: Sequence[int] = options.TRUSTED_UIDS.default,
        lock_timeout: float = options.LOCK_TIMEOUT.default,
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
        self._client = names.random_suffix()  # the process-unique part of new_channel() names
        #: new_channel() prefix -> this process's queue for it ("specific.<client>!").
        self._queues: dict[str, str] = {}
        self._engine = Engine(self._sync, _LOOPS, fd=self.wakeup == "fd",
                              after_fork=self._after_fork)
        # Validated names (hot paths): channel -> None for send, channel ->
        # (queue, routed) for receive.
        self._send_ok: dict[str, None] = {}
        self._receive_plans: dict[str, tuple[str, bool]] = {}
        # Hot-path bindings.
        self._sync_send = self._sync.send

    def _after_fork(self) -> None:
        # In a forked child: its new_channel() names must not land in the
        # parent's process queues.
        self._client = names.random_suffix()
        self._queues = {}

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
        return self._engine.dropped()

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
        remember(self._send_ok, validate_channel(channel), None)

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
        return remember(self._receive_plans, name, (queue, queue != name))

    async def _spin(self, look: Callable[[], Any], seq: Callable[[], int] | None,
                    last: int | None) -> Any:
        """Look for a message for up to ``spin_us``, yielding to the loop between looks.

        The FD-watch mode's spin: each ``await asyncio.sleep(0)`` lets every
        other ready task and the loop's own I/O poll (a zero-timeout select)
        run first, so other consumers are never held up, and a record that
        comes within the budget costs no kernel sleep and wake-up on either
        side. ``look()`` (a message or ``_EMPTY``) runs only when ``seq()``
        (:meth:`ipc_layer.wakeup.Engine.spin_seq`) moved past ``last`` (its
        value before the caller's own first look, so nothing sent after that
        look is missed), or every time when ``seq`` is None. It runs on the
        loop's thread, so a receive cancelled while spinning takes nothing.
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

    async def _spin_take(self, queue: str, loop: asyncio.AbstractEventLoop,
                         look: Callable[[], Any]) -> Any:
        """One look, then a spin if it found nothing: a message, or ``_EMPTY`` when the budget ran out."""
        seq = self._engine.spin_seq(queue, loop)
        last = seq() if seq is not None else None  # before the first look: no send is missed
        message = look()
        if message is _EMPTY:
            message = await self._spin(look, seq, last)
        return message

    async def _receive_direct(self, queue: str, loop: asyncio.AbstractEventLoop) -> Message:
        engine = self._engine
        if self._spin_s:
            message = await self._spin_take(queue, loop,
                                            functools.partial(engine.take_direct, queue, None))
            if message is not _EMPTY:
                return message  # type: ignore[no-any-return]
        take, wait = engine.take_direct, engine.wait_direct
        woken: QueueWatch | None = None
        while True:
            message = take(queue, woken)
            if message is not _EMPTY:
                return message  # type: ignore[no-any-return]
            waiter = wait(queue, loop)
            await self._await(waiter)
            woken = waiter.watch

    async def _receive_routed(self, channel: str, queue: str,
                              loop: asyncio.AbstractEventLoop) -> Message:
        engine = self._engine
        if self._spin_s:
            message = await self._spin_take(
                queue, loop, functools.partial(engine.take_routed, queue, channel, loop))
            if message is not _EMPTY:
                return message  # type: ignore[no-any-return]
        while True:
            message, waiter = engine.take_or_wait_routed(queue, channel, loop)
            if waiter is None:
                return message  # type: ignore[no-any-return]
            await self._await(waiter)

    async def _await(self, waiter: Waiter) -> None:
        try:
            await waiter.future
        except BaseException:
            # Cancelled (possibly right after being woken for a record): the
            # engine passes the wake-up on to the next waiter. Nothing was taken.
            self._engine.cancelled(waiter)
            raise
        self._engine.finished(waiter)

    # -- new_channel ---------------------------------------------------------------------

    async def new_channel(self, prefix: str = DEFAULT_CHANNEL_PREFIX) -> str:
        """A new ``"<prefix><process id>!<random>"`` channel for a consumer of this process.

        All channels made here with the same ``prefix`` share this process's
        queue ``"<prefix><process id>!"``.
        """
        try:
            queue = self._queues[prefix]
        except (KeyError, TypeError):
            queue = self._process_queue(prefix)
        return queue + names.random_suffix()

    def _process_queue(self, prefix: object) -> str:
        if not isinstance(prefix, str):
            raise TypeError(f"new_channel() prefix must be a str, not {type(prefix).__name__}: {prefix!r}")
        base = prefix.removesuffix(".")
        names.validate_process_prefix(base)
        queue = f"{base}.{self._client}!"
        longest = len(queue) + names.SUFFIX_LENGTH
        if longest > CHANNELS_MAX_NAME_LENGTH:
            raise TypeError(
                f"new_channel() prefix {prefix!r} is too long: the channel names would be {longest} "
                f"characters, Channels 4 allows {CHANNELS_MAX_NAME_LENGTH}"
            )
        self._queues[prefix] = queue
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
