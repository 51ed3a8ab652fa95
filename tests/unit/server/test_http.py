"""The Twisted HTTP adapter, driven with StringTransport, MemoryReactorClock and the in-memory layer."""
from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from .support import Harness, feed_bytewise

GET = b"GET /a%20b?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Dup: 1\r\nAccept: */*\r\nX-Dup: 2\r\nX_Evil: y\r\n\r\n"


def test_get_becomes_an_asgi1_request_fed_byte_by_byte() -> None:
    h = Harness()
    channel, transport = h.connect()
    feed_bytewise(channel, GET)
    message = h.take("http.request")
    assert message["method"] == "GET"
    assert message["path"] == "/a b"
    assert message["query_string"] == b"x=1"
    assert message["http_version"] == "1.1"
    assert message["scheme"] == "http"
    assert message["root_path"] == ""
    assert message["body"] == b""
    assert "body_channel" not in message
    # order and duplicates kept, names lower-cased, '_' names dropped
    assert message["headers"] == [[b"host", b"example.com"], [b"x-dup", b"1"], [b"accept", b"*/*"],
                                  [b"x-dup", b"2"]]
    assert message["client"] == ["127.0.0.1", 5000]
    assert message["server"] == ["127.0.0.1", 8000]
    assert message["reply_channel"].startswith(h.router.process_channel)
    assert transport.value() == b""  # nothing written before the application answers


def test_response_is_written_with_length_and_server_header() -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(GET)
    reply = h.take("http.request")["reply_channel"]
    h.reply(reply, {"status": 201, "headers": [[b"Content-Type", b"text/plain"], [b"Set-Cookie", b"a=1"],
                                               [b"Set-Cookie", b"b=2"]], "content": b"hello"})
    wire = transport.value()
    assert wire.startswith(b"HTTP/1.1 201 Created\r\n")
    head, body = wire.split(b"\r\n\r\n", 1)
    assert body == b"hello"
    lines = head.lower().split(b"\r\n")
    assert b"content-length: 5" in lines
    assert b"server: ipc-server" in lines
    assert lines.count(b"set-cookie: a=1") == 1 and b"set-cookie: b=2" in lines
    assert not h.router.is_live(reply)
    assert len(h.context.live) == 0


