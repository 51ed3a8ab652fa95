"""InMemoryChannelLayer behaviour beyond the shared conformance suite."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ipc_layer import ChannelFull, InMemoryChannelLayer, inmemory
from ipc_layer.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def layer(clock: ManualClock) -> InMemoryChannelLayer:
    return InMemoryChannelLayer(expiry=10, group_expiry=20, capacity=50, clock=clock, blocking_timeout=1)


def test_receive_takes_oldest_head_across_channels(layer: InMemoryChannelLayer, clock: ManualClock) -> None:
    layer.send("b", {"n": 0})
    clock.advance(0.1)
    layer.send("a", {"n": 1})
    clock.advance(0.1)
    layer.send("b", {"n": 2})
    order = [layer.receive(["a", "b"]) for _ in range(3)]
    assert order == [("b", {"n": 0}), ("a", {"n": 1}), ("b", {"n": 2})]


def test_instances_do_not_share_state() -> None:
    first, second = InMemoryChannelLayer(), InMemoryChannelLayer()
    first.send("x", {"a": 1})
    assert second.receive(["x"]) == (None, None)


def test_expiry_boundary(layer: InMemoryChannelLayer, clock: ManualClock) -> None:
    layer.send("e", {"n": 0})
    clock.advance(9.999)
    layer.send("e", {"n": 1})
    assert layer.channel_statistics("e")["messages_max_age"] == 9
    clock.advance(0.001)  # the first message is now exactly `expiry` old: gone
    assert layer.receive(["e"]) == ("e", {"n": 1})


def test_received_messages_are_independent_copies(layer: InMemoryChannelLayer) -> None:
    layer.group_add("g", "one")
    layer.group_add("g", "two")
    layer.send_group("g", {"list": [1]})
    _, first = layer.receive(["one"])
    assert first is not None
    first["list"].append(2)
    assert layer.receive(["two"]) == ("two", {"list": [1]})


def test_idle_counters_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inmemory, "_STATS_SOFT_LIMIT", 3)
    layer = InMemoryChannelLayer()
    for i in range(10):
        name = layer.new_channel("reply?")
        layer.send(name, {"i": i})
        layer.receive([name])
    assert len(layer._counters) <= 4
    layer.send("busy", {"kept": True})
    for i in range(10):
        layer.send(f"other{i}", {})
    assert layer.channel_statistics("busy")["messages_count"] == 1
    assert layer.global_statistics()["messages_count"] == 21


def test_blocking_receivers_each_get_one_message() -> None:
    layer = InMemoryChannelLayer(blocking_timeout=3)
    results: list[Any] = []
    lock = threading.Lock()

    def consume() -> None:
        got = layer.receive(["work"], block=True)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    for i in range(4):
        layer.send("work", {"i": i})
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(message["i"] for _, message in results) == [0, 1, 2, 3]


def test_blocking_receive_is_bounded_by_config() -> None:
    layer = InMemoryChannelLayer(blocking_timeout=0.2)
    started = time.monotonic()
    assert layer.receive(["idle"], block=True) == (None, None)
    assert 0.15 <= time.monotonic() - started < 1.0


def test_real_clock_expiry() -> None:
    layer = InMemoryChannelLayer(expiry=0.2, group_expiry=0.4)
    layer.group_add("g", "c")
    layer.send("c", {"n": 0})
    time.sleep(0.25)
    assert layer.receive(["c"]) == (None, None)
    assert layer.group_channels("g") == ["c"]
    time.sleep(0.2)
    assert layer.group_channels("g") == []


def test_channel_full_message_names_channel_and_queue(layer: InMemoryChannelLayer) -> None:
    small = InMemoryChannelLayer(capacity=1)
    small.send("reply!a", {})
    with pytest.raises(ChannelFull, match=r"channel 'reply!b' is full: 1 unexpired messages are waiting in 'reply!'"):
        small.send("reply!b", {})


def test_send_group_logs_skipped_members(caplog: pytest.LogCaptureFixture) -> None:
    layer = InMemoryChannelLayer(capacity=1)
    layer.send("full", {})
    layer.group_add("g", "full")
    with caplog.at_level("DEBUG", logger="ipc_layer.inmemory"):
        layer.send_group("g", {})
    assert "skipped full channel 'full'" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"expiry": 0}, ValueError, "expiry must be a number of seconds > 0 and <= 315360000"),
        ({"expiry": float("nan")}, ValueError, "expiry"),
        ({"expiry": "60"}, TypeError, "expiry must be a number of seconds, not str"),
        ({"group_expiry": -1}, ValueError, "group_expiry"),
        ({"blocking_timeout": float("inf")}, ValueError, "blocking_timeout"),
        ({"capacity": 0}, ValueError, "capacity must be an int in 1..4294967295"),
        ({"capacity": True}, TypeError, "capacity must be an int"),
        ({"channel_capacity": {"a*": 0}}, ValueError, "channel_capacity['a*']"),
        ({"max_message_size": 0}, ValueError, "max_message_size must be an int in 1..1073741568"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], error: type[Exception], text: str) -> None:
    with pytest.raises(error) as caught:
        InMemoryChannelLayer(**kwargs)
    assert text in str(caught.value)


def test_context_manager_and_repr() -> None:
    with InMemoryChannelLayer(capacity=3) as layer:
        layer.send("x", {})
    assert "capacity=3" in repr(layer)
