"""The autobahn WebSocket adapter: frames in, ``websocket.*`` messages out, replies through :mod:`server.ws_messages`.

Theory of operation
-------------------
The HTTP adapter hands an ``Upgrade: websocket`` request's transport to
:class:`LayerWebSocketFactory`'s protocol and replays the request head;
autobahn parses the handshake and calls :meth:`LayerWebSocket.onConnect`,
which sends ``websocket.connect`` (``order`` 0) and returns a Deferred: the
handshake is *held* until the application answers (www.rst). The answer
arrives as a reply and goes through :class:`server.ws_messages.ReplyReader`
(its state table is the socket's)::

    CONNECTING --accept / data--> OPEN --close / client close--> CLOSED
    CONNECTING --reject / close / connect timeout--> CLOSED (403)

Frames become ``websocket.receive`` (``order`` 1, 2, ...); the close
becomes ``websocket.disconnect`` with the code (1006 when the client
vanished without one), ordered after the last frame.

Back-pressure as the spec says: ``websocket.connect`` full -> 503 on the
handshake; ``websocket.receive`` full -> close 1013 ("try again later") and
the socket is muted (no more frames are sent on); ``websocket.disconnect``
full -> dropped. A message too large for the layer -> close 1009.
"""

from __future__ import annotations

import logging
from typing import Any

from autobahn.twisted.websocket import ConnectionDeny, WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer

from .context import ServerContext
from .headers import BadRequest, address, connection_scope, decode_path
from .http_messages import split_target
from .writes import send_now
from .ws_messages import (
    Accept,
    BadReply,
    Close,
    OrderCounter,
    Reject,
    ReplyReader,
    Send,
    connect_message,
    disconnect_message,
    receive_message,
    select_subprotocol,
)

__all__ = ["LayerWebSocket", "LayerWebSocketFactory"]

logger = logging.getLogger(__name__)

#: The close code when the client went away without one (RFC 6455 7.1.5).
ABNORMAL = 1006


