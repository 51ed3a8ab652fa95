"""One driver interface over every layer the bench measures, synchronous or asyncio.

A scenario only ever talks to a driver. A driver is built *inside* the child process that
uses it, from a picklable :class:`LayerSpec` (layers are never shared across ``fork``).
The interface is the ASGI 1 one:

=====================================  ===================================================
``send(channel, message)``             raises :class:`Full` on back-pressure
``receive(channels, timeout)``         ``(channel, message)`` or ``(None, None)`` after
                                       ``timeout`` seconds (blocking, never busy-polling)
``new_channel()``                      a fresh channel this process can receive on
``group_add(group, channel)``
``send_group(group, message)``         ``group_send`` for Channels 4 layers
``group_members(n)``                   ``(members, listens)``: ``n`` channels to add to a
                                       group, and the ``receive`` channel lists that drain
                                       one message per member in *this* process
``pause(seconds)``                     back off (``time.sleep`` / ``asyncio.sleep``)
``settle()``                           finish this process's background layer work (before
                                       the role blocks outside the layer, at a barrier)
``flush()``                            empty everything this driver's prefix owns
``close()`` / ``destroy()``            disconnect / remove shared state (always sync)
=====================================  ===================================================

It comes in two forms with the same method names: :class:`Driver`, whose operations are
plain calls, and :class:`AioDriver`, whose operations are coroutines awaited inside one
role coroutine on the process's event loop (:meth:`AioDriver.run`). The roles are written
once against :class:`AioDriver`; :mod:`bench.unasync` derives their synchronous twins, which
call a :class:`Driver` (see :mod:`bench.scenarios`).

The Channels 4 layers (``ipc_aio``, ``channels_redis``) get one of two drivings, the same
for both (``LayerSpec.aio_driving``, ``--aio-driving``):

- ``native`` (:class:`Channels4AioDriver`): each role is one coroutine, every operation a
  plain ``await layer.op(...)``, as a Channels 4 consumer runs;
- ``per-call`` (:class:`Channels4Driver`): the synchronous interface, each operation run
  by ``loop.run_until_complete(layer.op(...))`` as sync code calls a Channels 4 layer
  (~10-15 us of asyncio machinery per operation: a Task, the loop's start and stop).

Adding a layer: write a ``_make_<name>(spec)`` factory returning a driver (usually an
:class:`Asgi1Driver`, or :func:`_channels4` around a Channels 4 layer object), and add a
:class:`LayerInfo` to :data:`LAYERS`. A factory whose import fails makes the layer
"skipped" with the import error as the printed reason.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

__all__ = [
    "reference_layer",
    "SCENARIO_REFERENCE",
    "AIO_DRIVINGS",
    "AIO_WAKEUPS",
    "LAYERS",
    "AioDriver",
    "Driver",
    "Full",
    "LayerInfo",
    "LayerSpec",
    "Unavailable",
    "make_driver",
    "sweep",
]


class Full(Exception):
    """The layer refused a send for lack of room (capacity or memory); retry later."""


class Unavailable(Exception):
    """The layer cannot be built here (missing module, no Redis); the message says why."""


#: How the Channels 4 layers are driven (see the module docstring); the first is the default.
AIO_DRIVINGS = ("native", "per-call")
#: ipc_aio's wake-up modes (``ipc_layer.aio.WAKEUPS``, named here so the bench's --help
#: needs no import of the layer): an FD watch polled by the loop, or a helper thread.
AIO_WAKEUPS = ("fd", "thread")


@dataclass(frozen=True)
class LayerSpec:
    """Everything a child needs to build its own driver (picklable)."""

    layer: str
    prefix: str  # unique per case: no two cases share queues, keys or segments
    redis_url: str | None = None
    capacity: int = 100_000
    #: Shared-memory segment of the ipc layers and the raw core: room for a 64 KiB message
    #: to each of 1,000 group members, or a full channel of 64 KiB messages.
    segment_size: int = 256 << 20
    #: Spin budget before sleeping in a receive (shared-memory layers); None: the layer's
    #: default (0 for the raw core).
    spin_us: int | None = None
    #: How a Channels 4 layer is driven: one of :data:`AIO_DRIVINGS`.
    aio_driving: str = AIO_DRIVINGS[0]
    #: ipc_aio's ``wakeup`` option (one of :data:`AIO_WAKEUPS`); None: the layer's default.
    aio_wakeup: str | None = None
    #: More Redis servers, after ``redis_url``, for the sharded layer's other shards.
    shard_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerInfo:
    name: str
    factory: Callable[[LayerSpec], Driver | AioDriver]
    description: str
    needs_redis: bool = False
    limit: bool = False  # a stated limit (raw core), not a layer users deploy
    #: Redis servers besides ``redis_url`` the layer needs (the sharded Redis layer's).
    extra_shards: int = 0
    channels4: bool = False  # an asyncio Channels 4 layer: driven as ``aio_driving`` says

    @property
    def receives_many(self) -> bool:
        """Whether one ``receive`` call takes a list of channels (the ASGI 1 interface and
        the raw baselines); a Channels 4 ``receive(channel)`` takes exactly one."""
        return not self.channels4


def _now() -> float:
    return time.monotonic()


class Driver:
    """The synchronous interface (see the module docstring): every operation a plain call."""

    name = "?"

    def send(self, channel: str, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def receive(
        self, channels: list[str], timeout: float
    ) -> tuple[str | None, dict[str, Any] | None]:
        raise NotImplementedError

    def new_channel(self) -> str:
        raise NotImplementedError

    def group_add(self, group: str, channel: str) -> None:
        raise NotImplementedError

    def send_group(self, group: str, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def group_members(self, n: int) -> tuple[list[str], list[list[str]]]:
        raise NotImplementedError

    def pause(self, seconds: float) -> None:
        """Back off for ``seconds`` (a full channel)."""
        time.sleep(seconds)

    def settle(self) -> None:
        """Finish background work before the role blocks outside the layer: none here."""

    def flush(self) -> None:
        """Empty everything this driver's prefix owns."""

    def close(self) -> None:
        """Release connections/mappings of this process."""

    def destroy(self) -> None:
        """Remove shared state named from the prefix (segments); after :meth:`flush`."""


