"""The worker's loop (worker/loop.py) and heartbeat (worker/heartbeat.py), in this process, on the in-memory layer."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest

from tests.django_site.testing import setup

setup()

from django.core import signals as django_signals  # noqa: E402

from ipc_layer import InMemoryChannelLayer  # noqa: E402
from worker import signals  # noqa: E402
from worker.heartbeat import Heartbeat, HeartbeatWriter, Progress  # noqa: E402
from worker.loop import NoChannelsError, WorkerLoop, served_channels  # noqa: E402
from worker.message import Message  # noqa: E402

pytestmark = pytest.mark.timeout(60)


class FakeRouter:
    def __init__(self, routes: dict[str, Any], channels: list[str] | None = None) -> None:
        self.routes = routes
        self.channels = channels if channels is not None else list(routes)

    def match(self, message: Any) -> tuple[Any, dict[str, Any]] | None:
        consumer = self.routes.get(message.channel.name)
        return None if consumer is None else (consumer, {"via": "fake"})


def plain_consume(consumer: Any, message: Any, kwargs: dict[str, Any]) -> None:
    consumer(message, **kwargs)


class Stamps:
    def __init__(self) -> None:
        self.written: list[float] = []

    def __call__(self, stamp: float) -> None:
        self.written.append(stamp)


def make_loop(layer: Any, router: Any, channels: list[str], **kwargs: Any) -> tuple[WorkerLoop, list[tuple[str, str]]]:
    notices: list[tuple[str, str]] = []
    loop = WorkerLoop(layer, router, channels, message_class=Message, consume=plain_consume,
                      progress=Progress(Stamps()), notify=lambda e, t: notices.append((e, t)), **kwargs)
    return loop, notices


def test_served_channels_filters_and_names_the_globs_when_nothing_is_left() -> None:
    routed = ["http.request", "websocket.connect", "websocket.receive", "thumbnails"]
    assert served_channels(routed) == sorted(routed)
    assert served_channels(routed, only=["websocket.*"]) == ["websocket.connect", "websocket.receive"]
    assert served_channels(routed, exclude=["websocket.*", "http.*"]) == ["thumbnails"]
    assert served_channels(routed, only=["websocket.*"], exclude=["*.receive"]) == ["websocket.connect"]
    with pytest.raises(NoChannelsError) as info:
        served_channels(routed, only=["mail.*"], exclude=["x"])
    assert str(info.value) == (
        "no channel to serve: --only-channels mail.* and --exclude-channels x left none of the routed channels "
        "['http.request', 'thumbnails', 'websocket.connect', 'websocket.receive']"
    )


def test_each_message_runs_its_consumer_between_the_signals_in_order() -> None:
    layer = InMemoryChannelLayer(blocking_timeout=0.05)
    events: list[str] = []
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def consumer(message: Message, **kwargs: Any) -> None:
        events.append("consumer")
        seen.append((message.channel.name, dict(message.content), kwargs))
        if len(seen) == 2:
            loop.stop()

    def on(name: str) -> Any:
        def receiver(**kwargs: Any) -> None:
            events.append(name)
        return receiver

    receivers = [(django_signals.request_started, on("request_started")),
                 (signals.consumer_started, on("consumer_started")),
                 (signals.consumer_finished, on("consumer_finished")),
                 (django_signals.request_finished, on("request_finished")),
                 (signals.worker_ready, on("worker_ready"))]
    for sig, receiver in receivers:
        sig.connect(receiver)
    try:
        loop, notices = make_loop(layer, FakeRouter({"a": consumer, "b": consumer}), ["a", "b"])
        layer.send("a", {"n": 1})
        layer.send("b", {"n": 2})
        loop.run()
    finally:
        for sig, receiver in receivers:
            sig.disconnect(receiver)
    assert sorted(seen, key=lambda s: s[1]["n"]) == [("a", {"n": 1}, {"via": "fake"}), ("b", {"n": 2}, {"via": "fake"})]
    one = ["request_started", "consumer_started", "consumer", "consumer_finished", "request_finished"]
    assert events == ["worker_ready", *one, *one]
    assert notices == [("ready", "")]
    assert loop.handled == 2


def test_a_failing_consumer_is_logged_with_its_channel_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    layer = InMemoryChannelLayer(blocking_timeout=0.05)
    done: list[int] = []

    def broken(message: Message, **kwargs: Any) -> None:
        raise KeyError("no such thing")

    def fine(message: Message, **kwargs: Any) -> None:
        done.append(message["n"])
        loop.stop()

    loop, _ = make_loop(layer, FakeRouter({"bad": broken, "good": fine}), ["bad", "good"])
    layer.send("bad", {"n": 1})
    layer.send("nothing.routes.this", {"n": 9})
    with caplog.at_level(logging.INFO, logger="worker.loop"):
        # The message on an unrouted channel is received only if served: serve it to see the warning.
        loop.channels.append("nothing.routes.this")
        layer.send("good", {"n": 2})
        loop.run()
    assert done == [2]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "error in consumer" in errors[0].getMessage() and "broken" in errors[0].getMessage()
    assert "'bad'" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is KeyError
    assert any("no route for a message on channel 'nothing.routes.this'" in r.getMessage() for r in caplog.records)


def test_max_requests_notifies_retiring_and_stops_after_exactly_n() -> None:
    layer = InMemoryChannelLayer(blocking_timeout=0.05)
    handled: list[int] = []
    loop, notices = make_loop(layer, FakeRouter({"a": lambda m, **k: handled.append(m["n"])}), ["a"],
                              max_requests=3)
    for n in range(5):
        layer.send("a", {"n": n})
    loop.run()
    assert handled == [0, 1, 2]
    assert notices == [("ready", ""), ("retiring", "")]
    assert layer.receive(["a"]) == ("a", {"n": 3})  # the rest stays for the other workers


def test_max_requests_jitter_stays_within_its_range() -> None:
    layer = InMemoryChannelLayer()
    limits = {make_loop(layer, FakeRouter({}), ["a"], max_requests=10, max_requests_jitter=5)[0].limit
              for _ in range(200)}
    assert limits <= set(range(10, 16)) and len(limits) > 1


def test_an_idle_loop_leaves_when_its_master_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    layer = InMemoryChannelLayer(blocking_timeout=0.01)
    loop, _ = make_loop(layer, FakeRouter({}), ["a"], master_pid=os.getppid() + 1_000_000)
    with caplog.at_level(logging.WARNING, logger="worker.loop"):
        loop.run()
    assert "the master (pid" in caplog.text and "is gone" in caplog.text


def test_threads_each_take_messages_and_all_stop() -> None:
    layer = InMemoryChannelLayer(blocking_timeout=0.02)
    names: set[str] = set()
    both = threading.Barrier(2, timeout=20)
    clock = [100.0]

    def consumer(message: Message, **kwargs: Any) -> None:
        names.add(threading.current_thread().name)
        both.wait()  # two messages in flight at once: two threads
        loop.stop()

    stamps = Stamps()
    progress = Progress(stamps, clock=lambda: clock[0])
    progress.point()  # the main thread's boot-time point (worker.child makes it)
    clock[0] = 200.0
    loop = WorkerLoop(layer, FakeRouter({"a": consumer}), ["a"], message_class=Message, consume=plain_consume,
                      progress=progress, threads=2)
    layer.send("a", {})
    layer.send("a", {})
    loop.run()
    assert names == {"worker-0", "worker-1"}
    assert loop.handled == 2
    # The main thread only waited: its boot-time point did not hold the stamp at 100.
    assert 100.0 not in stamps.written[1:] and progress.stamp() == 200.0


# -- the heartbeat -----------------------------------------------------------------------------


def test_heartbeat_page_is_shared_between_writer_and_reader() -> None:
    heartbeat = Heartbeat(now=5.0)
    try:
        assert heartbeat.stamp(now=100.0) == 5.0
        writer = HeartbeatWriter(os.dup(heartbeat.fd))
        writer.write(42.5)
        assert heartbeat.stamp(now=100.0) == 42.5
        writer.close()
        assert os.get_inheritable(heartbeat.fd) is False  # only spawn makes it inheritable
    finally:
        heartbeat.close()


def test_a_torn_stamp_reads_as_alive() -> None:
    heartbeat = Heartbeat(now=1.0)
    try:
        heartbeat._map[0:8] = (7.0).hex().encode()[:8]  # the first copy half-written
        assert heartbeat.stamp(now=99.0) == 99.0
    finally:
        heartbeat.close()


def test_progress_is_the_oldest_point_of_the_threads() -> None:
    clock = [10.0]
    stamps = Stamps()
    progress = Progress(stamps, clock=lambda: clock[0])
    progress.point()  # main thread at 10
    assert stamps.written == [10.0]
    hung_started = threading.Event()
    release = threading.Event()

    def hung_thread() -> None:
        clock[0] = 11.0
        progress.point()  # took a message at 11 ... and hangs in its consumer
        hung_started.set()
        release.wait(20)
        progress.leave()

    thread = threading.Thread(target=hung_thread)
    thread.start()
    hung_started.wait(20)
    for now in (12.0, 20.0, 50.0):
        clock[0] = now
        progress.point()  # the other thread keeps making progress ...
    assert progress.stamp() == 11.0  # ... but the stamp stays at the hung thread's point
    release.set()
    thread.join(20)
    assert progress.stamp() == 50.0  # the hung one left: the stamp moves on
    assert stamps.written == [10.0, 11.0, 50.0]  # written only when it changes


def test_a_failing_receive_is_logged_and_retried_after_a_pause(caplog: pytest.LogCaptureFixture) -> None:
    # A layer whose store is down (a Redis layer past its retry bound raises ShardDown)
    # must not end the serving thread: a worker whose threads all died would exit, be
    # replaced, and die again, a crash loop for the length of the outage.
    layer = InMemoryChannelLayer(blocking_timeout=0.05)
    real = layer.receive
    failures = [2]
    pauses: list[float] = []

    def receive(channels: Any, block: bool = False) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("Redis at 127.0.0.1:6379 is down")
        return real(channels, block)

    layer.receive = receive  # type: ignore[method-assign]
    done: list[int] = []

    def consumer(message: Message, **kwargs: Any) -> None:
        done.append(message["n"])
        loop.stop()

    loop, _ = make_loop(layer, FakeRouter({"a": consumer}), ["a"])
    loop.pause = pauses.append  # type: ignore[method-assign, assignment]
    layer.send("a", {"n": 1})
    loop.run()
    assert done == [1]
    assert len(pauses) == 2 and pauses[0] < pauses[1]  # backing off, bounded
    assert "receive on ['a'] failed" in caplog.text and "ConnectionError" in caplog.text
