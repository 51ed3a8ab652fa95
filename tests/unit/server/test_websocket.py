"""The autobahn WebSocket adapter behind the HTTP upgrade, over StringTransport and the in-memory layer."""
from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from .support import UPGRADE, Harness, client_frame, feed_bytewise, server_frames


def _connect(h: Harness, data: bytes = UPGRADE, bytewise: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    channel, transport = h.connect()
    if bytewise:
        feed_bytewise(channel, data)
    else:
        channel.dataReceived(data)
    return channel, transport, h.take("websocket.connect")


def _open(h: Harness, **kwargs: Any) -> tuple[Any, Any, dict[str, Any]]:
    channel, transport, connect = _connect(h, **kwargs)
    h.reply(connect["reply_channel"], {"accept": True})
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    transport.clear()
    return transport.protocol, transport, connect


def test_connect_message_holds_the_handshake() -> None:
    h = Harness()
    _, transport, connect = _connect(h, bytewise=True)
    assert connect["path"] == "/chat/room"
    assert connect["query_string"] == b"x=1"
    assert connect["order"] == 0
    assert connect["scheme"] == "ws"
    assert connect["root_path"] == ""
    assert [b"cookie", b"sessionid=abc"] in connect["headers"]
    assert connect["client"] == ["127.0.0.1", 5000] and connect["server"] == ["127.0.0.1", 8000]
    assert transport.value() == b""  # held until the application answers


def test_accept_then_frames_both_ways_with_order() -> None:
    h = Harness(ws_protocols=("superchat",))
    channel, transport, connect = _connect(h)
    h.reply(connect["reply_channel"], {"accept": True})
    head = transport.value()
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-protocol: superchat" in head.lower()
    protocol = transport.protocol
    transport.clear()
    protocol.dataReceived(client_frame(b"hello"))
    protocol.dataReceived(client_frame(b"\x00\x01", opcode=0x2))
    first, second = h.take("websocket.receive"), h.take("websocket.receive")
    assert first == {"reply_channel": connect["reply_channel"], "path": "/chat/room", "order": 1, "text": "hello"}
    assert second["bytes"] == b"\x00\x01" and second["order"] == 2 and "text" not in second
    h.reply(connect["reply_channel"], {"text": "hi"})
    h.reply(connect["reply_channel"], {"bytes": b"\xff"})
    assert server_frames(transport.value()) == [(0x1, b"hi"), (0x2, b"\xff")]


def test_data_during_handshake_implies_accept() -> None:
    h = Harness()
    _, transport, connect = _connect(h)
    h.reply(connect["reply_channel"], {"text": "welcome"})
    head, frames = transport.value().split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert server_frames(frames) == [(0x1, b"welcome")]


@pytest.mark.parametrize("reply", [{"accept": False}, {"close": True}])
def test_reject_is_403(reply: dict[str, object]) -> None:
    h = Harness()
    _, transport, connect = _connect(h)
    h.reply(connect["reply_channel"], reply)
    assert transport.value().startswith(b"HTTP/1.1 403 ")
    assert not h.router.is_live(connect["reply_channel"])


def test_connect_timeout_is_403() -> None:
    h = Harness(websocket_connect_timeout=2)
    _, transport, connect = _connect(h)
    h.reactor.advance(2.1)
    assert transport.value().startswith(b"HTTP/1.1 403 ")
    h.reply(connect["reply_channel"], {"accept": True})  # too late: dropped
    assert transport.value().count(b"HTTP/1.1") == 1


def test_full_connect_channel_is_503() -> None:
    h = Harness(channel_capacity={"websocket.connect": 1})
    h.layer.send("websocket.connect", {"filler": True})
    channel, transport = h.connect()
    channel.dataReceived(UPGRADE)
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    assert h.take("websocket.connect") == {"filler": True}
    assert h.nothing_on("websocket.connect")


def test_full_receive_channel_closes_1013_and_mutes() -> None:
    h = Harness(channel_capacity={"websocket.receive": 1})
    protocol, transport, _ = _open(h)
    protocol.dataReceived(client_frame(b"one"))
    protocol.dataReceived(client_frame(b"two"))
    frames = server_frames(transport.value())
    assert frames[-1][0] == 0x8 and frames[-1][1][:2] == (1013).to_bytes(2, "big")
    protocol.dataReceived(client_frame(b"three"))
    assert h.take("websocket.receive")["text"] == "one"
    assert h.nothing_on("websocket.receive")


def test_close_from_the_application_and_disconnect_message() -> None:
    h = Harness()
    protocol, transport, connect = _open(h)
    protocol.dataReceived(client_frame(b"x"))
    h.take("websocket.receive")
    h.reply(connect["reply_channel"], {"close": 4001})
    frames = server_frames(transport.value())
    assert frames == [(0x8, (4001).to_bytes(2, "big"))]
    protocol.dataReceived(client_frame((4001).to_bytes(2, "big"), opcode=0x8))
    protocol.connectionLost(Failure(ConnectionDone()))
    disconnect = h.take("websocket.disconnect")
    assert disconnect == {"reply_channel": connect["reply_channel"], "path": "/chat/room", "order": 2,
                          "code": 4001}
    assert not h.router.is_live(connect["reply_channel"])


def test_client_vanishing_is_1006() -> None:
    h = Harness()
    protocol, _, _ = _open(h)
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    protocol.connectionLost(Failure(ConnectionLost()))
    assert h.take("websocket.disconnect")["code"] == 1006


def test_bad_reply_closes_1011() -> None:
    h = Harness()
    _, transport, connect = _open(h)
    h.reply(connect["reply_channel"], {"text": "a", "bytes": b"b"})
    assert server_frames(transport.value())[-1] == (0x8, (1011).to_bytes(2, "big"))


def test_websocket_timeout_closes_1000() -> None:
    h = Harness(websocket_timeout=30)
    _, transport, _ = _open(h)
    h.reactor.advance(31)
    assert server_frames(transport.value())[-1] == (0x8, (1000).to_bytes(2, "big"))


def test_keepalive_pings_and_a_silent_client_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    import txaio

    h = Harness(ping_interval=2, ping_timeout=3)
    # autobahn schedules its pings through txaio's loop (the global reactor
    # in a server); point it at the fake clock.
    monkeypatch.setattr(txaio.config, "loop", h.reactor)  # type: ignore[attr-defined]
    protocol, transport, connect = _open(h)
    h.reactor.advance(2.1)
    frames = server_frames(transport.value())
    assert frames and frames[-1][0] == 0x9  # a ping
    h.reactor.advance(3.5)  # no pong within ping_timeout: the connection is dropped
    assert transport.disconnecting


def test_a_refused_handshake_still_tells_the_application() -> None:
    """websocket.connect was sent: a connect timeout (or reject) ends with websocket.disconnect."""
    h = Harness(websocket_connect_timeout=1)
    _, transport, connect = _connect(h)
    h.reactor.advance(1.5)
    assert transport.value().startswith(b"HTTP/1.1 403")
    transport.protocol.connectionLost(Failure(ConnectionDone()))
    disconnect = h.take("websocket.disconnect")
    assert disconnect["reply_channel"] == connect["reply_channel"] and disconnect["order"] == 1


def test_replies_after_our_own_close_are_dropped_quietly(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(channel_capacity={"websocket.receive": 1})
    protocol, transport, connect = _open(h)
    protocol.dataReceived(client_frame(b"a"))
    protocol.dataReceived(client_frame(b"b"))  # full: 1013, closing
    h.reply(connect["reply_channel"], {"text": "late"})
    assert "failed" not in caplog.text
    assert all(opcode != 0x1 for opcode, _ in server_frames(transport.value()))
