"""Reply routing: one process channel for the whole server, one suffix per live request or socket.

The server receives on ONE process-specific channel, ``server.<unique>!``
(made by the layer's ``new_process_channel``), so one blocking receive
serves every connection (DESIGN.md, "Message flow"). Each HTTP request and
each WebSocket gets a reply channel ``server.<unique>!<n><r>``: ``<n>`` a
counter (no two live handlers ever share one), ``<r>`` a few random
characters from :mod:`secrets`, so a name cannot be guessed from another
and a late reply for a finished request can never reach the next one that
happened to get the same counter value after a restart.

A reply for a suffix that is gone (the client left, the request timed out)
is logged at DEBUG and dropped: it is normal, not an error.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from typing import Any, Protocol

__all__ = ["ReplyHandler", "ReplyRouter"]

logger = logging.getLogger(__name__)

#: Random characters after the counter: 6 URL-safe base64 characters, 36 bits
#: (letters, digits, '-', '_': all valid in a channel name's local part).
_RANDOM_CHARS = 6
#: Characters drawn from the OS at once: one getrandom() per 680 names instead
#: of one per request (a syscall and a base64 call, ~3 us of each request on
#: this VM). Drawn with :mod:`secrets`, used once each, never shared with
#: another process (the server does not fork).
_POOL_CHARS = 4096


class ReplyHandler(Protocol):
    """What a request or socket implements to receive its replies (on the reactor thread)."""

    def handle_reply(self, message: dict[str, Any]) -> None: ...


class ReplyRouter:
    """Maps reply-channel suffixes to live handlers; dispatches the process channel's messages."""

    def __init__(self, process_channel: str) -> None:
        if not process_channel.endswith("!"):
            raise ValueError(f"process channel must end with '!', got {process_channel!r}")
        self.process_channel = process_channel
        self._handlers: dict[str, ReplyHandler] = {}
        self._counter = itertools.count(1)
        self._pool = ""
        self._used = 0

    def __len__(self) -> int:
        return len(self._handlers)

    def register(self, handler: ReplyHandler) -> str:
        """A new reply channel for ``handler``; replies sent to it reach ``handler.handle_reply``."""
        # Random characters come from a pool drawn in bulk (secrets.choice
        # per character cost a request ~10 us, one urandom read per name ~3).
        used = self._used
        if used + _RANDOM_CHARS > len(self._pool):
            self._pool, used = secrets.token_urlsafe(_POOL_CHARS * 3 // 4), 0
        self._used = used + _RANDOM_CHARS
        suffix = f"{next(self._counter):x}" + self._pool[used : used + _RANDOM_CHARS]
        self._handlers[suffix] = handler
        return self.process_channel + suffix

    def unregister(self, reply_channel: str) -> None:
        """Forget ``reply_channel``; later replies to it are dropped. Unknown names are ignored."""
        self._handlers.pop(reply_channel[len(self.process_channel):], None)

    def is_live(self, reply_channel: str) -> bool:
        return reply_channel[len(self.process_channel):] in self._handlers

    def dispatch(self, channel: str, message: dict[str, Any]) -> None:
        """Hand ``message`` (received on ``channel``) to its handler, or drop it at DEBUG."""
        if not channel.startswith(self.process_channel):
            logger.warning("reply on %r is not for this server's channel %r; dropped", channel, self.process_channel)
            return
        handler = self._handlers.get(channel[len(self.process_channel):])
        if handler is None:
            logger.debug("reply for %r, which is gone (client left or timed out); dropped", channel)
            return
        try:
            handler.handle_reply(message)
        except Exception:
            # One broken reply must not stop the reader that serves every
            # other connection.
            logger.exception("handling a reply on %r failed", channel)
