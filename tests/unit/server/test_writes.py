"""``server.writes.send_now``: a reply's bytes are on the socket when its handler returns.

Twisted's ``transport.write()`` only buffers until the reactor's next turn;
these tests hold the reactor still after dispatching a reply and read the
client's socket without blocking: the bytes must already be there. Real
loopback TCP sockets, a private reactor, the in-memory layer.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.pollreactor import PollReactor
from twisted.internet.testing import StringTransport

from ipc_layer import InMemoryChannelLayer
from server.config import ServerConfig
from server.context import ServerContext
from server.http import LayerHTTPFactory
from server.replies import ReplyRouter
from server.websocket import LayerWebSocketFactory
from server.writes import send_now

pytestmark = pytest.mark.timeout(30)


class LiveServer:
    """The server's HTTP factory on a loopback port of a private reactor that only turns when told."""

    def __init__(self) -> None:
        self.reactor: Any = PollReactor()
        self.layer = InMemoryChannelLayer()
        self.router = ReplyRouter(self.layer.new_process_channel("server"))
        self.context = ServerContext(self.layer, self.router, ServerConfig(), self.reactor)
        self.context.ws_factory = LayerWebSocketFactory(self.context)
        self.port = self.reactor.listenTCP(0, LayerHTTPFactory(self.context), interface="127.0.0.1")
        self.client = socket.create_connection(("127.0.0.1", self.port.getHost().port), timeout=10)

    def turn_until_message_on(self, channel: str, turns: int = 2000) -> dict[str, Any]:
        for _ in range(turns):
            got, message = self.layer.receive([channel])
            if message is not None:
                return message
            self.reactor.iterate(0.005)
        raise AssertionError(f"nothing arrived on {channel!r} in {turns} reactor turns")

    def connections(self) -> list[tcp.Connection]:
        """The server side of the client's connection."""
        return [reader for reader in self.reactor.getReaders() if isinstance(reader, tcp.Connection)]

    def reply(self, reply_channel: str, message: dict[str, Any]) -> None:
        """What the reader does on the reactor thread: the router hands the reply to its handler."""
        self.router.dispatch(reply_channel, message)

    def received_without_a_turn(self) -> bytes:
        """What the client's socket holds now (the reactor has not turned since the reply)."""
        self.client.setblocking(False)
        try:
            return self.client.recv(65536)
        except BlockingIOError:
            return b""
        finally:
            self.client.setblocking(True)

    def close(self) -> None:
        self.client.close()
        self.port.stopListening()
        for _ in range(20):  # let the server side see the close
            self.reactor.iterate(0.005)
        for selectable in self.reactor.getReaders() + self.reactor.getWriters():
            self.reactor.removeReader(selectable)
            self.reactor.removeWriter(selectable)


@pytest.fixture
def live() -> Iterator[LiveServer]:
    server = LiveServer()
    yield server
    server.close()


def test_an_http_reply_is_on_the_socket_before_the_reactor_turns(live: LiveServer) -> None:
    live.client.sendall(b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")
    request = live.turn_until_message_on("http.request")
    live.reply(request["reply_channel"], {"status": 200, "headers": [[b"content-type", b"text/plain"]],
                                          "content": b"at once"})
    data = live.received_without_a_turn()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert data.endswith(b"\r\n\r\nat once")
    # Nothing left for the reactor: it stopped watching the socket for writes.
    assert live.reactor.getWriters() == []


def test_a_streamed_reply_chunk_is_on_the_socket_at_once(live: LiveServer) -> None:
    live.client.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    request = live.turn_until_message_on("http.request")
    live.reply(request["reply_channel"], {"status": 200, "headers": [], "content": b"first",
                                          "more_content": True})
    assert live.received_without_a_turn().endswith(b"5\r\nfirst\r\n")
    live.reply(request["reply_channel"], {"content": b"second", "more_content": False})
    assert live.received_without_a_turn() == b"6\r\nsecond\r\n0\r\n\r\n"


def test_a_websocket_accept_is_on_the_socket_before_the_reactor_turns(live: LiveServer) -> None:
    live.client.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    connect = live.turn_until_message_on("websocket.connect")
    live.reply(connect["reply_channel"], {"accept": True})
    assert live.received_without_a_turn().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    live.reply(connect["reply_channel"], {"text": "hi"})
    assert live.received_without_a_turn() == b"\x81\x02hi"  # one unmasked text frame


def test_send_now_reads_only_what_twisted_tcp_transports_have(live: LiveServer) -> None:
    """The Twisted attributes send_now reads exist on a live TCP transport (a Twisted upgrade renaming
    them fails here, not silently in production)."""
    live.client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    live.turn_until_message_on("http.request")
    (connection,) = live.connections()
    for name in ("connected", "disconnecting", "_writeDisconnecting", "_tempDataLen", "dataBuffer", "offset"):
        assert hasattr(connection, name), name
    assert send_now(connection) is False  # nothing buffered: nothing to do


def test_send_now_leaves_other_and_closing_transports_to_twisted(live: LiveServer) -> None:
    assert send_now(StringTransport()) is False
    live.client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    live.turn_until_message_on("http.request")
    (connection,) = live.connections()
    connection.write(b"bytes")
    connection.loseConnection()  # disconnecting: its last write and close stay the reactor's
    assert send_now(connection) is False
    assert live.received_without_a_turn() == b""
