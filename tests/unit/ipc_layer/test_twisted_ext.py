"""The shared-memory layer's ``receive_twisted``: FD watches as reactor readers, no thread, cancel-safe."""
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
