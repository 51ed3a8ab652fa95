"""The Twisted HTTP adapter: ``twisted.web`` parses the wire, :mod:`server.http_messages` builds the messages.

Theory of operation
-------------------
:class:`LayerHTTPChannel` is Twisted's ``HTTPChannel`` with two hooks: it
keeps each request's header lines as they came (ASGI 1 wants order and
duplicates; Twisted's ``Headers`` groups by name), and it tells the request
when its head is complete, before the body arrives, so a large upload can
stream to the application instead of waiting in a temporary file.

:class:`LayerRequest` is one request's life::

    state       event                                   effect                                  next
    -----       -----                                   ------                                  ----
    HEAD        body bytes, total <= inline limit       buffer                                  HEAD
    HEAD        body bytes past the inline limit        send http.request (body_channel)        STREAMING
    HEAD        body complete                           send http.request (body inline)         WAITING
    STREAMING   body bytes                              queue chunks for the body channel       STREAMING
    STREAMING   body complete                           last chunk (more_content=False)         WAITING
    WAITING     reply with status                       write head + content                    RESPONDING or DONE
    RESPONDING  reply chunk                             write content                           RESPONDING or DONE
    any         client gone before DONE                 body chunk closed=True, http.disconnect DONE
    WAITING     http_timeout (from the end of the upload)  503                                  DONE

(STREAMING and WAITING can overlap with a response: an application may
answer before it read the whole body.) Chunks for the body channel wait in
a local queue when the channel is full ("wait and retry", www.rst); while
they do, the connection stops reading, so a slow application slows the
client down instead of filling memory.

Back-pressure and errors, as the spec says: ``http.request`` full -> 503
"Request queue full"; an application that does not answer within
``http_timeout`` -> 503; a bad request -> 400 (the reason logged, never
sent to the layer); a bad reply -> 500 if the head was not written yet,
else the connection is closed.

HTTP/2 (TLS with ALPN ``h2``) goes through Twisted's own ``H2Connection``:
the factory wraps each channel in Twisted's protocol switcher, each stream
makes a :class:`LayerRequest` (its header list kept in wire order, as for
HTTP/1.1: :func:`_keep_h2_header_order`), and pausing a body means pausing
that stream (HTTP/2 flow control) rather than the connection.

A request with ``Upgrade: websocket`` is handed, with its transport, to the
autobahn factory (:mod:`server.websocket`), which replays the handshake.
"""

from __future__ import annotations

import logging
from collections import deque
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.protocols.policies import ProtocolWrapper
from twisted.web import http
from twisted.web.http_headers import Headers
from zope.interface import implementer

from .context import ServerContext
from .headers import BadRequest, Scope, address, connection_scope
from .http_messages import (
    BadReply,
    BodyChunk,
    ResponseReader,
    body_chunks,
    body_closed,
    disconnect_message,
    request_message,
    split_target,
)
from .writes import send_now

__all__ = ["LayerHTTPChannel", "LayerHTTPFactory", "LayerRequest"]

logger = logging.getLogger(__name__)

#: Seconds between retries of a body chunk whose channel was full (doubling up to the max).
_BODY_RETRY_MIN = 0.01
_BODY_RETRY_MAX = 1.0


class _BytesNamedHeaders(Headers):
    """Response headers that take a ``str`` name as its latin-1 bytes before Twisted's lookup.

    Twisted's ``Request.write`` sets ``"Transfer-Encoding"`` by a ``str``
    name, and its global name cache is keyed by both ``str`` and ``bytes``
    names, which hash alike: the lookup then compares bytes with str, a
    ``BytesWarning`` that ``python -bb`` (how the tests run) turns into an
    error in the middle of a streamed response.
    """

    def setRawHeaders(self, name: str | bytes, values: Any) -> None:
        if isinstance(name, str):
            name = name.encode("iso-8859-1")
        super().setRawHeaders(name, values)


