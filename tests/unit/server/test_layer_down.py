"""A channel layer that fails (a Redis layer whose server is down raises ShardDown, a
ConnectionError) costs the request or socket at hand a clear status, is logged, and never
leaks out of a Twisted callback, where it would drop the connection without an answer."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from server.udp import LayerUDP

from .support import Harness, client_frame, server_frames
from .test_udp import FakeUDPTransport
from .test_websocket import UPGRADE, _open


class LayerDown(ConnectionError):
    """What a layer raises when its store cannot be reached."""


def fail_sends(h: Harness, failing: Callable[[str], bool]) -> list[str]:
    """Make ``h.layer.send`` raise LayerDown for the channels ``failing`` picks; returns the tries."""
    real = h.layer.send
    tried: list[str] = []

    def send(channel: str, message: dict[str, Any]) -> None:
        if failing(channel):
            tried.append(channel)
            raise LayerDown("Redis at 127.0.0.1:6379 is down")
        real(channel, message)

    h.layer.send = send  # type: ignore[method-assign]
    return tried


def test_request_is_503_and_the_next_one_is_served(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    down = [True]
    fail_sends(h, lambda channel: down[0] and channel == "http.request")
    channel, transport = h.connect()
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    assert b"Channel layer unavailable" in transport.value()
    assert "LayerDown" in caplog.text and "/a" in caplog.text
    down[0] = False
    other, other_transport = h.connect(5001)
    other.dataReceived(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    message = h.take("http.request")
    h.reply(message["reply_channel"], {"status": 200, "content": b"ok"})
    assert other_transport.value().startswith(b"HTTP/1.1 200 ")


def test_body_chunks_wait_while_the_layer_is_down() -> None:
    h = Harness(request_body_inline=2, body_chunk_size=2)
    down = [True]
    tried = fail_sends(h, lambda channel: down[0] and channel.startswith("http.request.body?"))
    channel, transport = h.connect()
    channel.dataReceived(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabcdef")
    message = h.take("http.request")
    assert tried and transport.producerState == "paused"
    down[0] = False
    h.reactor.advance(1.0)  # the retry sends the chunks in order
    body = message["body"]
    while True:
        chunk = h.take(message["body_channel"])
        body += chunk["content"]
        if not chunk["more_content"]:
            break
    assert body == b"abcdef"


def test_disconnects_are_dropped_quietly() -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(b"GET /lp HTTP/1.1\r\nHost: x\r\n\r\n")
    h.take("http.request")
    tried = fail_sends(h, lambda channel: True)
    channel.connectionLost(Failure(ConnectionDone()))  # raises out of Twisted's callback without the fix
    assert tried == ["http.disconnect"]


def test_websocket_connect_is_503() -> None:
    h = Harness()
    fail_sends(h, lambda channel: channel == "websocket.connect")
    channel, transport = h.connect()
    channel.dataReceived(UPGRADE)
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    assert len(h.router) == 0  # the socket took no reply name


def test_websocket_frame_closes_1011_and_disconnect_is_dropped() -> None:
    h = Harness()
    protocol, transport, _ = _open(h)
    tried = fail_sends(h, lambda channel: True)
    protocol.dataReceived(client_frame(b"hi"))
    frames = server_frames(transport.value())
    assert frames[-1][0] == 0x8 and frames[-1][1][:2] == (1011).to_bytes(2, "big")
    protocol.connectionLost(Failure(ConnectionDone()))  # the websocket.disconnect send fails too: dropped
    assert tried == ["websocket.receive", "websocket.disconnect"]  # tried, failed, nothing raised


def test_udp_datagram_is_dropped_and_counted() -> None:
    h = Harness()
    fail_sends(h, lambda channel: True)
    protocol = LayerUDP(h.context, idle_timeout=10)
    protocol.makeConnection(FakeUDPTransport())  # type: ignore[arg-type]
    protocol.datagramReceived(b"ping", ("10.0.0.1", 4000))
    assert protocol.dropped == 1
