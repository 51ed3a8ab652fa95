"""Malformed HTTP and WebSocket input: a 400 or a close, never an exception, never a leaked handler."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from .support import UPGRADE, Harness, client_frame

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_token = st.text(st.sampled_from("abcXYZ-_ :/\t\x00\r\n\x7f\xe9"), min_size=0, max_size=12)
_header = st.tuples(_token, _token).map(lambda kv: f"{kv[0]}:{kv[1]}".encode("latin-1", "replace"))
_request_line = st.one_of(
    st.sampled_from([b"GET / HTTP/1.1", b"POST /p HTTP/1.0", b"GET /%FF HTTP/1.1", b"GET http://h/x HTTP/1.1",
                     b"GET * HTTP/1.1", b"BREW /pot HTTP/1.1", b"GET / HTTP/9.9", b"", b"GET"]),
    st.binary(max_size=40),
)


def _assert_clean(h: Harness, transport: object, channel: object) -> None:
    wire = transport.value()  # type: ignore[attr-defined]
    if wire:
        assert wire.startswith(b"HTTP/1.1 "), wire[:60]
    # Whatever happened, closing the connection leaves nothing behind.
    channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
    assert not h.context.live
    assert len(h.router) == 0


@_FUZZ
@given(_request_line, st.lists(_header, max_size=6), st.binary(max_size=64))
def test_malformed_http_never_crashes_or_leaks(line: bytes, headers: list[bytes], tail: bytes) -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(line + b"\r\n" + b"".join(header + b"\r\n" for header in headers) + b"\r\n" + tail)
    # Anything that reached the layer is a well-formed ASGI 1 request.
    got, message = h.layer.receive(["http.request"])
    if message is not None:
        assert isinstance(message["path"], str) and isinstance(message["query_string"], bytes)
        assert all(isinstance(n, bytes) and n == n.lower() and b"_" not in n for n, _ in message["headers"])
        assert all(b"\r" not in v and b"\n" not in v and b"\x00" not in v for _, v in message["headers"])
    _assert_clean(h, transport, channel)


@_FUZZ
@given(st.binary(min_size=1, max_size=200))
def test_random_bytes_after_the_handshake_close_the_socket_cleanly(noise: bytes) -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(UPGRADE)
    connect = h.take("websocket.connect")
    h.reply(connect["reply_channel"], {"accept": True})
    protocol = transport.protocol  # type: ignore[attr-defined]  # the upgrade set it
    protocol.dataReceived(client_frame(b"fine"))
    protocol.dataReceived(noise)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert not h.context.live
    assert len(h.router) == 0
    assert h.take("websocket.receive")["text"] == "fine"
    assert h.take("websocket.disconnect")["reply_channel"] == connect["reply_channel"]


@_FUZZ
@given(st.binary(max_size=30), st.sampled_from([0x1, 0x2, 0x0, 0x9, 0xA, 0x3, 0xF]), st.booleans())
def test_odd_frames_never_crash(payload: bytes, opcode: int, fin: bool) -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(UPGRADE)
    h.reply(h.take("websocket.connect")["reply_channel"], {"accept": True})
    protocol = transport.protocol  # type: ignore[attr-defined]  # the upgrade set it
    protocol.dataReceived(client_frame(payload, opcode=opcode, fin=fin))
    protocol.connectionLost(Failure(ConnectionDone()))
    assert not h.context.live and len(h.router) == 0
