"""The access log: one line per request or WebSocket event, as Daphne 1.x writes them.

Lines go through the ``server.access`` logger (``--access-log FILE|-``
attaches a handler to it), so a site's logging configuration can route
them like any other log::

    127.0.0.1:5000 - - [02/Dec/2026:13:44:26] "GET /path?q=1" 200 1234
    127.0.0.1:5001 - - [02/Dec/2026:13:44:27] "WSCONNECT /chat/" - -
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

__all__ = ["AccessLog", "access_logger"]

access_logger = logging.getLogger("server.access")


def _peer(client: Sequence[object] | None) -> str:
    if not client:
        return "-"
    return f"{client[0]}:{client[1]}"


class AccessLog:
    """Formats access-log lines; each call is one line on :data:`access_logger`."""

    def __init__(self, logger: logging.Logger = access_logger) -> None:
        self.logger = logger

    def _write(self, client: Sequence[object] | None, action: str, status: object, size: object) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        when = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime())
        self.logger.info('%s - - [%s] "%s" %s %s', _peer(client), when, action, status, size)

    def http(self, client: Sequence[object] | None, method: str, path: str, query: bytes, status: int,
             size: int) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return  # nothing formatted for a log nobody reads (-v 0): every request passes here
        target = path + ("?" + query.decode("latin-1") if query else "")
        self._write(client, f"{method} {target}", status, size)

    def websocket(self, client: Sequence[object] | None, event: str, path: str) -> None:
        """``event`` is WSCONNECTING, WSCONNECT, WSREJECT or WSDISCONNECT."""
        self._write(client, f"{event} {path}", "-", "-")
