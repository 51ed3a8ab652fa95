"""``ipc_layer.wakeup``: the wake-up engine knows no event loop in particular.

Besides asyncio (``ipc_layer.aio``, tested by its own suites), two more
adapters drive it here, each a few lines over :class:`ipc_layer.wakeup.Loops`:
a plain :mod:`selectors` loop, and Twisted's reactor (``addReader`` with an
``IReadDescriptor``, ``callLater``, ``callFromThread``, Deferreds) - what the
protocol server's ``receive_twisted`` stands on. In both, a receive waits
with no thread, woken through its FD watch by a send from another process,
on a direct queue and on two routed channels of one process queue.
"""

from __future__ import annotations

import heapq
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ipc_layer import IPCChannelLayer
from ipc_layer.wakeup import ARMED, EMPTY, Engine, Waiter
from tests.support import make_layer

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 5.0


def _send_later(prefix: str, sends: list[tuple[str, dict[str, Any]]], delay: float = 0.1) -> int:
    """Fork a process that sends ``sends`` through its own layer after ``delay`` seconds."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            time.sleep(delay)
            sender = IPCChannelLayer(prefix=prefix)
            for channel, message in sends:
                sender.send(channel, message)
            code = 0
        finally:
            os._exit(code)
    return pid


def _reap(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _helper_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("ipc-wait")]


# -- an adapter over a plain selectors loop ------------------------------------------------


class _Future:
    """The smallest future-like: a flag, and callbacks its loop runs soon after it is resolved."""

    def __init__(self, loop: SelectorLoop) -> None:
        self.loop = loop
        self.done = False
        self.callbacks: list[Callable[[], None]] = []

    def resolve(self) -> None:
        if not self.done:
            self.done = True  # done at once; the continuations run from the loop (Loops.resolve)
            for callback in self.callbacks:
                self.loop.calls.append((lambda cb: cb(), callback))


class _Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SelectorLoop:
    """A single-threaded loop: a selector, timers, and a self-pipe for calls from other threads."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, _Timer, Callable[[], None]]] = []
        self.calls: deque[tuple[Callable[[Any], None], Any]] = deque()
        self.closed = False
        self.thread = threading.get_ident()
        self.reads = 0
        self._seq = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakes)

    def _drain_wakes(self) -> None:
        os.read(self._wake_r, 4096)

    def run_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the loop was never woken"
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, timer, callback = heapq.heappop(self.timers)
                if not timer.cancelled:
                    callback()
            while self.calls:
                call, arg = self.calls.popleft()
                call(arg)
            wait = deadline - now
            if self.timers:
                wait = min(wait, self.timers[0][0] - now)
            for key, _ in self.selector.select(max(wait, 0.0)):
                if key.fd != self._wake_r:
                    self.reads += 1
                key.data()

    def close(self) -> None:
        self.closed = True
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class SelectorLoops:
    """:class:`ipc_layer.wakeup.Loops` over :class:`SelectorLoop`."""

    def __init__(self, loop: SelectorLoop) -> None:
        self.loop = loop

    def running(self) -> SelectorLoop | None:
        return self.loop if threading.get_ident() == self.loop.thread else None

    def create_future(self, loop: SelectorLoop) -> _Future:
        return _Future(loop)

    def future_done(self, future: _Future) -> bool:
        return future.done

    def resolve(self, future: _Future) -> None:
        future.resolve()

    def call_soon_threadsafe(self, loop: SelectorLoop, callback: Callable[[Any], None], arg: Any) -> None:
        if loop.closed:
            raise RuntimeError("loop closed")
        loop.calls.append((callback, arg))
        os.write(loop._wake_w, b"x")

    def call_later(self, loop: SelectorLoop, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer()
        loop._seq += 1
        heapq.heappush(loop.timers, (time.monotonic() + delay, loop._seq, timer, callback))
        return timer

    def add_reader(self, loop: SelectorLoop, fd: int, callback: Callable[[], None]) -> None:
        loop.selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, loop: SelectorLoop, fd: int) -> None:
        loop.selector.unregister(fd)

    def is_closed(self, loop: SelectorLoop) -> bool:
        return loop.closed


def _receive(engine: Engine, loop: Any, queue: str, channel: str | None,
             on_future: Callable[[Any, Callable[[], None]], None],
             deliver: Callable[[dict[str, Any]], None]) -> None:
    """A callback-style receive over the engine: what an adapter without coroutines writes."""

    def attempt(woken: Waiter | None) -> None:
        if channel is None:
            message = engine.take_direct(queue, woken.watch if woken else None)
            waiter = engine.wait_direct(queue, loop) if message is EMPTY else None
        else:
            message, waiter = engine.take_or_wait_routed(queue, channel, loop)
        if waiter is None:
            deliver(message)
            return

        def fired() -> None:
            engine.finished(waiter)
            attempt(waiter)

        on_future(waiter.future, fired)

    attempt(None)


@pytest.fixture
def sync(prefix: str) -> Iterator[IPCChannelLayer]:
    layer = make_layer(prefix)
    yield layer


