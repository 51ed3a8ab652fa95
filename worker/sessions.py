"""Sessions on channels: ``channel_session``, ``http_session``, ``enforce_ordering`` (Channels 1.x's API).

Theory of operation
-------------------
* ``channel_session``: a Django session keyed by the message's reply channel
  (``"chn" + sha1(reply_channel)[:29]``, Channels 1.x's key, so one socket's messages share
  it whichever worker runs them), stored by ``CHANNEL_SESSION_ENGINE`` (default
  ``SESSION_ENGINE``). It is saved after the consumer when modified, and stored by that
  first save (Channels 1.x saved an empty one up front on every first message, and raised
  ``ConsumeLater`` when two workers did so at once; with the file engine an eager create
  can even wipe another worker's save). The signed-cookie engine cannot work here (there
  is no cookie to write back to) and is refused with an ``ImproperlyConfigured`` naming
  the setting. After a ``websocket.disconnect`` / ``http.disconnect``
  consumer ran, the session is deleted: its reply channel is never used again, so keeping
  it would only leave one stale row (or file) per socket for ``clearsessions``.
* ``http_session``: the site's own session, read-only in spirit, from the ``sessionid``
  cookie of the message's headers or a ``?session_key=`` in the query string (for clients
  that cannot send cookies on a WebSocket); ``message.http_session`` is None without one.
* ``channel_and_http_session``: both; the HTTP session key is kept in the channel session
  on connect, so later messages of the socket (which carry no cookie) get it back.
* ``enforce_ordering``: see :mod:`worker.ordering` (the algorithm and why it is correct
  with several workers live there).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from importlib import import_module
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

from .message import Message

__all__ = [
    "DISCONNECT_CHANNELS",
    "channel_and_http_session",
    "channel_session",
    "enforce_ordering",
    "get_header",
    "http_session",
    "save_session",
    "session_for_reply_channel",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Channels after whose consumer a socket's (or request's) channel session is deleted.
DISCONNECT_CHANNELS = frozenset({"websocket.disconnect", "http.disconnect"})


def _engine(channel: bool) -> Any:
    """The session engine module: the channel sessions' (``channel=True``) or the site's."""
    from django.conf import settings

    setting = "SESSION_ENGINE"
    path = settings.SESSION_ENGINE
    if channel and getattr(settings, "CHANNEL_SESSION_ENGINE", None):
        setting, path = "CHANNEL_SESSION_ENGINE", settings.CHANNEL_SESSION_ENGINE
    try:
        engine = import_module(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"settings.{setting} = {path!r} does not import: {exc}") from exc
    if channel and getattr(engine, "__name__", "") == "django.contrib.sessions.backends.signed_cookies":
        raise ImproperlyConfigured(
            f"settings.{setting} is the signed-cookie engine: channel sessions live on the server "
            "(there is no cookie to write back to on a socket); set CHANNEL_SESSION_ENGINE to a "
            "server-side engine such as 'django.contrib.sessions.backends.cache' or '...backends.db'"
        )
    return engine


def session_for_reply_channel(reply_channel: str) -> Any:
    """The (maybe new, unsaved) channel session of ``reply_channel``."""
    session_key = "chn" + hashlib.sha1(reply_channel.encode("utf8")).hexdigest()[:29]
    instance = _engine(channel=True).SessionStore(session_key=session_key)
    instance._session.keys()  # load now: load() forgets a key it does not find ...
    instance._session_key = session_key  # ... and this one must stay
    return instance


def _find_message(args: Iterable[Any], decorator: str) -> Message:
    for arg in list(args)[:2]:  # consumer(message, ...) or method(self, message, ...)
        if isinstance(arg, Message):
            return arg
    raise ValueError(f"@{decorator} used on a consumer that was not called with a Message")


def channel_session(func: F) -> F:
    """Give the consumer ``message.channel_session``, kept across the messages of one reply channel."""

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = _find_message(args, "channel_session")
        if hasattr(message, "channel_session"):  # an outer decorator made it: it saves it
            return func(*args, **kwargs)
        if not message.reply_channel:
            raise ValueError(
                f"@channel_session on a consumer of {message.channel.name!r}: the message has no "
                "reply_channel to key the session by"
            )
        session = _open_channel_session(message.reply_channel.name)
        message.channel_session = session  # type: ignore[attr-defined]
        try:
            return func(*args, **kwargs)
        finally:
            if message.channel.name in DISCONNECT_CHANNELS and not getattr(message, "_ordering_parked", False):
                session.delete()
            elif session.modified and not session.is_empty():
                save_session(session)

    return inner  # type: ignore[return-value]


def _open_channel_session(reply_channel: str) -> Any:
    # Nothing is written here: a session is stored by its first save (save_session). Creating
    # it eagerly, as Channels 1.x did, races: the file engine creates a placeholder and renames
    # the content in later, so a creator's late rename could wipe a save made in between.
    return session_for_reply_channel(reply_channel)


def save_session(session: Any) -> None:
    """Save ``session``, creating it if it is not stored yet (by whichever worker gets there first)."""
    from django.contrib.sessions.backends.base import CreateError, UpdateError

    try:
        session.save()
    except UpdateError:
        try:
            session.save(must_create=True)
        except CreateError:
            session.save()  # another worker created it meanwhile: ours is the newer write


def get_header(message: Message, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case) in the message's ASGI ``headers``, or None."""
    for header in message.content.get("headers") or ():
        if not isinstance(header, (list, tuple)) or len(header) != 2:
            continue
        key, value = header
        if isinstance(key, str):
            key = key.encode("latin-1")
        if key.lower() == name:
            return value.encode("latin-1") if isinstance(value, str) else bytes(value)
    return None


def _session_key_of(message: Message) -> str | None:
    from django.conf import settings
    from django.http import QueryDict
    from django.http.cookie import parse_cookie

    query = message.content.get("query_string") or b""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    key = QueryDict(query).get("session_key")
    if key:
        return str(key)
    cookie = get_header(message, b"cookie")
    if cookie is None:
        return None
    return parse_cookie(cookie.decode("latin-1")).get(settings.SESSION_COOKIE_NAME) or None


def http_session(func: F) -> F:
    """Give the consumer ``message.http_session``: the site session of the cookie or ``?session_key=``."""

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = _find_message(args, "http_session")
        if hasattr(message, "http_session"):
            return func(*args, **kwargs)
        key = _session_key_of(message)
        session = _engine(channel=False).SessionStore(session_key=key) if key else None
        message.http_session = session  # type: ignore[attr-defined]
        result = func(*args, **kwargs)
        if session is not None and session.modified:
            session.save()
        return result

    return inner  # type: ignore[return-value]


def channel_and_http_session(func: F) -> F:
    """Both sessions; the HTTP session key is kept in the channel session for the socket's later messages."""

    @http_session
    @channel_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        from django.conf import settings

        message = _find_message(args, "channel_and_http_session")
        name = settings.SESSION_COOKIE_NAME
        http = message.http_session  # type: ignore[attr-defined]
        chan = message.channel_session  # type: ignore[attr-defined]
        if http is not None and chan.get(name) != http.session_key:
            chan[name] = http.session_key
        elif http is None and name in chan:
            message.http_session = _engine(channel=False).SessionStore(session_key=chan[name])  # type: ignore[attr-defined]
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def enforce_ordering(func: Any = None, slight: bool = False) -> Any:
    """Run the messages of one socket in their ``order``, one at a time (see :mod:`worker.ordering`)."""
    from .ordering import enforce_ordering as _enforce

    return _enforce(func, slight=slight)
