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
  The same bridge serves the ``twisted_stream`` extension
  (:meth:`ReactorBridge.stream`, :class:`Stream`): a callback for every
  message of a list of channels, from one standing waiter per queue that
  is drained at each wake-up and re-armed only when the queues are empty -
  what a server's reply loop wants (no Deferred, no waiter, no arm per
  message).
* Any other layer (:func:`receive_in_thread`): a receive blocked in a
  reactor pool thread (``receive(channels, block=True)``, which sleeps in
  the layer without polling), its result handed back to the reactor. A
  cancelled Deferred cannot stop that thread: a message it takes after the
  cancel is logged and dropped (at most one per cancel, at shutdown).

Either Deferred fires with ``(channel, message)``, or ``(None, None)`` when
the layer's ``blocking_timeout`` passed with nothing (the ASGI 1 contract;
callers ask again).

When a waiter is woken: the engine resolves futures with its lock held,
so a waiter's continuation never runs inside ``resolve``. When the reactor
called into the engine itself (a poke's ``doRead``, a timer, a call from a
helper thread: :meth:`TwistedLoops.run_engine_call`), the continuations
run as soon as that call returns, in the same reactor turn; otherwise
(``resolve`` from inside a receive, e.g. an arm that found records) on the
next turn (``callLater(0)``). A reply thus reaches its handler in the turn
its poke woke the reactor, not one turn later.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from functools import partial
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

__all__ = ["ReactorBridge", "Stream", "TwistedLoops", "bridge_for", "close_bridge", "receive_in_thread"]

logger = logging.getLogger(__name__)

ReceiveResult = tuple[str | None, dict[str, Any] | None]
OnMessage = Callable[[str, dict[str, Any]], None]
OnError = Callable[[Exception], None]


@implementer(IReadDescriptor)
class _Reader:
    """An fd the reactor polls for the engine (``reactor.addReader`` wants an object)."""

    def __init__(self, fd: int, callback: Callable[[], None], loops: TwistedLoops) -> None:
        self.fd = fd
        self.callback = callback
        self.loops = loops

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self.loops.run_engine_call(self.callback)

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
    """A waiter's future-like: marked done at once, its ``action`` run once the engine let go.

    The engine resolves futures with its lock held and must not re-enter
    itself, so ``action`` (the waiter's continuation) never runs inside
    :meth:`TwistedLoops.resolve`: right after the engine's callback returns
    when the engine itself was called by the reactor (an FD watch's poke,
    a timer: :meth:`TwistedLoops.run_engine_call`), else on the next
    reactor turn.
    """

    __slots__ = ("action", "done")

    def __init__(self, action: Callable[[], None] | None = None) -> None:
        self.done = False
        self.action = action

    def fire(self) -> None:
        action = self.action
        if action is not None:
            action()


class TwistedLoops:
    """:class:`ipc_layer.wakeup.Loops` for one Twisted reactor (the "loop" is the reactor)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._readers: dict[int, _Reader] = {}
        # Futures resolved while the reactor runs an engine callback, fired
        # when it returns (None: not inside one; resolve schedules a turn).
        self._resolved: list[_Flag] | None = None

    def run_engine_call(self, callback: Callable[..., None], *args: Any) -> None:
        """Run an engine callback from the reactor, then fire the futures it resolved.

        A poke wakes the waiter in the same reactor turn, with no
        ``callLater(0)`` between: the reply path is one turn shorter. An
        exception must not reach the reactor, which would drop the FD watch
        from its readers (the watch would never wake anyone again).
        """
        outer, self._resolved = self._resolved, []
        try:
            callback(*args)
        except Exception:  # pragma: no cover - an engine bug; the watch must survive it
            logger.exception("the wake-up engine's callback %r failed", callback)
        finally:
            resolved, self._resolved = self._resolved, outer
        for future in resolved:
            try:
                future.fire()
            except Exception:
                logger.exception("a woken receive failed")

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
            if self._resolved is not None:
                self._resolved.append(future)
            else:
                self.reactor.callLater(0, future.fire)

    def call_soon_threadsafe(self, loop: Any, callback: Callable[[Any], None], arg: Any) -> None:
        if self.is_closed(loop):
            raise RuntimeError("the reactor has stopped")
        self.reactor.callFromThread(self.run_engine_call, callback, arg)

    def call_later(self, loop: Any, delay: float, callback: Callable[[], None]) -> _Timer:
        return _Timer(self.reactor.callLater(delay, self.run_engine_call, callback))

    def add_reader(self, loop: Any, fd: int, callback: Callable[[], None]) -> None:
        reader = self._readers[fd] = _Reader(fd, callback, self)
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

    def _plan(self, channels: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(channels, their queues) of a receive list, validated once per list."""
        # A server asks for the same list again after every reply: its
        # validated plan is looked up, not rebuilt (a list is keyed as its tuple).
        key = tuple(channels) if isinstance(channels, (list, tuple)) else None
        plan = self._plans.get(key) if key is not None else None
        if plan is None:
            wanted = tuple(names.validate_receive_channels(key if key is not None else channels))
            plan = (wanted, tuple(dict.fromkeys(names.non_local_name(channel) for channel in wanted)))
            if key is not None:
                remember(self._plans, key, plan)
        return plan

    def receive(self, channels: Iterable[str]) -> defer.Deferred[ReceiveResult]:
        wanted, queues = self._plan(channels)
        call = _Receive(wanted, queues, self._cancel)
        self._attempt(call, None)
        return call.deferred

    def stream(self, channels: Iterable[str], on_message: OnMessage,
               on_error: OnError | None = None) -> Stream:
        """Every message of ``channels`` to ``on_message(channel, message)`` as it comes, until stopped."""
        wanted, queues = self._plan(channels)
        stream = Stream(self, wanted, queues, on_message, on_error)
        stream.start()
        return stream

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
            waiter.future.action = partial(self._woken, call, waiter)

    def _woken(self, call: _Receive, waiter: Waiter) -> None:
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


