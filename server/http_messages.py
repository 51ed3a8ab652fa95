"""Sans-IO ASGI 1 HTTP messages: ``http.request`` out, ``http.response`` replies in.

The Twisted adapter parses the wire (``twisted.web``) and calls these pure
functions; they know nothing of sockets, reactors or layers, so every rule
is tested by feeding values, not bytes over a transport (h11's habit).

Request (``www.rst``, "Request"): every key ASGI 1 defines is filled in,
``scheme``, ``root_path`` and ``client``/``server`` included (Daphne 1.x
left ``body_channel`` out and sent every body inline). A body longer than
the server's inline limit goes partly inline and the rest as chunks on a
``http.request.body?`` channel (:func:`body_chunks`), so a 10 MiB upload
never has to fit one channel message.

Response: a worker's replies on the connection's reply channel go through
:class:`ResponseReader`, a two-state machine that refuses what would break
the wire or the protocol, naming the key::

    state        message                              next state
    -----        -------                              ----------
    START        status (+headers, content, more)     BODY if more_content else DONE
    BODY         content (+more_content), no status   BODY if more_content else DONE
    DONE         anything                             error (the response is finished)

A refused reply is a :class:`BadReply`; the adapter logs it and answers 500
if nothing was written yet, else closes the connection (the head is gone).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .headers import (
    Address,
    BadRequest,
    HeaderList,
    check_header_name,
    check_header_value,
    decode_path,
    is_token,
)

__all__ = [
    "BadReply",
    "BodyChunk",
    "ResponseReader",
    "ResponseStart",
    "body_chunks",
    "body_closed",
    "disconnect_message",
    "request_message",
    "split_target",
]

#: HTTP versions ASGI 1 names.
HTTP_VERSIONS = ("1.0", "1.1", "2")
_RESPONSE_KEYS = frozenset({"status", "headers", "content", "more_content", "status_text"})
_CHUNK_KEYS = frozenset({"content", "more_content"})


class BadReply(ValueError):
    """A reply from the application that cannot be written; the message names the key."""


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """The raw path and the raw query string of a request target.

    Origin form (``/a/b?x=1``) is the common case; absolute form
    (``http://host/a?x=1``, sent to proxies) keeps its path; ``*`` is kept
    for ``OPTIONS *``. Anything else is a :class:`BadRequest`.
    """
    if not isinstance(target, bytes):
        raise BadRequest(f"request target must be bytes, not {type(target).__name__}")
    if target == b"*":
        return b"*", b""
    lower = target[:8].lower()
    if lower.startswith((b"http://", b"https://")):
        rest = target.split(b"//", 1)[1]
        slash = rest.find(b"/")
        question = rest.find(b"?")
        if slash < 0 or (0 <= question < slash):
            target = b"/" + (rest[question:] if question >= 0 else b"")
        else:
            target = rest[slash:]
    if not target.startswith(b"/"):
        raise BadRequest(f"request target {target[:60]!r} is not a path (must start with '/')")
    path, _, query = target.partition(b"?")
    # A fragment is never sent by a conforming client; drop it rather than
    # hand it to the application as part of the query.
    query = query.split(b"#", 1)[0]
    return path, query


def request_message(
    *,
    reply_channel: str,
    http_version: str,
    method: bytes,
    target: bytes,
    headers: HeaderList,
    client: Address,
    server: Address,
    scheme: str = "http",
    root_path: str = "",
    body: bytes = b"",
    body_channel: str | None = None,
) -> dict[str, Any]:
    """The ``http.request`` message for one request (headers already normalised)."""
    if http_version not in HTTP_VERSIONS:
        raise BadRequest(f"HTTP version {http_version!r} is not one of {', '.join(HTTP_VERSIONS)}", 505)
    if not isinstance(method, bytes) or not is_token(method):
        raise BadRequest(f"method {method[:30]!r} is not an HTTP method", 400)
    raw_path, query_string = split_target(target)
    message: dict[str, Any] = {
        "reply_channel": reply_channel,
        "http_version": http_version,
        "method": method.decode("ascii").upper(),
        "scheme": scheme,
        "path": decode_path(raw_path),
        "query_string": query_string,
        "root_path": root_path,
        "headers": headers,
        "body": body,
        "client": client,
        "server": server,
    }
    if body_channel is not None:
        message["body_channel"] = body_channel
    return message


def body_chunks(data: bytes, chunk_size: int, more_after: bool) -> Iterator[dict[str, Any]]:
    """``http.request.body?`` messages for ``data`` in chunks of at most ``chunk_size`` bytes.

    The last one says ``more_content=more_after``: True while the upload
    goes on (the adapter streams as the client sends), False at its end.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    if not data:
        yield {"content": b"", "closed": False, "more_content": more_after}
        return
    for start in range(0, len(data), chunk_size):
        end = start + chunk_size
        yield {"content": data[start:end], "closed": False, "more_content": more_after or end < len(data)}


def body_closed() -> dict[str, Any]:
    """The body-channel message telling the application the client gave up."""
    return {"content": b"", "closed": True, "more_content": False}


def disconnect_message(reply_channel: str, path: str) -> dict[str, Any]:
    """``http.disconnect``: the client went away while its reply channel was live."""
    return {"reply_channel": reply_channel, "path": path}


@dataclass(frozen=True)
class ResponseStart:
    """The head of a response, and its first piece of body."""

    status: int
    headers: HeaderList
    content: bytes
    more_content: bool


@dataclass(frozen=True)
class BodyChunk:
    """A further piece of body."""

    content: bytes
    more_content: bool


def _bool(message: Mapping[str, Any], key: str) -> bool:
    value = message.get(key, False)
    if not isinstance(value, bool):
        raise BadReply(f"http.response {key!r} must be a bool, not {type(value).__name__}: {value!r}")
    return value


def _content(message: Mapping[str, Any]) -> bytes:
    value = message.get("content", b"")
    if not isinstance(value, bytes):
        raise BadReply(f"http.response 'content' must be bytes, not {type(value).__name__}")
    return value


def _headers(value: object) -> HeaderList:
    if not isinstance(value, (list, tuple)):
        raise BadReply(f"http.response 'headers' must be a list of [name, value], not {type(value).__name__}")
    headers: HeaderList = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadReply(f"http.response header #{i} must be a [name, value] pair, got {pair!r:.80}")
        name, header_value = pair
        try:
            check_header_name(name, "response")
            check_header_value(name, header_value, "response")
        except BadRequest as exc:
            raise BadReply(f"http.response header #{i}: {exc}") from None
        headers.append([name, header_value])
    return headers


class ResponseReader:
    """Validates one response's reply messages in order (see the module's state table)."""

    def __init__(self) -> None:
        self.state = "START"

    def feed(self, message: object) -> ResponseStart | BodyChunk:
        if not isinstance(message, Mapping):
            raise BadReply(f"http.response must be a dict, not {type(message).__name__}")
        if self.state == "DONE":
            raise BadReply("http.response message after the response finished (more_content was False)")
        if self.state == "START":
            unknown = set(message) - _RESPONSE_KEYS
            if unknown:
                raise BadReply(f"http.response has unknown keys {sorted(map(str, unknown))}")
            status = message.get("status")
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                # 1xx are informational, never a final status (101 is the
                # server's own, for WebSockets).
                raise BadReply(f"http.response 'status' must be an int 200..599, got {status!r:.40}")
            start = ResponseStart(status, _headers(message.get("headers", [])), _content(message),
                                  _bool(message, "more_content"))
            # START -> BODY (more to come) or START -> DONE
            self.state = "BODY" if start.more_content else "DONE"
            return start
        if "status" in message:
            raise BadReply("http.response chunk carries 'status': only the first message may")
        unknown = set(message) - _CHUNK_KEYS
        if unknown:
            raise BadReply(f"http.response chunk has unknown keys {sorted(map(str, unknown))}")
        chunk = BodyChunk(_content(message), _bool(message, "more_content"))
        # BODY -> BODY or BODY -> DONE
        self.state = "BODY" if chunk.more_content else "DONE"
        return chunk