class AioDriver:
    """The asyncio interface (see the module docstring): the same operations as
    :class:`Driver`, as coroutines; :meth:`close` and :meth:`destroy` stay synchronous
    (the runner calls them after the role)."""

    name = "?"

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def receive(
        self, channels: list[str], timeout: float
    ) -> tuple[str | None, dict[str, Any] | None]:
        raise NotImplementedError

    async def new_channel(self) -> str:
        raise NotImplementedError

    async def group_add(self, group: str, channel: str) -> None:
        raise NotImplementedError

    async def send_group(self, group: str, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def group_members(self, n: int) -> tuple[list[str], list[list[str]]]:
        raise NotImplementedError

    async def pause(self, seconds: float) -> None:
        """Back off without blocking the loop (its background tasks keep running)."""
        await asyncio.sleep(seconds)

    async def settle(self) -> None:
        """Finish the layer's background work of this process (see the subclasses)."""

    async def flush(self) -> None:
        """Empty everything this driver's prefix owns."""

    def run(self, role: Coroutine[Any, Any, Any]) -> Any:
        """Run one role coroutine to its end on this process's loop; returns its result."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections of this process, then the loop."""

    def destroy(self) -> None:
        """Remove shared state named from the prefix; nothing for the Channels 4 layers."""


# --------------------------------------------------------------------------- ASGI 1 (sync)


class Asgi1Driver(Driver):
    """An ASGI 1 synchronous layer (``ipc_layer.IPCChannelLayer`` and its Redis twin).

    Process-specific channels (``name!x``, received on ``name!``) serve as group members,
    as a protocol server holding many connections uses them.
    """

    def __init__(self, name: str, layer: Any, prefix: str, destroy: Callable[[], object] | None):
        self.name = name
        self.layer = layer
        self.prefix = prefix
        self._destroy = destroy
        full = getattr(layer, "ChannelFull", None)
        self._full: tuple[type[BaseException], ...] = (full,) if isinstance(full, type) else ()

    def send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            self.layer.send(channel, message)
        except self._full as exc:
            raise Full(str(exc)) from None

    def receive(
        self, channels: list[str], timeout: float
    ) -> tuple[str | None, dict[str, Any] | None]:
        deadline = _now() + timeout
        while True:
            # block=True sleeps in the layer for its own bounded while; loop to our timeout.
            channel, message = self.layer.receive(channels, block=True)
            if channel is not None:
                return channel, message
            if _now() >= deadline:
                return None, None

    def new_channel(self) -> str:
        return str(self.layer.new_channel("bench.reply?"))

    def group_add(self, group: str, channel: str) -> None:
        self.layer.group_add(group, channel)

    def send_group(self, group: str, message: dict[str, Any]) -> None:
        self.layer.send_group(group, message)

    def group_members(self, n: int) -> tuple[list[str], list[list[str]]]:
        # The layer's own process channel ("bench.g.<unique>!"), as a protocol server
        # holding n connections uses it: one receive on the base serves every member.
        make = getattr(self.layer, "new_process_channel", None)
        base = str(make("bench.g")) if callable(make) else f"bench.g.{secrets.token_hex(4)}!"
        return [f"{base}{i}" for i in range(n)], [[base]] * n

    def flush(self) -> None:
        self.layer.flush()

    def close(self) -> None:
        close = getattr(self.layer, "close", None)
        if callable(close):
            close()

    def destroy(self) -> None:
        if self._destroy is not None:
            self._destroy()


# ------------------------------------------------------------------ Channels 4 (asyncio)


#: How often the native driving's watchdog looks for a receive past its timeout. A
#: consumer awaits ``receive`` with no timeout at all; the bench must not hang, but a
#: per-receive ``asyncio.timeout`` (a timer armed and cancelled every time) cost ~4 us per
#: receive, ~8 us per round trip, half of ipc_aio's with a spin budget; ``wait_for`` (a Task
#: per receive) cost more. One watchdog per role costs a timestamp per receive instead.
_WATCHDOG_S = 0.5
#: Task.uncancel (3.11+) lets the watchdog's cancellation become a plain timeout.
_CAN_UNCANCEL = hasattr(asyncio.Task, "uncancel")


class _Channels4:
    """What both drivings of a Channels 4 ``BaseChannelLayer`` share: the layer, its
    "channel full" exceptions, and one long-lived event loop per process.

    Channels 4 receives one channel at a time, so ``receive`` takes a one-item list; group
    members are ``new_channel()`` channels of this process (as consumers' are).
    """

    def __init__(self, name: str, layer: Any, full: tuple[type[BaseException], ...]):
        self.name = name
        self.layer = layer
        self._full = full
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    def _one(self, channels: list[str]) -> str:
        if len(channels) != 1:
            raise ValueError(f"{self.name}: Channels 4 receives one channel, got {channels!r}")
        return channels[0]

    def close(self) -> None:
        try:
            close_pools = getattr(self.layer, "close_pools", None)
            if callable(close_pools):
                self.loop.run_until_complete(close_pools())
        finally:
            self.loop.close()

    def destroy(self) -> None:
        """Nothing named from the prefix outlives the layer's :meth:`flush` here."""


class Channels4Driver(_Channels4, Driver):
    """``--aio-driving per-call``: a Channels 4 layer driven as sync code drives it, one
    ``loop.run_until_complete(layer.op(...))`` per operation (kept for comparison)."""

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            self._run(self.layer.send(channel, message))
        except self._full as exc:
            raise Full(str(exc)) from None

    def receive(
        self, channels: list[str], timeout: float
    ) -> tuple[str | None, dict[str, Any] | None]:
        channel = self._one(channels)
        try:
            message = self._run(asyncio.wait_for(self.layer.receive(channel), timeout))
        except asyncio.TimeoutError:
            return None, None
        # channels_redis acknowledges a received message in a background task (it removes
        # the message from the channel's in-flight backup). A sync caller's loop does not run
        # between calls, so finish that task here: otherwise a competing consumer's next
        # receive puts the message back in the channel and it is delivered twice.
        cleaners = getattr(self.layer, "receive_cleaners", None)
        if cleaners:
            self._run(asyncio.gather(*list(cleaners), return_exceptions=True))
        return channel, message

    def new_channel(self) -> str:
        return str(self._run(self.layer.new_channel()))

    def group_add(self, group: str, channel: str) -> None:
        self._run(self.layer.group_add(group, channel))

    def send_group(self, group: str, message: dict[str, Any]) -> None:
        self._run(self.layer.group_send(group, message))

    def group_members(self, n: int) -> tuple[list[str], list[list[str]]]:
        members = [self.new_channel() for _ in range(n)]
        return members, [[m] for m in members]

    def flush(self) -> None:
        self._run(self.layer.flush())


class Channels4AioDriver(_Channels4, AioDriver):
    """``--aio-driving native``: a Channels 4 layer driven as a consumer drives it. A role
    is one coroutine on the process's loop (:meth:`run`: one ``run_until_complete`` per
    role) and every operation a plain ``await layer.op(...)``, so the loop runs the layer's
    background tasks (channels_redis' acknowledgements) between operations, as in a site.
    """

    #: Loop time by which the receive in progress must return (None: none in progress),
    #: and whether the watchdog cancelled it for that.
    _deadline: float | None = None
    _expired = False

    def run(self, role: Coroutine[Any, Any, Any]) -> Any:
        task = self.loop.create_task(self._role(role))
        watchdog = self.loop.create_task(self._watchdog(task))
        try:
            return self.loop.run_until_complete(task)
        finally:
            watchdog.cancel()
            self.loop.run_until_complete(asyncio.gather(watchdog, return_exceptions=True))

    async def _watchdog(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task``'s receive once it runs past its deadline (see ``receive``)."""
        while not task.done():
            await asyncio.sleep(_WATCHDOG_S)
            deadline = self._deadline
            if deadline is not None and self.loop.time() > deadline:
                self._deadline = None
                self._expired = True
                task.cancel()

    async def _role(self, role: Coroutine[Any, Any, Any]) -> Any:
        result = await role
        await self.settle()  # a received message is acknowledged before the process ends
        return result

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self.layer.send(channel, message)
        except self._full as exc:
            raise Full(str(exc)) from None

    async def receive(
        self, channels: list[str], timeout: float
    ) -> tuple[str | None, dict[str, Any] | None]:
        channel = self._one(channels)
        if not _CAN_UNCANCEL:  # 3.10: no watchdog (it could not undo its cancel)
            try:
                message = await asyncio.wait_for(self.layer.receive(channel), timeout)
            except asyncio.TimeoutError:
                return None, None
            return channel, message
        self._deadline = self.loop.time() + timeout
        try:
            message = await self.layer.receive(channel)
        except asyncio.CancelledError:
            if not self._expired:
                raise
            self._expired = False
            task = asyncio.current_task()
            # The watchdog's cancel means "timed out"; one from elsewhere at the same
            # time still stands.
            if task is not None and task.uncancel() > 0:
                raise
            return None, None
        finally:
            self._deadline = None
        return channel, message

    async def new_channel(self) -> str:
        return str(await self.layer.new_channel())

    async def group_add(self, group: str, channel: str) -> None:
        await self.layer.group_add(group, channel)

    async def send_group(self, group: str, message: dict[str, Any]) -> None:
        await self.layer.group_send(group, message)

    async def group_members(self, n: int) -> tuple[list[str], list[list[str]]]:
        members = [str(await self.layer.new_channel()) for _ in range(n)]
        return members, [[m] for m in members]

    async def settle(self) -> None:
        """Wait for channels_redis' acknowledgements of this process's receives.

        channels_redis keeps a received message in the channel's in-flight backup until a
        background task removes it, and any consumer's next receive on that channel puts
        the backup back in the channel. Between operations the loop runs those tasks, as
        in a site (and as the per-call driving's receive does at once); a role that is
        about to block outside the loop (a barrier) or end lets them finish first, or a
        competing consumer would get the message again for sure. What remains is
        channels_redis' own race (a competitor's receive starting within the task's round
        trip, django/channels_redis#163), the same under both drivings.
        """
        wait_received = getattr(self.layer, "wait_received", None)
        if callable(wait_received):
            await wait_received()

    async def flush(self) -> None:
        await self.layer.flush()


def _channels4(
    name: str, layer: Any, full: tuple[type[BaseException], ...], spec: LayerSpec
) -> Driver | AioDriver:
    """The driver of a Channels 4 layer for ``spec.aio_driving`` (the same for every one)."""
    if spec.aio_driving == "native":
        return Channels4AioDriver(name, layer, full)
    if spec.aio_driving == "per-call":
        return Channels4Driver(name, layer, full)
    raise ValueError(f"unknown aio driving {spec.aio_driving!r}; known: {', '.join(AIO_DRIVINGS)}")


# ---------------------------------------------------------------------- raw baselines


#: redis-py 8 reads with a 5 s socket timeout by default, the very length of channels_redis'
#: BZPOPMIN wait: a receiver idle for 5 s then fails with "Timeout reading from socket".
#: A deployment has to raise it (a ``hosts`` entry may carry redis-py options); so do we.
_REDIS_SOCKET_TIMEOUT = 30.0
#: Longest single blocking pop of the raw Redis driver (inside the socket timeout).
_REDIS_BLOCK = 5.0

#: KEYS[1] = the group's set; ARGV = (key prefix, payload). One RPUSH per member, where
#: ``name!x`` members share the list ``name!`` (as :meth:`RedisRawDriver._key` maps them).
_REDIS_FANOUT = """
local members = redis.call('SMEMBERS', KEYS[1])
for i = 1, #members do
  local name = members[i]
  local bang = string.find(name, '!', 1, true)
  if bang then name = string.sub(name, 1, bang) end
  redis.call('RPUSH', ARGV[1] .. name, ARGV[2])
end
return #members
"""


class RedisRawDriver(Driver):
    """The floor of any Redis layer: redis-py + hiredis, RPUSH / BLPOP of msgpack bytes.

    ``name!x`` channels share the list ``name!`` (so one BLPOP drains every member of a
    process); a group is a Redis set, sent by one Lua call that RPUSHes a copy per member.
    """

    name = "redis_raw"

    def __init__(self, spec: LayerSpec):
        import msgpack
        import redis

        if not spec.redis_url:
            raise Unavailable("no Redis server (redis-server not found and no --redis-url)")
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb
        self.client = redis.Redis.from_url(spec.redis_url, socket_timeout=_REDIS_SOCKET_TIMEOUT)
        self.prefix = spec.prefix + ":"
        self.capacity = spec.capacity
        self._fanout = self.client.register_script(_REDIS_FANOUT)

    def _key(self, channel: str) -> str:
        bang = channel.find("!")
        return self.prefix + (channel if bang < 0 else channel[: bang + 1])

    def send(self, channel: str, message: dict[str, Any]) -> None:
        key = self._key(channel)
        length = self.client.rpush(key, self._packb(message, use_bin_type=True))
        if length > self.capacity:
            # No check-and-push in one command without Lua (which would not be the floor);
            # RPUSH returns the new length, so wait here until consumers catch up.
            deadline = _now() + 30.0
            while self.client.llen(key) > self.capacity:
                if _now() > deadline:
                    raise Full(f"{channel!r} held more than {self.capacity} messages for 30 s")
                time.sleep(0.0005)

    def receive(
        self, channels: list[str], timeout: float
    ) -> tuple[str | None, dict[str, Any] | None]:
        keys = [self._key(c) for c in channels]
        deadline = _now() + timeout
        while True:
            # BLPOP takes fractional seconds (Redis >= 6); 0 would mean "forever": never pass
            # it. Each wait stays well inside the socket timeout.
            wait = min(_REDIS_BLOCK, max(0.01, deadline - _now()))
            got = self.client.blpop(keys, timeout=wait)
            if got is not None:
                break
            if _now() >= deadline:
                return None, None
        key, data = cast("tuple[bytes, bytes]", got)  # decode_responses is off: bytes
        return key.decode()[len(self.prefix) :], self._unpackb(data, raw=False)

    def new_channel(self) -> str:
        return f"bench.reply.{secrets.token_hex(8)}"

    def group_add(self, group: str, channel: str) -> None:
        self.client.sadd(self.prefix + "group:" + group, channel)

    def send_group(self, group: str, message: dict[str, Any]) -> None:
        # One round trip, the payload sent once: the copies are made inside Redis.
        self._fanout(keys=[self.prefix + "group:" + group], args=[self.prefix, self._packb(message, use_bin_type=True)])

    def group_members(self, n: int) -> tuple[list[str], list[list[str]]]:
        base = f"bench.g{secrets.token_hex(4)}!"
        return [f"{base}{i}" for i in range(n)], [[base]] * n

    def flush(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i : i + 500])

    def close(self) -> None:
        self.client.close()


class RingbufRawDriver(Driver):
    """The raw ``_ringbuf`` binding with msgpack on top: the stated limit of the layer.

    No name checks, no expiry bookkeeping, no ``!`` routing: every group member is its own
    queue, and the drain receives from each member queue in turn.
    """

    name = "ringbuf_raw"

    def __init__(self, spec: LayerSpec):
        import msgpack

        import _ringbuf

        self._rb = _ringbuf
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb
        self.prefix = spec.prefix
        self.capacity = spec.capacity
        self.spin_us = spec.spin_us or 0
        self.seg = _ringbuf.Segment(spec.prefix, size=spec.segment_size)
        self._full_exc: type[BaseException] = _ringbuf.QueueFull
        self._names: dict[str, bytes] = {}
        self._lists: dict[tuple[str, ...], list[bytes]] = {}

    def _name(self, channel: str) -> bytes:
        name = self._names.get(channel)
        if name is None:
            name = self._names[channel] = channel.encode()
        return name

    def send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            self.seg.send(self._name(channel), self._packb(message, use_bin_type=True), 0, self.capacity)
        except self._full_exc as exc:
            raise Full(str(exc)) from None

    def receive(
        self, channels: list[str], timeout: float
    ) -> tuple[str | None, dict[str, Any] | None]:
        key = tuple(channels)
        names = self._lists.get(key)
        if names is None:
            names = self._lists[key] = [c.encode() for c in channels]
        got = self.seg.receive(names, timeout, self.spin_us)
        if got is None:
            return None, None
        index, data = got
        return channels[index], self._unpackb(data, raw=False)

    def new_channel(self) -> str:
        return f"bench.reply.{secrets.token_hex(8)}"

    def group_add(self, group: str, channel: str) -> None:
        self.seg.set_add(group.encode(), channel.encode())

    def send_group(self, group: str, message: dict[str, Any]) -> None:
        self.seg.fanout(self._name(group), self._packb(message, use_bin_type=True))

    def group_members(self, n: int) -> tuple[list[str], list[list[str]]]:
        base = f"bench.g{secrets.token_hex(4)}."
        members = [f"{base}{i}" for i in range(n)]
        return members, [[m] for m in members]  # every member queue gets exactly one copy

    def close(self) -> None:
        self.seg.close()

    def destroy(self) -> None:
        _unlink_segments(self.prefix)


# ------------------------------------------------------------------------- factories


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"cannot import {module} ({what}): {exc}") from exc


