"""``enforce_ordering``: a socket's messages run in their ``order``, one at a time, across workers.

The protocol server numbers each socket's messages (``websocket.connect`` 0, each
``websocket.receive`` 1, 2, ..., ``websocket.disconnect`` last + 1), but several workers
take them from the shared channels, so message 5 may start before message 4 has finished.

Theory of operation
-------------------
State, per socket (reply channel):

* ``next``: the order of the message allowed to run, in the socket's channel session
  (``__channels_next_order``, Channels 1.x's key), with ``since``, when it was set;
* a *wait channel* (``__wait__.<sha1 of the reply channel>``) on the layer, where messages
  that came too early are parked.

A worker with message ``n`` (channel session loaded at the start):

1. ``n == next``: it runs the consumer and sends its replies (deferred sends go out now,
   before a successor can run and send its own), then (even if the consumer raised)
   stores ``next = n + 1`` and saves the session, then *drains* (below). Only one message of a
   socket has ``n == next`` at a time (the layer delivers each message once), so exactly
   one worker runs the socket's code at a time, and it is the only one that writes its
   session: the Channels 1.x race of a parked message's worker saving a stale session over
   the new ``next`` cannot happen, because a worker that parks never saves.
2. ``n > next``: it parks the message on the wait channel, then reads ``next`` again from
   the store. If it is now ``n``, it drains. It never puts the message back on its own
   channel, so nothing spins (Channels 1.x requeued to ``__wait__`` and back until the
   order came).
3. ``n < next``: the message came after its successors were run (see below); it is dropped
   with a warning.

*Drain*: take every parked message of the socket; put the one whose order is ``next``
back on its original channel (any worker runs it, now in order) and park the others
again; then read ``next`` once more, and if the message of that order is among those
just parked again, go round.

No lost wake-up: the message of order ``k`` is parked by its worker *then* that worker
reads ``next``; the runner of ``k - 1`` stores ``next = k`` *then* drains. If the parker
read an older ``next``, its read came before the store, so its park did too, and the
runner's drain finds the message, unless another drainer was holding it at that moment:
that drainer parks it again *then* reads ``next`` (``k``) and goes round. Either way someone
puts it back.

No wedge (a message lost: expired before a worker took it, or its worker was SIGKILLed
while running it): when a drain finds no parked message with order ``next`` while ``next``
has not moved for ``timeout`` seconds (default 5), the lowest parked message is put back
flagged to run anyway, if it has itself waited ``timeout``, with a warning naming the
socket and the missing orders; the socket carries on from there. A parker also drains
when ``next`` is that old (or nothing ran yet), so the next message of the socket
unblocks it. Parked messages are ordinary messages: they
expire with the layer's ``expiry``, so none waits for ever.

Costs: an in-order message costs one session save (the ``next`` counter) and a drain of
the wait channel (one empty receive when nothing waits); an early one a send and a session
read, and a resend when its turn comes (drains re-park the others: a burst of ``w``
early messages costs O(w) sends per message).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from typing import Any

from ipc_layer import ChannelFull

from .message import Message, pending_message_store
from .sessions import _find_message, channel_session, save_session

__all__ = ["NEXT_KEY", "SINCE_KEY", "enforce_ordering", "wait_channel_name"]

logger = logging.getLogger(__name__)

#: Channel-session keys: the order allowed to run next, and since when (time.time()).
NEXT_KEY = "__channels_next_order"
SINCE_KEY = "__channels_next_since"
#: Keys a parked message carries (removed before its consumer sees it).
_ORIGINAL = "__order_channel"
_SKIP = "__order_skip"
_PARKED_AT = "__order_parked_at"
#: Seconds ``next`` may stay put while later messages wait before a gap is skipped.
DEFAULT_TIMEOUT = 5.0
#: Most parked messages a drain looks at in one go.
_DRAIN_LIMIT = 10_000


def wait_channel_name(reply_channel: str) -> str:
    """The channel where a socket's early messages wait (a fixed length, whatever the reply name)."""
    return "__wait__." + hashlib.sha1(reply_channel.encode("utf8")).hexdigest()[:32]


