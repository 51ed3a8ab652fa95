"""The shared-memory layer's ``receive_twisted`` and ``receive_twisted_stream``: FD watches as reactor
readers, no thread, cancel-safe."""
from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.pollreactor import PollReactor

from ipc_layer import IPCChannelLayer
from ipc_layer.testing.conformance import run_reactor_until
from tests.support import make_layer


@pytest.fixture
def layer(prefix: str) -> Any:
    made = make_layer(prefix)
    yield made
    made.close()


def run(reactor: Any, start: Callable[[], Any], timeout: float = 10.0) -> list[Any]:
    """Run ``reactor`` until ``start()``'s Deferred fires; what it fired with."""
    return run_reactor_until(reactor, lambda _: start(), timeout)


def test_extension_is_listed(layer: IPCChannelLayer) -> None:
    assert "twisted" in layer.extensions


def test_a_waiting_receive_uses_no_thread_and_is_woken_by_another_process(layer: IPCChannelLayer,
                                                                          prefix: str) -> None:
    reactor = PollReactor()
    threads_while_waiting: list[int] = []

    def start() -> Any:
        d = layer.receive_twisted(["tx.proc!"], reactor)
        threads_while_waiting.append(threading.active_count())
        pid = os.fork()
        if pid == 0:  # the sender: another process, its own layer instance
            try:
                time.sleep(0.2)
                other = make_layer(prefix)
                other.send("tx.proc!abc", {"from": "child"})
                other.close()
            finally:
                os._exit(0)
        reactor.callLater(5, lambda: None)
        d.addBoth(lambda result: (os.waitpid(pid, 0), result)[1])
        return d

    before = threading.active_count()
    assert run(reactor, start) == [("tx.proc!abc", {"from": "child"})]
    assert threads_while_waiting == [before]  # no helper thread: the reactor polls the FIFO


def test_cancel_takes_nothing(layer: IPCChannelLayer) -> None:
    reactor = PollReactor()

    def start() -> Any:
        d = layer.receive_twisted(["tx.cancel"], reactor)
        d.addErrback(lambda failure: failure.trap(defer.CancelledError) and "cancelled")
        reactor.callLater(0.05, d.cancel)
        reactor.callLater(0.1, layer.send, "tx.cancel", {"kept": True})
        done: Any = defer.Deferred()
        reactor.callLater(0.3, done.callback, None)
        return defer.gatherResults([d, done])

    assert run(reactor, start) == [["cancelled", None]]
    assert layer.receive(["tx.cancel"]) == ("tx.cancel", {"kept": True})  # still in the segment


def test_two_waiters_each_get_one_message(layer: IPCChannelLayer) -> None:
    reactor = PollReactor()

    def start() -> Any:
        first = layer.receive_twisted(["tx.two"], reactor)
        second = layer.receive_twisted(["tx.two"], reactor)
        reactor.callLater(0.05, layer.send, "tx.two", {"n": 1})
        reactor.callLater(0.1, layer.send, "tx.two", {"n": 2})
        return defer.gatherResults([first, second])

    (results,) = run(reactor, start)
    assert sorted(message["n"] for _, message in results) == [1, 2]


def test_close_removes_the_watch_fifos(layer: IPCChannelLayer, prefix: str) -> None:
    reactor = PollReactor()

    def start() -> Any:
        reactor.callLater(0.05, layer.send, "tx.fifo", {})
        return layer.receive_twisted(["tx.fifo"], reactor)

    assert run(reactor, start) == [("tx.fifo", {})]
    assert glob.glob(f"/dev/shm/rbuf.{prefix}~w~*")  # the FD watch's FIFO, while the layer lives
    layer.close()
    assert not glob.glob(f"/dev/shm/rbuf.{prefix}~w~*")


# -- receive_twisted_stream: one standing wait, drained at each wake-up ----------------------


