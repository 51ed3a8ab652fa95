"""The default HTTP consumer: ``http.request`` -> Django's full request handling -> ``http.response``.

Theory of operation
-------------------
:data:`view_consumer` (a :class:`ViewConsumer`) is what ``worker.routing`` routes
every ``http.request`` to that no user route claimed. Called as
``consumer(message, **kwargs)`` with a ``worker.message.Message``, it serves one
request from start to end, in the worker's own thread::

    1. parse    the message, checked by worker.http_request.parse_request;
                bad -> logged naming the key, 400 if there is a reply channel
    2. body     inline body, then the body channel's chunks (one blocking receive
                at a time on that channel only) into a spooled file
                (worker.http_body); closed -> no reply at all; stalled past
                body_timeout -> 408; a bad chunk -> 400
    3. request  a WorkerRequest (an HttpRequest with WSGI-style META,
                worker.http_request.build_meta) and set_script_prefix(SCRIPT_NAME)
    4. handle   Django's BaseHandler.get_response: middleware, URLconf, views,
                exceptions -> 404/500 (DEBUG pages included), the request logged
                on django.request as under WSGI
    5. reply    worker.http_response cuts the response to the layer's
                max_message_size; a streaming response (StreamingHttpResponse,
                FileResponse) is sent part by part as it is produced; each
                message is sent with a bounded back-off on ChannelFull
                (reply_timeout in all), after which the rest is dropped and logged
    6. close    the response's resources (files, the request's uploads, the
                spooled body), without Django's request_finished signal

Signals: the worker loop (``worker.loop``) sends ``request_started`` and
``request_finished`` (and ``close_old_connections`` with them) once around every
message it dispatches, whatever the consumer. This consumer therefore sends
neither: Django's ``HttpResponse.close()`` would send ``request_finished`` a second
time, so the response's resource closers are run directly (:func:`close_response`).

Nothing here raises into the worker loop for a bad message or a failing view: the
view's exceptions become Django's 500, ours are logged with the request's channel
and answered 500 while no byte of the response has been sent.

A stream whose iterator raises after the head went out is logged and ended with an
empty last chunk: ASGI 1 has no way to abort a response, so the client sees a short
body (which a ``Content-Length`` lets it detect).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import IO, Any

from django import http as django_http
from django.conf import settings
from django.core.handlers import base
from django.urls import set_script_prefix
from django.utils.functional import cached_property

from ipc_layer import ChannelFull
from ipc_layer import options as layer_options

from .exceptions import ResponseLater
from .http_body import BodyAborted, BodyAssembler, BodyTimeout
from .http_request import BadMessage, RequestHead, build_meta, parse_request, reply_channel_of
from .http_response import HeadTooLarge, chunk_room, plain_messages, response_headers, streaming_messages

__all__ = ["AnswerLater", "ViewConsumer", "WorkerHandler", "WorkerRequest", "close_response", "view_consumer"]

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("django.request")

_TEXT = [b"Content-Type", b"text/plain; charset=utf-8"]


def script_name_for(head: RequestHead) -> str:
    """``SCRIPT_NAME``: ``settings.FORCE_SCRIPT_NAME`` if set (as Django does), else ``root_path``."""
    forced = getattr(settings, "FORCE_SCRIPT_NAME", None)
    if forced is not None:
        return str(forced).rstrip("/")
    return head.root_path


class WorkerRequest(django_http.HttpRequest):
    """A Django request made from an ``http.request`` message (``META`` as under WSGI).

    Also carries ``message`` (the ``worker.message.Message``) and ``reply_channel``,
    as Channels 1.x's ``AsgiRequest`` did, for code that answers later or elsewhere.
    """

    def __init__(self, head: RequestHead, body: IO[bytes], body_length: int, message: Any = None) -> None:
        self.message = message
        self.reply_channel = getattr(message, "reply_channel", None)
        self.head = head
        script_name = script_name_for(head)
        meta, dropped = build_meta(head, script_name=script_name, body_length=body_length, body_file=body)
        if dropped:
            logger.debug("request %s %s: dropped headers with '_' in the name: %r", head.method, head.path, dropped)
        self.META = meta
        # WSGI-minded code (and Django's own test tooling) reads request.environ.
        self.environ = meta
        self.path_info = meta["PATH_INFO"]
        self.script_name = meta["SCRIPT_NAME"]
        # As WSGIRequest: SCRIPT_NAME + PATH_INFO, replacing only the first slash.
        self.path = "{}/{}".format(self.script_name.rstrip("/"), self.path_info.replace("/", "", 1))
        self.method = head.method
        self._set_content_type_params(meta)
        self._stream = body
        self._read_started = False
        self.resolver_match = None

    def _get_scheme(self) -> str:
        return self.head.scheme

    @cached_property
    def GET(self) -> django_http.QueryDict:  # noqa: N802 (Django's name)
        return django_http.QueryDict(self.head.query_string, encoding=self._encoding)

    def _get_post(self) -> django_http.QueryDict:
        if not hasattr(self, "_post"):
            self._load_post_and_files()
        return self._post

    def _set_post(self, post: django_http.QueryDict) -> None:
        self._post = post

    @cached_property
    def COOKIES(self) -> dict[str, str]:  # noqa: N802 (Django's name)
        raw = self.META.get("HTTP_COOKIE", "").encode("latin-1").decode("utf-8", errors="replace")
        return django_http.parse_cookie(raw)

    @property
    def FILES(self) -> Any:  # noqa: N802 (Django's name)
        if not hasattr(self, "_files"):
            self._load_post_and_files()
        return self._files

    POST = property(_get_post, _set_post)

    def close(self) -> None:
        super().close()
        self._stream.close()


class WorkerHandler(base.BaseHandler):
    """Django's request handling (middleware chain, URLconf, exception responses), synchronous."""

    request_class = WorkerRequest

    def __init__(self) -> None:
        super().__init__()
        self.load_middleware()

    def process_exception_by_middleware(self, exception: Exception, request: Any) -> Any:
        # A view raising ResponseLater (long-poll) has handed its reply channel to another
        # consumer: a marker response passes through the middleware and is never sent.
        if isinstance(exception, ResponseLater):
            return AnswerLater()
        return super().process_exception_by_middleware(exception, request)

    def handle_uncaught_exception(self, request: Any, resolver: Any, exc_info: Any) -> Any:
        """Django's 500 (DEBUG page or handler500); if that fails too, a plain-text 500.

        There is no WSGI server above to catch what escapes, as in Django's ASGI handler.
        """
        try:
            return super().handle_uncaught_exception(request, resolver, exc_info)
        except Exception:
            return django_http.HttpResponseServerError(
                traceback.format_exc() if settings.DEBUG else "Internal Server Error",
                content_type="text/plain",
            )


