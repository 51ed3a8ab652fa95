"""Exceptions raised by every channel layer in this package.

Each one subclasses the builtin a caller would already catch (style rule 7):
``MessageTooLarge`` is a ``ValueError`` because the caller passed a value that
is too big, and segment problems are ``OSError`` because they come from the
operating system's shared memory. ``ChannelFull`` is a plain ``Exception``
on purpose: it is back-pressure, not a programming error, and the Channels 4
adapter (``ipc_layer.aio``) will subclass it together with channels' own
``ChannelFull`` so that both ``except`` clauses catch it.

The layers expose ``ChannelFull`` and ``MessageTooLarge`` as attributes too
(``layer.ChannelFull``), as the ASGI 1 spec requires; those attributes are
these very classes.
"""

from __future__ import annotations

__all__ = ["ChannelFull", "LayoutMismatch", "MessageTooLarge", "SegmentError"]


class ChannelFull(Exception):
    """The destination channel holds ``capacity`` unexpired messages.

    Also raised when the shared-memory segment has no room left for the
    message, so a sender sees one kind of back-pressure, not two.
    """


class MessageTooLarge(ValueError):
    """The encoded message is larger than the layer's ``max_message_size``."""


class SegmentError(OSError):
    """A shared-memory segment could not be created, opened or mapped."""


class LayoutMismatch(SegmentError):
    """A segment was written by an incompatible layout version.

    Raised on attach instead of misreading the segment; the message names
    both the found and the expected magic/version.
    """