def _unlink_segments(prefix: str) -> int:
    """Unlink every ``_ringbuf`` segment whose prefix starts with ``prefix``; returns how
    many. Our prefixes are unique per case, so nobody else can be using them."""
    try:
        import _ringbuf
    except ImportError:
        return 0
    from _ringbuf import binding

    shm_dir = getattr(binding, "SHM_DIR", "/dev/shm")
    file_prefix = getattr(binding, "SEGMENT_FILE_PREFIX", None)
    if file_prefix is None:  # no naming facts: ask the binding (it attaches to each segment)
        names = [str(entry.get("prefix", "")) for entry in _ringbuf.list_segments()]
    else:
        try:
            entries = os.listdir(shm_dir)
        except FileNotFoundError:
            entries = []
        # "~" marks a segment's companion files (creation temporaries, FD-watch
        # FIFOs), never a prefix: the leftover sweep below removes them.
        names = [e[len(file_prefix) :] for e in entries
                 if e.startswith(file_prefix) and ".init." not in e and "~" not in e]
    removed = 0
    for name in names:
        if name.startswith(prefix):
            try:
                _ringbuf.unlink(name, force=True)
                removed += 1
            except FileNotFoundError:
                pass
    if file_prefix is not None:  # files a crashed create may leave (".init." temporaries)
        try:
            leftovers = [e for e in os.listdir(shm_dir) if e.startswith(file_prefix + prefix)]
        except FileNotFoundError:
            leftovers = []
        for entry in leftovers:
            try:
                os.unlink(os.path.join(shm_dir, entry))
            except FileNotFoundError:
                pass
    return removed


