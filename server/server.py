"""``Server``: listens on Twisted endpoints, runs the reply reader, stops gracefully.

Theory of operation
-------------------
One :class:`Server` per process. It receives on one process channel
(``server.<unique>!``) through the reader (:mod:`server.reader`) and routes
each reply to its request or socket (:mod:`server.replies`). Listening is
by Twisted endpoint strings (``tcp:8000:interface=127.0.0.1``,
``unix:/run/site.sock``, ``ssl:443:privateKey=...``) or an inherited
listening socket (``--fd``), so supervisord, systemd and the like can hand
sockets over as they do to Daphne.

``udp`` adds UDP ports (:mod:`server.udp`: each datagram a ``udp.receive``
message), served by the same reader and router.

Stopping (SIGTERM, SIGINT, :meth:`stop`) is graceful, which Daphne never
was (django/daphne#177)::

    RUNNING --stop--> DRAINING: listening ports closed, new requests 503,
                      WebSockets closed with 1001, in-flight HTTP requests
                      may finish
    DRAINING --no request left, or graceful_timeout--> STOPPED: the reader
                      stops, the rest of the connections are dropped

It runs as a Twisted "before shutdown" trigger returning a Deferred, so
``reactor.stop()`` from anywhere (a signal included) waits for it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString

from .config import ServerConfig
from .context import ServerContext
from .http import LayerHTTPFactory
from .reader import make_reader
from .replies import ReplyRouter
from .udp import LayerUDP
from .websocket import LayerWebSocket, LayerWebSocketFactory

__all__ = ["Server"]

logger = logging.getLogger(__name__)


class Server:
    def __init__(
        self,
        layer: Any,
        endpoints: Sequence[str] = ("tcp:8000:interface=127.0.0.1",),
        config: ServerConfig | None = None,
        reactor: Any = None,
        fds: Sequence[int] = (),
        channel_prefix: str = "server",
        udp: Sequence[tuple[str, int]] = (),
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if not endpoints and not fds and not udp:
            raise ValueError("a server needs at least one endpoint, --fd or --udp-port to listen on")
        self.layer = layer
        self.reactor = reactor
        self.endpoints = list(endpoints)
        self.fds = list(fds)
        self.udp = list(udp)
        self.config = config or ServerConfig()
        self.router = ReplyRouter(layer.new_process_channel(channel_prefix))
        self.context = ServerContext(layer, self.router, self.config, reactor)
        self.http_factory = LayerHTTPFactory(self.context)
        self.context.ws_factory = LayerWebSocketFactory(self.context)
        self.reader = make_reader(layer, self.router.process_channel, reactor, self.router.dispatch,
                                  self.config.reader)
        self.ports: list[Any] = []
        self.state = "NEW"
        self._drained: defer.Deferred[None] | None = None

    # -- start ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Listen everywhere and start the reader; fires with the listening ports."""
        for description in self.endpoints:
            endpoint = serverFromString(self.reactor, description)
            port = yield endpoint.listen(self.http_factory)
            self._listening(port, description)
        for fd in self.fds:
            with socket.socket(fileno=os.dup(fd)) as inherited:
                family = inherited.family
            # A listening socket handed over by a parent is often blocking;
            # the reactor's accept() must never block (it would stall every
            # connection), and adoptStreamPort does not change it.
            os.set_blocking(fd, False)
            port = self.reactor.adoptStreamPort(fd, family, self.http_factory)
            self._listening(port, f"fd:{fd}")
        for interface, udp_port in self.udp:
            port = self.reactor.listenUDP(udp_port, LayerUDP(self.context), interface=interface)
            host = port.getHost()
            self.ports.append(port)
            logger.info("Listening on udp %s:%s", host.host, host.port)
        self.reader.start()
        self.state = "RUNNING"  # NEW -> RUNNING
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        logger.info("receiving replies on %s (%s reader, layer %s)", self.router.process_channel,
                    self.reader.kind, type(self.layer).__name__)
        return self.ports

    def _listening(self, port: Any, description: str) -> None:
        self.ports.append(port)
        host = port.getHost()
        if hasattr(host, "port"):
            where = f"{host.host}:{host.port}"
        else:  # a UNIX socket: its path (bytes in Twisted's address)
            name = getattr(host, "name", None) or description
            where = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        # Tools (and the tests) read the bound address from this line.
        logger.info("Listening on %s (%s)", where, description)

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> defer.Deferred[None]:
        """Drain and stop (see the module's state table); safe to call more than once."""
        if self._drained is not None:
            return self._drained
        self._drained = defer.Deferred()
        if self.state != "RUNNING":
            self._drained.callback(None)
            return self._drained
        self.state = "DRAINING"  # RUNNING -> DRAINING
        self.context.stopping = True
        live = list(self.context.live)
        logger.info("stopping: %d request(s) and socket(s) in flight, up to %s s to finish",
                    len(live), self.config.graceful_timeout)
        for port in self.ports:
            port.stopListening()
        for item in live:
            if isinstance(item, LayerWebSocket):
                item.close_for_shutdown()
        deadline = self.reactor.seconds() + self.config.graceful_timeout
        self._wait_drained(deadline)
        return self._drained

    def _wait_drained(self, deadline: float) -> None:
        # Requests finish on their own; this checks a few times a second only
        # while stopping (an idle running server has no timer).
        # WebSockets count too: their closing handshake (1001) must reach the
        # client before the reactor drops the connections.
        remaining = list(self.context.live)
        if remaining and self.reactor.seconds() < deadline:
            self.reactor.callLater(0.1, self._wait_drained, deadline)
            return
        if remaining:
            logger.warning("graceful timeout: dropping %d unfinished request(s)", len(remaining))
            for item in remaining:
                transport = getattr(item, "transport", None)
                channel = getattr(item, "channel", None)
                if transport is None and channel is not None:
                    # HTTP/1.1: the channel's TCP transport; HTTP/2: the
                    # stream itself (it has no transport of its own).
                    transport = getattr(channel, "transport", None) or channel
                if transport is not None and hasattr(transport, "abortConnection"):
                    transport.abortConnection()
        self.reader.stop(timeout=1.0)
        self.state = "STOPPED"  # DRAINING -> STOPPED
        logger.info("stopped")
        drained, self._drained = self._drained, self._drained
        if drained is not None and not drained.called:
            drained.callback(None)
