"""WebSocket consumers (Channels 1.x's ``channels.generic.websockets``).

* :class:`WebsocketConsumer`: ``connect(message, **kwargs)`` (accepts by default),
  ``receive(text=None, bytes=None, **kwargs)``, ``disconnect(message, **kwargs)``;
  ``send(text=/bytes=)``, ``close(code)``; the ``connection_groups`` (``groups``) are
  joined on connect and left on disconnect without calling ``super()``. Class options:
  ``http_user`` (``message.user`` from the site's login, kept in the channel session),
  ``http_user_and_session`` (the HTTP session too), ``channel_session``,
  ``channel_session_user``, ``strict_ordering`` (:func:`worker.sessions.enforce_ordering`).
* :class:`JsonWebsocketConsumer`: ``receive(content, **kwargs)`` with the decoded JSON,
  ``send(content)`` encodes; a frame that is not JSON is answered by closing the socket
  with code 1007 (invalid data) and a warning naming the path, rather than an exception
  in the worker's log for each bad client.
* :class:`WebsocketDemultiplexer`: several JSON streams over one socket, frames
  ``{"stream": name, "payload": {...}}``; ``consumers = {"stream": JsonConsumerClass}``.
  Each stream's consumer gets ``multiplexer`` (a :class:`WebsocketMultiplexer`) in its
  kwargs, and its own ``send(content)`` goes out wrapped in its stream (Channels 1.x
  replaced the consumer class's ``send`` with one that raised, for every later use of
  that class too). ``static/worker/js/websocketbridge.js`` is the browser side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from ..channel import Group
from ..exceptions import SendNotAvailableOnDemultiplexer
from ..message import Message
from .base import BaseConsumer

__all__ = ["JsonWebsocketConsumer", "WebsocketConsumer", "WebsocketDemultiplexer", "WebsocketMultiplexer"]

logger = logging.getLogger(__name__)

#: WebSocket close code for a frame whose data is not what the consumer understands.
INVALID_DATA = 1007
# The builtin, for the functions whose parameter is called ``bytes`` (Channels 1.x's name).
_BYTES = bytes


def _frame(text: str | None, bytes: bytes | None, close: bool | int) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"send(text=...) must be a str, got {type(text).__name__}")
        content["text"] = text
    elif bytes is not None:
        if not isinstance(bytes, (_BYTES, bytearray)):
            raise TypeError(f"send(bytes=...) must be bytes, got {type(bytes).__name__}")
        content["bytes"] = _BYTES(bytes)
    elif not close:
        raise ValueError("send() needs text or bytes (or close)")
    if close:
        content["close"] = close
    return content


class WebsocketConsumer(BaseConsumer):
    """The WebSocket model: connect, receive frames, disconnect; groups joined and left for you."""

    method_mapping: ClassVar[Mapping[str, str]] = {
        "websocket.connect": "raw_connect",
        "websocket.receive": "raw_receive",
        "websocket.disconnect": "raw_disconnect",
    }

    #: ``message.user`` on every message from the login of the HTTP session (cookie on connect)
    http_user = False
    #: the same, plus ``message.http_session`` on every message
    http_user_and_session = False
    #: run this socket's messages in order, one at a time (``enforce_ordering``)
    strict_ordering = False
    #: groups joined on connect and left on disconnect (or override ``connection_groups``)
    groups: ClassVar[Iterable[str] | None] = None

    def get_handler(self, message: Message, **kwargs: Any) -> Any:
        if self.http_user or self.http_user_and_session:
            self.channel_session_user = True
        self.path = message.get("path")
        handler = super().get_handler(message, **kwargs)
        if self.http_user_and_session:
            from ..auth import channel_and_http_session_user_from_http

            handler = channel_and_http_session_user_from_http(handler)
        elif self.http_user:
            from ..auth import channel_session_user_from_http

            handler = channel_session_user_from_http(handler)
        if self.strict_ordering:
            from ..sessions import enforce_ordering

            return enforce_ordering(handler)
        if getattr(self, "slight_ordering", False):
            raise ValueError(f"{type(self).__name__}.slight_ordering is gone (Channels 1.1): remove it")
        return handler

    def connection_groups(self, **kwargs: Any) -> Iterable[str]:
        """Groups the socket joins on connect and leaves on disconnect (a list, not a string)."""
        groups = self.groups or []
        if isinstance(groups, str):
            raise TypeError(f"{type(self).__name__}.groups must be a list of group names, not the str {groups!r}")
        return groups

    def raw_connect(self, message: Message, **kwargs: Any) -> None:
        for group in self.connection_groups(**kwargs):
            Group(group, channel_layer=message.channel_layer).add(message.reply_channel)  # type: ignore[arg-type]
        self.connect(message, **kwargs)

    def connect(self, message: Message, **kwargs: Any) -> None:
        """The socket opens: accept it (override to check, ``raise DenyConnection`` to refuse)."""
        if isinstance(kwargs.get("multiplexer"), WebsocketMultiplexer):
            return  # a stream of a demultiplexed socket: the demultiplexer accepted it
        self.message.reply_channel.send({"accept": True})  # type: ignore[union-attr]

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        if message.get("text") is not None:
            self.receive(text=message["text"], **kwargs)
        else:
            self.receive(bytes=message.get("bytes"), **kwargs)

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        """A frame arrived: ``text`` or ``bytes``."""

    def send(self, text: str | None = None, bytes: bytes | None = None, close: bool | int = False) -> None:
        """Send a frame down this socket (and close it after, with ``close=True`` or a code)."""
        self.message.reply_channel.send(_frame(text, bytes, close))  # type: ignore[union-attr]

    @classmethod
    def group_send(cls, name: str, text: str | None = None, bytes: bytes | None = None,
                   close: bool | int = False) -> None:
        """Send a frame to every socket in group ``name``."""
        Group(name).send(_frame(text, bytes, close))

    def close(self, status: bool | int = True) -> None:
        """Close this socket (``True`` is code 1000)."""
        self.message.reply_channel.send({"close": status})  # type: ignore[union-attr]

    def raw_disconnect(self, message: Message, **kwargs: Any) -> None:
        for group in self.connection_groups(**kwargs):
            Group(group, channel_layer=message.channel_layer).discard(message.reply_channel)  # type: ignore[arg-type]
        self.disconnect(message, **kwargs)

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        """The socket closed (``message["code"]`` says how)."""


class JsonWebsocketConsumer(WebsocketConsumer):
    """Frames are JSON text: ``receive(content)`` gets the decoded value, ``send(content)`` encodes."""

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        text = message.get("text")
        if text is None:
            logger.warning("closing the socket of %r: a binary frame reached the JSON consumer %s",
                           message.get("path"), type(self).__name__)
            self.message.reply_channel.send({"close": INVALID_DATA})  # type: ignore[union-attr]
            return
        try:
            content = self.decode_json(text)
        except ValueError as exc:
            logger.warning("closing the socket of %r: a frame is not JSON (%s): %.80r",
                           message.get("path"), exc, text)
            self.message.reply_channel.send({"close": INVALID_DATA})  # type: ignore[union-attr]
            return
        self.receive(content, **kwargs)

    def receive(self, content: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        """A JSON frame arrived, decoded."""

    def send(self, content: Any = None, close: bool | int = False) -> None:  # type: ignore[override]
        """Send ``content`` as a JSON text frame (wrapped in its stream under a demultiplexer)."""
        multiplexer = self.kwargs.get("multiplexer")
        if isinstance(multiplexer, WebsocketMultiplexer):
            multiplexer.send(content)
            if close:
                self.close(close)
            return
        super().send(text=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text: str) -> Any:
        return json.loads(text)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        from django.core.serializers.json import DjangoJSONEncoder

        return json.dumps(content, cls=DjangoJSONEncoder)

    @classmethod
    def group_send(cls, name: str, content: Any = None, close: bool | int = False) -> None:  # type: ignore[override]
        WebsocketConsumer.group_send(name, text=cls.encode_json(content), close=close)


class WebsocketMultiplexer:
    """Sends on one stream of a demultiplexed socket: ``{"stream": ..., "payload": ...}`` frames."""

    def __init__(self, stream: str, reply_channel: Any) -> None:
        self.stream = stream
        self.reply_channel = reply_channel

    def send(self, payload: Any) -> None:
        """Send ``payload`` (JSON-able) on this stream."""
        self.reply_channel.send(self.encode(self.stream, payload))

    @classmethod
    def encode_json(cls, content: Any) -> str:
        from django.core.serializers.json import DjangoJSONEncoder

        return json.dumps(content, cls=DjangoJSONEncoder)

    @classmethod
    def encode(cls, stream: str, payload: Any) -> dict[str, Any]:
        return {"text": cls.encode_json({"stream": stream, "payload": payload})}

    @classmethod
    def group_send(cls, name: str, stream: str, payload: Any, close: bool = False) -> None:
        """Send ``payload`` on ``stream`` to every socket in group ``name``."""
        message = cls.encode(stream, payload)
        if close:
            message["close"] = True
        Group(name).send(message)


class WebsocketDemultiplexer(JsonWebsocketConsumer):
    """Routes each ``{"stream", "payload"}`` frame to the consumer of its stream (``consumers``)."""

    #: stream name -> consumer (a JsonWebsocketConsumer subclass, or any consumer callable)
    consumers: ClassVar[Mapping[str, Any]] = {}
    multiplexer_class: ClassVar[type[WebsocketMultiplexer]] = WebsocketMultiplexer

    def _forward(self, stream: str, consumer: Any, message: Message, kwargs: Mapping[str, Any]) -> None:
        consumer(message, **{**kwargs, "multiplexer": self.multiplexer_class(stream, message.reply_channel)})

    def receive(self, content: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        if not (isinstance(content, dict) and isinstance(content.get("stream"), str) and "payload" in content):
            self._refuse("the frame is not {\"stream\": name, \"payload\": {...}}")
            return
        stream = content["stream"]
        consumer = self.consumers.get(stream)
        if consumer is None:
            self._refuse(f"no consumer for stream {stream!r} (streams: {sorted(self.consumers)!r})")
            return
        payload = content["payload"]
        if not isinstance(payload, dict):
            self._refuse(f"the payload of stream {stream!r} is a {type(payload).__name__}, not an object")
            return
        # The stream's consumer reads the payload as its own JSON frame.
        inner = Message(dict(self.message.content, text=self.encode_json(payload)), self.message.channel.name,
                        self.message.channel_layer)
        inner.__dict__.update({k: v for k, v in self.message.__dict__.items()
                               if k in ("channel_session", "http_session", "user")})
        self._forward(stream, consumer, inner, kwargs)

    def _refuse(self, why: str) -> None:
        logger.warning("closing the demultiplexed socket of %r: %s", self.message.get("path"), why)
        self.message.reply_channel.send({"close": INVALID_DATA})  # type: ignore[union-attr]

    def connect(self, message: Message, **kwargs: Any) -> None:
        """Accept, then tell every stream's consumer (its groups are joined)."""
        self.message.reply_channel.send({"accept": True})  # type: ignore[union-attr]
        for stream, consumer in self.consumers.items():
            self._forward(stream, consumer, message, kwargs)

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        """Tell every stream's consumer (its groups are left)."""
        for stream, consumer in self.consumers.items():
            self._forward(stream, consumer, message, kwargs)

    def send(self, *args: Any, **kwargs: Any) -> None:
        raise SendNotAvailableOnDemultiplexer(
            f"{type(self).__name__}.send: send on a stream with the multiplexer kwarg's send(), "
            "or WebsocketMultiplexer.group_send(group, stream, payload)"
        )

    @classmethod
    def group_send(  # type: ignore[override]
        cls, name: str, stream: Any = None, payload: Any = None, close: bool | int = False
    ) -> None:
        raise SendNotAvailableOnDemultiplexer(
            f"{cls.__name__}.group_send: use WebsocketMultiplexer.group_send(group, stream, payload)"
        )
