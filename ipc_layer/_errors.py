"""Core errors -> layer errors, converted once at the API boundary (style rule 7).

The shared-memory layer's modules (``layer``, ``groups``) call
:func:`segment_error` for any :class:`_ringbuf.RingBufError` that is not
handled more specifically (``QueueFull`` -> ``ChannelFull``, ``RecordTooLarge``
-> ``MessageTooLarge``, ...). Kept apart from :mod:`ipc_layer.exceptions`,
which must import without the compiled core.
"""

from __future__ import annotations

import _ringbuf

from .exceptions import LockTimeout, SegmentError

__all__ = ["segment_error"]


def segment_error(what: str, exc: _ringbuf.RingBufError) -> SegmentError:
    """The layer's exception for the core error ``exc`` raised during ``what``.

    A lock held past ``lock_timeout`` becomes :class:`LockTimeout` (retryable
    back-pressure, naming the holder's pid and state); anything else a
    :class:`SegmentError`.
    """
    if isinstance(exc, _ringbuf.LockTimeout):
        return LockTimeout(f"{what}: {exc}", exc.pid, exc.state)
    return SegmentError(f"{what}: {exc}")