class Stream:
    """One :meth:`ReactorBridge.stream`: a standing waiter per queue, drained at each wake-up.

    Where ``receive_twisted`` costs a Deferred, a waiter and an arm per
    message, a stream keeps one waiter per queue registered while messages
    flow (:meth:`ipc_layer.wakeup.Engine.wait_standing`). Woken, it takes
    and hands on messages until the queues are empty, and only then re-arms
    (:meth:`~ipc_layer.wakeup.Engine.rewait`); pokes that come while it
    drains find its future done and cost a FIFO read. After ``BATCH``
    messages in a row it lets the reactor have a turn, so a backlog never
    starves the sockets.

    States (``state``)::

        NEW      --start()-->                    WAITING  (armed; records already there wake it)
        DRAINING --a take found nothing-->       WAITING  (re-armed: a send wakes it)
        DRAINING --BATCH taken-->                DRAINING (next reactor turn)
        DRAINING --the layer raised-->           FAILED   (on_error; resume() drains again)
        WAITING  --woken (poke, timer)-->        DRAINING
        any      --stop()-->                     STOPPED  (waiters cancelled; final)

    A message is taken off shared memory only right before it is handed to
    ``on_message``, on the reactor thread: a stopped stream takes nothing,
    so what it leaves stays in the segment for the next receiver.
    """

    #: Messages handed on in one go before the reactor gets a turn.
    BATCH = 64

    def __init__(self, bridge: ReactorBridge, channels: tuple[str, ...], queues: tuple[str, ...],
                 on_message: OnMessage, on_error: OnError | None) -> None:
        self.bridge = bridge
        self.channels = channels
        self.queues = queues
        self.on_message = on_message
        self.on_error = on_error
        self.waiters: list[Waiter] = []
        self.state = "NEW"

    def start(self) -> None:
        if self.state != "NEW":
            raise RuntimeError(f"stream of {self.channels!r} already started ({self.state})")
        engine, loop = self.bridge.engine, self.bridge.reactor
        # Armed: records already there resolve the waiter at once, and the
        # stream drains from the next reactor turn (never inside the call
        # that made it, whose caller has no handle on it yet).
        self.state = "WAITING"  # state: NEW -> WAITING
        self.waiters = [engine.wait_standing(queue, loop, _Flag(self._woken)) for queue in self.queues]

    def _woken(self) -> None:
        if self.state == "WAITING":
            self._drain()  # state: WAITING -> DRAINING

    def resume(self) -> None:
        """Drain again after a failure (the owner decides when)."""
        if self.state == "FAILED":
            self._drain()  # state: FAILED -> DRAINING

    def _drain(self) -> None:
        self.state = "DRAINING"
        take = self.bridge.engine.take_any
        channels = self.channels
        on_message = self.on_message
        for _ in range(self.BATCH):
            if self.state != "DRAINING":  # stopped by on_message
                return
            try:
                got = take(channels, None)  # no baton: this loop takes until empty, then re-arms
            except Exception as exc:
                self.state = "FAILED"  # state: DRAINING -> FAILED
                if self.on_error is None:
                    logger.exception("stream of %r: receive failed; stopped until resume()", channels)
                    return
                try:
                    self.on_error(exc)
                except Exception:
                    logger.exception("stream of %r: on_error failed", channels)
                return
            if got is None:
                self._rearm()  # state: DRAINING -> WAITING
                return
            try:
                on_message(got[0], got[1])
            except Exception:  # the stream serves every later message too
                logger.exception("stream of %r: handling a message on %r failed", channels, got[0])
        self.bridge.reactor.callLater(0, self._next_batch)  # state: DRAINING -> DRAINING

    def _next_batch(self) -> None:
        if self.state == "DRAINING":
            self._drain()

    def _rearm(self) -> None:
        self.state = "WAITING"
        engine = self.bridge.engine
        for waiter in self.waiters:
            if not engine.rewait(waiter, _Flag(self._woken)):
                # Dropped by the engine (its loop was seen closed): this
                # reactor is gone, nothing will ever wake the stream.
                logger.debug("stream of %r: waiter on %r dropped by the engine", self.channels,
                             waiter.watch.queue)

    def stop(self) -> None:
        """Stop for good: cancel the waiters (the wake-up passes to the next waiter of the queue)."""
        self.state = "STOPPED"  # state: any -> STOPPED
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            self.bridge.engine.cancelled(waiter)


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