class LayerRequest(http.Request):
    """One HTTP request carried over the channel layer (see the module's state table)."""

    # No Content-Type of Twisted's choosing: the application sets its own.
    defaultContentType = None

    def __init__(self, channel: LayerHTTPChannel, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        self.responseHeaders = _BytesNamedHeaders()
        # HTTP/1.1: our channel carries the context; HTTP/2: the stream's
        # factory is ours (H2Connection passes it down).
        context = getattr(channel, "context", None) or channel.factory.context
        self.context: ServerContext = context
        self.raw_headers: list[tuple[bytes, bytes]] = []
        if not isinstance(channel, LayerHTTPChannel):
            _keep_h2_header_order(channel, self)
        self.state = "HEAD"
        self.head: tuple[bytes, bytes, bytes] | None = None
        self.body = bytearray()
        self.reply_channel: str | None = None
        self.body_channel: str | None = None
        self.body_queue: deque[dict[str, Any]] = deque()
        self.body_complete = False
        self.paused = False
        self.finish_when_read = False
        self.retry_delay = _BODY_RETRY_MIN
        self.retry_call: Any = None
        self.timeout_call: Any = None
        self.reader = ResponseReader()
        self.message_path = ""
        self.query_string = b""
        self.client_addr: list[object] | None = None
        self.sent_bytes = 0
        self.websocket = False

    # -- head and body, fed by the channel ---------------------------------

    def headers_complete(self, command: bytes, path: bytes, version: bytes) -> None:
        self.head = (command, path, version)
        # Twisted sets these only in requestReceived, after the body; a
        # response written before then (an early answer to a long upload, a
        # 503 or 400 of ours) needs them for its status line.
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        upgrade = self.requestHeaders.getRawHeaders(b"upgrade") or []
        self.websocket = any(value.lower() == b"websocket" for value in upgrade)

    def gotLength(self, length: int | None) -> None:
        # The body never goes to Twisted's temporary file: handleContentChunk
        # passes it on. requestReceived still expects a file to rewind.
        self.content = BytesIO()
        if self.head is None and not isinstance(self.channel, LayerHTTPChannel):
            # HTTP/2: the stream parsed :method and :path (pseudo-headers come
            # first) before the regular headers that lead here.
            command, path = getattr(self.channel, "command", None), getattr(self.channel, "path", None)
            if command is not None and path is not None:
                self.head = (command, path, b"HTTP/2")
                self.method, self.uri, self.clientproto = command, path, b"HTTP/2"

    def handleContentChunk(self, data: bytes) -> None:
        if self.state == "DONE" or self.websocket:
            return
        if self.state == "HEAD":
            self.body += data
            # Without a head yet (HTTP/2 streams) the body waits for requestReceived.
            if self.head is not None and len(self.body) > self.context.config.request_body_inline:
                self._send_request(streaming=True)
        else:
            self.body_queue.extend(body_chunks(data, self.context.config.body_chunk_size, more_after=True))
            self._flush_body()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # Twisted's own version parses form bodies and calls process(); none
        # of that applies here (the application gets the raw body).
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        self.args = {}
        self.body_complete = True
        if self.state == "DONE":
            # Answered before the upload ended: the rest of the body was read
            # and dropped; now the connection may serve its next request.
            if self.finish_when_read and not self.finished and not self._disconnected:
                self.finish()
            return
        if self.content is not None:
            self.content.seek(0, 0)
        if self.head is None:  # HTTP/2 streams have no allHeadersReceived hook
            self.head = (command, path, version)
        if self.websocket:
            self._upgrade()
        elif self.state == "HEAD":
            self._send_request(streaming=False)
        elif self.state == "STREAMING":
            self.body_queue.append({"content": b"", "closed": False, "more_content": False})
            self.state = "WAITING"  # STREAMING -> WAITING
            self._start_timeout()
            self._flush_body()

    # -- the request message -----------------------------------------------

    def _scope(self) -> Scope:
        """Headers, client, scheme and root path of this request (see :func:`connection_scope`)."""
        config = self.context.config
        raw = self.raw_headers
        if not raw and not isinstance(self.channel, LayerHTTPChannel):
            # An HTTP/2 stream whose header list could not be kept (see
            # _keep_h2_header_order): Twisted's Headers, grouped by name.
            raw = [(name, value) for name, values in self.requestHeaders.getAllRawHeaders() for value in values]
        scope = connection_scope(raw, address(self.getClientAddress()), "https" if self.isSecure() else "http",
                                 proxy_headers=config.proxy_headers, root_path=config.root_path)
        if scope.dropped:
            logger.debug("dropped request headers with '_' in the name: %r", scope.dropped)
        for problem in scope.problems:
            logger.warning("ignored a proxy header from %s: %s", scope.client, problem)
        return scope

    def _send_request(self, streaming: bool) -> None:
        context = self.context
        config = context.config
        layer = context.layer
        command, target, version = self.head or (self.method, self.uri, self.clientproto)
        if context.stopping:
            self._fail(503, b"Server is shutting down")
            return
        try:
            scope = self._scope()
            raw_path, self.query_string = split_target(target)
            self.client_addr = scope.client
            http_version = version.split(b"/", 1)[-1].decode("ascii", "replace")
            self.reply_channel = context.router.register(self)
            if streaming:
                self.body_channel = layer.new_channel("http.request.body?")
                inline = bytes(self.body[: config.request_body_inline])
                rest = bytes(self.body[config.request_body_inline :])
            else:
                inline, rest = bytes(self.body), b""
            self.body = bytearray()
            message = request_message(
                reply_channel=self.reply_channel, http_version=http_version, method=command, target=target,
                headers=scope.headers, client=scope.client, server=address(self.getHost()),
                scheme=scope.scheme, root_path=scope.root_path, body=inline, body_channel=self.body_channel,
            )
            self.message_path = message["path"]
        except BadRequest as exc:
            logger.info("400 for %s: %s", address(self.getClientAddress()), exc)
            self._fail(exc.status, str(exc).encode("utf-8", "replace")[:200])
            return
        # HEAD -> STREAMING or HEAD -> WAITING, and live, BEFORE the send: a
        # layer may deliver the reply while send() runs (an in-process one),
        # and that reply must find the request in its final state.
        self.state = "STREAMING" if streaming else "WAITING"
        context.live.add(self)
        try:
            layer.send("http.request", message)
        except layer.ChannelFull:
            logger.warning("http.request is full: 503 for %s %s", message["method"], message["path"])
            self._fail(503, b"Request queue full")
            return
        except layer.MessageTooLarge as exc:
            logger.warning("request too large for the layer: 413 for %s: %s", message["path"], exc)
            self._fail(413, b"Request head too large")
            return
        except Exception as exc:  # the layer itself failed (a Redis layer with its server down)
            logger.error("the channel layer failed to take http.request (%s: %s): 503 for %s %s",
                         type(exc).__name__, exc, message["method"], message["path"])
            self._fail(503, b"Channel layer unavailable")
            return
        if self.state == "DONE":  # answered during the send
            return
        if streaming:
            if rest:
                self.body_queue.extend(body_chunks(rest, config.body_chunk_size, more_after=True))
            self._flush_body()
        else:
            self._start_timeout()

    def _reading(self) -> Any:
        """What to pause to stop reading this request's body: the TCP
        transport (HTTP/1.1) or the stream itself (HTTP/2 flow control, so
        the connection's other streams go on)."""
        return self.channel.transport if isinstance(self.channel, LayerHTTPChannel) else self.channel

    def _start_timeout(self) -> None:
        """``http_timeout`` runs from the end of the upload: an application
        cannot be expected to answer a request it has not fully received, so
        a slow 10 MiB upload is not a slow application."""
        if self.timeout_call is None and self.state != "DONE":
            self.timeout_call = self.context.reactor.callLater(self.context.config.http_timeout, self._timed_out)

    def _flush_body(self) -> None:
        """Send queued body chunks; on a full body channel, stop reading and retry later."""
        if self.retry_call is not None and self.retry_call.active():
            return  # a retry is scheduled: the chunk waits in the queue, in order
        self.retry_call = None
        layer = self.context.layer
        while self.body_queue and self.body_channel is not None and self.state != "DONE":
            try:
                layer.send(self.body_channel, self.body_queue[0])
            except Exception as exc:
                # Full (the application reads slower than the client sends) or the layer is
                # down (ShardDown from a Redis layer): either way the chunk waits, reading
                # stops and a retry comes; the application's own timeout bounds the wait.
                if not isinstance(exc, layer.ChannelFull) and self.retry_delay == _BODY_RETRY_MIN:
                    logger.warning("the channel layer failed to take a body chunk of %s (%s: %s); retrying",
                                   self.body_channel, type(exc).__name__, exc)
                if not self.paused and not self.body_complete:
                    self.paused = True
                    self._reading().pauseProducing()
                self.retry_call = self.context.reactor.callLater(self.retry_delay, self._flush_body)
                self.retry_delay = min(self.retry_delay * 2, _BODY_RETRY_MAX)
                return
            self.body_queue.popleft()
            self.retry_delay = _BODY_RETRY_MIN
        if self.paused and not self.body_complete:
            self.paused = False
            self._reading().resumeProducing()

    # -- replies --------------------------------------------------------------

    def handle_reply(self, message: dict[str, Any]) -> None:
        if self.state == "DONE":
            return
        try:
            part = self.reader.feed(message)
        except BadReply as exc:
            logger.error("bad http.response for %s: %s", self.message_path, exc)
            if not self.startedWriting:
                self._fail(500, b"Application sent a bad response")
            else:
                self._done()
                self.channel.loseConnection()
            return
        if isinstance(part, BodyChunk):
            self._write(part.content)
            more = part.more_content
        else:
            self.setResponseCode(part.status)
            names = set()
            for name, value in part.headers:
                self.responseHeaders.addRawHeader(name, value)
                names.add(name.lower())
            if self.context.config.server_name and b"server" not in names:
                self.responseHeaders.setRawHeaders(b"server", [self.context.config.server_name.encode("latin-1")])
            bodyless = part.status < 200 or part.status in (204, 304)  # RFC 9110 8.6: no Content-Length
            if (not part.more_content and not bodyless and b"content-length" not in names
                    and b"transfer-encoding" not in names):
                # One message: say its length, so keep-alive needs no chunking.
                self.responseHeaders.setRawHeaders(b"content-length", [str(len(part.content)).encode()])
            if self.timeout_call is not None and self.timeout_call.active():
                self.timeout_call.cancel()  # the application answered: no 503 any more
            self._write(part.content)
            more = part.more_content
        # Twisted's finish() lets go of the channel: take its transport first.
        transport = self.channel.transport if isinstance(self.channel, LayerHTTPChannel) else None
        if not more:
            self._finish_response()
        if transport is not None:
            send_now(transport)  # the reply's bytes leave now, not on the reactor's next turn (server.writes)

    def _write(self, data: bytes) -> None:
        if data:
            self.sent_bytes += len(data)
            self.write(data)
        elif not self.startedWriting:
            self.write(b"")  # the head goes out now: a streamed response starts at once

    def _finish(self) -> None:
        """Twisted's finish(), once the request's body has been read.

        Finishing earlier makes Twisted parse the rest of the upload as the
        next request (a stray 400, a closed keep-alive connection); until
        then the body is read and dropped (the request is DONE).
        """
        if self.body_complete or self.websocket:
            self.finish()
        else:
            self.finish_when_read = True

    def _finish_response(self) -> None:
        status = self.code
        self._done()
        self._finish()
        self.context.access.http(self.client_addr, self.method.decode("latin-1"), self.message_path,
                                 self.query_string, status, self.sent_bytes)

    def _fail(self, status: int, body: bytes) -> None:
        """Answer ``status`` with a short text body, unless something was written already."""
        self._done()
        if self.finished or self._disconnected:
            return
        self.setResponseCode(status)
        self.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
        self.responseHeaders.setRawHeaders(b"content-length", [str(len(body)).encode()])
        if self.context.config.server_name:
            self.responseHeaders.setRawHeaders(b"server", [self.context.config.server_name.encode("latin-1")])
        self.write(body)
        self._finish()

    def _timed_out(self) -> None:
        self.timeout_call = None
        if self.state == "DONE":
            return
        logger.warning("no response within %s s for %s: 503", self.context.config.http_timeout, self.message_path)
        if self.startedWriting:
            self._done()
            self.channel.loseConnection()
        else:
            self._fail(503, b"Worker server failed to respond within time limit")

    def _done(self) -> None:
        """Forget this request everywhere (any state -> DONE)."""
        self.state = "DONE"
        self.body_queue.clear()
        if self.reply_channel is not None:
            self.context.router.unregister(self.reply_channel)
        self.context.live.discard(self)
        for call in (self.timeout_call, self.retry_call):
            if call is not None and call.active():
                call.cancel()
        self.timeout_call = self.retry_call = None
        if self.paused:
            self.paused = False
            self._reading().resumeProducing()

    def connectionLost(self, reason: Any) -> None:
        if self.state not in ("DONE", "HEAD") and self.reply_channel is not None:
            layer = self.context.layer
            if self.body_channel is not None and not self.body_complete:
                try:
                    layer.send(self.body_channel, body_closed())
                except Exception as exc:  # a full channel: the application times out on its own
                    logger.debug("could not tell %s the client left: %s", self.body_channel, exc)
            try:
                layer.send("http.disconnect", disconnect_message(self.reply_channel, self.message_path))
            except layer.ChannelFull:
                logger.debug("http.disconnect is full; dropped the disconnect of %s", self.reply_channel)
            except Exception as exc:  # the layer is down: the application's timeout cleans up
                logger.warning("dropped the http.disconnect of %s: %s: %s", self.reply_channel,
                               type(exc).__name__, exc)
        self._done()
        super().connectionLost(reason)

    # -- WebSocket upgrade ----------------------------------------------------------

    def _upgrade(self) -> None:
        context = self.context
        if context.ws_factory is None or context.stopping:
            self._fail(503, b"WebSockets are not served now")
            return
        # Twisted's transports are zope interfaces, which plain mypy misreads.
        transport: Any = self.transport
        protocol = context.ws_factory.buildProtocol(transport.getPeer())
        if protocol is None:
            self._fail(500, b"Could not make the WebSocket protocol")
            return
        protocol.raw_headers = list(self.raw_headers)
        protocol.is_secure = self.isSecure()
        # Port the transport across (TLS wraps the protocol: swap the wrapped one).
        self.transport = None
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        command, target, _ = self.head or (self.method, self.uri, b"HTTP/1.1")
        data = command + b" " + target + b" HTTP/1.1\r\n"
        for name, value in self.raw_headers:
            data += name + b": " + value + b"\r\n"
        protocol.dataReceived(data + b"\r\n")
        self.state = "DONE"
        # The channel paused reading while this request was "in progress";
        # the socket is autobahn's now, so let the bytes flow again (unless
        # autobahn already refused the handshake and is closing it).
        if not getattr(transport, "disconnecting", False):
            producer: Any = self.channel._networkProducer
            producer.resumeProducing()


def _keep_h2_header_order(stream: Any, request: LayerRequest) -> None:
    """Keep an HTTP/2 request's header list as it came, as ``headerReceived`` does for HTTP/1.1.

    Twisted's ``H2Stream`` makes its request, then converts the h2
    ``RequestReceived`` event's header list (wire order, duplicates apart)
    into the request's ``Headers``, which groups values by name: the order
    of interleaved names is gone by the time the request sees them, and
    Twisted keeps neither the event nor the list. ASGI 1 wants that order,
    so the stream's conversion is wrapped, for this one stream, to copy the
    list first (``_convertHeaders`` is Twisted's; ``tests/unit/server/
    test_http.py`` pins it). Pseudo-headers are left out, but
    ``:authority`` becomes ``host`` where it stood, as Twisted's own
    conversion adds it. Without the hook (another Twisted), the request
    falls back to the grouped ``Headers``.
    """
    convert = getattr(stream, "_convertHeaders", None)
    if convert is None:
        return

    def convert_keeping_order(headers: list[tuple[bytes, bytes]]) -> None:
        del stream._convertHeaders  # once: back to the class's method
        request.raw_headers = [(b"host" if name == b":authority" else name, value) for name, value in headers
                               if not name.startswith(b":") or name == b":authority"]
        convert(headers)

    stream._convertHeaders = convert_keeping_order


class LayerHTTPChannel(http.HTTPChannel):
    """``HTTPChannel`` that keeps raw header lines and announces a request's complete head."""

    context: ServerContext
    # A connection's own address and its TLS-ness never change, but Twisted
    # asks for every request: the socket (getsockname, a syscall) and a zope
    # adaptation (ISSLTransport) that fails for plain TCP, together ~5 us of
    # each keep-alive request. Kept once the transport is there.
    _host: Any = None
    _secure: bool | None = None

    def getHost(self) -> Any:
        if self._host is None:
            host = super().getHost()
            if self.transport is not None:
                self._host = host
            return host
        return self._host

    def isSecure(self) -> bool:
        if self._secure is None and self.transport is not None:
            self._secure = bool(super().isSecure())
        return bool(self._secure)

    def connectionMade(self) -> None:
        super().connectionMade()
        # Nagle's algorithm holds a response's last small segment until the
        # client ACKs the previous one, and clients delay their ACKs: on a
        # keep-alive connection that adds milliseconds to every response.
        # asyncio servers (uvicorn) turn it off too.
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            try:
                set_nodelay(True)
            except OSError:  # not a TCP socket after all (a UNIX socket behind a wrapper)
                pass

    def headerReceived(self, line: bytes) -> bool:
        if not super().headerReceived(line):
            return False
        name, value = line.split(b":", 1)
        self.requests[-1].raw_headers.append((name.strip(), value.strip(b" \t")))
        return True

    def allHeadersReceived(self) -> None:
        # _command/_path/_version are Twisted's own parse of the request line
        # (there is no public accessor before the body arrives);
        # tests/unit/server/test_http.py pins the behaviour.
        self.requests[-1].headers_complete(self._command, self._path, self._version)
        super().allHeadersReceived()


@implementer(IProtocolNegotiationFactory)
class LayerHTTPFactory(http.HTTPFactory):
    """Builds :class:`LayerHTTPChannel` protocols sharing one :class:`ServerContext`."""

    def __init__(self, context: ServerContext, **kwargs: Any) -> None:
        super().__init__(reactor=context.reactor, **kwargs)
        self.context = context

    def buildProtocol(self, addr: Any) -> Any:
        channel = LayerHTTPChannel()
        channel.context = self.context
        # Twisted's wrapper switches to its HTTP/2 connection when TLS
        # negotiates h2 (ALPN), handing it the factory and request factory
        # set here; over plain TCP it is HTTP/1.1 throughout.
        protocol = http._GenericHTTPChannelProtocol(channel)
        protocol.factory = self
        protocol.requestFactory = LayerRequest
        # As HTTPFactory does: idle-connection timeouts on our reactor.
        protocol.callLater = self.reactor.callLater
        protocol.timeOut = self.timeOut
        return protocol

    # Twisted's factory logs every request to its own log and refreshes a
    # date string with a 1 s timer loop; the access log (server.access)
    # replaces both, so an idle server has no timer running.
    def startFactory(self) -> None:
        pass

    def stopFactory(self) -> None:
        pass

    def log(self, request: Any) -> None:
        pass

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN: HTTP/2 first when Twisted has it (the ``http2`` extra), then HTTP/1.1.
        WebSockets cannot be negotiated by ALPN: they upgrade an HTTP/1.1 request."""
        return [b"h2", b"http/1.1"] if http.H2_ENABLED else [b"http/1.1"]
