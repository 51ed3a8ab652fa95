"""What every protocol object of one server shares: the layer, the reply router, settings, the reactor.

One :class:`ServerContext` per server process, made by :class:`server.server.Server`
(or by a test, with an in-memory layer and a ``MemoryReactorClock``), so
the HTTP and WebSocket adapters never reach for module globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .access import AccessLog
from .config import ServerConfig
from .replies import ReplyRouter

__all__ = ["ServerContext"]


@dataclass
class ServerContext:
    layer: Any
    router: ReplyRouter
    config: ServerConfig
    reactor: Any
    access: AccessLog = field(default_factory=AccessLog)
    #: Requests and sockets in flight (for the graceful stop).
    live: set[Any] = field(default_factory=set)
    #: Set when a graceful stop began: new requests get 503, new sockets 503.
    stopping: bool = False
    #: The autobahn factory WebSocket upgrades are handed to (set by the server).
    ws_factory: Any = None