def sweep(prefix: str, redis_url: str | None, shard_urls: tuple[str, ...] = ()) -> None:
    """Remove whatever a case left under ``prefix``: Redis keys (on every server) and
    shared-memory segments.

    Runs in the parent, which never builds a layer: it only deletes by name.
    """
    _unlink_segments(prefix)
    for url in [redis_url, *shard_urls] if redis_url else []:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=10)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
        finally:
            client.close()


#: ``receive(block=True)`` of an ASGI 1 layer returns (None, None) after this long; short,
#: so that a driver's own receive timeout is kept to within a second.
_BLOCKING_TIMEOUT = 1.0


def _make_ipc(spec: LayerSpec) -> Driver:
    mod = _import("ipc_layer", "this project's layer")
    options: dict[str, Any] = {"segment_size": spec.segment_size}
    if spec.spin_us is not None:
        options["spin_us"] = spec.spin_us
    layer = mod.IPCChannelLayer(
        prefix=spec.prefix, capacity=spec.capacity, blocking_timeout=_BLOCKING_TIMEOUT, **options
    )
    return Asgi1Driver("ipc", layer, spec.prefix, lambda: _unlink_segments(spec.prefix))


def _make_ipc_redis(spec: LayerSpec) -> Driver:
    mod = _import("ipc_layer.redis_layer", "this project's Redis layer")
    if not spec.redis_url:
        raise Unavailable("no Redis server (redis-server not found and no --redis-url)")
    layer = mod.RedisChannelLayer(
        hosts=[spec.redis_url],
        prefix=spec.prefix,
        capacity=spec.capacity,
        blocking_timeout=_BLOCKING_TIMEOUT,
    )
    return Asgi1Driver("ipc_redis", layer, spec.prefix, None)


