"""Fixtures for the protocol-server unit tests: an in-memory layer, a fake clock, string transports."""
from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from ipc_layer import InMemoryChannelLayer
from server.config import ServerConfig
from server.context import ServerContext
from server.http import LayerHTTPFactory
from server.replies import ReplyRouter
from server.websocket import LayerWebSocketFactory


class Harness:
    """One server's context over an in-memory layer, and helpers to drive connections byte by byte."""

    def __init__(self, **config: Any) -> None:
        self.layer = InMemoryChannelLayer(capacity=config.pop("capacity", 100),
                                          channel_capacity=config.pop("channel_capacity", None))
        self.reactor = MemoryReactorClock()
        self.router = ReplyRouter(self.layer.new_process_channel("server"))
        self.context = ServerContext(self.layer, self.router, ServerConfig(**config), self.reactor)
        self.factory = LayerHTTPFactory(self.context)
        self.context.ws_factory = LayerWebSocketFactory(self.context)

    def connect(self, port: int = 5000) -> tuple[Any, StringTransport]:
        channel = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
        channel.makeConnection(transport)
        return channel, transport

    def take(self, channel: str) -> dict[str, Any]:
        got, message = self.layer.receive([channel])
        assert got is not None and message is not None, f"nothing on {channel}"
        return message

    def nothing_on(self, channel: str) -> bool:
        return self.layer.receive([channel]) == (None, None)

    def nothing_on_peek(self, channel: str) -> bool:
        return self.layer.channel_statistics(channel)["messages_pending"] == 0

    def reply(self, reply_channel: str, message: dict[str, Any]) -> None:
        """What the reader does: the layer gives the message, the router dispatches it."""
        self.layer.send(reply_channel, message)
        got, received = self.layer.receive([self.router.process_channel])
        assert got == reply_channel and received is not None
        self.router.dispatch(got, received)


def feed_bytewise(channel: Any, data: bytes) -> None:
    for i in range(len(data)):
        channel.dataReceived(data[i : i + 1])


def client_frame(payload: bytes, opcode: int = 0x1, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A masked client-to-server WebSocket frame (RFC 6455 5.2)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked server frames in ``data``."""
    frames = []
    i = 0
    while i < len(data):
        opcode = data[i] & 0x0F
        n = data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n = int.from_bytes(data[i : i + 2], "big")
            i += 2
        elif n == 127:
            n = int.from_bytes(data[i : i + 8], "big")
            i += 8
        frames.append((opcode, data[i : i + n]))
        i += n
    return frames


UPGRADE = (b"GET /chat/room?x=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Protocol: chat, superchat\r\nCookie: sessionid=abc\r\n\r\n")
