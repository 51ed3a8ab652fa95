"""The logged-in user on channels: ``message.user`` from the HTTP or the channel session (Channels 1.x's API).

* ``http_session_user``: ``message.http_session`` and ``message.user`` from the site's session
  cookie, as ``AuthenticationMiddleware`` gives a view (``AnonymousUser`` without a session).
* ``channel_session_user``: ``message.user`` from the channel session (the socket's later
  messages carry no cookie).
* ``channel_session_user_from_http``: for ``websocket.connect``: the user of the HTTP session
  is copied into the channel session (the three ``django.contrib.auth`` session keys), so
  ``channel_session_user`` finds it on every later message of the socket.
* ``channel_and_http_session_user_from_http``: the same, and the HTTP session too.

The user is looked up by ``django.contrib.auth.get_user``, so a password change (the
session hash) logs the socket out as it logs out the site.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .sessions import _find_message, channel_and_http_session, channel_session, http_session

__all__ = [
    "channel_and_http_session_user_from_http",
    "channel_session_user",
    "channel_session_user_from_http",
    "http_session_user",
    "transfer_user",
]

F = TypeVar("F", bound=Callable[..., Any])


class _SessionOnly:
    """What ``django.contrib.auth.get_user`` reads of a request: its session."""

    def __init__(self, session: Any) -> None:
        self.session = session


def _user_of(session: Any) -> Any:
    from django.contrib import auth
    from django.contrib.auth.models import AnonymousUser

    if session is None:
        return AnonymousUser()
    return auth.get_user(_SessionOnly(session))


def transfer_user(from_session: Any, to_session: Any) -> None:
    """Copy the logged-in user's keys from one session to another (nothing if nobody is logged in)."""
    from django.contrib import auth

    keys = (auth.BACKEND_SESSION_KEY, auth.SESSION_KEY, auth.HASH_SESSION_KEY)
    if all(key in from_session for key in keys):
        for key in keys:
            to_session[key] = from_session[key]


def channel_session_user(func: F) -> F:
    """``message.user`` from the channel session (implies ``channel_session``)."""

    @channel_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = _find_message(args, "channel_session_user")
        message.user = _user_of(message.channel_session)  # type: ignore[attr-defined]
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def http_session_user(func: F) -> F:
    """``message.http_session`` and ``message.user`` from the site's session (implies ``http_session``)."""

    @http_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = _find_message(args, "http_session_user")
        message.user = _user_of(message.http_session)  # type: ignore[attr-defined]
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def channel_session_user_from_http(func: F) -> F:
    """On connect: copy the HTTP session's user into the channel session; ``message.user`` set."""

    @http_session_user
    @channel_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = _find_message(args, "channel_session_user_from_http")
        if message.http_session is not None:  # type: ignore[attr-defined]
            transfer_user(message.http_session, message.channel_session)  # type: ignore[attr-defined]
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def channel_and_http_session_user_from_http(func: F) -> F:
    """``channel_session_user_from_http`` that also keeps the HTTP session for later messages."""

    @http_session_user
    @channel_and_http_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = _find_message(args, "channel_and_http_session_user_from_http")
        if message.http_session is not None:  # type: ignore[attr-defined]
            transfer_user(message.http_session, message.channel_session)  # type: ignore[attr-defined]
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]
