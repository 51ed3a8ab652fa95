"""The protocol server's settings: one frozen record, defaults as Daphne 1.x's, checked once.

The command line (:mod:`server.cli`) builds it; tests build it directly.
Every check raises ``ValueError`` naming the setting and the allowed range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["READERS", "ServerConfig"]

MiB = 1 << 20
#: How replies reach the reactor (:mod:`server.reader`); ``auto`` picks the
#: first of stream, twisted, thread the layer offers.
READERS = ("auto", "stream", "twisted", "thread")


def _seconds(name: str, value: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    if value > 10 * 365 * 86400:
        raise ValueError(f"{name} must be at most 10 years (315360000 s), got {value!r}")


def _size(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int {low}..{high}, got {value!r}")


@dataclass(frozen=True)
class ServerConfig:
    #: 503 "Worker server failed to respond within time limit" after this.
    http_timeout: float = 120.0
    #: Close a WebSocket after this long; None = the layer's group_expiry.
    websocket_timeout: float | None = None
    #: Reject (403) a handshake the application has not answered by then.
    websocket_connect_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 30.0
    #: Subprotocols the server accepts (the first the client offers wins).
    ws_protocols: tuple[str, ...] = ()
    proxy_headers: bool = False
    root_path: str = ""
    #: The Server header of every response ("" = none).
    server_name: str = "ipc-server"
    websocket_max_message_size: int = MiB
    #: Body bytes sent inline in http.request; the rest goes on a body channel.
    request_body_inline: int = 256 * 1024
    #: Largest chunk on the body channel.
    body_chunk_size: int = 256 * 1024
    #: Seconds in-flight requests get to finish on SIGTERM.
    graceful_timeout: float = 30.0
    reader: str = "auto"

    def __post_init__(self) -> None:
        _seconds("http_timeout", self.http_timeout)
        _seconds("websocket_timeout", self.websocket_timeout, allow_none=True)  # type: ignore[arg-type]
        _seconds("websocket_connect_timeout", self.websocket_connect_timeout)
        _seconds("ping_interval", self.ping_interval)
        _seconds("ping_timeout", self.ping_timeout)
        _seconds("graceful_timeout", self.graceful_timeout)
        _size("websocket_max_message_size", self.websocket_max_message_size, 1, 1 << 30)
        _size("request_body_inline", self.request_body_inline, 0, 1 << 30)
        _size("body_chunk_size", self.body_chunk_size, 1, 1 << 30)
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError(f"root_path must start with '/' and not end with one, got {self.root_path!r}")
        if self.reader not in READERS:
            raise ValueError(f"reader must be one of {', '.join(map(repr, READERS))}, got {self.reader!r}")
        for protocol in self.ws_protocols:
            if not protocol or not protocol.isascii() or any(c in protocol for c in " ,;\t\r\n"):
                raise ValueError(f"ws_protocols entry {protocol!r} is not a token")