def enforce_ordering(func: Any = None, slight: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Decorator: run the messages of one reply channel in their ``order`` (implies ``channel_session``)."""
    if slight:
        raise ValueError("enforce_ordering(slight=True) is gone (as in Channels 1.1): remove the decorator "
                         "for the server's own per-socket ordering, or use strict ordering")

    def decorator(func: Any) -> Any:
        @channel_session
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            message = _find_message(args, "enforce_ordering")
            order = message.content.get("order")
            if isinstance(order, bool) or not isinstance(order, int):
                raise ValueError(
                    f"@enforce_ordering on a consumer of {message.channel.name!r}: the message has no integer "
                    f"'order' (got {order!r}); only websocket.* messages carry one"
                )
            skip = bool(message.content.pop(_SKIP, False))
            message.content.pop(_ORIGINAL, None)
            message.content.pop(_PARKED_AT, None)
            session = message.channel_session  # type: ignore[attr-defined]
            expected = session.get(NEXT_KEY, 0)
            if order == expected or (skip and order > expected):
                try:
                    result = func(*args, **kwargs)
                    # Its replies leave before its successor may run (that one's
                    # worker could flush first and reorder them on the socket).
                    _flush_now()
                    return result
                finally:
                    session[NEXT_KEY] = order + 1
                    session[SINCE_KEY] = time.time()
                    save_session(session)
                    session.modified = False
                    _drain(message, session, order + 1, time.time(), timeout)
            if order < expected:
                logger.warning(
                    "dropped message %d on %r of socket %r: the socket already ran up to %d "
                    "(it came after the ordering timeout skipped it)",
                    order, message.channel.name, message.reply_channel.name if message.reply_channel else None,
                    expected - 1,
                )
                return None
            message._ordering_parked = True  # type: ignore[attr-defined]  # channel_session keeps the session
            if not _park(message):
                logger.error(
                    "the wait channel of socket %r is full: running message %d out of order",
                    message.reply_channel.name if message.reply_channel else None, order,
                )
                message._ordering_parked = False  # type: ignore[attr-defined]
                return func(*args, **kwargs)
            fresh = session.load()
            now_next, since = fresh.get(NEXT_KEY, 0), fresh.get(SINCE_KEY)
            # Only our own turn can have been missed (see the module doc), or a stall to skip.
            if now_next == order or since is None or time.time() - since >= timeout:
                _drain(message, session, now_next, since, timeout)
            return None

        return inner

    if func is not None:
        return decorator(func)
    return decorator


def _flush_now() -> None:
    """Send the running consumer's deferred sends now, and go on deferring the rest."""
    if pending_message_store.active:
        try:
            pending_message_store.send_and_flush()
        finally:
            pending_message_store.prepare()  # the batch the caller's dispatch will close


def _park(message: Message) -> bool:
    content = dict(message.content)
    content[_ORIGINAL] = message.channel.name
    content[_PARKED_AT] = time.time()
    return _send(message.channel_layer, wait_channel_name(_reply(message)), content)


def _reply(message: Message) -> str:
    if message.reply_channel is None:  # pragma: no cover - channel_session refused it already
        raise ValueError(f"@enforce_ordering: the message on {message.channel.name!r} has no reply_channel")
    return message.reply_channel.name


def _send(layer: Any, channel: str, content: dict[str, Any], tries: int = 5) -> bool:
    full = getattr(layer, "ChannelFull", ChannelFull)
    for attempt in range(tries):
        try:
            layer.send(channel, content)
            return True
        except full:
            if attempt + 1 < tries:
                time.sleep(0.01 * (attempt + 1))
    return False


def _drain(message: Message, session: Any, expected: int, since: float | None, timeout: float) -> None:
    """Put the parked message whose order is ``expected`` back on its channel (see the module doc)."""
    layer = message.channel_layer
    wait = wait_channel_name(_reply(message))
    for _ in range(_DRAIN_LIMIT):
        reparked = _drain_once(message, layer, wait, expected, since, timeout)
        if not reparked:
            return
        # While we held them, the runner of a newer ``next`` may have drained and missed one:
        # read ``next`` again (after the re-park) and go round if we put its message back.
        fresh = session.load()
        expected, since = fresh.get(NEXT_KEY, 0), fresh.get(SINCE_KEY)
        if expected not in reparked:
            return


def _drain_once(message: Message, layer: Any, wait: str, expected: int, since: float | None,
                timeout: float) -> set[int]:
    """One pass: the message of order ``expected`` back to its channel; the orders parked again."""
    parked: list[dict[str, Any]] = []
    for _ in range(_DRAIN_LIMIT):
        channel, content = layer.receive([wait], block=False)
        if channel is None:
            break
        parked.append(content)
    if not parked:
        return set()
    ready = [c for c in parked if c.get("order") == expected]
    now = time.time()
    stalled = since is None or now - since >= timeout
    if not ready and stalled and now - min(c.get(_PARKED_AT, now) for c in parked) >= timeout:
        first = min(parked, key=lambda c: c.get("order", 0))
        logger.warning(
            "socket %r: message(s) %d..%d never ran within %.1f s; going on with message %d",
            _reply(message), expected, first.get("order", 0) - 1, timeout, first.get("order", 0),
        )
        first[_SKIP] = True
        ready = [first]
    reparked: set[int] = set()
    for content in parked:
        if any(content is r for r in ready):
            original = content[_ORIGINAL]
            if _send(layer, original, {k: v for k, v in content.items() if k not in (_ORIGINAL, _PARKED_AT)}):
                continue
            logger.error("socket %r: could not put message %r back on the full channel %r; parking it again",
                         _reply(message), content.get("order"), original)
        if _send(layer, wait, content):
            reparked.add(content.get("order", -1))
        else:
            logger.error("socket %r: dropped parked message %r: its wait channel is full",
                         _reply(message), content.get("order"))
    return reparked