class AnswerLater(django_http.HttpResponse):
    """What a view that raised ``worker.exceptions.ResponseLater`` returns: nothing is sent for it."""


def close_response(response: Any) -> None:
    """Run a response's resource closers as ``HttpResponse.close()`` does, without ``request_finished``.

    The worker loop sends ``request_finished`` once per message (see the module doc).
    """
    closers = getattr(response, "_resource_closers", None)
    if closers is None:  # pragma: no cover - a Django without the attribute (before 3.0)
        response.close()
        return
    for closer in list(closers):
        try:
            closer()
        except Exception:
            logger.exception("closing the response %r failed", response)
    closers.clear()
    response.closed = True


def _simple(status: int, text: str) -> dict[str, Any]:
    return {"status": status, "headers": [list(_TEXT)], "content": text.encode("utf-8"), "more_content": False}


class ViewConsumer:
    """Serves ``http.request`` messages through Django's views (see the module doc).

    ``body_timeout``: seconds a request body may stall between two chunks before the
    request gets 408. ``reply_timeout``: seconds one reply message keeps being
    retried while the reply channel is full, with a back-off from ``retry_initial``
    doubling up to ``retry_max``. ``clock`` and ``sleep`` are the time functions
    (tests pass fakes).
    """

    handler_class: type[WorkerHandler] = WorkerHandler
    body_timeout = 60.0
    reply_timeout = 10.0
    retry_initial = 0.005
    retry_max = 0.5

    def __init__(
        self,
        *,
        body_timeout: float | None = None,
        reply_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, value in (("body_timeout", body_timeout), ("reply_timeout", reply_timeout)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                    raise ValueError(f"ViewConsumer {name} must be a number of seconds >= 0, got {value!r}")
                setattr(self, name, float(value))
        self.clock = clock
        self.sleep = sleep
        self._handler: WorkerHandler | None = None
        self._lock = threading.Lock()

    @property
    def handler(self) -> WorkerHandler:
        """The Django handler, made on first use (settings are ready then; middleware loads once)."""
        handler = self._handler
        if handler is None:
            with self._lock:
                if self._handler is None:
                    self._handler = self.handler_class()
                handler = self._handler
        return handler

    # -- the request's life --------------------------------------------------

    def __call__(self, message: Any, **kwargs: Any) -> None:
        layer = message.channel_layer
        content = message.content
        where = _channel_name(message)
        try:
            head = parse_request(content)
        except BadMessage as exc:
            reply = reply_channel_of(content) if isinstance(content, dict) else None
            logger.error("bad http.request on %r: %s%s", where, exc,
                         "" if reply else " (no usable reply_channel: not answered)")
            if reply:
                self._send(layer, reply, iter([_simple(400, f"400 Bad Request: {exc}\n")]))
            return
        streamed = head.body_channel is not None
        body = BodyAssembler(head.body, _spool_size() if streamed else 0, complete=not streamed)
        try:
            if not body.done:
                self._read_body(layer, head, body)
        except BodyAborted:
            body.close()
            logger.info("request %s %s: the client went away during the upload; not answered", head.method, head.path)
            return
        except BodyTimeout:
            body.close()
            logger.warning("request %s %s: no body chunk for %.1f s on %r; answered 408",
                           head.method, head.path, self.body_timeout, head.body_channel)
            self._send(layer, head.reply_channel, iter([_simple(408, "408 Request Timeout (upload too slow)\n")]))
            return
        except BadMessage as exc:
            body.close()
            logger.error("request %s %s: bad body chunk on %r: %s; answered 400",
                         head.method, head.path, head.body_channel, exc)
            self._send(layer, head.reply_channel, iter([_simple(400, f"400 Bad Request: {exc}\n")]))
            return
        self._respond(message, layer, head, body)

    def _read_body(self, layer: Any, head: RequestHead, body: BodyAssembler) -> None:
        """Receive the body channel's chunks until the body is complete (see :mod:`worker.http_body`)."""
        channel = head.body_channel
        deadline = self.clock() + self.body_timeout
        while not body.done:
            try:
                got, chunk = layer.receive([channel], block=True)
            except (TypeError, ValueError) as exc:
                raise BadMessage(f"http.request 'body_channel' {channel!r} cannot be received: {exc}") from None
            if got is None:
                if self.clock() >= deadline:
                    body.timed_out()
                continue
            body.feed(chunk)
            deadline = self.clock() + self.body_timeout

    def _respond(self, message: Any, layer: Any, head: RequestHead, body: BodyAssembler) -> None:
        """Steps 3-6: Django's handling, then the reply, then the response's resources closed."""
        response = None
        sent_any = [False]
        try:
            request = self.handler.request_class(head, body.file, body.length, message)
            set_script_prefix(request.script_name or "/")
            response = self.handler.get_response(request)
            response._handler_class = type(self.handler)
            if isinstance(response, AnswerLater):
                return  # long-poll: another consumer answers on the reply channel later
            self._send(layer, head.reply_channel, self._messages(response, layer, head), sent_any)
        except Exception:
            logger.exception("request %s %s on %r failed in the worker", head.method, head.path, _channel_name(message))
            if not sent_any[0]:
                self._send(layer, head.reply_channel, iter([_simple(500, "500 Internal Server Error\n")]))
        finally:
            if response is not None:
                close_response(response)
            else:
                body.close()

    def _messages(self, response: Any, layer: Any, head: RequestHead) -> Iterator[dict[str, Any]]:
        limit = _message_limit(layer)
        headers = response_headers(response)
        try:
            if not response.streaming:
                yield from plain_messages(response.status_code, headers, response.content, limit)
                return
            if isinstance(response, django_http.FileResponse):
                # Read the file in blocks of exactly one chunk (Channels 1.x did so too).
                response.block_size = chunk_room(limit)
            yield from streaming_messages(response.status_code, headers, _guarded(response, head), limit)
        except HeadTooLarge as exc:
            logger.error("request %s %s: %s; answered 500", head.method, head.path, exc)
            yield _simple(500, "500 Internal Server Error (response headers too large)\n")

    # -- sending ---------------------------------------------------------------

    def _send(self, layer: Any, channel: str, messages: Iterator[dict[str, Any]],
              sent_any: list[bool] | None = None) -> bool:
        """Send each message in turn with a bounded back-off on ChannelFull; False if the rest was dropped."""
        full = getattr(layer, "ChannelFull", ChannelFull)
        for reply in messages:
            delay = self.retry_initial
            deadline = self.clock() + self.reply_timeout
            while True:
                try:
                    layer.send(channel, reply)
                    break
                except full:
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        logger.warning("reply channel %r stayed full for %.1f s; the rest of the response "
                                       "is dropped", channel, self.reply_timeout)
                        _drain(messages)
                        return False
                    self.sleep(min(delay, remaining))
                    delay = min(delay * 2, self.retry_max)
                except (TypeError, ValueError) as exc:
                    # MessageTooLarge (a ValueError), or a reply_channel the layer refuses as a
                    # name: nothing can be sent there, and the worker must not fail for it.
                    logger.error("reply on %r refused by the layer: %s; the rest of the response is dropped",
                                 channel, exc)
                    _drain(messages)
                    return False
            if sent_any is not None:
                sent_any[0] = True
        return True


def _guarded(response: Any, head: RequestHead) -> Iterator[bytes]:
    """The response's parts; an iterator that raises ends the body (logged) instead of the worker."""
    iterator = iter(response)
    while True:
        try:
            part = next(iterator)
        except StopIteration:
            return
        except Exception:
            request_logger.exception("streaming response of %s %s failed after its head was sent; "
                                     "the body ends short", head.method, head.path)
            return
        yield part


def _drain(messages: Iterator[dict[str, Any]]) -> None:
    """Stop a message generator (its ``finally`` clauses and the response's iterator close)."""
    close = getattr(messages, "close", None)
    if close is not None:
        close()


def _channel_name(message: Any) -> str:
    channel = getattr(message, "channel", None)
    return str(getattr(channel, "name", channel) or "http.request")


def _message_limit(layer: Any) -> int:
    """The layer's ``max_message_size`` (the shared option's default for a layer that does not say)."""
    value = getattr(layer, "max_message_size", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return int(layer_options.MAX_MESSAGE_SIZE.default)


def _spool_size() -> int:
    value = getattr(settings, "FILE_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
    return int(value) if isinstance(value, int) else 2_621_440


#: The default HTTP consumer ``worker.routing`` appends as the catch-all ``http.request`` route.
view_consumer = ViewConsumer()