def run_stream(layer: IPCChannelLayer, reactor: Any, channels: list[str], until: int,
               before: Callable[[], object] = lambda: None, timeout: float = 10.0,
               on_message: Callable[[str, dict[str, Any]], None] | None = None) -> tuple[Any, list[Any]]:
    """Stream ``channels`` on ``reactor`` until ``until`` messages came (or ``timeout``): (stream, got)."""
    got: list[Any] = []
    streams: list[Any] = []

    def handle(channel: str, message: dict[str, Any]) -> None:
        got.append((channel, message))
        if on_message is not None:
            on_message(channel, message)
        if len(got) >= until:
            reactor.stop()

    def begin() -> None:
        before()
        streams.append(layer.receive_twisted_stream(channels, handle, None, reactor))

    reactor.callWhenRunning(begin)
    guard = reactor.callLater(timeout, reactor.stop)
    reactor.run(installSignalHandlers=False)
    if guard.active():
        guard.cancel()
    return streams[0], got


def test_stream_extension_is_listed(layer: IPCChannelLayer) -> None:
    assert "twisted_stream" in layer.extensions


def test_stream_takes_a_backlog_and_later_sends_from_another_process_in_order(
        layer: IPCChannelLayer, prefix: str) -> None:
    reactor = PollReactor()
    waiters_seen: set[int] = set()
    for i in range(5):
        layer.send(f"tx.st!c{i}", {"i": i})
    pid = os.fork()
    if pid == 0:  # another process's layer sends the rest while the stream waits
        try:
            time.sleep(0.3)
            other = make_layer(prefix)
            for i in range(5, 10):
                other.send(f"tx.st!c{i}", {"i": i})
                time.sleep(0.02)
            other.close()
        finally:
            os._exit(0)

    def count_waiters(channel: str, message: dict[str, Any]) -> None:
        engine = ipc_bridge(layer, reactor).engine
        waiters_seen.add(len(engine.watches["tx.st!"].by_loop.get(reactor, {})))

    threads = threading.active_count()
    stream, got = run_stream(layer, reactor, ["tx.st!"], 10, on_message=count_waiters)
    os.waitpid(pid, 0)
    assert [message["i"] for _, message in got] == list(range(10))
    assert [channel for channel, _ in got] == [f"tx.st!c{i}" for i in range(10)]
    assert waiters_seen == {1}  # one standing waiter throughout, not one per message
    assert threading.active_count() == threads  # woken through the FD watch, no helper thread
    stream.stop()


def ipc_bridge(layer: IPCChannelLayer, reactor: Any) -> Any:
    from ipc_layer.twisted_ext import bridge_for

    return bridge_for(layer, reactor)