def test_a_selectors_loop_receives_through_the_engine_with_no_thread(
        sync: IPCChannelLayer, prefix: str) -> None:
    loop = SelectorLoop()
    engine = Engine(sync, SelectorLoops(loop), fd=True)
    got: dict[str, dict[str, Any]] = {}
    routed = "sel.proc!"

    def on_future(future: _Future, callback: Callable[[], None]) -> None:
        future.callbacks.append(callback)

    try:
        _receive(engine, loop, "sel.direct", None, on_future,
                 lambda message: got.__setitem__("direct", message))
        for tag in ("a", "b"):
            _receive(engine, loop, routed, routed + tag, on_future,
                     lambda message, tag=tag: got.__setitem__(tag, message))  # type: ignore[misc]
        # Everyone waits, on armed FD watches: nothing is there yet.
        assert got == {}
        assert engine.watches["sel.direct"].fd_watches[loop].state == ARMED
        pid = _send_later(prefix, [("sel.direct", {"n": 0}), (routed + "b", {"n": 2}),
                                   (routed + "a", {"n": 1})])
        loop.run_until(lambda: len(got) == 3, TIMEOUT)
        _reap(pid)
        assert got == {"direct": {"n": 0}, "a": {"n": 1}, "b": {"n": 2}}
        assert loop.reads >= 2  # woken by the FIFOs (one per queue watched), not by a thread
        assert _helper_threads() == []
        assert all(watch.thread is None for watch in engine.watches.values())
    finally:
        engine.close_fd_watches()
        loop.close()


# -- an adapter over Twisted's reactor ------------------------------------------------------


def test_twisted_reactor_receives_through_the_engine_with_no_thread(
        sync: IPCChannelLayer, prefix: str) -> None:
    pytest.importorskip("twisted")
    from twisted.internet import error
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReadDescriptor
    from twisted.internet.pollreactor import PollReactor
    from zope.interface import implementer

    @implementer(IReadDescriptor)
    class _Reader:
        def __init__(self, fd: int, callback: Callable[[], None]) -> None:
            self.fd, self.callback = fd, callback

        def fileno(self) -> int:
            return self.fd

        def doRead(self) -> None:
            self.callback()

        def logPrefix(self) -> str:
            return "ipc-watch"

        def connectionLost(self, reason: object) -> None:
            pass

    class _Call:
        def __init__(self, call: Any) -> None:
            self.call = call

        def cancel(self) -> None:
            try:
                self.call.cancel()
            except (error.AlreadyCalled, error.AlreadyCancelled):
                pass

    class _Woken:
        """A waiter's future-like: a Deferred, marked when its wake-up is scheduled."""

        def __init__(self, reactor: Any) -> None:
            self.reactor = reactor
            self.deferred: Deferred[None] = Deferred()
            self.woken = False

    class TwistedLoops:
        """:class:`ipc_layer.wakeup.Loops` over a reactor (which runs in this thread)."""

        def __init__(self) -> None:
            self.thread = threading.get_ident()
            self.readers: dict[int, _Reader] = {}
            self.closed = False

        def running(self) -> Any:
            return reactor if threading.get_ident() == self.thread else None

        def create_future(self, loop: Any) -> _Woken:
            return _Woken(loop)

        def future_done(self, future: _Woken) -> bool:
            return future.woken

        def resolve(self, future: _Woken) -> None:
            if not future.woken:
                # Marked now; the Deferred (whose callbacks run at once) fires
                # from the reactor, outside the engine's lock (Loops.resolve).
                future.woken = True
                future.reactor.callLater(0, future.deferred.callback, None)

        def call_soon_threadsafe(self, loop: Any, callback: Callable[[Any], None], arg: Any) -> None:
            if self.closed:
                raise RuntimeError("reactor stopped")
            loop.callFromThread(callback, arg)

        def call_later(self, loop: Any, delay: float, callback: Callable[[], None]) -> _Call:
            return _Call(loop.callLater(delay, callback))

        def add_reader(self, loop: Any, fd: int, callback: Callable[[], None]) -> None:
            reader = self.readers[fd] = _Reader(fd, callback)
            loop.addReader(reader)

        def remove_reader(self, loop: Any, fd: int) -> None:
            loop.removeReader(self.readers.pop(fd))

        def is_closed(self, loop: Any) -> bool:
            return self.closed

    reactor = PollReactor()  # a private reactor: the global one is never started here
    loops = TwistedLoops()
    engine = Engine(sync, loops, fd=True)
    got: dict[str, dict[str, Any]] = {}
    routed = "tw.proc!"

    def on_future(future: _Woken, callback: Callable[[], None]) -> None:
        future.deferred.addCallback(lambda _: callback())

    def deliver(key: str) -> Callable[[dict[str, Any]], None]:
        def store(message: dict[str, Any]) -> None:
            got[key] = message
            if len(got) == 3:
                reactor.stop()
        return store

    def start() -> None:
        _receive(engine, reactor, "tw.direct", None, on_future, deliver("direct"))
        for tag in ("a", "b"):
            _receive(engine, reactor, routed, routed + tag, on_future, deliver(tag))
        assert got == {}
        assert engine.watches[routed].fd_watches[reactor].state == ARMED

    pid = _send_later(prefix, [(routed + "b", {"n": 2}), ("tw.direct", {"n": 0}),
                               (routed + "a", {"n": 1})], delay=0.2)
    reactor.callWhenRunning(start)
    reactor.callLater(TIMEOUT, reactor.stop)
    try:
        reactor.run(installSignalHandlers=False)
        _reap(pid)
        assert got == {"direct": {"n": 0}, "a": {"n": 1}, "b": {"n": 2}}
        assert _helper_threads() == []
        assert all(watch.thread is None for watch in engine.watches.values())
    finally:
        engine.close_fd_watches()
        loops.closed = True
