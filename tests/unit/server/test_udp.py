"""The UDP adapter over a fake datagram transport, the in-memory layer and a fake clock."""
from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address

from server.udp import LayerUDP

from .support import Harness


class FakeUDPTransport:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))

    def getHost(self) -> Any:
        return IPv4Address("UDP", "127.0.0.1", 9999)


def _udp(h: Harness) -> tuple[LayerUDP, FakeUDPTransport]:
    protocol = LayerUDP(h.context, idle_timeout=10)
    transport = FakeUDPTransport()
    protocol.makeConnection(transport)  # type: ignore[arg-type]  # a fake with what LayerUDP uses
    return protocol, transport


def test_datagram_becomes_udp_receive_and_replies_go_back() -> None:
    h = Harness()
    protocol, transport = _udp(h)
    protocol.datagramReceived(b"ping", ("10.0.0.1", 4000))
    message = h.take("udp.receive")
    assert message["data"] == b"ping"
    assert message["client"] == ["10.0.0.1", 4000] and message["server"] == ["127.0.0.1", 9999]
    h.reply(message["reply_channel"], {"data": b"pong"})
    h.reply(message["reply_channel"], {"data": b"pong2"})
    assert transport.written == [(b"pong", ("10.0.0.1", 4000)), (b"pong2", ("10.0.0.1", 4000))]
    protocol.datagramReceived(b"again", ("10.0.0.1", 4000))
    assert h.take("udp.receive")["reply_channel"] == message["reply_channel"]  # one channel per client


def test_idle_client_is_forgotten_and_late_replies_dropped() -> None:
    h = Harness()
    protocol, transport = _udp(h)
    protocol.datagramReceived(b"x", ("10.0.0.1", 4000))
    reply = h.take("udp.receive")["reply_channel"]
    h.reactor.advance(9)
    protocol.datagramReceived(b"y", ("10.0.0.1", 4000))  # activity resets the idle timer
    h.reactor.advance(9)
    assert h.router.is_live(reply)
    h.reactor.advance(2)
    assert not h.router.is_live(reply) and not protocol.clients
    h.reply(reply, {"data": b"late"})
    assert transport.written == []


def test_bad_reply_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    protocol, transport = _udp(h)
    protocol.datagramReceived(b"x", ("10.0.0.1", 4000))
    reply = h.take("udp.receive")["reply_channel"]
    h.reply(reply, {"data": "text"})
    h.reply(reply, {"data": b"ok", "extra": 1})
    assert transport.written == []
    assert "bad udp reply" in caplog.text


def test_full_channel_drops_the_datagram() -> None:
    h = Harness(channel_capacity={"udp.receive": 1})
    protocol, _ = _udp(h)
    protocol.datagramReceived(b"1", ("10.0.0.1", 4000))
    protocol.datagramReceived(b"2", ("10.0.0.1", 4000))
    assert protocol.dropped == 1
    assert h.take("udp.receive")["data"] == b"1"