def test_stream_rearms_once_per_drain_not_per_message(layer: IPCChannelLayer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    reactor = PollReactor()
    engine = ipc_bridge(layer, reactor).engine
    rewaits: list[int] = []
    real_rewait = engine.rewait
    got_so_far: list[int] = []

    def counting_rewait(waiter: Any, future: Any) -> bool:
        rewaits.append(len(got_so_far))
        return real_rewait(waiter, future)

    monkeypatch.setattr(engine, "rewait", counting_rewait)
    for i in range(20):
        layer.send("tx.rearm", {"i": i})
    stream, got = run_stream(layer, reactor, ["tx.rearm"], 20,
                             on_message=lambda channel, message: got_so_far.append(message["i"]))
    assert len(got) == 20
    assert rewaits == [20]  # one re-arm, once the 20 were taken and the queue was empty
    stream.stop()
    # Once empty, one re-arm: a later send wakes it again.
    reactor2 = PollReactor()
    stream2, got2 = run_stream(layer, reactor2, ["tx.rearm"], 1,
                               before=lambda: reactor2.callLater(0.1, layer.send, "tx.rearm", {"i": 99}))
    assert [message["i"] for _, message in got2] == [99]
    stream2.stop()


def test_a_poke_is_handed_on_in_its_own_reactor_turn(layer: IPCChannelLayer, prefix: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The woken stream runs right after the engine's poke callback: no callLater(0) in between."""
    reactor = PollReactor()
    zero_delay: list[Any] = []
    real_call_later = reactor.callLater

    def watching_call_later(delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        if delay == 0:
            zero_delay.append(f)
        return real_call_later(delay, f, *args, **kwargs)

    def send_from_child() -> None:
        zero_delay.clear()  # from here on: the wait, the poke, the hand-on
        pid = os.fork()
        if pid == 0:
            try:
                other = make_layer(prefix)
                other.send("tx.turn", {"n": 1})
                other.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    monkeypatch.setattr(reactor, "callLater", watching_call_later)
    stream, got = run_stream(layer, reactor, ["tx.turn"], 1,
                             before=lambda: real_call_later(0.1, send_from_child))
    assert got == [("tx.turn", {"n": 1})]
    assert zero_delay == []
    stream.stop()


def test_a_long_backlog_lets_the_reactor_turn_between_batches(layer: IPCChannelLayer) -> None:
    from ipc_layer.twisted_ext import Stream

    reactor = PollReactor()
    n = Stream.BATCH + 20  # within the test layer's capacity (100)
    for i in range(n):
        layer.send("tx.batch", {"i": i})
    turned_at: list[int] = []
    got_so_far: list[int] = []

    def handle(channel: str, message: dict[str, Any]) -> None:
        if not got_so_far:  # at the first message: a call for the reactor's next turn
            reactor.callLater(0, lambda: turned_at.append(len(got_so_far)))
        got_so_far.append(message["i"])

    stream, got = run_stream(layer, reactor, ["tx.batch"], n, on_message=handle)
    assert [message["i"] for _, message in got] == list(range(n))
    assert turned_at == [Stream.BATCH]  # the reactor had a turn after one batch, before the rest
    stream.stop()


def test_a_stopped_stream_takes_nothing(layer: IPCChannelLayer) -> None:
    reactor = PollReactor()
    got: list[Any] = []

    def start() -> Any:
        stream = layer.receive_twisted_stream(["tx.stop"], lambda c, m: got.append(m), None, reactor)
        reactor.callLater(0.05, stream.stop)
        reactor.callLater(0.1, layer.send, "tx.stop", {"kept": True})
        done: Any = defer.Deferred()
        reactor.callLater(0.3, done.callback, None)
        return done

    run(reactor, start)
    assert got == []
    assert layer.receive(["tx.stop"]) == ("tx.stop", {"kept": True})  # still in the segment


def test_a_failing_handler_does_not_end_the_stream(layer: IPCChannelLayer, caplog: pytest.LogCaptureFixture) -> None:
    reactor = PollReactor()
    for i in range(3):
        layer.send("tx.fail", {"i": i})

    def handler(channel: str, message: dict[str, Any]) -> None:
        if message["i"] == 1:
            raise RuntimeError("handler broke")

    stream, got = run_stream(layer, reactor, ["tx.fail"], 3, on_message=handler)
    assert [message["i"] for _, message in got] == [0, 1, 2]
    assert "handler broke" in caplog.text
    stream.stop()


def test_a_failing_receive_calls_on_error_and_resume_goes_on(layer: IPCChannelLayer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reactor = PollReactor()
    engine = ipc_bridge(layer, reactor).engine
    real_take = engine.take_any
    failures = [RuntimeError("segment trouble")]

    def flaky_take(channels: Any, woken: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_take(channels, woken)

    monkeypatch.setattr(engine, "take_any", flaky_take)
    layer.send("tx.err", {"n": 1})
    errors: list[Exception] = []
    got: list[Any] = []
    streams: list[Any] = []

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        reactor.callLater(0.05, streams[0].resume)

    def handle(channel: str, message: dict[str, Any]) -> None:
        got.append(message)
        reactor.stop()

    def begin() -> None:
        streams.append(layer.receive_twisted_stream(["tx.err"], handle, on_error, reactor))

    reactor.callWhenRunning(begin)
    guard = reactor.callLater(10, reactor.stop)
    reactor.run(installSignalHandlers=False)
    if guard.active():
        guard.cancel()
    assert [str(exc) for exc in errors] == ["segment trouble"]
    assert got == [{"n": 1}]
    streams[0].stop()
