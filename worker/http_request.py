"""Sans-IO: an ``http.request`` message checked, and the WSGI-style ``META`` Django code expects.

Theory of operation
-------------------
:func:`parse_request` checks every key ASGI 1 defines (``www.rst``, "Request") and
returns a :class:`RequestHead`, or raises :class:`BadMessage` (a ``ValueError``)
naming the key and what was wrong with it, so the consumer can log the culprit and
answer 400 instead of letting a ``KeyError`` deep inside Django kill the request.
Optional keys get the spec's defaults (``scheme`` "http", ``root_path`` "",
``body`` b""); ``query_string`` is also taken as ``str`` (Channels 1.x issue 622:
some servers sent one).

:func:`build_meta` turns the head into the ``META`` dict, by the rules WSGI servers
(gunicorn, mod_wsgi) and Django's own ASGI handler follow, because that is what
Django and third-party code read:

- ``SCRIPT_NAME`` is ``root_path`` (``settings.FORCE_SCRIPT_NAME`` wins, as in
  Django); ``PATH_INFO`` is ``path`` without that prefix when ``path`` starts with it
  on a segment boundary (a proxy passing the full path), else ``path`` itself (a
  proxy that already stripped it); an empty ``PATH_INFO`` is ``/``. So
  ``request.path`` is always ``SCRIPT_NAME + PATH_INFO``, as under WSGI.
- ``QUERY_STRING`` is the raw query decoded as latin-1, the WSGI convention, so
  every byte survives and Django's ``GET`` re-encodes it before decoding with the
  request's encoding (a query that is not UTF-8 is not a 400).
- Headers: ``content-type``/``content-length`` become ``CONTENT_TYPE``/
  ``CONTENT_LENGTH``, any other ``name`` becomes ``HTTP_NAME`` (``-`` -> ``_``,
  upper case); values decode as latin-1. Duplicates are joined with ``,`` (RFC 9110
  5.3, what WSGI servers and Django's ASGI handler do), except ``cookie``, joined
  with ``; `` (HTTP/2 sends one cookie per header field, RFC 9113 8.2.3). A name
  holding ``_`` is dropped: after the ``-`` -> ``_`` mapping it would be
  indistinguishable from a trusted proxy's header (Django's ASGI handler and
  gunicorn drop them too).
- ``CONTENT_LENGTH`` missing while a body arrived (a chunked upload) is set to the
  body's real length: the whole body is in hand before the view runs, and Django's
  multipart parser needs a length.
- ``REMOTE_ADDR``/``REMOTE_HOST``/``REMOTE_PORT`` from ``client``, ``SERVER_NAME``/
  ``SERVER_PORT`` from ``server`` (``unknown``/``0`` without one, as Django's ASGI
  handler), ports as strings like WSGI's; ``SERVER_PROTOCOL`` from
  ``http_version``.
- ``wsgi.version``, ``wsgi.url_scheme`` (= ``scheme``), ``wsgi.input`` (the body
  stream), ``wsgi.errors``, ``wsgi.multithread``, ``wsgi.multiprocess`` (True: a pool
  of processes), ``wsgi.run_once`` (False).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["BadMessage", "RequestHead", "build_meta", "header_meta_name", "parse_request", "split_root"]

#: ``http_version`` values ASGI 1 names, and the SERVER_PROTOCOL each maps to.
SERVER_PROTOCOLS = {"1.0": "HTTP/1.0", "1.1": "HTTP/1.1", "2": "HTTP/2", "2.0": "HTTP/2", "3": "HTTP/3"}
#: The longest value quoted in an error message (a 1 MB header must not become a 1 MB log line).
_QUOTE_LIMIT = 80


class BadMessage(ValueError):
    """An ``http.request`` (or body chunk) the consumer cannot serve; the text names the key."""


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 3] + "..."


def _type(value: object) -> str:
    return type(value).__name__


@dataclass(frozen=True)
class RequestHead:
    """An ``http.request`` message, checked and with its defaults filled in."""

    reply_channel: str
    http_version: str
    method: str
    scheme: str
    path: str
    query_string: bytes
    root_path: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    body_channel: str | None
    client: tuple[str, int | None] | None
    server: tuple[str, int | None] | None


def reply_channel_of(content: Mapping[str, Any]) -> str | None:
    """The message's reply channel if it is a usable name (for a 400 to a message that is otherwise bad)."""
    value = content.get("reply_channel")
    return value if isinstance(value, str) and value else None


