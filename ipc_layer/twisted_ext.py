"""The ASGI 1 ``twisted`` extension: ``layer.receive_twisted(channels)`` returns a Deferred.

This is the only module of ``ipc_layer`` that imports Twisted (as
:mod:`ipc_layer.aio` is the only one importing Channels), and only when a
layer's ``receive_twisted`` is first called: a process that never asks for
it never imports Twisted.

Two implementations, one per kind of layer:

* The shared-memory layer (:class:`ReactorBridge`): an adapter of the
  wake-up engine (:mod:`ipc_layer.wakeup`) for the Twisted reactor. A
  receive that finds nothing registers a waiter on each of its queues; the
  engine gives the reactor one FD watch per queue (``reactor.addReader``),
  which a sender's poke makes readable: the reactor itself wakes, no
  thread, one kernel wake-up per message. A poke lost with a dying sender
  is covered by the engine's bounded re-arm (``FD_SLICE``). The woken
  receive takes with a non-blocking ``receive(channels)`` on the reactor
  thread, so a cancelled Deferred takes nothing off shared memory.
* Any other layer (:func:`receive_in_thread`): a receive blocked in a
  reactor pool thread (``receive(channels, block=True)``, which sleeps in
  the layer without polling), its result handed back to the reactor. A
  cancelled Deferred cannot stop that thread: a message it takes after the
  cancel is logged and dropped (at most one per cancel, at shutdown).

Either Deferred fires with ``(channel, message)``, or ``(None, None)`` when
the layer's ``blocking_timeout`` passed with nothing (the ASGI 1 contract;
callers ask again).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.python import threadable
from zope.interface import implementer

from _memo import remember

from . import names
from .wakeup import Engine, Waiter

if TYPE_CHECKING:
    from .layer import IPCChannelLayer

__all__ = ["ReactorBridge", "TwistedLoops", "bridge_for", "close_bridge", "receive_in_thread"]

logger = logging.getLogger(__name__)

ReceiveResult = tuple[str | None, dict[str, Any] | None]


@implementer(IReadDescriptor)
class _Reader:
    """An fd the reactor polls for the engine (``reactor.addReader`` wants an object)."""

    def __init__(self, fd: int, callback: Callable[[], None]) -> None:
        self.fd = fd
        self.callback = callback

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self.callback()

    def connectionLost(self, reason: Any) -> None:
        pass

    def logPrefix(self) -> str:
        return "ipc_layer.watch"


class _Timer:
    """A DelayedCall the engine may cancel after it ran (asyncio's handles allow that; Twisted's raise)."""

    __slots__ = ("call",)

    def __init__(self, call: Any) -> None:
        self.call = call

    def cancel(self) -> None:
        if self.call.active():
            self.call.cancel()


class _Flag:
    """A waiter's future-like: marked done at once, its Deferred fired on the next reactor turn.

    The engine resolves futures with its lock held and must not re-enter
    itself; a Deferred runs its callbacks synchronously, hence the turn.
    """

    __slots__ = ("deferred", "done")

    def __init__(self) -> None:
        self.done = False
        self.deferred: defer.Deferred[None] = defer.Deferred()


class TwistedLoops:
    """:class:`ipc_layer.wakeup.Loops` for one Twisted reactor (the "loop" is the reactor)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._readers: dict[int, _Reader] = {}

    def running(self) -> Any:
        in_reactor_thread: bool = threadable.isInIOThread()  # type: ignore[no-untyped-call]
        return self.reactor if in_reactor_thread else None

    def create_future(self, loop: Any) -> _Flag:
        return _Flag()

    def future_done(self, future: _Flag) -> bool:
        return future.done

    def resolve(self, future: _Flag) -> None:
        if not future.done:
            future.done = True
            self.reactor.callLater(0, future.deferred.callback, None)

    def call_soon_threadsafe(self, loop: Any, callback: Callable[[Any], None], arg: Any) -> None:
        if self.is_closed(loop):
            raise RuntimeError("the reactor has stopped")
        self.reactor.callFromThread(callback, arg)

    def call_later(self, loop: Any, delay: float, callback: Callable[[], None]) -> _Timer:
        return _Timer(self.reactor.callLater(delay, callback))

    def add_reader(self, loop: Any, fd: int, callback: Callable[[], None]) -> None:
        reader = self._readers[fd] = _Reader(fd, callback)
        self.reactor.addReader(reader)

    def remove_reader(self, loop: Any, fd: int) -> None:
        reader = self._readers.pop(fd, None)
        if reader is not None:
            self.reactor.removeReader(reader)

    def is_closed(self, loop: Any) -> bool:
        return bool(getattr(self.reactor, "_stopped", False)) and not getattr(self.reactor, "running", True)


