"""Run one consumer on one message: deferred sends and the control-flow exceptions.

The worker loop (``worker.loop``) finds ``(consumer, kwargs)`` with the router and calls
``consume(consumer, message, kwargs)`` inside its ``consumer_started``/``consumer_finished``
signals; the test tools (``worker.test``) call it too, so a consumer behaves the same in a
test as in a worker.

Theory of operation
-------------------
A consumer's sends are deferred (:mod:`worker.message`); what happens to them, and what
else is done, depends on how the consumer ends:

=========================  ==============================================================
the consumer ...           then
=========================  ==============================================================
returns                    its deferred sends go out, in order (``SendFailed`` if some
                           stayed ``ChannelFull`` past the retry budget)
raises ``StopConsumer``    the same: it chose to stop; nothing is logged
raises ``AcceptConnection``  ``{"accept": True}`` on the reply channel, then its sends
raises ``DenyConnection``  its sends are dropped and ``{"close": True}`` refuses the
                           handshake (a ``text`` it sent first would have accepted it);
                           only from ``websocket.connect`` (else ``ValueError``)
raises a                   its sends go out, then ``exc.run(message)`` (e.g. a close
``ChannelSocketException`` with a code)
raises ``ConsumeLater``    its sends are dropped (it will run again) and the message is
                           sent back to its channel with ``__retries__`` + 1; past
                           ``message_retries`` it is dropped with a warning naming the
                           channel. On the last try ``message.__doomed__`` is True.
raises anything else       its sends are dropped and the exception propagates: the loop
                           logs it with the channel and carries on
=========================  ==============================================================

Channels 1.x flushed the sends of a consumer whatever happened to it, so a message put back
with ``ConsumeLater`` sent its replies once per try.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ipc_layer import ChannelFull

from .exceptions import (
    AcceptConnection,
    ChannelSocketException,
    ConsumeLater,
    DenyConnection,
    StopConsumer,
)
from .message import Message, pending_message_store
from .utils import name_that_thing

__all__ = ["MESSAGE_RETRIES", "RETRIES_KEY", "consume", "requeue"]

logger = logging.getLogger(__name__)

#: How many times a message may be put back with ConsumeLater (Channels 1.x's default).
MESSAGE_RETRIES = 10
#: The message key counting those tries (Channels 1.x's name).
RETRIES_KEY = "__retries__"
#: Tries of a requeue that meets ChannelFull, and the pause between them.
_REQUEUE_TRIES = 10
_REQUEUE_PAUSE = 0.05


def consume(
    consumer: Callable[..., Any],
    message: Message,
    kwargs: Mapping[str, Any] | None = None,
    *,
    message_retries: int = MESSAGE_RETRIES,
) -> None:
    """Run ``consumer(message, **kwargs)`` with deferred sends and the table above."""
    retries = message.content.get(RETRIES_KEY, 0)
    if isinstance(retries, int) and retries >= message_retries:
        message.__doomed__ = True  # type: ignore[attr-defined]  # Channels 1.x's hint to decorators
    store = pending_message_store
    store.prepare()
    try:
        consumer(message, **(kwargs or {}))
    except StopConsumer:
        store.send_and_flush()
        return
    except AcceptConnection:
        _require_connect(message, "AcceptConnection")
        _reply(message, {"accept": True})
        store.send_and_flush()
        return
    except DenyConnection:
        store.discard()
        _require_connect(message, "DenyConnection")
        _reply(message, {"close": True})
        return
    except ChannelSocketException as exc:
        store.send_and_flush()
        exc.run(message)
        return
    except ConsumeLater:
        store.discard()
        requeue(message, message_retries=message_retries, consumer=consumer)
        return
    except BaseException:
        store.discard()
        raise
    store.send_and_flush()


def _require_connect(message: Message, what: str) -> None:
    if message.channel.name != "websocket.connect":
        raise ValueError(
            f"{what} raised by a consumer of {message.channel.name!r}: only websocket.connect consumers "
            "can accept or deny a connection"
        )


def _reply(message: Message, content: dict[str, Any]) -> None:
    if message.reply_channel is None:
        raise ValueError(f"message on {message.channel.name!r} has no reply_channel to answer on")
    message.reply_channel.send(content, immediately=True)


def requeue(
    message: Message,
    *,
    message_retries: int = MESSAGE_RETRIES,
    consumer: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Send ``message`` back to its channel with one more try counted; False if it was dropped."""
    channel = message.channel.name
    content = dict(message.content)
    tries = content.get(RETRIES_KEY, 0)
    tries = (tries if isinstance(tries, int) else 0) + 1
    if tries > message_retries:
        logger.warning(
            "dropped a message on %r that %s put back %d times (ConsumeLater; the limit is %d): %.100r",
            channel, name_that_thing(consumer) if consumer is not None else "a consumer", tries - 1,
            message_retries, content,
        )
        return False
    content[RETRIES_KEY] = tries
    layer = message.channel_layer
    full = getattr(layer, "ChannelFull", ChannelFull)
    for attempt in range(_REQUEUE_TRIES):
        try:
            layer.send(channel, content)
            return True
        except full:
            if attempt + 1 < _REQUEUE_TRIES:
                sleep(_REQUEUE_PAUSE)
    logger.error("dropped a message put back on %r (ConsumeLater): the channel stayed full", channel)
    return False
