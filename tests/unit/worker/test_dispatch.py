"""worker.dispatch.consume: deferred sends flushed or dropped, Deny/Accept/Stop/ConsumeLater, bounded requeue."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ipc_layer import ChannelFull, InMemoryChannelLayer
from worker.channel import Channel
from worker.dispatch import RETRIES_KEY, consume, requeue
from worker.exceptions import (
    AcceptConnection,
    ConsumeLater,
    DenyConnection,
    SendFailed,
    StopConsumer,
    WebsocketCloseException,
)
from worker.message import Message, pending_message_store

pytestmark = pytest.mark.timeout(60)

REPLY = "websocket.send!abc"


@pytest.fixture
def layer() -> Any:
    return InMemoryChannelLayer()


def reply(message: Message) -> Channel:
    assert message.reply_channel is not None
    return message.reply_channel


def drain(layer: Any, *channels: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    while True:
        channel, content = layer.receive(list(channels))
        if channel is None:
            return out
        out.append((channel, content))


def ws(layer: Any, channel: str = "websocket.connect", **content: Any) -> Message:
    return Message({"reply_channel": REPLY, "path": "/", **content}, channel, layer)


def test_sends_go_out_when_the_consumer_returns(layer: Any) -> None:
    seen = []

    def consumer(message: Message, **kwargs: Any) -> None:
        reply(message).send({"text": "a"})
        Channel("log", channel_layer=layer).send({"n": kwargs["n"]})
        seen.append(drain(layer, "websocket.send!", "log"))  # nothing yet: deferred

    consume(consumer, ws(layer, "websocket.receive"), {"n": 1})
    assert seen == [[]]
    assert drain(layer, "websocket.send!") == [(REPLY, {"text": "a"})]
    assert drain(layer, "log") == [("log", {"n": 1})]
    assert not pending_message_store.active


def test_a_failing_consumer_sends_nothing_and_the_error_propagates(layer: Any) -> None:
    def consumer(message: Message) -> None:
        reply(message).send({"text": "half"})
        raise KeyError("boom")

    with pytest.raises(KeyError):
        consume(consumer, ws(layer, "websocket.receive"))
    assert drain(layer, "websocket.send!") == []
    assert not pending_message_store.active


def test_stop_consumer_flushes_quietly(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    def consumer(message: Message) -> None:
        reply(message).send({"text": "bye"})
        raise StopConsumer()

    consume(consumer, ws(layer, "websocket.receive"))
    assert drain(layer, "websocket.send!") == [(REPLY, {"text": "bye"})]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_deny_connection_refuses_the_handshake_and_drops_other_sends(layer: Any) -> None:
    def consumer(message: Message) -> None:
        reply(message).send({"text": "would accept"})
        raise DenyConnection()

    consume(consumer, ws(layer))
    assert drain(layer, "websocket.send!") == [(REPLY, {"close": True})]
    with pytest.raises(ValueError, match="DenyConnection raised by a consumer of 'websocket.receive'"):
        consume(consumer, ws(layer, "websocket.receive"))


def test_accept_connection(layer: Any) -> None:
    def consumer(message: Message) -> None:
        Channel("log", channel_layer=layer).send({"joined": True})
        raise AcceptConnection()

    consume(consumer, ws(layer))
    assert drain(layer, "websocket.send!") == [(REPLY, {"accept": True})]
    assert drain(layer, "log") == [("log", {"joined": True})]


def test_websocket_close_exception_sends_its_code(layer: Any) -> None:
    def consumer(message: Message) -> None:
        reply(message).send({"text": "last words"})
        raise WebsocketCloseException(4001)

    consume(consumer, ws(layer, "websocket.receive"))
    assert drain(layer, "websocket.send!") == [(REPLY, {"text": "last words"}), (REPLY, {"close": 4001})]
    with pytest.raises(ValueError, match="invalid WebSocket close code 2000"):
        WebsocketCloseException(2000)
    with pytest.raises(ValueError, match="only websocket"):
        consume(consumer, Message({"reply_channel": "http.response!x"}, "http.request", layer))


def test_consume_later_requeues_a_bounded_number_of_times(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    runs = []

    def consumer(message: Message) -> None:
        runs.append((message.get(RETRIES_KEY, 0), getattr(message, "__doomed__", False)))
        reply(message).send({"text": "never"})
        raise ConsumeLater()

    message: Message | None = ws(layer, "websocket.receive", text="x")
    while message is not None:
        consume(consumer, message, message_retries=3)
        channel, content = layer.receive(["websocket.receive"])
        message = Message(content, channel, layer) if channel else None
    assert runs == [(0, False), (1, False), (2, False), (3, True)]
    assert drain(layer, "websocket.send!") == []  # a message put back sends nothing
    assert "put back 3 times" in caplog.text and "'websocket.receive'" in caplog.text


def test_requeue_gives_up_on_a_channel_that_stays_full(caplog: pytest.LogCaptureFixture) -> None:
    full = InMemoryChannelLayer(capacity=1)
    full.send("work", {"n": 0})
    pauses: list[float] = []
    assert requeue(Message({"n": 1}, "work", full), sleep=pauses.append) is False
    assert len(pauses) == 9 and "stayed full" in caplog.text


def test_send_failed_propagates_from_the_flush() -> None:
    full = InMemoryChannelLayer(capacity=1)
    full.send("out", {"n": 0})
    old = pending_message_store.retry_time
    pending_message_store.retry_time = 0.0  # give up at once: no waiting in a unit test
    try:
        with pytest.raises(SendFailed, match="Channel\\('out'\\): ChannelFull"):
            consume(lambda m: Channel("out", channel_layer=full).send({"n": 1}), Message({}, "x", full))
    finally:
        pending_message_store.retry_time = old
    assert not pending_message_store.active
    assert isinstance(SendFailed("x").failures, list) and issubclass(ChannelFull, Exception)
