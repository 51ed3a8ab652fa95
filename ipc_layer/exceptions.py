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

__all__ = ["ChannelFull", "LayoutMismatch", "LockTimeout", "MessageTooLarge", "SegmentError",
           "SegmentNotTrusted"]


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


class SegmentNotTrusted(SegmentError, PermissionError):
    """The segment file (or a watch FIFO) belongs to another user, or is too open.

    ``/dev/shm`` is world-writable, so another local user can create the
    segment of a prefix first and read every message sent through it. A layer
    attaches only to a segment owned by its effective uid (or one of
    ``trusted_uids``) whose mode grants nothing beyond ``mode``; the message
    names the file, its owner and mode, and the fix.
    """


class LockTimeout(ChannelFull, SegmentError):
    """The segment lock stayed held past ``lock_timeout`` by a live process.

    A process stopped (SIGSTOP, Ctrl-Z, a debugger) while holding the lock
    keeps it until it runs again: it cannot be taken away from a live owner.
    Rather than wait without bound, the operation gives up having changed
    nothing. **Retryable back-pressure**: a ``ChannelFull`` (so servers answer
    503 / 1013 and workers retry, as for a full channel) and a
    ``SegmentError``. Any operation may raise it, ``receive`` included.
    ``pid`` is the holder (0 if unknown), ``state`` its ``/proc`` state
    (``"stopped"``, ``"tracing stop"``, ...).
    """

    def __init__(self, message: str, pid: int = 0, state: str = "unknown") -> None:
        super().__init__(message)
        self.pid = pid
        self.state = state
