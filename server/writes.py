"""Send a reply's bytes at once: a TCP transport's buffer written now, not on the reactor's next turn.

Theory of operation
-------------------
Twisted's ``transport.write()`` only appends to a buffer and asks the
reactor to watch the socket for writability; the bytes leave on the
reactor's next turn, when ``epoll`` reports the (always writable) socket
and the reactor calls ``doWrite()``. For a server that writes a whole
reply in one reactor callback this costs a reactor turn per reply - an
``epoll_wait``, the reactor's dispatch and logging context - and, worse,
puts everything else the callback does after the write (the next reply,
re-arming the layer's wait) before the bytes reach the client. asyncio's
transports try the socket first and buffer only what it does not take;
:func:`send_now` does the same for Twisted's TCP and UNIX transports, by
calling the transport's own ``doWrite()`` when the reply is written.

``doWrite()`` is what the reactor would call next: it writes what the
socket takes, keeps the rest buffered (the reactor still watches the
socket for it) and stops watching once everything went, resuming a
paused producer as usual. It is only called when it cannot be the last
act of a closing connection (not ``disconnecting``, not half-closing),
whose teardown must stay the reactor's. An error it returns (the peer is
gone) is left to the reactor, which still watches the socket: its own
``doWrite()`` on the next turn meets the same error and closes the
connection as it always does. Anything but a plain TCP/UNIX connection
(TLS, HTTP/2 streams, test transports) is left to Twisted.

``tests/unit/server/test_writes.py`` pins the Twisted attributes this
reads (``dataBuffer``, ``offset``, ``_tempDataLen``, ``_writeDisconnecting``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["send_now"]


def send_now(transport: Any) -> bool:
    """Write ``transport``'s buffered bytes now when it is a live TCP/UNIX connection; True if it tried."""
    if not isinstance(transport, tcp.Connection):
        return False
    if not transport.connected or transport.disconnecting or transport._writeDisconnecting:
        return False
    if not transport._tempDataLen and len(transport.dataBuffer) <= transport.offset:
        return False  # nothing buffered
    transport.doWrite()  # an error is met again by the reactor's own doWrite (see above)
    return True