def _hybrid_layer(spec: LayerSpec, prefix: str, host: str, local_channels: list[str]) -> Any:
    mod = _import("ipc_layer.hybrid", "this project's hybrid layer")
    if not spec.redis_url:
        raise Unavailable("no Redis server (redis-server not found and no --redis-url)")
    ipc: dict[str, Any] = {"segment_size": spec.segment_size}
    if spec.spin_us is not None:
        ipc["spin_us"] = spec.spin_us
    return mod.HybridChannelLayer(
        prefix=prefix, host=host, local_channels=local_channels, capacity=spec.capacity,
        blocking_timeout=_BLOCKING_TIMEOUT, ipc=ipc,
        redis={"hosts": [spec.redis_url], "prefix": spec.prefix},
    )


def _make_hybrid(spec: LayerSpec) -> Driver:
    """Every process on one host: the bench's channels local, so only groups cross Redis."""
    layer = _hybrid_layer(spec, spec.prefix, "bench", ["bench.*"])
    return Asgi1Driver("hybrid", layer, spec.prefix, lambda: _unlink_segments(spec.prefix))


def _make_hybrid_xhost(spec: LayerSpec) -> Driver:
    """Every process its own host (its own segment): every message crosses Redis, replies and
    group copies through the receiving host's inbox and forwarder."""
    pid = os.getpid()
    layer = _hybrid_layer(spec, f"{spec.prefix}x{pid}", f"p{pid}", [])
    return Asgi1Driver("hybrid_xhost", layer, spec.prefix, lambda: _unlink_segments(spec.prefix))


