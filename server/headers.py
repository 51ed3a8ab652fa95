"""Sans-IO checks shared by the HTTP and WebSocket message builders: headers, peers, root path.

Nothing here imports Twisted or autobahn: the adapters hand in what they
parsed (raw header pairs, the transport's peer and host addresses) and get
back the ASGI 1 values, or a :class:`BadRequest` that names the culprit, which
the adapter turns into a 400 (HTTP) or a refused handshake (WebSocket).

Rules, and where they come from:

* Header names are lower-cased; order and duplicates are kept (ASGI 1
  ``www.rst``: "order and duplicates kept").
* A header *name* containing ``_`` is dropped, not refused: a proxy that
  maps ``X-Forwarded_For`` and ``X-Forwarded-For`` to the same CGI-style
  variable would let a client spoof the one it cannot set (CVE-2015-0219;
  Daphne 1.x drops them the same way).
* A name must be an RFC 9110 token and a value must not hold CR, LF or NUL
  (RFC 9110 5.5): Twisted's parser already refuses most of these, but a
  value a client smuggled through must never reach the layer, and the same
  checks guard the reply headers a worker sends (response splitting).
* ``--proxy-headers``: the client address comes from the *leftmost*
  ``X-Forwarded-For`` entry (what Daphne does), the port from
  ``X-Forwarded-Port``, the scheme from ``X-Forwarded-Proto``; a malformed
  value is ignored (logged by the caller), never trusted half-parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "BadRequest",
    "Address",
    "HeaderList",
    "Scope",
    "address",
    "connection_scope",
    "check_header_name",
    "check_header_value",
    "decode_path",
    "forwarded_peer",
    "header_value",
    "is_token",
    "normalize_headers",
    "root_path_for",
]

#: ``[host, port]`` as ASGI 1 messages carry it, or None for a peer without
#: one (a UNIX socket).
Address = list[object] | None
HeaderList = list[list[bytes]]

# RFC 9110 5.6.2: token = 1*tchar.
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_RE = re.compile(rb"[\x00\r\n]")
#: The most header bytes quoted in an error: a 1 MB header must not become a
#: 1 MB log line.
_QUOTE_MAX = 60
_SCHEMES = {b"http": "http", b"https": "https", b"ws": "ws", b"wss": "wss"}


class BadRequest(ValueError):
    """A client-supplied value that must not reach the layer.

    ``status`` is the HTTP status the adapter answers with (400 unless said
    otherwise, e.g. 414 for an over-long target); the message names the
    culprit and is safe to log.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _quote(data: bytes) -> str:
    text = repr(data[:_QUOTE_MAX])
    return text + ("..." if len(data) > _QUOTE_MAX else "")


def is_token(data: bytes) -> bool:
    """True if ``data`` is an RFC 9110 token (header names, methods)."""
    return _TOKEN_RE.fullmatch(data) is not None


def check_header_name(name: bytes, where: str = "request") -> None:
    """Raise :class:`BadRequest` unless ``name`` is an RFC 9110 token."""
    if not isinstance(name, bytes):
        raise BadRequest(f"{where} header name must be bytes, not {type(name).__name__}: {name!r}")
    if _TOKEN_RE.fullmatch(name) is None:
        raise BadRequest(f"{where} header name {_quote(name)} is not a token (RFC 9110 5.6.2)")


def check_header_value(name: bytes, value: bytes, where: str = "request") -> None:
    """Raise :class:`BadRequest` if ``value`` holds CR, LF or NUL (header injection)."""
    if not isinstance(value, bytes):
        raise BadRequest(
            f"{where} header {_quote(name)} value must be bytes, not {type(value).__name__}: {value!r}"
        )
    if _BAD_VALUE_RE.search(value) is not None:
        raise BadRequest(f"{where} header {_quote(name)} value {_quote(value)} holds CR, LF or NUL")


def normalize_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[HeaderList, list[bytes]]:
    """ASGI 1 headers from raw pairs, and the names dropped for holding ``_``.

    Order and duplicates are kept; names are lower-cased; values are kept
    byte for byte apart from surrounding whitespace (RFC 9110 5.5: optional
    whitespace is not part of the value).
    """
    headers: HeaderList = []
    dropped: list[bytes] = []
    for name, value in raw:
        check_header_name(name)
        if b"_" in name:
            dropped.append(name)
            continue
        value = value.strip(b" \t")
        check_header_value(name, value)
        headers.append([name.lower(), value])
    return headers, dropped


