"""The sans-IO HTTP message builders and the response state machine, checked against ASGI 1 www.rst."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.headers import BadRequest, decode_path, forwarded_peer, normalize_headers, root_path_for
from server.http_messages import (
    BadReply,
    BodyChunk,
    ResponseReader,
    ResponseStart,
    body_chunks,
    body_closed,
    disconnect_message,
    request_message,
    split_target,
)


def _request(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = dict(
        reply_channel="http.response!abc", http_version="1.1", method=b"get", target=b"/a%20b/c?x=1&y=%20",
        headers=[[b"host", b"example.com"]], client=["127.0.0.1", 5000], server=["127.0.0.1", 8000],
    )
    args.update(overrides)
    return request_message(**args)  # type: ignore[arg-type]


def test_request_has_every_asgi1_key() -> None:
    message = _request()
    assert message == {
        "reply_channel": "http.response!abc",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/a b/c",
        "query_string": b"x=1&y=%20",
        "root_path": "",
        "headers": [[b"host", b"example.com"]],
        "body": b"",
        "client": ["127.0.0.1", 5000],
        "server": ["127.0.0.1", 8000],
    }
    assert "body_channel" not in message
    assert _request(body_channel="http.request.body?x")["body_channel"] == "http.request.body?x"


def test_path_is_utf8_decoded_and_bad_encodings_are_400() -> None:
    assert _request(target=b"/caf%C3%A9")["path"] == "/café"
    with pytest.raises(BadRequest, match="not UTF-8") as info:
        _request(target=b"/%FF")
    assert info.value.status == 400
    with pytest.raises(BadRequest, match="NUL"):
        _request(target=b"/a%00b")


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/", b"/", b""),
        (b"/p?", b"/p", b""),
        (b"/p?a=1?b", b"/p", b"a=1?b"),
        (b"/p?a#frag", b"/p", b"a"),
        (b"http://host:81/x?q", b"/x", b"q"),
        (b"HTTPS://host", b"/", b""),
        (b"http://host?q=1", b"/", b"q=1"),
        (b"*", b"*", b""),
    ],
)
def test_split_target(target: bytes, path: bytes, query: bytes) -> None:
    assert split_target(target) == (path, query)


@pytest.mark.parametrize("target", [b"", b"relative/path", b"ftp://x/y"])
def test_targets_that_are_not_paths_are_400(target: bytes) -> None:
    with pytest.raises(BadRequest, match="not a path"):
        split_target(target)


def test_method_and_version_are_checked() -> None:
    assert _request(method=b"M-SEARCH")["method"] == "M-SEARCH"
    with pytest.raises(BadRequest, match="not an HTTP method"):
        _request(method=b"GE T")
    with pytest.raises(BadRequest, match="HTTP version") as info:
        _request(http_version="3")
    assert info.value.status == 505


def test_headers_lowercased_order_and_duplicates_kept_underscores_dropped() -> None:
    headers, dropped = normalize_headers(
        [(b"Host", b"a"), (b"X-A", b" 1 "), (b"x-a", b"2"), (b"X_Forwarded_For", b"evil"), (b"Cookie", b"c=1")]
    )
    assert headers == [[b"host", b"a"], [b"x-a", b"1"], [b"x-a", b"2"], [b"cookie", b"c=1"]]
    assert dropped == [b"X_Forwarded_For"]


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        (b"Bad Name", b"v", "not a token"),
        (b"", b"v", "not a token"),
        (b"X-Ok", b"a\r\nSet-Cookie: x", "CR, LF or NUL"),
        (b"X-Ok", b"a\x00", "CR, LF or NUL"),
    ],
)
def test_bad_headers_are_400_naming_them(name: bytes, value: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        normalize_headers([(name, value)])


def test_proxy_headers() -> None:
    headers = [[b"x-forwarded-for", b"10.0.0.1, 10.0.0.2"], [b"x-forwarded-port", b"443"],
               [b"x-forwarded-proto", b"https"]]
    assert forwarded_peer(headers, ["127.0.0.1", 5000], "http") == (["10.0.0.1", 443], "https", [])
    assert forwarded_peer(headers, ["127.0.0.1", 5000], "ws")[1] == "wss"
    client, scheme, problems = forwarded_peer(
        [[b"x-forwarded-for", b"<script>"], [b"x-forwarded-proto", b"gopher"]], ["127.0.0.1", 5000], "http"
    )
    assert (client, scheme) == (["127.0.0.1", 5000], "http")
    assert len(problems) == 2 and "X-Forwarded-For" in problems[0] and "X-Forwarded-Proto" in problems[1]
    _, _, problems = forwarded_peer([[b"x-forwarded-for", b"::1"], [b"x-forwarded-port", b"99999"]], None, "http")
    assert "X-Forwarded-Port" in problems[0]


def test_root_path_header_overrides_the_default() -> None:
    assert root_path_for([], "/base") == "/base"
    assert root_path_for([[b"daphne-root-path", b"/mounted%20here/"]], "/base") == "/mounted here"


def test_body_chunks_cover_the_data_in_order() -> None:
    chunks = list(body_chunks(b"abcdefg", 3, more_after=False))
    assert [c["content"] for c in chunks] == [b"abc", b"def", b"g"]
    assert [c["more_content"] for c in chunks] == [True, True, False]
    assert all(c["closed"] is False for c in chunks)
    assert list(body_chunks(b"", 3, more_after=True)) == [{"content": b"", "closed": False, "more_content": True}]
    assert list(body_chunks(b"ab", 5, more_after=True))[-1]["more_content"] is True
    assert body_closed() == {"content": b"", "closed": True, "more_content": False}
    with pytest.raises(ValueError, match="chunk_size"):
        list(body_chunks(b"x", 0, more_after=False))


@given(st.binary(max_size=2000), st.integers(1, 300), st.booleans())
def test_body_chunks_reassemble(data: bytes, size: int, more: bool) -> None:
    chunks = list(body_chunks(data, size, more_after=more))
    assert b"".join(c["content"] for c in chunks) == data
    assert all(len(c["content"]) <= size for c in chunks)
    assert chunks[-1]["more_content"] is more


@given(st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=8),
                max_size=5))
def test_any_utf8_path_round_trips_through_percent_encoding(segments: list[str]) -> None:
    from urllib.parse import quote

    path = "/" + "/".join(segments)
    assert decode_path(quote(path).encode("ascii")) == path


def test_disconnect_message() -> None:
    assert disconnect_message("http.response!x", "/p") == {"reply_channel": "http.response!x", "path": "/p"}


def test_response_reader_streams_then_finishes() -> None:
    reader = ResponseReader()
    start = reader.feed({"status": 200, "headers": [[b"content-type", b"text/plain"]], "content": b"a",
                         "more_content": True})
    assert start == ResponseStart(200, [[b"content-type", b"text/plain"]], b"a", True)
    assert reader.feed({"content": b"b", "more_content": True}) == BodyChunk(b"b", True)
    assert reader.feed({"content": b"c"}) == BodyChunk(b"c", False)
    with pytest.raises(BadReply, match="after the response finished"):
        reader.feed({"content": b"d"})


def test_response_minimal_and_status_text_tolerated() -> None:
    assert ResponseReader().feed({"status": 204}) == ResponseStart(204, [], b"", False)
    start = ResponseReader().feed({"status": 200, "status_text": b"OK"})
    assert isinstance(start, ResponseStart) and start.status == 200


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ("not a dict", "must be a dict"),
        ({}, "'status' must be an int"),
        ({"status": "200"}, "'status' must be an int"),
        ({"status": True}, "'status' must be an int"),
        ({"status": 99}, "'status' must be an int"),
        ({"status": 200, "content": "text"}, "'content' must be bytes"),
        ({"status": 200, "more_content": 1}, "'more_content' must be a bool"),
        ({"status": 200, "headers": {b"a": b"b"}}, "'headers' must be a list"),
        ({"status": 200, "headers": [[b"a"]]}, r"header #0 must be a \[name, value\] pair"),
        ({"status": 200, "headers": [[b"a b", b"v"]]}, "not a token"),
        ({"status": 200, "headers": [[b"x", b"v\r\nSet-Cookie: s=1"]]}, "CR, LF or NUL"),
        ({"status": 200, "headers": [["x", b"v"]]}, "must be bytes"),
        ({"status": 200, "body": b"x"}, "unknown keys"),
    ],
)
def test_bad_first_replies_name_the_key(message: object, match: str) -> None:
    with pytest.raises(BadReply, match=match):
        ResponseReader().feed(message)


def test_second_status_is_refused() -> None:
    reader = ResponseReader()
    reader.feed({"status": 200, "more_content": True})
    with pytest.raises(BadReply, match="only the first message"):
        reader.feed({"status": 200})
    with pytest.raises(BadReply, match="unknown keys"):
        reader.feed({"content": b"", "headers": []})
