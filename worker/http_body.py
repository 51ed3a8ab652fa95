"""Sans-IO: a request body put back together from its inline part and its body-channel chunks.

Theory of operation
-------------------
A protocol server sends a body that does not fit one message partly inline in the
``http.request`` and the rest as ``http.request.body?`` chunks (``content``,
``more_content``, ``closed``) on the request's ``body_channel``. The consumer
receives them (blocking, on that channel alone) and feeds each to a
:class:`BodyAssembler`, which writes it to a spooled file (an inline-only body is read
from the message's own bytes instead; a streamed one is spooled in memory up to
``FILE_UPLOAD_MAX_MEMORY_SIZE``, then on disk, as Django's ASGI handler does) so a
10 MiB upload never sits in memory as one ``bytes``::

    state     event                                   next
    -----     -----                                   ----
    READING   chunk, more_content=True                READING
    READING   chunk, more_content=False               DONE
    READING   chunk, closed=True                      ABORTED   (client gone: no reply)
    READING   no chunk within the stall timeout       TIMED_OUT (408)
    READING   a chunk that is not a valid chunk       BAD       (400)
    DONE / ABORTED / TIMED_OUT / BAD   anything       error (the body is finished)

The stall timeout counts from the last chunk (or the request), not from the start,
so a large upload over a slow link is served as long as it keeps moving; a client
that stops sending mid-body gets 408 instead of holding a worker forever.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from typing import IO, Any

from .http_request import BadMessage

__all__ = ["BodyAborted", "BodyAssembler", "BodyTimeout"]


class BodyAborted(Exception):
    """The client went away before the body was complete (``closed`` chunk): no reply is due."""


class BodyTimeout(Exception):
    """No body chunk arrived within the stall timeout: the request is answered 408."""


class BodyAssembler:
    """One request's body (see the module's state table)."""

    def __init__(self, inline: bytes, spool_size: int, *, complete: bool) -> None:
        self.length = len(inline)
        self.state = "READING"
        # Closed by close(), or by the request that reads it (WorkerRequest.close).
        self.file: IO[bytes]
        if complete:
            # An inline body is already in memory, in the message: read it where it is.
            self.file = io.BytesIO(inline)
            # READING -> DONE (an inline body, no body channel)
            self.state = "DONE"
            return
        self.file = tempfile.SpooledTemporaryFile(max_size=max(0, spool_size), mode="w+b")  # noqa: SIM115
        if inline:
            self.file.write(inline)

    def _finish(self) -> None:
        self.file.seek(0)
        self.state = "DONE"

    @property
    def done(self) -> bool:
        return self.state == "DONE"

    def feed(self, chunk: object) -> None:
        """Take one body-channel message; raises :class:`BodyAborted` or :class:`BadMessage`."""
        if self.state != "READING":
            raise RuntimeError(f"body chunk fed in state {self.state}")
        if not isinstance(chunk, Mapping):
            # READING -> BAD
            self.state = "BAD"
            raise BadMessage(f"body chunk must be a dict, not {type(chunk).__name__}")
        if _flag(self, chunk, "closed"):
            # READING -> ABORTED
            self.state = "ABORTED"
            raise BodyAborted()
        content = chunk.get("content", b"")
        if content is None:
            content = b""
        if not isinstance(content, bytes):
            # READING -> BAD
            self.state = "BAD"
            raise BadMessage(f"body chunk 'content' must be bytes, not {type(content).__name__}")
        more = _flag(self, chunk, "more_content")
        if content:
            self.file.write(content)
            self.length += len(content)
        if not more:
            # READING -> DONE
            self._finish()
        # else READING -> READING

    def timed_out(self) -> None:
        """The stall timeout passed: READING -> TIMED_OUT; raises :class:`BodyTimeout`."""
        # READING -> TIMED_OUT
        self.state = "TIMED_OUT"
        raise BodyTimeout()

    def close(self) -> None:
        self.file.close()


def _flag(assembler: BodyAssembler, chunk: Mapping[str, Any], key: str) -> bool:
    value = chunk.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        # READING -> BAD
        assembler.state = "BAD"
        raise BadMessage(f"body chunk {key!r} must be a bool, not {type(value).__name__}: {value!r:.40}")
    return value
