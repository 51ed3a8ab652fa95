"""Sans-IO ASGI 1 WebSocket messages: connect/receive/disconnect out, send/close/accept in.

The autobahn adapter calls these pure functions; nothing here imports
Twisted or autobahn (wsproto's habit).

Outgoing (``www.rst``, "WebSocket"): ``websocket.connect`` carries
``order`` 0, every ``websocket.receive`` the next number, and
``websocket.disconnect`` the number after the last frame, so a worker pool
that takes a socket's messages on several processes can put them back in
order (Channels 1.x's ``enforce_ordering``). :class:`OrderCounter` keeps
that count per connection.

Incoming replies on the socket's reply channel go through
:class:`ReplyReader`, whose states follow the handshake::

    state       reply                                  actions                     next
    -----       -----                                  -------                     ----
    CONNECTING  accept: True                           Accept                      OPEN
    CONNECTING  text / bytes (accept absent or True)   Accept, Send                OPEN
    CONNECTING  accept: False, or close                Reject (403)                CLOSED
    OPEN        text / bytes                           Send                        OPEN
    OPEN        close (True = 1000, or a code)         (Send,) Close(code)         CLOSED
    OPEN        accept (again)                         none (idempotent)           OPEN
    CLOSED      anything                               none (dropped, logged)      CLOSED

A data frame and ``close`` in one reply are sent in that order (the spec
allows both). Any other key, both ``text`` and ``bytes``, a wrong type or
a close code the protocol forbids is a :class:`BadReply` naming it; the
adapter logs it and closes the socket with 1011 (internal error), because
the application is broken, not the client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .headers import Address, HeaderList

__all__ = [
    "Accept",
    "BadReply",
    "Close",
    "OrderCounter",
    "Reject",
    "ReplyReader",
    "Send",
    "connect_message",
    "select_subprotocol",
]

_REPLY_KEYS = frozenset({"bytes", "text", "close", "accept"})


class BadReply(ValueError):
    """A ``websocket.send`` reply that cannot be carried out; the message names the key."""


@dataclass(frozen=True)
class Accept:
    """Finish the handshake (101)."""


@dataclass(frozen=True)
class Reject:
    """Refuse the handshake with 403."""


@dataclass(frozen=True)
class Send:
    """Send one data frame: ``text`` (str) or ``data`` (bytes), exactly one set."""

    text: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Close:
    """Start the closing handshake with ``code``."""

    code: int


Action = Accept | Reject | Send | Close


def valid_close_code(code: int) -> bool:
    """RFC 6455 7.4: codes an endpoint may send (1000-1003, 1007-1014, 3000-4999)."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


class OrderCounter:
    """The ``order`` numbers of one socket's messages: 0 for connect, then 1, 2, ..."""

    def __init__(self) -> None:
        self._next = 0

    def take(self) -> int:
        order = self._next
        self._next += 1
        return order


def connect_message(
    *,
    reply_channel: str,
    path: str,
    query_string: bytes,
    headers: HeaderList,
    client: Address,
    server: Address,
    scheme: str = "ws",
    root_path: str = "",
    order: int = 0,
) -> dict[str, Any]:
    """``websocket.connect`` (the spec's keys, ``scheme`` and ``root_path`` included)."""
    return {
        "reply_channel": reply_channel,
        "scheme": scheme,
        "path": path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "order": order,
    }


def receive_message(reply_channel: str, path: str, order: int, payload: str | bytes) -> dict[str, Any]:
    """``websocket.receive`` with ``text`` or ``bytes`` (exactly one)."""
    message: dict[str, Any] = {"reply_channel": reply_channel, "path": path, "order": order}
    if isinstance(payload, str):
        message["text"] = payload
    else:
        message["bytes"] = payload
    return message


def disconnect_message(reply_channel: str, path: str, order: int, code: int) -> dict[str, Any]:
    """``websocket.disconnect`` with the close code."""
    return {"reply_channel": reply_channel, "path": path, "order": order, "code": code}


def select_subprotocol(offered: Sequence[str], configured: Sequence[str]) -> str | None:
    """The first protocol the client offered that the server is configured for (Daphne's rule)."""
    for protocol in offered:
        if protocol in configured:
            return protocol
    return None


def _close_code(value: object) -> int:
    if value is True:
        return 1000
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadReply(f"websocket.send 'close' must be True or an int code, got {value!r:.40}")
    if not valid_close_code(value):
        raise BadReply(f"websocket.send 'close' code {value} is not one an endpoint may send (RFC 6455 7.4)")
    return value


class ReplyReader:
    """Turns one socket's replies into actions (see the module's state table)."""

    def __init__(self) -> None:
        self.state = "CONNECTING"

    def feed(self, message: object) -> list[Action]:
        if not isinstance(message, Mapping):
            raise BadReply(f"websocket.send must be a dict, not {type(message).__name__}")
        unknown = set(message) - _REPLY_KEYS
        if unknown:
            raise BadReply(f"websocket.send has unknown keys {sorted(map(str, unknown))}")
        if self.state == "CLOSED":
            return []
        text = message.get("text")
        data = message.get("bytes")
        if text is not None and data is not None:
            raise BadReply("websocket.send has both 'text' and 'bytes'; send one per message")
        if text is not None and not isinstance(text, str):
            raise BadReply(f"websocket.send 'text' must be a str, not {type(text).__name__}")
        if data is not None and not isinstance(data, bytes):
            raise BadReply(f"websocket.send 'bytes' must be bytes, not {type(data).__name__}")
        accept = message.get("accept")
        if accept is not None and not isinstance(accept, bool):
            raise BadReply(f"websocket.send 'accept' must be a bool, not {type(accept).__name__}")
        close = message.get("close", False)
        code = _close_code(close) if close is not False else None
        actions: list[Action] = []
        if self.state == "CONNECTING":
            if accept is False or (code is not None and accept is None and text is None and data is None):
                # CONNECTING -> CLOSED: the application refused the socket.
                self.state = "CLOSED"
                return [Reject()]
            if accept is True or text is not None or data is not None or code is not None:
                # CONNECTING -> OPEN: accept, or data implies accept.
                self.state = "OPEN"
                actions.append(Accept())
            else:
                return []  # an empty reply during the handshake: nothing to do yet
        if text is not None or data is not None:
            actions.append(Send(text=text, data=data))
        if code is not None:
            # OPEN -> CLOSED
            self.state = "CLOSED"
            actions.append(Close(code))
        return actions
