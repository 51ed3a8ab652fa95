"""Origin checks on ``websocket.connect`` (Channels 1.x's ``channels.security.websockets``).

A browser sends the page's origin in the handshake's ``Origin`` header, and any site the
user visits can open a WebSocket to ours with the user's cookies: checking the origin is
the WebSocket's CSRF protection. ``@allowed_hosts_only`` on a connect consumer refuses
(``DenyConnection``, a 403) a handshake whose ``Origin`` is missing, not ASCII, ``null``,
or names a host outside ``ALLOWED_HOSTS`` (with ``DEBUG`` and no ``ALLOWED_HOSTS``:
localhost, 127.0.0.1 and [::1], as Django's own host check). The refusal is logged with
the origin and the path, so a misconfigured ``ALLOWED_HOSTS`` is found from the log.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import urlparse

from ..exceptions import DenyConnection
from ..sessions import _find_message, get_header

__all__ = ["AllowedHostsOnlyOriginValidator", "BaseOriginValidator", "allowed_hosts_only"]

logger = logging.getLogger(__name__)


class BaseOriginValidator:
    """A decorator class: ``validate_origin(message, origin)`` decides, the rest is shared."""

    def __init__(self, func: Any) -> None:
        functools.update_wrapper(self, func)
        self.func = func

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Used on a method of a class-based consumer: bind like a function would.
        return self if instance is None else functools.partial(self.__call__, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        message = _find_message(args, type(self).__name__)
        origin = self.get_origin(message)
        if origin is None or not self.validate_origin(message, origin):
            logger.warning("refused a WebSocket handshake on %r: origin %r is not allowed",
                           message.get("path"), origin)
            raise DenyConnection()
        return self.func(*args, **kwargs)

    def get_origin(self, message: Any) -> str | None:
        """The ``Origin`` header as text, or None when missing or not ASCII."""
        header = get_header(message, b"origin")
        if header is None:
            return None
        try:
            return header.decode("ascii")
        except UnicodeDecodeError:
            return None

    def validate_origin(self, message: Any, origin: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must implement validate_origin(message, origin)")


class AllowedHostsOnlyOriginValidator(BaseOriginValidator):
    """Accept origins whose host is in ``settings.ALLOWED_HOSTS`` (Django's own matching rules)."""

    def validate_origin(self, message: Any, origin: str) -> bool:
        from django.conf import settings
        from django.http.request import validate_host

        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        try:
            host = urlparse(origin).hostname
        except ValueError:
            return False
        if not host:
            return False
        if ":" in host:  # urlparse drops an IPv6 literal's brackets; ALLOWED_HOSTS keeps them
            host = f"[{host}]"
        return bool(validate_host(host, allowed))


allowed_hosts_only = AllowedHostsOnlyOriginValidator
