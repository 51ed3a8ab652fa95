"""The default HTTP consumer called directly with hand-built messages on the in-memory layer.

Each test sends what a protocol server would (an ``http.request``, body chunks) and reads
the replies off the reply channel, as the server would; the test site's views report what
Django saw. Time is faked (``clock``/``sleep``) wherever a timeout matters: nothing here
waits for a timeout to pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.django_site import testing

testing.setup()

from django.core import signals  # noqa: E402
from django.test import override_settings  # noqa: E402

from ipc_layer import ChannelFull  # noqa: E402
from ipc_layer.inmemory import InMemoryChannelLayer  # noqa: E402
from worker.http import ViewConsumer, view_consumer  # noqa: E402
from worker.message import Message  # noqa: E402

pytestmark = pytest.mark.timeout(120)

REPLY = "http.response!c1"


def make_message(content: dict[str, Any], layer: Any) -> Message:
    return Message(content, "http.request", layer)


class FakeTime:
    """A clock that moves only when told, or when ``sleep`` is called (recorded)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step
        self.sleeps: list[float] = []
        self.on_sleep: Any = None

    def clock(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()


@pytest.fixture
def layer() -> Iterator[InMemoryChannelLayer]:
    # Short blocking waits so a stalled body loops quickly (the fake clock decides the timeout).
    with InMemoryChannelLayer(blocking_timeout=0.01, capacity=1000) as the_layer:
        yield the_layer


def request(**overrides: Any) -> dict[str, Any]:
    content: dict[str, Any] = {
        "reply_channel": REPLY,
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/meta/",
        "query_string": b"",
        "root_path": "",
        "headers": [[b"host", b"testserver"]],
        "body": b"",
        "client": ["192.0.2.7", 51234],
        "server": ["198.51.100.1", 8000],
    }
    content.update(overrides)
    return content


def replies(layer: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        channel, message = layer.receive([REPLY.split("!")[0] + "!"], block=False)
        if channel is None:
            return out
        assert channel == REPLY
        out.append(message)


def serve(layer: Any, consumer: Any = view_consumer, **overrides: Any) -> list[dict[str, Any]]:
    consumer(make_message(request(**overrides), layer))
    return replies(layer)


def body_of(messages: list[dict[str, Any]]) -> bytes:
    assert messages, "no reply"
    assert "status" in messages[0] and all("status" not in m for m in messages[1:])
    assert [m.get("more_content", False) for m in messages] == [True] * (len(messages) - 1) + [False]
    return b"".join(m.get("content", b"") for m in messages)


def headers_of(messages: list[dict[str, Any]]) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for name, value in messages[0]["headers"]:
        found.setdefault(name.decode().lower(), []).append(value)
    return found


def answer(layer: Any, **overrides: Any) -> Any:
    messages = serve(layer, **overrides)
    return messages[0]["status"], json.loads(body_of(messages))


# -- META and the request Django sees ------------------------------------------------------

def test_meta_through_a_view(layer: Any) -> None:
    status, data = answer(layer, path="/meta/", query_string=b"a=1&a=2&b=%C3%A9",
                          headers=[[b"host", b"example.com:8000"], [b"x-thing", b"1"], [b"x-thing", b"2"],
                                   [b"x_spoof", b"no"], [b"user-agent", b"pytest"]])
    assert status == 200
    assert data["meta"] == {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/meta/", "QUERY_STRING": "a=1&a=2&b=%C3%A9",
        "SERVER_NAME": "198.51.100.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.7", "REMOTE_HOST": "192.0.2.7", "REMOTE_PORT": "51234",
        "wsgi.url_scheme": "http", "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
        "wsgi.version": [1, 0],
    }
    assert data["headers"] == {"HTTP_HOST": "example.com:8000", "HTTP_X_THING": "1,2", "HTTP_USER_AGENT": "pytest"}
    assert data["get"] == {"a": ["1", "2"], "b": ["é"]}
    assert (data["is_secure"], data["scheme"], data["host"]) == (False, "http", "example.com:8000")
    assert data["absolute_uri"] == "http://example.com:8000/meta/?a=1&a=2&b=%C3%A9"
    assert data["has_input"] and data["has_errors"]


def test_is_secure_from_scheme(layer: Any) -> None:
    _, data = answer(layer, scheme="https", headers=[[b"host", b"example.com"]])
    assert (data["is_secure"], data["scheme"], data["absolute_uri"]) == (True, "https", "https://example.com/meta/")


def test_root_path_is_script_name(layer: Any) -> None:
    _, data = answer(layer, path="/mount/meta/", root_path="/mount")
    assert (data["script_name"], data["path_info"], data["path"]) == ("/mount", "/meta/", "/mount/meta/")
    assert data["reverse"] == "/mount/meta/"  # set_script_prefix: URLs the site builds carry the mount
    messages = serve(layer, path="/mount/go/", root_path="/mount")
    assert (messages[0]["status"], headers_of(messages)["location"]) == (302, [b"/mount/meta/"])
    # The next request without a root path does not inherit the prefix.
    assert answer(layer, path="/meta/")[1]["reverse"] == "/meta/"


def test_force_script_name_wins(layer: Any) -> None:
    with override_settings(FORCE_SCRIPT_NAME="/forced"):
        _, data = answer(layer, path="/forced/meta/", root_path="/mount")
    assert (data["script_name"], data["path_info"], data["reverse"]) == ("/forced", "/meta/", "/forced/meta/")


def test_cookies_joined_from_several_headers(layer: Any) -> None:
    _, data = answer(layer, path="/cookies/", headers=[[b"cookie", b"a=1"], [b"cookie", b"b=%E2%82%AC; c=3"]])
    assert data["cookies"] == {"a": "1", "b": "%E2%82%AC", "c": "3"}


def test_set_cookie_headers_one_each(layer: Any) -> None:
    messages = serve(layer, path="/set-cookie/", query_string=b"flavour=ginger")
    cookies = headers_of(messages)["set-cookie"]
    assert len(cookies) == 2
    assert cookies[0].startswith(b"flavour=ginger") and cookies[1].startswith(b"second=two")
    assert b"HttpOnly" in cookies[1]


def test_sessions_persist_between_requests(layer: Any) -> None:
    messages = serve(layer, path="/session/")
    cookie = next(v for v in headers_of(messages)["set-cookie"] if v.startswith(b"sessionid="))
    session = cookie.split(b";")[0]
    counts = [json.loads(body_of(serve(layer, path="/session/", headers=[[b"cookie", session]])))["count"]
              for _ in range(2)]
    assert (json.loads(body_of(messages))["count"], counts) == (1, [2, 3])


def test_form_post(layer: Any) -> None:
    body = b"name=a&name=b&x=%C3%A9"
    status, data = answer(layer, path="/form/", method="POST", body=body,
                          headers=[[b"content-type", b"application/x-www-form-urlencoded"],
                                   [b"content-length", str(len(body)).encode()]])
    assert (status, data["post"]) == (200, {"name": ["a", "b"], "x": ["é"]})


def test_content_length_supplied_for_a_chunked_upload(layer: Any) -> None:
    # No Content-Length (the client used chunked encoding): Django still reads the body.
    _, data = answer(layer, path="/body/", method="POST", body=b"abc",
                     headers=[[b"transfer-encoding", b"chunked"]])
    assert (data["length"], data["content_length"]) == (3, "3")


# -- status codes, errors, signals ----------------------------------------------------------

@pytest.mark.parametrize(("path", "status"), [("/missing/", 404), ("/nowhere/", 404), ("/meta", 301),
                                              ("/status/418/", 418), ("/", 200)])
def test_statuses(layer: Any, path: str, status: int) -> None:
    assert serve(layer, path=path)[0]["status"] == status


def test_view_exception_is_500_not_a_crash(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="django.request"):
        messages = serve(layer, path="/error/")
    assert messages[0]["status"] == 500
    assert b"ViewError" not in body_of(messages)  # DEBUG is off: no traceback to the client
    assert any("ViewError" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_view_exception_with_debug_shows_the_technical_page(layer: Any) -> None:
    with override_settings(DEBUG=True):
        messages = serve(layer, path="/error/", headers=[[b"host", b"testserver"], [b"accept", b"text/html"]])
    assert messages[0]["status"] == 500
    page = body_of(messages)
    assert b"ViewError" in page and b"the error view failed on purpose" in page


def test_request_signals_left_to_the_worker_loop(layer: Any) -> None:
    seen: list[str] = []

    def started(**kwargs: Any) -> None:
        seen.append("started")

    def finished(**kwargs: Any) -> None:
        seen.append("finished")

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        serve(layer, path="/meta/")
        serve(layer, path="/download/", query_string=b"size=10")
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert seen == []


# -- bodies from the body channel -----------------------------------------------------------

def send_body(layer: Any, channel: str, data: bytes, pieces: int) -> None:
    size = max(1, -(-len(data) // pieces))
    for start in range(0, len(data), size):
        end = start + size
        layer.send(channel, {"content": data[start:end], "closed": False, "more_content": end < len(data)})


def test_body_channel_reassembled(layer: Any) -> None:
    data = bytes(range(256)) * 400
    channel = layer.new_channel("http.request.body?")
    send_body(layer, channel, data[1000:], 7)
    _, answer_ = answer(layer, path="/body/", method="POST", body=data[:1000], body_channel=channel,
                        headers=[[b"content-length", str(len(data)).encode()]])
    assert answer_ == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                       "content_length": str(len(data))}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=20_000), inline=st.integers(0, 20_000), pieces=st.integers(1, 9))
def test_any_body_split_arrives_whole(layer: Any, data: bytes, inline: int, pieces: int) -> None:
    inline = min(inline, len(data))
    channel = layer.new_channel("http.request.body?")
    rest = data[inline:]
    if rest:
        send_body(layer, channel, rest, pieces)
    else:
        layer.send(channel, {"content": b"", "closed": False, "more_content": False})
    _, answer_ = answer(layer, path="/body/", method="POST", body=data[:inline], body_channel=channel)
    assert (answer_["length"], answer_["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_upload_through_the_body_channel(layer: Any) -> None:
    payload = bytes(i * 7 % 256 for i in range(300_000))
    boundary = b"----boundary42"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\nv\r\n"
            b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n--" + boundary + b"--\r\n")
    channel = layer.new_channel("http.request.body?")
    send_body(layer, channel, body[50_000:], 5)
    _, data = answer(layer, path="/upload/", method="POST", body=body[:50_000], body_channel=channel,
                     headers=[[b"content-type", b"multipart/form-data; boundary=" + boundary],
                              [b"content-length", str(len(body)).encode()]])
    assert data["files"]["f"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert (data["files"]["f"]["size"], data["post"]) == (len(payload), {"k": ["v"]})


def test_stalled_body_is_408(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime(step=1.0)  # every clock reading is a second later
    consumer = ViewConsumer(body_timeout=5, clock=fake.clock, sleep=fake.sleep)
    channel = layer.new_channel("http.request.body?")
    layer.send(channel, {"content": b"abc", "closed": False, "more_content": True})
    with caplog.at_level(logging.WARNING, logger="worker.http"):
        messages = serve(layer, consumer, path="/body/", method="POST", body_channel=channel)
    assert messages[0]["status"] == 408 and b"408 Request Timeout" in body_of(messages)
    assert any("no body chunk for 5.0 s" in r.getMessage() and channel in r.getMessage() for r in caplog.records)


def test_body_that_keeps_moving_is_not_timed_out(layer: Any) -> None:
    # Each chunk comes within the stall timeout, the whole upload takes far longer: served.
    fake = FakeTime(step=1.0)
    consumer = ViewConsumer(body_timeout=3, clock=fake.clock, sleep=fake.sleep)
    channel = layer.new_channel("http.request.body?")
    send_body(layer, channel, b"x" * 50, 50)
    _, data = answer(layer, consumer=consumer, path="/body/", method="POST", body_channel=channel)
    assert data["length"] == 50


def test_closed_body_aborts_without_a_reply(layer: Any) -> None:
    channel = layer.new_channel("http.request.body?")
    layer.send(channel, {"content": b"abc", "closed": False, "more_content": True})
    layer.send(channel, {"content": b"", "closed": True, "more_content": False})
    assert serve(layer, path="/body/", method="POST", body_channel=channel) == []


def test_bad_body_chunk_is_400(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    channel = layer.new_channel("http.request.body?")
    layer.send(channel, {"content": "text, not bytes", "more_content": False})
    with caplog.at_level(logging.ERROR, logger="worker.http"):
        messages = serve(layer, path="/body/", method="POST", body_channel=channel)
    assert messages[0]["status"] == 400 and b"'content' must be bytes" in body_of(messages)
    assert any("bad body chunk" in r.getMessage() for r in caplog.records)


# -- bad messages ---------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "culprit"), [
    ({"path": None}, "no 'path'"),
    ({"path": 5}, "'path' must be a str, not int"),
    ({"method": None}, "no 'method'"),
    ({"headers": "host: x"}, "'headers' must be a list"),
    ({"headers": [[b"host", "x"]]}, "value must be bytes, not str"),
    ({"query_string": 12}, "'query_string' must be bytes"),
    ({"body": "text"}, "'body' must be bytes, not str"),
    ({"client": "1.2.3.4"}, "'client' must be [host, port]"),
    ({"body_channel": "not a valid name!!"}, "'body_channel'"),
])
def test_bad_message_is_400_naming_the_culprit(layer: Any, caplog: pytest.LogCaptureFixture,
                                                overrides: dict[str, Any], culprit: str) -> None:
    with caplog.at_level(logging.ERROR, logger="worker.http"):
        messages = serve(layer, **overrides)
    assert messages[0]["status"] == 400
    assert culprit in body_of(messages).decode()
    assert any(culprit in r.getMessage() for r in caplog.records)


def test_bad_message_without_reply_channel_is_logged_only(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="worker.http"):
        serve(layer, reply_channel=None)
        serve(layer, reply_channel="", path=5)
    assert replies(layer) == []
    assert [r.getMessage() for r in caplog.records if "reply_channel" in r.getMessage()]
    assert all("not answered" in r.getMessage() for r in caplog.records if r.name == "worker.http")


# -- replies: chunking, streaming, back-pressure --------------------------------------------

@pytest.mark.parametrize("path", ["/big/", "/stream/", "/download/"])
def test_replies_fit_the_layer_limit(path: str) -> None:
    limit = 4096
    with InMemoryChannelLayer(max_message_size=limit, capacity=1000) as small:
        query = b"size=50000" if path != "/stream/" else b"chunks=3&size=10000"
        messages = serve(small, path=path, query_string=query)
    body = body_of(messages)
    expected = 50000 if path != "/stream/" else 30000
    assert len(body) == expected
    # The layer would have refused anything over the limit; the chunks use the room it leaves.
    contents = [len(m["content"]) for m in messages if m["content"]]
    assert max(contents) >= limit - 80
    assert len(messages) <= expected // (limit - 80) + 5


def test_streaming_parts_sent_as_they_come(layer: Any) -> None:
    messages = serve(layer, path="/stream/", query_string=b"chunks=4&size=3")
    assert messages[0]["status"] == 200 and messages[0]["content"] == b""
    assert [m["content"] for m in messages[1:]] == [b"000", b"000", b"000", b"000", b""]
    assert "content-length" not in headers_of(messages)


def test_file_response_streamed_in_chunks() -> None:
    limit = 10_000
    with InMemoryChannelLayer(max_message_size=limit, capacity=1000) as small:
        messages = serve(small, path="/download/", query_string=b"size=100000")
    headers = headers_of(messages)
    assert headers["content-length"] == [b"100000"]
    assert headers["content-disposition"] == [b'attachment; filename="data.bin"']
    body = body_of(messages)
    assert len(body) == 100000 and body.startswith(b"00000000|")
    # Read in blocks of exactly one chunk: every chunk but the last is full.
    sizes = [len(m["content"]) for m in messages[1:-1]]
    assert len(set(sizes[:-1])) == 1 and sizes[0] >= limit - 32


class FullThenDrained:
    """An in-memory layer whose reply channel refuses the first ``refusals`` sends (ChannelFull)."""

    def __init__(self, refusals: int) -> None:
        self.inner = InMemoryChannelLayer(capacity=1000)
        self.refusals = refusals
        self.refused = 0
        self.max_message_size = self.inner.max_message_size
        self.ChannelFull = ChannelFull

    def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel == REPLY and self.refused < self.refusals:
            self.refused += 1
            raise ChannelFull(channel)
        self.inner.send(channel, message)

    def receive(self, channels: list[str], block: bool = False) -> Any:
        return self.inner.receive(channels, block)


def test_channel_full_retried_with_back_off() -> None:
    fake = FakeTime()
    consumer = ViewConsumer(reply_timeout=10, clock=fake.clock, sleep=fake.sleep)
    layer = FullThenDrained(refusals=6)
    consumer(make_message(request(path="/stream/", query_string=b"chunks=2&size=4"), layer))
    assert body_of(replies(layer.inner)) == b"0000" * 2
    assert layer.refused == 6
    # Doubling from retry_initial, bounded by retry_max.
    initial = ViewConsumer.retry_initial
    assert fake.sleeps == [min(initial * 2 ** i, ViewConsumer.retry_max) for i in range(6)]


def test_channel_full_past_the_timeout_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()
    consumer = ViewConsumer(reply_timeout=2, clock=fake.clock, sleep=fake.sleep)
    layer = FullThenDrained(refusals=10**9)
    with caplog.at_level(logging.WARNING, logger="worker.http"):
        consumer(make_message(request(path="/stream/", query_string=b"chunks=1000&size=4"), layer))
    assert replies(layer.inner) == []
    assert sum(fake.sleeps) == pytest.approx(2.0)
    assert any("stayed full for 2.0 s" in r.getMessage() for r in caplog.records)
    # The worker is free again at once: the next request is served normally.
    layer.refusals = 0
    consumer(make_message(request(path="/"), layer))
    assert body_of(replies(layer.inner)) == b"hello from GET /\n"


def test_channel_full_then_drained_mid_stream() -> None:
    fake = FakeTime()
    consumer = ViewConsumer(reply_timeout=10, clock=fake.clock, sleep=fake.sleep)
    layer = FullThenDrained(refusals=0)
    sent: list[int] = []
    original = layer.send

    def send(channel: str, message: dict[str, Any]) -> None:
        sent.append(len(sent))
        if len(sent) == 3:  # the third message meets a full channel once
            layer.refusals, layer.refused = 1, 0
        original(channel, message)

    layer.send = send  # type: ignore[method-assign]
    consumer(make_message(request(path="/stream/", query_string=b"chunks=5&size=2"), layer))
    assert body_of(replies(layer.inner)) == b"00" * 5
    assert len(fake.sleeps) == 1


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="body_timeout must be a number of seconds >= 0, got -1"):
        ViewConsumer(body_timeout=-1)
    with pytest.raises(ValueError, match="reply_timeout"):
        ViewConsumer(reply_timeout="5")  # type: ignore[arg-type]


# -- per-URL low-level consumers next to the default one ----------------------------------

def dispatch(router: Any, layer: Any, **overrides: Any) -> list[dict[str, Any]]:
    """What the worker loop does with one message: route it, run the consumer, flush its sends."""
    from worker.message import pending_message_store

    message = make_message(request(**overrides), layer)
    found = router.match(message)
    assert found is not None
    consumer, kwargs = found
    pending_message_store.prepare()
    consumer(message, **kwargs)
    pending_message_store.send_and_flush()
    return replies(layer)


def test_site_routing_puts_the_raw_consumer_before_the_views(layer: Any) -> None:
    from worker.routing import router_from_settings

    router = router_from_settings("default")
    assert "http.request" in router.channels
    raw = dispatch(router, layer, path="/x/", method="PUT")
    assert (raw[0]["status"], body_of(raw)) == (200, b"raw consumer saw PUT /x/\n")
    assert headers_of(raw)["x-consumer"] == [b"raw_http"]
    # Any other path reaches Django through the default consumer.
    assert body_of(dispatch(router, layer, path="/")) == b"hello from GET /\n"
    assert dispatch(router, layer, path="/x/y/")[0]["status"] == 404


def test_reply_channel_the_layer_refuses_is_logged_not_raised(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="worker.http"):
        view_consumer(make_message(request(reply_channel="not a valid name!x"), layer))
    assert any("reply on 'not a valid name!x' refused by the layer" in r.getMessage() for r in caplog.records)


def test_response_later_sends_nothing_and_logs_no_error(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert serve(layer, path="/later/") == []
    assert [r.getMessage() for r in caplog.records] == []
    assert serve(layer, path="/")[0]["status"] == 200  # the consumer serves on as usual
