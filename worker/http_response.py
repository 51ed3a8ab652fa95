"""Sans-IO: a Django response as ``http.response`` messages, each within the layer's message limit.

Theory of operation
-------------------
A reply goes over the channel layer, which refuses a message whose msgpack encoding
is over ``max_message_size`` (``MessageTooLarge``). So a body is cut to fit: the
first message carries ``status`` and ``headers`` and as much body as still fits, each
later one ``content`` and ``more_content`` only. The room is computed from msgpack's
own rules (:func:`head_overhead`, :data:`CHUNK_OVERHEAD`: the largest header each
value can take), never from a guess, so a chunk is as large as the limit allows and
never over it (the unit tests send every chunk through a layer with a small limit).

- A plain ``HttpResponse``: ``content`` cut into pieces; the last says
  ``more_content=False``. An empty body is one message.
- A streaming response (``StreamingHttpResponse``, ``FileResponse``): the head goes
  first, alone, so the client sees the status and headers before a slow generator
  yields; then each part the iterator yields, cut to fit if it is larger, is sent as
  soon as it exists (server-sent events are not held back to fill a message), and an
  empty ``more_content=False`` message ends the body. A ``FileResponse`` reads its
  file in blocks of exactly one chunk (:func:`chunk_room`).

Header names and values are sent as Django holds them (names in their case: some
clients want ``Content-Type`` spelt so; ASGI 1 servers lower-case as they need),
encoded latin-1 (Django already MIME-encodes anything else), then one ``Set-Cookie``
per cookie.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "CHUNK_OVERHEAD",
    "HeadTooLarge",
    "chunk_room",
    "head_overhead",
    "plain_messages",
    "response_headers",
    "split",
    "streaming_messages",
]

#: Bytes of a body-chunk message besides its content: map header (1), "content" (1+7),
#: a bin32 header (5), "more_content" (1+12), a bool (1); rounded up.
CHUNK_OVERHEAD = 32
#: Bytes of the first message besides headers and content: the chunk's, plus "status"
#: (1+6), a uint16 (3), "headers" (1+7), an array32 header (5); rounded up.
_HEAD_BASE = 64
#: Bytes of one header pair besides its name and value: array header (1), two bin32 headers.
_PAIR_OVERHEAD = 11
#: The least body room a message must leave; a head bigger than the limit minus this is refused.
MIN_ROOM = 64


class HeadTooLarge(ValueError):
    """The status and headers alone do not fit one message of the layer's limit."""


Header = list[bytes]


def response_headers(response: Any) -> list[Header]:
    """``[name, value]`` bytes pairs of a Django response, cookies last (one ``Set-Cookie`` each)."""
    headers: list[Header] = []
    for name, value in response.items():
        headers.append([
            name.encode("ascii") if isinstance(name, str) else bytes(name),
            value.encode("latin-1") if isinstance(value, str) else bytes(value),
        ])
    for cookie in response.cookies.values():
        headers.append([b"Set-Cookie", cookie.output(header="").strip().encode("latin-1")])
    return headers


def head_overhead(headers: Iterable[Header]) -> int:
    """Encoded bytes of the first message besides its content, at most."""
    return _HEAD_BASE + sum(len(name) + len(value) + _PAIR_OVERHEAD for name, value in headers)


def chunk_room(limit: int) -> int:
    """Body bytes one later chunk may carry under a message limit of ``limit`` bytes."""
    return max(1, limit - CHUNK_OVERHEAD)


def _head_room(limit: int, headers: list[Header]) -> int:
    room = limit - head_overhead(headers)
    if room < MIN_ROOM:
        raise HeadTooLarge(
            f"the response's status and {len(headers)} headers take up to {head_overhead(headers):,} bytes, "
            f"too close to the layer's max_message_size of {limit:,}"
        )
    return room


def split(data: bytes, room: int) -> Iterator[bytes]:
    """``data`` in pieces of at most ``room`` bytes (nothing for empty data)."""
    view = memoryview(data)
    for start in range(0, len(data), room):
        yield bytes(view[start : start + room])


def plain_messages(status: int, headers: list[Header], content: bytes, limit: int) -> Iterator[dict[str, Any]]:
    """The messages of a non-streaming response under a ``limit``-byte message limit."""
    first_room = _head_room(limit, headers)
    first = content[:first_room]
    rest = content[first_room:]
    yield {"status": status, "headers": headers, "content": first, "more_content": bool(rest)}
    if rest:
        room = chunk_room(limit)
        for start in range(0, len(rest), room):
            end = start + room
            yield {"content": rest[start:end], "more_content": end < len(rest)}


def streaming_messages(
    status: int, headers: list[Header], parts: Iterable[bytes], limit: int
) -> Iterator[dict[str, Any]]:
    """The messages of a streaming response: the head alone, each part as it comes, an empty end."""
    _head_room(limit, headers)
    yield {"status": status, "headers": headers, "content": b"", "more_content": True}
    room = chunk_room(limit)
    for part in parts:
        if isinstance(part, memoryview):
            part = part.tobytes()
        elif not isinstance(part, bytes):
            # Django's streaming_content already makes bytes of str parts.
            part = bytes(part)
        for piece in split(part, room):
            yield {"content": piece, "more_content": True}
    yield {"content": b"", "more_content": False}
