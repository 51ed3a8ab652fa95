"""worker.http_request (message checks, META) and worker.http_body (body reassembly), without a layer."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.django_site import testing

testing.setup()

from worker.http_body import BodyAborted, BodyAssembler  # noqa: E402
from worker.http_request import BadMessage, build_meta, parse_request, split_root  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def message(**overrides: Any) -> dict[str, Any]:
    content: dict[str, Any] = {
        "reply_channel": "http.response!abc",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/meta/",
        "query_string": b"a=1",
        "root_path": "",
        "headers": [[b"host", b"example.com"]],
        "body": b"",
        "client": ["192.0.2.7", 51234],
        "server": ["198.51.100.1", 8000],
    }
    content.update(overrides)
    return {key: value for key, value in content.items() if value is not _DROP}


_DROP = object()


def meta_of(content: dict[str, Any], script_name: str | None = None, body_length: int = 0) -> dict[str, Any]:
    head = parse_request(content)
    meta, _ = build_meta(head, script_name=head.root_path if script_name is None else script_name,
                         body_length=body_length, body_file=io.BytesIO())
    return meta


def test_every_meta_key() -> None:
    meta = meta_of(message(method="post", http_version="1.0", scheme="https",
                           headers=[[b"host", b"example.com:8443"], [b"content-type", b"text/plain; charset=latin-1"],
                                    [b"content-length", b"3"], [b"x-multi", b"a"], [b"x-multi", b"b"],
                                    [b"cookie", b"a=1"], [b"cookie", b"b=2"], [b"x_under", b"spoof"],
                                    [b"accept", b"\xe9"]]))
    body = meta.pop("wsgi.input")
    errors = meta.pop("wsgi.errors")
    assert hasattr(body, "read") and hasattr(errors, "write")
    assert meta == {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/meta/",
        "QUERY_STRING": "a=1",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "SERVER_NAME": "198.51.100.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "192.0.2.7",
        "REMOTE_HOST": "192.0.2.7",
        "REMOTE_PORT": "51234",
        "CONTENT_TYPE": "text/plain; charset=latin-1",
        "CONTENT_LENGTH": "3",
        "HTTP_HOST": "example.com:8443",
        "HTTP_X_MULTI": "a,b",
        "HTTP_COOKIE": "a=1; b=2",
        "HTTP_ACCEPT": "\xe9",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def test_defaults_of_optional_keys() -> None:
    content = message(scheme=_DROP, root_path=_DROP, query_string=_DROP, body=_DROP, client=None, server=None,
                      http_version=_DROP, headers=_DROP)
    head = parse_request(content)
    assert (head.scheme, head.root_path, head.query_string, head.body, head.http_version) == ("http", "", b"", b"",
                                                                                              "1.1")
    meta = meta_of(content)
    assert (meta["SERVER_NAME"], meta["SERVER_PORT"]) == ("unknown", "0")
    assert "REMOTE_ADDR" not in meta and "CONTENT_LENGTH" not in meta


def test_query_string_str_is_taken() -> None:
    # Channels 1.x issue 622: some servers sent a str.
    assert parse_request(message(query_string="x=%C3%A9")).query_string == b"x=%C3%A9"


def test_content_length_from_the_body_when_the_header_is_missing() -> None:
    assert meta_of(message(), body_length=12)["CONTENT_LENGTH"] == "12"
    headers = [[b"content-length", b"5"]]
    assert meta_of(message(headers=headers), body_length=12)["CONTENT_LENGTH"] == "5"


@pytest.mark.parametrize(("path", "root", "path_info"), [
    ("/app/meta/", "/app", "/meta/"),
    ("/app", "/app", "/"),
    ("/application/x", "/app", "/application/x"),  # not on a segment boundary: not the prefix
    ("/meta/", "/app", "/meta/"),  # a proxy that stripped the prefix already
    ("/meta/", "", "/meta/"),
    ("/a/", "/", "/a/"),
])
def test_script_name_and_path_info(path: str, root: str, path_info: str) -> None:
    assert split_root(path, root) == path_info
    meta = meta_of(message(path=path, root_path=root))
    assert (meta["SCRIPT_NAME"], meta["PATH_INFO"]) == (root.rstrip("/"), path_info)


@pytest.mark.parametrize(("overrides", "culprit"), [
    ({"reply_channel": _DROP}, "'reply_channel'"),
    ({"reply_channel": 5}, "'reply_channel' must be a str, not int"),
    ({"method": _DROP}, "no 'method'"),
    ({"method": "GE T"}, "'method' is not an HTTP method"),
    ({"path": _DROP}, "no 'path'"),
    ({"path": b"/x"}, "'path' must be a str, not bytes"),
    ({"path": "x"}, "'path' must start with '/'"),
    ({"query_string": 7}, "'query_string' must be bytes, not int"),
    ({"headers": {"host": "x"}}, "'headers' must be a list"),
    ({"headers": [[b"host"]]}, "header #0 must be a [name, value] pair"),
    ({"headers": [[b"host", b"a"], ["x", b"b"]]}, "header #1 name must be non-empty bytes"),
    ({"headers": [[b"host", "a"]]}, "header #0 (b'host') value must be bytes, not str"),
    ({"body": "text"}, "'body' must be bytes, not str"),
    ({"body_channel": 3}, "'body_channel' must be a channel name"),
    ({"client": ["h"]}, "'client' must be [host, port]"),
    ({"client": [1, 2]}, "'client' host must be a str"),
    ({"server": ["h", "80"]}, "'server' port must be an int or None"),
    ({"http_version": "9"}, "'http_version' must be one of"),
    ({"scheme": 1}, "'scheme' must be a str"),
    ({"root_path": b"/x"}, "'root_path' must be a str"),
])
def test_bad_messages_name_the_culprit(overrides: dict[str, Any], culprit: str) -> None:
    with pytest.raises(BadMessage) as info:
        parse_request(message(**overrides))
    assert culprit in str(info.value)


def test_not_a_dict() -> None:
    with pytest.raises(BadMessage, match="must be a dict, not list"):
        parse_request([])  # type: ignore[arg-type]


# -- Hypothesis: whatever the path, query and headers, Django sees what was sent --------------

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^`|~", min_size=1, max_size=12)
_VALUE = st.binary(max_size=40).filter(lambda v: not any(c in v for c in b"\r\n\x00"))
_HEADERS = st.lists(st.tuples(_TOKEN.map(str.encode), _VALUE), max_size=8)
_PATH = st.lists(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00/"), max_size=8),
                 max_size=5).map(lambda parts: "/" + "/".join(parts))
_QUERY = st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=5)


@settings(max_examples=150, deadline=None)
@given(path=_PATH, root=st.sampled_from(["", "/app", "/a b/é"]), query=_QUERY, headers=_HEADERS)
def test_request_reflects_the_message(path: str, root: str, query: list[tuple[str, str]],
                                      headers: list[tuple[bytes, bytes]]) -> None:
    from urllib.parse import urlencode

    from worker.http import WorkerRequest

    raw_query = urlencode(query).encode("ascii")
    full_path = root + path if root else path
    content = message(path=full_path, root_path=root, query_string=raw_query,
                      headers=[list(pair) for pair in headers])
    head = parse_request(content)
    request = WorkerRequest(head, io.BytesIO(), 0)
    assert request.path == full_path
    assert request.path_info == path
    assert request.META["SCRIPT_NAME"] == root
    assert sorted(request.GET.lists()) == sorted(_lists(parse_qsl(raw_query.decode(), keep_blank_values=True)))
    expected: dict[str, list[str]] = {}
    for name, value in headers:
        text = name.decode()
        if "_" in text:
            continue
        key = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}.get(
            text, "HTTP_" + text.upper().replace("-", "_"))
        expected.setdefault(key, []).append(value.decode("latin-1"))
    for key, values in expected.items():
        assert request.META[key] == ("; " if key == "HTTP_COOKIE" else ",").join(values)
    sent_keys = {k for k in request.META if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}
    assert sent_keys == set(expected)


def _lists(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return list(grouped.items())


# -- the body assembler ----------------------------------------------------------------------

def test_body_inline_only() -> None:
    body = BodyAssembler(b"abc", 100, complete=True)
    assert body.done and body.file.read() == b"abc" and body.length == 3
    body.close()


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=10), inline=st.integers(0, 3000),
       spool=st.sampled_from([0, 100, 1 << 20]))
def test_body_reassembled_from_any_chunks(data: bytes, cuts: list[int], inline: int, spool: int) -> None:
    inline = min(inline, len(data))
    body = BodyAssembler(data[:inline], spool, complete=False)
    points = sorted({min(c, len(data)) for c in cuts if c > inline} | {len(data)})
    start = inline
    for point in points:
        body.feed({"content": data[start:point], "closed": False, "more_content": point < len(data)})
        start = point
    assert body.done
    assert body.file.read() == data and body.length == len(data)
    body.close()


def test_body_closed_aborts() -> None:
    body = BodyAssembler(b"", 10, complete=False)
    body.feed({"content": b"x", "more_content": True})
    with pytest.raises(BodyAborted):
        body.feed({"content": b"", "closed": True, "more_content": False})
    assert body.state == "ABORTED"
    body.close()


@pytest.mark.parametrize(("chunk", "culprit"), [
    ([], "body chunk must be a dict, not list"),
    ({"content": "x", "more_content": False}, "'content' must be bytes, not str"),
    ({"content": b"x", "more_content": 1}, "'more_content' must be a bool, not int"),
    ({"content": b"x", "closed": "no"}, "'closed' must be a bool, not str"),
])
def test_bad_body_chunks(chunk: object, culprit: str) -> None:
    body = BodyAssembler(b"", 10, complete=False)
    with pytest.raises(BadMessage) as info:
        body.feed(chunk)
    assert culprit in str(info.value) and body.state == "BAD"
    body.close()


@pytest.mark.parametrize("module", ["http_request", "http_response", "http_body"])
def test_sans_io_modules_import_no_framework(module: str) -> None:
    """The translation modules stay pure: no Django, no layer, no sockets (the adapter is worker.http)."""
    import ast
    import pathlib

    import worker

    source = pathlib.Path(worker.__file__).with_name(f"{module}.py").read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"django", "ipc_layer", "socket", "twisted", "redis"}, imported


def test_header_name_cache_is_bounded() -> None:
    from worker import http_request

    for i in range(3 * http_request._META_NAMES_MAX):
        assert http_request.header_meta_name(f"x-made-up-{i}".encode()) == f"HTTP_X_MADE_UP_{i}"
    assert len(http_request._META_NAMES) <= http_request._META_NAMES_MAX
    assert http_request.header_meta_name(b"x_under") is None  # a cached drop stays a drop
    assert http_request.header_meta_name(b"x_under") is None