def _str(content: Mapping[str, Any], key: str, default: str | None = None) -> str:
    if key not in content or content[key] is None:
        if default is None:
            raise BadMessage(f"http.request has no {key!r}")
        return default
    value = content[key]
    if not isinstance(value, str):
        raise BadMessage(f"http.request {key!r} must be a str, not {_type(value)}: {_quote(value)}")
    return value


def _address(content: Mapping[str, Any], key: str) -> tuple[str, int | None] | None:
    value = content.get(key)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise BadMessage(f"http.request {key!r} must be [host, port] or None, got {_quote(value)}")
    host, port = value
    if not isinstance(host, str):
        raise BadMessage(f"http.request {key!r} host must be a str, not {_type(host)}: {_quote(host)}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        raise BadMessage(f"http.request {key!r} port must be an int or None, not {_type(port)}: {_quote(port)}")
    return host, port


def _headers(content: Mapping[str, Any]) -> tuple[tuple[bytes, bytes], ...]:
    value = content.get("headers", [])
    if not isinstance(value, (list, tuple)):
        raise BadMessage(f"http.request 'headers' must be a list of [name, value], not {_type(value)}")
    pairs = []
    for index, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadMessage(f"http.request header #{index} must be a [name, value] pair, got {_quote(pair)}")
        name, header_value = pair
        if not isinstance(name, bytes) or not name:
            raise BadMessage(f"http.request header #{index} name must be non-empty bytes, got {_quote(name)}")
        if not isinstance(header_value, bytes):
            raise BadMessage(
                f"http.request header #{index} ({_quote(name)}) value must be bytes, not {_type(header_value)}"
            )
        pairs.append((name, header_value))
    return tuple(pairs)


def parse_request(content: Mapping[str, Any]) -> RequestHead:
    """The checked head of an ``http.request`` message; :class:`BadMessage` names what is wrong."""
    if not isinstance(content, Mapping):
        raise BadMessage(f"http.request must be a dict, not {_type(content)}")
    reply_channel = _str(content, "reply_channel")
    if not reply_channel:
        raise BadMessage("http.request 'reply_channel' is empty")
    method = _str(content, "method")
    if not method or not method.isascii() or not method.isprintable() or " " in method:
        raise BadMessage(f"http.request 'method' is not an HTTP method: {_quote(method)}")
    path = _str(content, "path")
    if not path.startswith("/") and path != "*":
        raise BadMessage(f"http.request 'path' must start with '/', got {_quote(path)}")
    query = content.get("query_string", b"")
    if query is None:
        query = b""
    if isinstance(query, str):
        try:
            query = query.encode("latin-1")
        except UnicodeEncodeError:
            query = query.encode("utf-8")
    if not isinstance(query, bytes):
        raise BadMessage(f"http.request 'query_string' must be bytes, not {_type(query)}: {_quote(query)}")
    body = content.get("body", b"")
    if body is None:
        body = b""
    if not isinstance(body, bytes):
        raise BadMessage(f"http.request 'body' must be bytes, not {_type(body)}")
    body_channel = content.get("body_channel")
    if body_channel is not None and (not isinstance(body_channel, str) or not body_channel):
        raise BadMessage(f"http.request 'body_channel' must be a channel name or None, got {_quote(body_channel)}")
    http_version = _str(content, "http_version", "1.1")
    if http_version not in SERVER_PROTOCOLS:
        raise BadMessage(
            f"http.request 'http_version' must be one of {', '.join(SERVER_PROTOCOLS)}, got {_quote(http_version)}"
        )
    return RequestHead(
        reply_channel=reply_channel,
        http_version=http_version,
        method=method.upper(),
        scheme=_str(content, "scheme", "http") or "http",
        path=path,
        query_string=query,
        root_path=_str(content, "root_path", "").rstrip("/"),
        headers=_headers(content),
        body=body,
        body_channel=body_channel,
        client=_address(content, "client"),
        server=_address(content, "server"),
    )


def split_root(path: str, script_name: str) -> str:
    """``PATH_INFO``: ``path`` without the ``script_name`` prefix when it has it (see the module doc)."""
    script_name = script_name.rstrip("/")
    if script_name and path.startswith(script_name) and path[len(script_name) : len(script_name) + 1] in ("", "/"):
        path = path[len(script_name) :]
    return path or "/"


#: header name -> META key (None: dropped), for the names a site sees over and over; bounded,
#: so a client inventing names cannot grow it without end.
_META_NAMES: dict[bytes, str | None] = {}
_META_NAMES_MAX = 1024


def header_meta_name(name: bytes) -> str | None:
    """The ``META`` key of header ``name`` (lower-case bytes), or None for a name that must be dropped."""
    try:
        return _META_NAMES[name]
    except KeyError:
        pass
    key = _meta_name(name)
    if len(_META_NAMES) < _META_NAMES_MAX:
        _META_NAMES[name] = key
    return key


def _meta_name(name: bytes) -> str | None:
    text = name.decode("latin-1").lower()
    if "_" in text:
        return None
    if text == "content-type":
        return "CONTENT_TYPE"
    if text == "content-length":
        return "CONTENT_LENGTH"
    return "HTTP_" + text.upper().replace("-", "_")


def _header_meta(headers: tuple[tuple[bytes, bytes], ...]) -> tuple[dict[str, str], list[bytes]]:
    """(``META`` entries of the headers, names dropped for holding ``_``)."""
    meta: dict[str, str] = {}
    dropped: list[bytes] = []
    for name, value in headers:
        key = header_meta_name(name)
        if key is None:
            dropped.append(name)
            continue
        text = value.decode("latin-1")
        if key in meta:
            text = meta[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        meta[key] = text
    return meta, dropped


def build_meta(
    head: RequestHead,
    *,
    script_name: str,
    body_length: int,
    body_file: IO[bytes],
    errors: IO[str] | None = None,
) -> tuple[dict[str, Any], list[bytes]]:
    """(``META`` for ``head``, header names dropped); ``script_name`` is the resolved SCRIPT_NAME."""
    script_name = script_name.rstrip("/")
    meta: dict[str, Any] = {
        "REQUEST_METHOD": head.method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": split_root(head.path, script_name),
        "QUERY_STRING": head.query_string.decode("latin-1"),
        "SERVER_PROTOCOL": SERVER_PROTOCOLS[head.http_version],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": head.scheme,
        "wsgi.input": body_file,
        "wsgi.errors": errors if errors is not None else sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if head.client is not None:
        host, port = head.client
        meta["REMOTE_ADDR"] = host
        meta["REMOTE_HOST"] = host
        if port is not None:
            meta["REMOTE_PORT"] = str(port)
    if head.server is not None:
        host, port = head.server
        meta["SERVER_NAME"] = host
        meta["SERVER_PORT"] = str(port) if port is not None else "0"
    else:
        meta["SERVER_NAME"] = "unknown"
        meta["SERVER_PORT"] = "0"
    headers, dropped = _header_meta(head.headers)
    meta.update(headers)
    if "CONTENT_LENGTH" not in meta and body_length:
        meta["CONTENT_LENGTH"] = str(body_length)
    return meta, dropped
