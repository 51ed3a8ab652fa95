"""``WSClient``: a WebSocket as the protocol server would present it, for in-process consumer tests."""

from __future__ import annotations

import copy
import json as json_module
from typing import Any

from .. import DEFAULT_CHANNEL_LAYER
from .base import Client

__all__ = ["WSClient"]


def _encoded_cookies(cookies: dict[str, str]) -> bytes:
    from django.http.cookie import SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    for key, value in cookies.items():
        jar[key] = value
    return jar.output(header="", sep=";").strip().encode("ascii")


class WSClient(Client):
    """Connect, send frames and read replies of one socket; ``ordered=True`` numbers the messages.

    Its cookies carry a real site session (``self.session``, saved when first used), so
    ``http_session`` and ``http_user`` consumers see it; ``login()`` / ``force_login()`` log a
    user into it as Django's test client does.
    """

    def __init__(self, alias: str = DEFAULT_CHANNEL_LAYER, ordered: bool = False) -> None:
        super().__init__(alias=alias)
        self._ordered = ordered
        self.order = 0
        self._session: Any = None
        self._headers: dict[str, bytes] = {}
        self._cookies: dict[str, str] = {}

    # -- what the server would put in the messages ------------------------------------

    def set_cookie(self, key: str, value: str) -> None:
        self._cookies[key] = value

    def set_header(self, key: str, value: str | bytes) -> None:
        if key.lower() == "cookie":
            raise ValueError("use set_cookie() for cookies")
        self._headers[key.lower()] = value.encode("latin-1") if isinstance(value, str) else value

    @property
    def session(self) -> Any:
        """The site session (``SESSION_ENGINE``) this socket's cookie names; created and saved on first use."""
        if self._session is None:
            from importlib import import_module

            from django.conf import settings

            store = import_module(settings.SESSION_ENGINE).SessionStore()
            store.save()
            self._session = store
        return self._session

    def get_cookies(self) -> dict[str, str]:
        from django.apps import apps
        from django.conf import settings

        cookies = dict(self._cookies)
        if self._session is not None and apps.is_installed("django.contrib.sessions"):
            cookies[settings.SESSION_COOKIE_NAME] = self._session.session_key
        return cookies

    @property
    def headers(self) -> dict[str, bytes]:
        headers = dict(self._headers)
        cookies = self.get_cookies()
        if cookies:
            headers.setdefault("cookie", _encoded_cookies(cookies))
        return headers

    def _content(self, content: dict[str, Any] | None, text: Any, path: str) -> dict[str, Any]:
        content = copy.deepcopy(content or {})
        content.setdefault("reply_channel", self.reply_channel)
        path, _, query = path.partition("?")
        content.setdefault("path", path)
        if query:
            content.setdefault("query_string", query.encode("latin-1"))
        content.setdefault("headers", [[k.encode("latin-1"), v] for k, v in self.headers.items()])
        if self._ordered:
            if "order" in content:
                raise ValueError('do not set "order" yourself with WSClient(ordered=True)')
            content["order"] = self.order
            self.order += 1
        if text is not None:
            content["text"] = text if isinstance(text, str) else json_module.dumps(text)
        return content

    # -- sending and consuming ------------------------------------------------------

    def send(self, to: str, content: dict[str, Any] | None = None, text: Any = None,
             path: str = "/") -> None:
        """Send a ``websocket.*`` message (``text``: a str, or any JSON-able value)."""
        self.channel_layer.send(to, self._content(content, text, path))

    def send_and_consume(  # type: ignore[override]
        self, channel: str, content: dict[str, Any] | None = None, text: Any = None, path: str = "/",
        fail_on_none: bool = True, check_accept: bool = True,
    ) -> Any:
        """Send and run the consumer; a connect must be accepted unless ``check_accept=False``."""
        self.send(channel, content, text, path)
        return self.consume(channel, fail_on_none=fail_on_none, check_accept=check_accept)

    def consume(self, channel: str, fail_on_none: bool = True, check_accept: bool = True) -> Any:
        result = super().consume(channel, fail_on_none=fail_on_none)
        if channel == "websocket.connect" and check_accept:
            received = self.receive(json=False)
            if received != {"accept": True}:
                raise AssertionError(f"connection not accepted: the consumer replied {received!r}")
        return result

    def receive(self, json: bool = True) -> Any:
        """The next reply: its ``text`` (decoded as JSON with ``json=True``), or the whole message without one."""
        content = super().receive()
        if content is None:
            return None
        if json and isinstance(content.get("text"), str):
            return json_module.loads(content["text"])
        return content.get("text", content)

    # -- logging in ---------------------------------------------------------------

    def login(self, **credentials: Any) -> bool:
        """Log the user with ``credentials`` in (Django's ``authenticate``); False if that fails."""
        from django.contrib.auth import authenticate

        user = authenticate(**credentials)
        if user is None or not user.is_active:
            return False
        self._login(user)
        return True

    def force_login(self, user: Any, backend: str | None = None) -> None:
        from django.conf import settings

        user.backend = backend or settings.AUTHENTICATION_BACKENDS[0]
        self._login(user)

    def _login(self, user: Any) -> None:
        from django.contrib.auth import login
        from django.http import HttpRequest

        request = HttpRequest()
        request.session = self.session
        login(request, user)
        self.session.save()
