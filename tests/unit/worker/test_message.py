"""worker.message / worker.channel / worker.asgi: Message, Channel, Group, deferred sends, the layer table."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from ipc_layer import ChannelFull, InMemoryChannelLayer
from worker import DEFAULT_CHANNEL_LAYER
from worker.asgi import channel_layers
from worker.channel import Channel, Group
from worker.exceptions import SendFailed
from worker.message import Message, PendingMessageStore, pending_message_store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def layer() -> Any:
    return InMemoryChannelLayer()


@pytest.fixture
def default_layer(layer: Any) -> Any:
    old = channel_layers.set(DEFAULT_CHANNEL_LAYER, layer)
    yield layer
    channel_layers.set(DEFAULT_CHANNEL_LAYER, old)


class FakeClock:
    """Time that moves only when the store sleeps: retries are counted, never timed."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_message_wraps_content(layer: Any) -> None:
    content = {"reply_channel": "websocket.send!x", "path": "/a/", "text": "hi"}
    m = Message(content, "websocket.receive", layer)
    assert m.content is content and m.channel_layer is layer
    assert m.channel == Channel("websocket.receive") and m.channel.channel_layer is layer
    assert m.reply_channel is not None and m.reply_channel.name == "websocket.send!x"
    assert m.reply_channel.channel_layer is layer
    assert m["path"] == "/a/" and m.get("nope", 3) == 3 and "text" in m and "bytes" not in m
    assert set(m.keys()) == set(content) and list(m) == list(content)
    m["extra"] = 1
    assert content["extra"] == 1
    copied = m.copy()
    copied["path"] = "/b/"
    assert m["path"] == "/a/" and copied.channel.name == "websocket.receive"
    assert Message({"x": 1}, "thumbnails", layer).reply_channel is None
    with pytest.raises(TypeError, match="content on 'c' must be a dict"):
        Message([1], "c", layer)  # type: ignore[arg-type]