class _Receive:
    """One ``receive_twisted`` call: its channels, queues, Deferred and current waiters."""

    __slots__ = ("channels", "deferred", "queues", "waiters")

    def __init__(self, channels: tuple[str, ...], queues: tuple[str, ...],
                 canceller: Callable[[_Receive], None]) -> None:
        self.channels = channels
        self.queues = queues
        self.waiters: list[Waiter] = []
        self.deferred: defer.Deferred[ReceiveResult] = defer.Deferred(lambda _: canceller(self))


class ReactorBridge:
    """``receive_twisted`` for one shared-memory layer on one reactor (see the module docstring)."""

    def __init__(self, layer: IPCChannelLayer, reactor: Any) -> None:
        self.layer = layer
        self.reactor = reactor
        self.loops = TwistedLoops(reactor)
        self.engine = Engine(layer, self.loops, fd=True)
        self._plans: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def receive(self, channels: Iterable[str]) -> defer.Deferred[ReceiveResult]:
        # A server asks for the same list again after every reply: its
        # validated plan is looked up, not rebuilt (a list is keyed as its tuple).
        key = tuple(channels) if isinstance(channels, (list, tuple)) else None
        plan = self._plans.get(key) if key is not None else None
        if plan is None:
            wanted = tuple(names.validate_receive_channels(key if key is not None else channels))
            plan = (wanted, tuple(dict.fromkeys(names.non_local_name(channel) for channel in wanted)))
            if key is not None:
                remember(self._plans, key, plan)
        call = _Receive(plan[0], plan[1], self._cancel)
        self._attempt(call, None)
        return call.deferred

    def _attempt(self, call: _Receive, woken: Any) -> None:
        """Take now, or wait on every queue (on the reactor thread)."""
        if call.deferred.called:
            return
        try:
            got = self.engine.take_any(call.channels, woken)
        except Exception as exc:  # a layer error reaches the caller, who decides
            call.deferred.errback(exc)
            return
        if got is not None:
            call.deferred.callback(got)
            return
        loop = self.reactor
        call.waiters = [self.engine.wait_direct(queue, loop) for queue in call.queues]
        for waiter in call.waiters:
            waiter.future.deferred.addCallback(self._woken, call, waiter)

    def _woken(self, _: None, call: _Receive, waiter: Waiter) -> None:
        if waiter not in call.waiters:  # woken too late: the call moved on (or was cancelled)
            self.engine.cancelled(waiter)
            return
        waiters, call.waiters = call.waiters, []
        for other in waiters:
            if other is waiter:
                self.engine.finished(other)
            else:
                self.engine.cancelled(other)  # not woken: nothing of theirs to pass on
        self._attempt(call, waiter.watch)

    def _cancel(self, call: _Receive) -> None:
        waiters, call.waiters = call.waiters, []
        for waiter in waiters:
            self.engine.cancelled(waiter)  # nothing was taken: the wake-up goes to the next waiter


_BRIDGES: weakref.WeakKeyDictionary[Any, ReactorBridge] = weakref.WeakKeyDictionary()
_BRIDGES_LOCK = threading.Lock()


def bridge_for(layer: IPCChannelLayer, reactor: Any = None) -> ReactorBridge:
    """The layer's bridge to ``reactor`` (the global reactor by default), made on first use."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    bridge = _BRIDGES.get(layer)  # the common case, without the lock
    if bridge is not None and bridge.reactor is reactor:
        return bridge
    with _BRIDGES_LOCK:
        bridge = _BRIDGES.get(layer)
        if bridge is None or bridge.reactor is not reactor:
            bridge = _BRIDGES[layer] = ReactorBridge(layer, reactor)
        return bridge


def close_bridge(layer: Any) -> None:
    """Close the FD watches of ``layer``'s bridge, if it has one (the layer is closing)."""
    with _BRIDGES_LOCK:
        bridge = _BRIDGES.pop(layer, None)
    if bridge is not None:
        bridge.engine.close_fd_watches()


def receive_in_thread(layer: Any, channels: Iterable[str], reactor: Any = None) -> defer.Deferred[ReceiveResult]:
    """``receive_twisted`` for a layer without FD wake-ups: a blocking receive in a pool thread."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    wanted = list(channels)
    cancelled: list[bool] = []
    result: defer.Deferred[ReceiveResult] = defer.Deferred(lambda d: cancelled.append(True))

    def done(got: ReceiveResult) -> None:
        if cancelled:
            if got[0] is not None:
                logger.warning("a message for %r arrived after its receive_twisted was cancelled; dropped", got[0])
            return
        result.callback(got)

    def failed(failure: Any) -> None:
        if not cancelled:
            result.errback(failure)

    from twisted.internet.threads import deferToThreadPool

    pending = deferToThreadPool(reactor, reactor.getThreadPool(), layer.receive, wanted, True)
    pending.addCallbacks(done, failed)
    return result