class LayerWebSocket(WebSocketServerProtocol):
    """One WebSocket carried over the channel layer."""

    factory: LayerWebSocketFactory
    #: Set by the HTTP adapter before the handshake is replayed.
    raw_headers: list[tuple[bytes, bytes]] = []  # noqa: RUF012 (replaced per instance)
    is_secure = False

    def __init__(self) -> None:
        super().__init__()
        self.reply_channel: str | None = None
        self.path = ""
        self.client_addr: list[object] | None = None
        self.order = OrderCounter()
        self.reader = ReplyReader()
        self.handshake: defer.Deferred[Any] | None = None
        self.offered: list[str] = []
        self.muted = False
        self.connect_sent = False
        self.disconnect_sent = False
        self.connect_call: Any = None
        self.lifetime_call: Any = None

    @property
    def context(self) -> ServerContext:
        return self.factory.context

    # -- handshake ------------------------------------------------------------

    # autobahn takes a Deferred from onConnect (it holds the handshake until
    # it fires); its type hints only list the immediate answers.
    def onConnect(self, request: Any) -> defer.Deferred[Any]:  # type: ignore[override]
        context = self.context
        config = context.config
        layer = context.layer
        if context.stopping:
            raise ConnectionDeny(503, "Server is shutting down")
        raw = self.raw_headers or [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
        transport: Any = self.transport  # a zope interface, which plain mypy misreads
        try:
            scope = connection_scope(raw, address(transport.getPeer()), "wss" if self.is_secure else "ws",
                                     proxy_headers=config.proxy_headers, root_path=config.root_path)
            # autobahn's raw request-target (path and query as the client sent them)
            raw_path, query = split_target(self.http_request_uri.encode("latin-1"))
            self.path = decode_path(raw_path)
        except BadRequest as exc:
            logger.info("WebSocket handshake refused with 400: %s", exc)
            raise ConnectionDeny(400, str(exc)[:200]) from None
        for problem in scope.problems:
            logger.warning("ignored a proxy header from %s: %s", scope.client, problem)
        self.client_addr = scope.client
        self.offered = list(request.protocols)
        self.reply_channel = context.router.register(self)
        message = connect_message(
            reply_channel=self.reply_channel, path=self.path, query_string=query, headers=scope.headers,
            client=scope.client, server=address(transport.getHost()), scheme=scope.scheme,
            root_path=scope.root_path, order=self.order.take(),
        )
        try:
            layer.send("websocket.connect", message)
        except (layer.ChannelFull, layer.MessageTooLarge) as exc:
            context.router.unregister(self.reply_channel)
            self.reply_channel = None
            logger.warning("websocket.connect refused (%s): 503 for %s", type(exc).__name__, self.path)
            raise ConnectionDeny(503, "Connection queue full") from None
        except Exception as exc:  # the layer itself failed (a Redis layer with its server down)
            context.router.unregister(self.reply_channel)
            self.reply_channel = None
            logger.error("the channel layer failed to take websocket.connect (%s: %s): 503 for %s",
                         type(exc).__name__, exc, self.path)
            raise ConnectionDeny(503, "Channel layer unavailable") from None
        self.connect_sent = True
        context.live.add(self)
        context.access.websocket(scope.client, "WSCONNECTING", self.path)
        self.connect_call = context.reactor.callLater(config.websocket_connect_timeout, self._connect_timed_out)
        self.handshake = defer.Deferred()
        return self.handshake

    def _connect_timed_out(self) -> None:
        self.connect_call = None
        if self.handshake is not None:
            logger.info("WebSocket %s not accepted within %s s: 403", self.path,
                        self.context.config.websocket_connect_timeout)
            self._reject()

    def _accept(self) -> None:
        handshake, self.handshake = self.handshake, None
        if self.connect_call is not None and self.connect_call.active():
            self.connect_call.cancel()
        self.connect_call = None
        if handshake is not None:
            handshake.callback(select_subprotocol(self.offered, self.context.config.ws_protocols))

    def _reject(self) -> None:
        self.context.access.websocket(self.client_addr, "WSREJECT", self.path)
        self._deny(403, "Access denied")

    def _deny(self, status: int, reason: str) -> None:
        """Refuse the held handshake with HTTP ``status``; no more replies or timers for it."""
        handshake, self.handshake = self.handshake, None
        self._forget()
        if handshake is not None:
            handshake.errback(ConnectionDeny(status, reason))

    def onOpen(self) -> None:
        context = self.context
        context.access.websocket(self.client_addr, "WSCONNECT", self.path)
        timeout = context.config.websocket_timeout
        if timeout is None:
            timeout = getattr(context.layer, "group_expiry", 86400)
        self.lifetime_call = context.reactor.callLater(timeout, self._lifetime_over)

    def _lifetime_over(self) -> None:
        self.lifetime_call = None
        logger.info("WebSocket %s reached its timeout; closing", self.path)
        self._close(1000)

    # -- frames and close from the client ------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.muted or self.reply_channel is None:
            return
        layer = self.context.layer
        data: str | bytes = payload if isBinary else payload.decode("utf-8")
        try:
            layer.send("websocket.receive", receive_message(self.reply_channel, self.path, self.order.take(), data))
        except layer.ChannelFull:
            logger.warning("websocket.receive is full: closing %s with 1013", self.path)
            self.muted = True
            self._close(1013)
        except layer.MessageTooLarge:
            logger.warning("frame too large for the layer: closing %s with 1009", self.path)
            self.muted = True
            self._close(1009)
        except Exception as exc:  # the layer is down: this frame is lost, so the socket goes
            logger.error("the channel layer failed to take websocket.receive (%s: %s): closing %s with 1011",
                         type(exc).__name__, exc, self.path)
            self.muted = True
            self._close(1011)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.handshake is not None:  # the client left during the handshake
            handshake, self.handshake = self.handshake, None
            handshake.addErrback(lambda _: None)
            handshake.errback(ConnectionDeny(400, "client went away"))
        if self.connect_sent and not self.disconnect_sent and self.reply_channel is not None:
            # Also after a refused or timed-out handshake: the application
            # saw websocket.connect (and may have added the socket to groups).
            self.disconnect_sent = True
            layer = self.context.layer
            message = disconnect_message(self.reply_channel, self.path, self.order.take(), code or ABNORMAL)
            try:
                layer.send("websocket.disconnect", message)
            except layer.ChannelFull:
                logger.debug("websocket.disconnect is full; dropped the disconnect of %s", self.reply_channel)
            except Exception as exc:  # the layer is down; group membership expires on its own
                logger.warning("dropped the websocket.disconnect of %s: %s: %s", self.reply_channel,
                               type(exc).__name__, exc)
            self.context.access.websocket(self.client_addr, "WSDISCONNECT", self.path)
        self._forget()

    def _forget(self) -> None:
        """Stop taking replies and timers; the name stays for the websocket.disconnect to come."""
        if self.reply_channel is not None:
            self.context.router.unregister(self.reply_channel)
        self.reader.state = "CLOSED"  # replies still in flight are dropped quietly
        self.context.live.discard(self)
        for call in (self.connect_call, self.lifetime_call):
            if call is not None and call.active():
                call.cancel()
        self.connect_call = self.lifetime_call = None

    # -- replies from the application -----------------------------------------------

    def handle_reply(self, message: dict[str, Any]) -> None:
        try:
            actions = self.reader.feed(message)
        except BadReply as exc:
            logger.error("bad websocket.send for %s: %s", self.path, exc)
            if self.handshake is not None:
                self._deny(500, "Application sent a bad reply")
            else:
                self._close(1011)
            return
        for action in actions:
            if isinstance(action, Accept):
                self._accept()
            elif isinstance(action, Reject):
                self._reject()
            elif isinstance(action, Send):
                if self.state != self.STATE_OPEN:
                    continue  # closing already (our 1013/1009/1001/timeout): a late reply, dropped
                if action.text is not None:
                    self.sendMessage(action.text.encode("utf-8"), False)
                elif action.data is not None:
                    self.sendMessage(action.data, True)
            elif isinstance(action, Close):
                self._close(action.code)
        send_now(self.transport)  # the frames leave now, not on the reactor's next turn (server.writes)

    def _close(self, code: int) -> None:
        """Start the closing handshake with ``code``.

        autobahn's ``sendClose`` takes only the codes an *application* may
        choose (1000, 3000-4999); the server itself must also send 1001
        (going away), 1009 (too big), 1011 (internal error) and 1013 (try
        again later), which its lower-level ``sendCloseFrame`` writes.
        """
        self.reader.state = "CLOSED"  # replies racing the close are dropped quietly
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code)
        elif self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, isReply=False)

    def close_for_shutdown(self) -> None:
        """Graceful stop: 1001 "going away" (or 503 while still in the handshake)."""
        if self.handshake is not None:
            self._deny(503, "Server is shutting down")
        else:
            self._close(1001)


class LayerWebSocketFactory(WebSocketServerFactory):
    """Builds :class:`LayerWebSocket` protocols sharing one :class:`ServerContext`."""

    protocol = LayerWebSocket  # type: ignore[assignment]  # autobahn's factory builds it

    def __init__(self, context: ServerContext) -> None:
        super().__init__(server=context.config.server_name or None, reactor=context.reactor)
        self.context = context
        config = context.config
        self.setProtocolOptions(
            autoPingInterval=config.ping_interval,
            autoPingTimeout=config.ping_timeout,
            maxMessagePayloadSize=config.websocket_max_message_size,
            maxFramePayloadSize=config.websocket_max_message_size,
            # The application holds the handshake (connect timeout above);
            # autobahn's own opening timeout must not cut it shorter.
            openHandshakeTimeout=config.websocket_connect_timeout + 5,
        )
