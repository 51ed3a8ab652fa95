"""Exceptions of the consumer API: Channels 1.x's (``channels.exceptions``) plus the few we add.

Control flow a consumer raises (the worker loop's dispatch, :mod:`worker.dispatch`, acts on them):

* :class:`DenyConnection` in a ``websocket.connect`` consumer: the handshake is refused
  (``{"close": True}`` on the reply channel, the server answers 403).
* :class:`StopConsumer`: the consumer is done with this message; not an error, nothing logged.
* :class:`ConsumeLater`: put the message back on its channel and run it later, a bounded
  number of times (Channels 1.x retried for ever when the channel was quiet: a spin).
* :class:`ChannelSocketException` subclasses run their own ``run(message)``
  (:class:`WebsocketCloseException` closes the socket with a code).
* :class:`ResponseLater` in a Django view: another consumer answers the request later
  (HTTP long-poll); the default HTTP consumer sends nothing for it.

Errors we raise, each naming its culprit (style rule 7):

* :class:`RoutingError` (an ``ImproperlyConfigured`` and a ``ValueError``): a bad route,
  found when the routing is built, i.e. at worker start-up, naming the route.
* :class:`InvalidChannelLayerError` (also both): ``CHANNEL_LAYERS`` lacks an alias or is malformed.
* :class:`SendFailed` (a ``RuntimeError``, what Channels 1.x raised): deferred sends that
  stayed ``ChannelFull`` for the whole retry budget, naming every channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "AcceptConnection",
    "ChannelSocketException",
    "ConsumeLater",
    "DenyConnection",
    "InvalidChannelLayerError",
    "RequestAborted",
    "RequestTimeout",
    "ResponseLater",
    "RoutingError",
    "SendFailed",
    "SendNotAvailableOnDemultiplexer",
    "StopConsumer",
    "WebsocketCloseException",
]


class ConsumeLater(Exception):
    """Put the current message back on its channel: it is not ready to be consumed yet.

    Retried at most ``message_retries`` times (:mod:`worker.dispatch`), then dropped with
    a warning naming the channel.
    """


class ResponseLater(Exception):
    """Raised in a Django view that hands the response to another consumer (long-poll)."""


class RequestTimeout(Exception):
    """The request body took too long to arrive."""


class RequestAborted(Exception):
    """The client went away while the request body was being read."""


class DenyConnection(Exception):
    """Raised in a ``websocket.connect`` consumer to refuse the connection."""


class AcceptConnection(Exception):
    """Raised in a ``websocket.connect`` consumer to accept the connection (Channels 2+ name)."""


class StopConsumer(Exception):
    """The consumer stops handling this message; the worker carries on, nothing is logged."""


class SendNotAvailableOnDemultiplexer(Exception):
    """``send`` was called on a ``WebsocketDemultiplexer``; use a multiplexer instead."""


class ChannelSocketException(Exception):
    """An exception that runs an action (``run(message)``) when a consumer raises it."""

    def run(self, message: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement run(message)")


class WebsocketCloseException(ChannelSocketException):
    """Close the message's WebSocket, with ``code`` (1000 or 3000-4999) or the default 1000."""

    def __init__(self, code: int | None = None) -> None:
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)
                                 or not (code == 1000 or 3000 <= code <= 4999)):
            raise ValueError(f"invalid WebSocket close code {code!r} (must be 1000 or in 3000-4999)")
        super().__init__(code)
        self.code = code

    def run(self, message: Any) -> None:
        if message.reply_channel is None or message.channel.name.split(".")[0] != "websocket":
            raise ValueError(
                f"WebsocketCloseException raised by a consumer of {message.channel.name!r}: "
                "only websocket.* consumers can close a socket"
            )
        message.reply_channel.send({"close": self.code or True}, immediately=True)


class RoutingError(ImproperlyConfigured, ValueError):
    """A route, ``include`` or routing setting is wrong; the message names it."""


class InvalidChannelLayerError(ImproperlyConfigured, ValueError):
    """``CHANNEL_LAYERS`` lacks the alias, or its entry is malformed; the message names it."""


class SendFailed(RuntimeError):
    """Deferred sends could not be delivered; ``failures`` holds ``(target name, error)`` pairs."""

    def __init__(self, message: str, failures: Sequence[tuple[str, BaseException]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)