def test_keep_alive_serves_the_next_request_on_the_same_connection() -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = h.take("http.request")
    h.reply(first["reply_channel"], {"status": 200, "content": b"one"})
    channel.dataReceived(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    second = h.take("http.request")
    assert second["path"] == "/2" and second["reply_channel"] != first["reply_channel"]
    h.reply(second["reply_channel"], {"status": 200, "content": b"two"})
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2
    assert not transport.disconnecting


def test_a_connections_address_and_tls_are_looked_up_once_not_per_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Twisted asks the socket (getsockname) and zope (ISSLTransport) for every request; the channel
    keeps both for its connection, and every request still gets them right."""
    from twisted.web import http

    h = Harness()
    channel, transport = h.connect()
    host_lookups: list[int] = []
    secure_lookups: list[int] = []
    real_get_host, real_is_secure = transport.getHost, http.HTTPChannel.isSecure

    def get_host() -> Any:
        host_lookups.append(1)
        return real_get_host()

    def is_secure(self: Any) -> bool:
        secure_lookups.append(1)
        return bool(real_is_secure(self))

    monkeypatch.setattr(transport, "getHost", get_host)
    monkeypatch.setattr(http.HTTPChannel, "isSecure", is_secure)
    for n in range(3):
        channel.dataReceived(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        message = h.take("http.request")
        assert message["server"] == ["127.0.0.1", 8000] and message["scheme"] == "http"
        h.reply(message["reply_channel"], {"status": 200, "content": b"ok"})
    assert len(host_lookups) == 1 and len(secure_lookups) == 1


def test_small_post_body_goes_inline() -> None:
    h = Harness()
    channel, _ = h.connect()
    channel.dataReceived(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    message = h.take("http.request")
    assert message["method"] == "POST" and message["body"] == b"hello"
    assert "body_channel" not in message


def test_large_body_streams_on_a_body_channel_in_order() -> None:
    h = Harness(request_body_inline=10, body_chunk_size=8)
    channel, _ = h.connect()
    body = bytes(range(256)) * 2
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert h.nothing_on("http.request")  # still within the inline limit: nothing sent
    channel.dataReceived(body[:100])
    message = h.take("http.request")
    assert message["body"] == body[:10]
    body_channel = message["body_channel"]
    assert body_channel.startswith("http.request.body?")
    channel.dataReceived(body[100:])
    got = message["body"]
    chunks = []
    while True:
        chunk = h.take(body_channel)
        chunks.append(chunk)
        assert chunk["closed"] is False
        assert len(chunk["content"]) <= 8
        got += chunk["content"]
        if not chunk["more_content"]:
            break
    assert got == body


def test_chunked_upload_streams_too() -> None:
    h = Harness(request_body_inline=4)
    channel, _ = h.connect()
    channel.dataReceived(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    message = h.take("http.request")
    data = message["body"]
    while True:
        chunk = h.take(message["body_channel"])
        data += chunk["content"]
        if not chunk["more_content"]:
            break
    assert data == b"hello world"


def test_full_body_channel_pauses_reading_and_retries() -> None:
    h = Harness(request_body_inline=2, body_chunk_size=2, channel_capacity={"http.request.body*": 2})
    channel, transport = h.connect()
    channel.dataReceived(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n")
    channel.dataReceived(b"abcdefgh")  # 2 inline, 6 left in 3 chunks: the channel holds 2
    message = h.take("http.request")
    assert transport.producerState == "paused"
    body_channel = message["body_channel"]
    got = [h.take(body_channel)["content"], h.take(body_channel)["content"]]
    h.reactor.advance(1.0)  # the retry sends the third chunk and reading resumes
    assert transport.producerState == "producing"
    channel.dataReceived(b"ijkl")
    for _ in range(100):  # drain as the application would, letting the retries run
        if h.nothing_on_peek(body_channel):
            h.reactor.advance(1.0)
            continue
        chunk = h.take(body_channel)
        got.append(chunk["content"])
        if not chunk["more_content"]:
            break
    assert message["body"] + b"".join(got) == b"abcdefghijkl"


def test_full_request_channel_is_503() -> None:
    h = Harness(channel_capacity={"http.request": 1})
    channel, transport = h.connect()
    channel.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    other, other_transport = h.connect(5001)
    other.dataReceived(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert other_transport.value().startswith(b"HTTP/1.1 503 ")
    assert b"Request queue full" in other_transport.value()
    assert transport.value() == b""


def test_no_answer_within_http_timeout_is_503() -> None:
    h = Harness(http_timeout=3)
    channel, transport = h.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = h.take("http.request")["reply_channel"]
    h.reactor.advance(2.9)
    assert transport.value() == b""
    h.reactor.advance(0.2)
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    assert b"failed to respond within time limit" in transport.value()
    h.reply(reply, {"status": 200})  # too late: dropped, nothing more written
    assert transport.value().count(b"HTTP/1.1") == 1


def test_streaming_response_writes_chunks_as_they_come() -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = h.take("http.request")["reply_channel"]
    h.reply(reply, {"status": 200, "content": b"first", "more_content": True})
    assert b"transfer-encoding: chunked" in transport.value().lower()
    assert transport.value().endswith(b"5\r\nfirst\r\n")
    h.reply(reply, {"content": b"second", "more_content": True})
    assert transport.value().endswith(b"6\r\nsecond\r\n")
    h.reply(reply, {"content": b""})
    assert transport.value().endswith(b"0\r\n\r\n")


@pytest.mark.parametrize(
    "reply",
    [{"status": "200"}, {"status": 200, "headers": [[b"X", b"a\r\nInjected: 1"]]}, {"status": 200, "content": "str"}],
)
def test_bad_reply_is_500_and_logged(reply: dict[str, object], caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.reply(h.take("http.request")["reply_channel"], reply)
    assert transport.value().startswith(b"HTTP/1.1 500 ")
    assert b"Injected" not in transport.value()
    assert "bad http.response" in caplog.text


def test_bad_path_is_400_and_never_reaches_the_layer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="server.http")
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(b"GET /%FF HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert h.nothing_on("http.request")
    assert "not UTF-8" in caplog.text


def test_client_leaving_sends_disconnect_and_closes_the_body() -> None:
    h = Harness(request_body_inline=2)
    channel, _ = h.connect()
    channel.dataReceived(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabcdef")
    message = h.take("http.request")
    assert h.take(message["body_channel"])["more_content"] is True
    channel.connectionLost(Failure(ConnectionDone()))
    assert h.take(message["body_channel"]) == {"content": b"", "closed": True, "more_content": False}
    assert h.take("http.disconnect") == {"reply_channel": message["reply_channel"], "path": "/p"}
    assert not h.router.is_live(message["reply_channel"])
    assert not h.context.live


def test_proxy_headers_and_root_path() -> None:
    h = Harness(proxy_headers=True, root_path="/site")
    channel, _ = h.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3, 10.0.0.1\r\n"
                         b"X-Forwarded-Proto: https\r\n\r\n")
    message = h.take("http.request")
    assert message["client"] == ["10.1.2.3", 5000]
    assert message["scheme"] == "https"
    assert message["root_path"] == "/site"
    without = Harness()
    channel, _ = without.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")
    assert without.take("http.request")["client"] == ["127.0.0.1", 5000]


def test_stopping_server_answers_503() -> None:
    h = Harness()
    h.context.stopping = True
    channel, transport = h.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    assert h.nothing_on("http.request")


def test_access_log_line(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="server.access")
    h = Harness()
    channel, _ = h.connect()
    channel.dataReceived(b"GET /x?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    h.reply(h.take("http.request")["reply_channel"], {"status": 404, "content": b"nope"})
    assert '127.0.0.1:5000 - - [' in caplog.text
    assert '"GET /x?q=1" 404 4' in caplog.text


def test_a_disabled_access_log_formats_nothing() -> None:
    """At -v 0 every request still passes through AccessLog.http: it must return before building the line."""
    import logging

    from server.access import AccessLog

    quiet = logging.getLogger("tests.access.quiet")
    quiet.setLevel(logging.WARNING)

    class Unprintable:
        def decode(self, encoding: str) -> str:
            raise AssertionError("the query was formatted for a disabled log")

    AccessLog(quiet).http(["127.0.0.1", 1], "GET", "/", Unprintable(), 200, 0)  # type: ignore[arg-type]


def test_pipelined_requests_are_answered_in_order() -> None:
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = h.take("http.request")
    assert first["path"] == "/1"
    assert h.nothing_on("http.request")  # the second waits until the first is answered (Twisted pauses)
    h.reply(first["reply_channel"], {"status": 200, "content": b"one"})
    second = h.take("http.request")
    assert second["path"] == "/2"
    h.reply(second["reply_channel"], {"status": 200, "content": b"two"})
    wire = transport.value()
    assert wire.index(b"one") < wire.index(b"two")
    assert wire.count(b"HTTP/1.1 200 OK") == 2


def test_early_answer_to_a_long_upload_keeps_the_connection() -> None:
    """The application answers (413) before the upload ends: the rest is read and dropped, keep-alive goes on."""
    h = Harness(request_body_inline=4, body_chunk_size=4)
    channel, transport = h.connect()
    channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n0123456789")
    message = h.take("http.request")
    h.reply(message["reply_channel"], {"status": 413, "content": b"too big"})
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    channel.dataReceived(b"abcdefghij")  # the rest of the body
    channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert h.take("http.request")["path"] == "/next"
    assert b"400" not in transport.value() and not transport.disconnecting


@pytest.mark.parametrize(("target", "status"), [(b"/up", b"503"), (b"/%FF", b"400")])
def test_our_own_answers_during_an_upload_have_a_status_line(target: bytes, status: bytes) -> None:
    h = Harness(request_body_inline=4, channel_capacity={"http.request": 1})
    h.layer.send("http.request", {"filler": True})
    channel, transport = h.connect()
    channel.dataReceived(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n0123456789")
    assert transport.value().startswith(b"HTTP/1.1 " + status + b" ")


def test_bodyless_statuses_get_no_content_length_and_1xx_is_refused() -> None:
    for status in (204, 304):
        h = Harness()
        channel, transport = h.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        h.reply(h.take("http.request")["reply_channel"], {"status": status})
        assert b"content-length" not in transport.value().lower()
    h = Harness()
    channel, transport = h.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.reply(h.take("http.request")["reply_channel"], {"status": 103})
    assert transport.value().startswith(b"HTTP/1.1 500 ")


def test_a_full_body_channel_schedules_one_retry_at_a_time() -> None:
    h = Harness(request_body_inline=1, body_chunk_size=1, channel_capacity={"http.request.body*": 1})
    channel, _ = h.connect()
    body = b"".join(b"1\r\n%c\r\n" % c for c in b"abcdefghij") + b"0\r\n\r\n"
    channel.dataReceived(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    calls: list[Any] = list(h.reactor.getDelayedCalls())
    retries = [c for c in calls if c.active() and c.func.__name__ == "_flush_body"]
    assert len(retries) == 1


def test_root_path_header_needs_proxy_headers() -> None:
    h = Harness(root_path="/site")
    channel, _ = h.connect()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nDaphne-Root-Path: /evil\r\n\r\n")
    assert h.take("http.request")["root_path"] == "/site"


def _h2_request(h: Harness, headers: list[tuple[bytes, bytes]]) -> tuple[Any, Any, Any]:
    """An h2 client's request through Twisted's own H2Connection (as after ALPN picked h2)."""
    h2_config = pytest.importorskip("h2.config")
    h2_connection = pytest.importorskip("h2.connection")
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport
    from twisted.web._http2 import H2Connection

    from server.http import LayerRequest

    server: Any = H2Connection(reactor=h.reactor)
    server.requestFactory = LayerRequest
    server.factory = h.factory
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8443))
    server.makeConnection(transport)
    client = h2_connection.H2Connection(h2_config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, headers, end_stream=True)
    server.dataReceived(client.data_to_send())
    return server, transport, client


def test_http2_request_headers_keep_their_order_and_duplicates() -> None:
    """h2 hands Twisted the header list in wire order; Twisted's Headers groups it by name. The
    request keeps the list (interleaved duplicates included), as HTTP/1.1 requests do."""
    h = Harness()
    server, transport, client = _h2_request(h, [
        (b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/h2?x=1"),
        (b"x-dup", b"1"), (b"accept", b"*/*"), (b"x-dup", b"2"), (b"x_evil", b"y"), (b"cookie", b"a=1"),
        (b"cookie", b"b=2"),
    ])
    message = h.take("http.request")
    assert message["http_version"] == "2"
    assert message["path"] == "/h2" and message["query_string"] == b"x=1"
    # (h2 joins cookie crumbs into one header, as RFC 9113 8.2.3 asks before HTTP/1.1 semantics.)
    assert message["headers"] == [[b"host", b"example.com"], [b"x-dup", b"1"], [b"accept", b"*/*"],
                                  [b"x-dup", b"2"], [b"cookie", b"a=1; b=2"]]
    # The stream still works as Twisted's: the reply reaches the client.
    h.reply(message["reply_channel"], {"status": 200, "headers": [[b"x-reply", b"yes"]], "content": b"h2 ok"})
    h.reactor.advance(0)
    events = client.receive_data(transport.value())
    response = next(event for event in events if type(event).__name__ == "ResponseReceived")
    assert (b":status", b"200") in response.headers and (b"x-reply", b"yes") in response.headers
    assert b"h2 ok" in b"".join(getattr(event, "data", b"") for event in events)


def test_http2_stream_hook_the_header_order_relies_on_exists() -> None:
    """``_keep_h2_header_order`` wraps Twisted's private ``H2Stream._convertHeaders`` (called with the
    h2 header list right after the stream made its request); a Twisted without it fails here."""
    pytest.importorskip("h2")
    import inspect

    from twisted.web._http2 import H2Stream

    assert list(inspect.signature(H2Stream._convertHeaders).parameters) == ["self", "headers"]
    init = inspect.getsource(H2Stream.__init__)
    assert init.index("requestFactory(self") < init.index("self._convertHeaders(headers)")