def header_value(headers: Sequence[Sequence[bytes]], name: bytes) -> bytes | None:
    """The first value of the (lower-case) header ``name``, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def decode_path(raw: bytes) -> str:
    """The percent-decoded, UTF-8 decoded path of a request target.

    Raises :class:`BadRequest` naming the path when it does not decode as
    UTF-8 or holds a NUL after decoding (no layer or framework handles one
    safely).
    """
    decoded = unquote_to_bytes(raw)
    try:
        path = decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"path {_quote(raw)} is not UTF-8 once percent-decoded ({exc.reason})") from None
    if "\x00" in path:
        raise BadRequest(f"path {_quote(raw)} holds a NUL once percent-decoded")
    return path


def forwarded_peer(
    headers: Sequence[Sequence[bytes]], client: Address, scheme: str
) -> tuple[Address, str, list[str]]:
    """Apply ``X-Forwarded-For``/``-Port``/``-Proto`` (``--proxy-headers``).

    Returns the client address, the scheme, and a list of problems (each a
    sentence naming the header) for headers that were present but ignored
    because they did not parse; the caller logs them.
    """
    problems: list[str] = []
    forwarded_for = header_value(headers, b"x-forwarded-for")
    if forwarded_for is not None:
        host = forwarded_for.split(b",", 1)[0].strip()
        try:
            text = host.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if text and re.fullmatch(r"[0-9A-Fa-f:.\[\]]+", text):
            port: object = client[1] if client else 0
            forwarded_port = header_value(headers, b"x-forwarded-port")
            if forwarded_port is not None:
                if forwarded_port.isdigit() and 0 < int(forwarded_port) < 65536:
                    port = int(forwarded_port)
                else:
                    problems.append(f"X-Forwarded-Port {_quote(forwarded_port)} is not a port number")
            client = [text.strip("[]"), port]
        else:
            problems.append(f"X-Forwarded-For {_quote(forwarded_for)} does not start with an address")
    forwarded_proto = header_value(headers, b"x-forwarded-proto")
    if forwarded_proto is not None:
        proto = _SCHEMES.get(forwarded_proto.strip().lower())
        if proto is None:
            problems.append(f"X-Forwarded-Proto {_quote(forwarded_proto)} is not http, https, ws or wss")
        else:
            websocket = scheme in ("ws", "wss")
            secure = proto in ("https", "wss")
            scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    return client, scheme, problems


def root_path_for(headers: Sequence[Sequence[bytes]], default: str) -> str:
    """The root path: the ``Daphne-Root-Path`` header (percent-decoded) or ``default``.

    Daphne 1.x reads that header so a proxy can mount the site under a
    prefix per request; we keep its name so existing proxy configurations
    work unchanged.
    """
    raw = header_value(headers, b"daphne-root-path")
    if raw is None:
        return default
    return decode_path(raw).rstrip("/")


def address(addr: Any) -> Address:
    """``[host, port]`` of a Twisted-style address, or None (a UNIX socket has no port)."""
    host, port = getattr(addr, "host", None), getattr(addr, "port", None)
    return None if host is None or port is None else [host, port]


@dataclass(frozen=True)
class Scope:
    """What an HTTP request and a WebSocket handshake both derive from the client's head."""

    headers: HeaderList
    client: Address
    scheme: str
    root_path: str
    #: Header names dropped for holding ``_``.
    dropped: list[bytes]
    #: Proxy headers present but ignored, each a sentence naming the header (to log).
    problems: list[str]


def connection_scope(raw: Iterable[tuple[bytes, bytes]], client: Address, scheme: str, *,
                     proxy_headers: bool, root_path: str) -> Scope:
    """Headers, client, scheme and root path of a request, by the module's rules.

    Proxy headers (client, scheme) and ``Daphne-Root-Path`` are honoured only
    with ``proxy_headers``: the root path moves the application's mount point,
    so only a proxy the operator trusts may set it, never any client.
    Raises :class:`BadRequest` for a header that must not reach the layer.
    """
    headers, dropped = normalize_headers(raw)
    problems: list[str] = []
    if proxy_headers:
        client, scheme, problems = forwarded_peer(headers, client, scheme)
        root_path = root_path_for(headers, root_path)
    return Scope(headers, client, scheme, root_path, dropped, problems)