def test_channel_send_outside_a_consumer_is_immediate(layer: Any) -> None:
    Channel("thumbnails", channel_layer=layer).send({"id": 1})
    assert layer.receive(["thumbnails"]) == ("thumbnails", {"id": 1})
    Channel(b"thumbnails", channel_layer=layer).send({"id": 2}, immediately=True)
    assert layer.receive(["thumbnails"]) == ("thumbnails", {"id": 2})
    with pytest.raises(TypeError, match="send to channel 'thumbnails': content must be a dict, got list"):
        Channel("thumbnails", channel_layer=layer).send([1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group 'g': content must be a dict"):  # 1.x raised ValueError here
        Group("g", channel_layer=layer).send("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="channel name must be a str"):
        Channel(3)  # type: ignore[arg-type]


def test_the_layer_comes_from_the_alias_table_on_first_use(default_layer: Any) -> None:
    c = Channel("thumbnails")  # nothing looked up yet
    c.send({"id": 3})
    assert default_layer.receive(["thumbnails"]) == ("thumbnails", {"id": 3})
    assert Group("g").channel_layer is default_layer


def test_group_add_discard_send(layer: Any) -> None:
    g = Group("chat", channel_layer=layer)
    g.add(Channel("websocket.send!a", channel_layer=layer))
    g.add("websocket.send!b")
    assert sorted(g.channel_names()) == ["websocket.send!a", "websocket.send!b"]
    g.send({"text": "hi"})
    got = sorted(layer.receive(["websocket.send!"])[0] for _ in range(2))
    assert got == ["websocket.send!a", "websocket.send!b"]
    g.discard(Channel("websocket.send!a", channel_layer=layer))
    g.discard("websocket.send!zzz")  # not a member: no-op
    assert g.channel_names() == ["websocket.send!b"]


def test_sends_inside_a_consumer_wait_until_it_returns(layer: Any) -> None:
    g = Group("chat", channel_layer=layer)
    g.add("websocket.send!a")
    content = {"text": "one"}
    pending_message_store.prepare()
    try:
        Channel("out", channel_layer=layer).send(content)
        content["text"] = "mutated"  # the deferred send took a copy, as a real send does
        g.send({"text": "two"})
        Channel("out", channel_layer=layer).send({"text": "now"}, immediately=True)
        assert layer.receive(["out"]) == ("out", {"text": "now"})
        assert layer.receive(["out", "websocket.send!"]) == (None, None)
        assert [s.name for s, _ in pending_message_store.pending()] == ["out", "chat"]
    finally:
        pending_message_store.send_and_flush()
    assert not pending_message_store.active
    assert layer.receive(["out"]) == ("out", {"text": "one"})
    assert layer.receive(["websocket.send!"]) == ("websocket.send!a", {"text": "two"})


def test_a_failed_consumer_sends_nothing(layer: Any) -> None:
    pending_message_store.prepare()
    Channel("out", channel_layer=layer).send({"n": 1})
    assert pending_message_store.discard() == 1
    assert not pending_message_store.active
    pending_message_store.send_and_flush()  # nothing prepared: nothing to do
    assert layer.receive(["out"]) == (None, None)


def test_batches_nest(layer: Any) -> None:
    out = Channel("out", channel_layer=layer)
    pending_message_store.prepare()
    out.send({"n": "outer"})
    pending_message_store.prepare()
    out.send({"n": "inner"})
    pending_message_store.send_and_flush()
    assert layer.receive(["out"]) == ("out", {"n": "inner"})
    assert pending_message_store.active
    pending_message_store.send_and_flush()
    assert layer.receive(["out"]) == ("out", {"n": "outer"})


def test_each_thread_has_its_own_batch(layer: Any) -> None:
    out = Channel("out", channel_layer=layer)
    pending_message_store.prepare()
    try:
        thread = threading.Thread(target=out.send, args=({"n": "thread"},))
        thread.start()
        thread.join(10)
        assert layer.receive(["out"]) == ("out", {"n": "thread"})  # not deferred: no consumer there
    finally:
        pending_message_store.discard()


class Flaky:
    """A layer whose sends meet ChannelFull ``fails`` times first."""

    ChannelFull = ChannelFull

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, channel: str, content: dict[str, Any]) -> None:
        if self.fails:
            self.fails -= 1
            raise ChannelFull(f"channel {channel!r} is full")
        self.sent.append((channel, content))


def test_channel_full_is_retried_with_growing_pauses() -> None:
    clock = FakeClock()
    store = PendingMessageStore(clock=clock, sleep=clock.sleep)
    layer = Flaky(fails=7)
    store.prepare()
    store.append(Channel("out", channel_layer=layer), {"n": 1})
    store.send_and_flush()
    assert layer.sent == [("out", {"n": 1})]
    assert clock.sleeps == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.2]


def test_a_channel_full_past_the_budget_raises_naming_it(layer: Any) -> None:
    full = InMemoryChannelLayer(capacity=1)
    full.send("stuck", {"n": 0})
    clock = FakeClock()
    store = PendingMessageStore(clock=clock, sleep=clock.sleep)
    store.prepare()
    store.append(Channel("stuck", channel_layer=full), {"n": 1})
    store.append(Channel("fine", channel_layer=full), {"n": 2})
    store.append(Channel("stuck", channel_layer=full), {"n": 3})
    with pytest.raises(SendFailed) as caught:
        store.send_and_flush()
    text = str(caught.value)
    assert "2 deferred send(s)" in text and "Channel('stuck'): ChannelFull" in text
    assert "still full after retrying for 2 s" in text and "immediately=True" in text
    assert [t for t, _ in caught.value.failures] == ["Channel('stuck')", "Channel('stuck')"]
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value.__cause__, ChannelFull)
    # One budget for the whole batch: the second stuck send got one try, no more sleeping.
    assert sum(clock.sleeps) == pytest.approx(store.retry_time)
    assert full.receive(["fine"]) == ("fine", {"n": 2})  # the others still went out
    assert not store.active


def test_other_send_errors_are_reported_with_the_rest(layer: Any) -> None:
    store = PendingMessageStore()
    store.prepare()
    store.append(Channel("bad name", channel_layer=layer), {"n": 1})
    store.append(Channel("ok", channel_layer=layer), {"n": 2})
    with pytest.raises(SendFailed, match=r"Channel\('bad name'\): TypeError"):
        store.send_and_flush()
    assert layer.receive(["ok"]) == ("ok", {"n": 2})


def test_append_outside_a_consumer_is_an_error(layer: Any) -> None:
    with pytest.raises(RuntimeError, match="no consumer is running"):
        PendingMessageStore().append(Channel("x", channel_layer=layer), {})


FORK_SCRIPT = """
import os
from ipc_layer import InMemoryChannelLayer
from worker.asgi import channel_layers
layer = InMemoryChannelLayer()
channel_layers.set("default", layer)
pid = os.fork()
if pid == 0:
    os._exit(0 if channel_layers.backends == {} else 3)
_, status = os.waitpid(pid, 0)
assert channel_layers.backends["default"] is layer
print(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_builds_its_own_layers() -> None:
    # In a fresh process: forking pytest itself (maybe threaded by other tests) is not safe.
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