def _make_ipc_redis_sharded(spec: LayerSpec) -> Driver:
    mod = _import("ipc_layer.redis_layer", "this project's Redis layer")
    if not spec.redis_url or len(spec.shard_urls) < 2:
        raise Unavailable("the sharded layer needs three Redis servers (redis-server starts the other two)")
    layer = mod.RedisChannelLayer(
        hosts=[spec.redis_url, *spec.shard_urls],
        prefix=spec.prefix,
        capacity=spec.capacity,
        blocking_timeout=_BLOCKING_TIMEOUT,
    )
    return Asgi1Driver("ipc_redis_sharded", layer, spec.prefix, None)


def _channels_full() -> tuple[type[BaseException], ...]:
    try:
        from channels.exceptions import ChannelFull  # type: ignore[import-untyped]
    except ImportError:
        return ()
    return (ChannelFull,)


def _make_ipc_aio(spec: LayerSpec) -> Driver | AioDriver:
    mod = _import("ipc_layer.aio", "this project's Channels 4 backend")
    options: dict[str, Any] = {"segment_size": spec.segment_size}
    if spec.spin_us is not None:
        options["spin_us"] = spec.spin_us
    if spec.aio_wakeup is not None:  # --aio-wakeup: compare the backend's wake-up modes
        options["wakeup"] = spec.aio_wakeup
    layer = mod.IPCChannelLayer(prefix=spec.prefix, capacity=spec.capacity, **options)
    full = _channels_full() + tuple(
        c for c in (getattr(layer, "ChannelFull", None),) if isinstance(c, type)
    )
    return _channels4("ipc_aio", layer, full, spec)


def _make_channels_redis(spec: LayerSpec) -> Driver | AioDriver:
    mod = _import("channels_redis.core", "channels_redis 4.x")
    if not spec.redis_url:
        raise Unavailable("no Redis server (redis-server not found and no --redis-url)")
    host = {"address": spec.redis_url, "socket_timeout": _REDIS_SOCKET_TIMEOUT}
    layer = mod.RedisChannelLayer(hosts=[host], prefix=spec.prefix, capacity=spec.capacity)
    return _channels4("channels_redis", layer, _channels_full(), spec)


def _make_redis_raw(spec: LayerSpec) -> Driver:
    _import("redis", "redis-py")
    _import("hiredis", "the hiredis parser")
    return RedisRawDriver(spec)


def _make_ringbuf_raw(spec: LayerSpec) -> Driver:
    _import("_ringbuf", "this project's C core")
    return RingbufRawDriver(spec)


#: Every layer, in the order of the tables. ``channels_redis`` is the reference of the
#: "x vs channels_redis" columns.
LAYERS: dict[str, LayerInfo] = {
    info.name: info
    for info in (
        LayerInfo("ipc", _make_ipc, "ipc_layer.IPCChannelLayer (ASGI 1, shared memory)"),
        LayerInfo(
            "ipc_aio", _make_ipc_aio, "ipc_layer.aio.IPCChannelLayer (Channels 4)", channels4=True
        ),
        LayerInfo(
            "ipc_redis",
            _make_ipc_redis,
            "ipc_layer.redis_layer.RedisChannelLayer (ASGI 1, Redis)",
            needs_redis=True,
        ),
        LayerInfo(
            "hybrid",
            _make_hybrid,
            "ipc_layer.hybrid.HybridChannelLayer, all processes on one host (ASGI 1)",
            needs_redis=True,
        ),
        LayerInfo(
            "hybrid_xhost",
            _make_hybrid_xhost,
            "ipc_layer.hybrid.HybridChannelLayer, every process its own host (ASGI 1)",
            needs_redis=True,
        ),
        LayerInfo(
            "ipc_redis_sharded",
            _make_ipc_redis_sharded,
            "ipc_layer.redis_layer.RedisChannelLayer sharded over 3 redis-servers (consistent hash)",
            needs_redis=True,
            extra_shards=2,
        ),
        LayerInfo(
            "channels_redis",
            _make_channels_redis,
            "channels_redis.core.RedisChannelLayer 4.x (own event loop per process)",
            needs_redis=True,
            channels4=True,
        ),
        LayerInfo(
            "redis_raw",
            _make_redis_raw,
            "redis-py + hiredis RPUSH/BLPOP of msgpack bytes (the Redis floor)",
            needs_redis=True,
        ),
        LayerInfo(
            "ringbuf_raw",
            _make_ringbuf_raw,
            "raw _ringbuf binding + msgpack (the limit)",
            limit=True,
        ),
    )
}

REFERENCE_LAYER = "channels_redis"
#: Scenarios whose ratio reference is another layer: "wide" (one receive over many channels)
#: does not exist in Channels 4, so it compares with the ASGI 1 layer on Redis.
SCENARIO_REFERENCE = {"wide": "ipc_redis"}


def reference_layer(scenario: str) -> str:
    """The layer the ratio columns of ``scenario`` compare with."""
    return SCENARIO_REFERENCE.get(scenario, REFERENCE_LAYER)


def make_driver(spec: LayerSpec) -> Driver | AioDriver:
    """Build the driver of ``spec.layer`` in this process (raises :class:`Unavailable`)."""
    try:
        info = LAYERS[spec.layer]
    except KeyError:
        raise Unavailable(f"unknown layer {spec.layer!r}; known: {', '.join(LAYERS)}") from None
    return info.factory(spec)
