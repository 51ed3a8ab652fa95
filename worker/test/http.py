"""``HttpClient``: ``http.request`` messages as the protocol server sends them, and the assembled reply.

``HttpClient().get("/path/")`` sends one ``http.request`` (ASGI 1 format), runs its
consumer in-process (the site's per-URL consumers or its Django views, through the
routing) and reads the ``http.response`` messages back into an :class:`HttpResponse`
(``status``, ``headers``, ``content``, ``json()``). A consumer that answers later
(long-poll, ``ResponseLater``) leaves ``get_response()`` with nothing yet: call it again
after running whatever answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from .. import DEFAULT_CHANNEL_LAYER
from .base import Client

__all__ = ["HttpClient", "HttpResponse"]


class HttpResponse:
    """A reply assembled from ``http.response`` messages."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = content

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def json(self) -> Any:
        return json.loads(self.content)

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status_code} {len(self.content)} bytes>"


class HttpClient(Client):
    """Requests through the routing in-process; cookies set by responses are sent back."""

    def __init__(self, alias: str = DEFAULT_CHANNEL_LAYER) -> None:
        super().__init__(alias=alias)
        # A process-specific name, as the server's reply channels are.
        self.reply_channel = f"test.http{self.reply_channel.rsplit('.', 1)[1]}!reply"
        self.cookies: dict[str, str] = {}
        self._parts: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: bytes = b"", headers: Iterable[tuple[str, str]] = (),
                query: str | dict[str, Any] = "") -> HttpResponse | None:
        """Send one request, run its consumer, return the response (None if it answers later)."""
        path, _, query_in_path = path.partition("?")
        if isinstance(query, dict):
            query = urlencode(query, doseq=True)
        query_string = "&".join(q for q in (query_in_path, query) if q)
        header_list = [[k.lower().encode("latin-1"), v.encode("latin-1")] for k, v in headers]
        names = {k for k, _ in header_list}
        if b"host" not in names:
            header_list.append([b"host", b"testserver"])
        if self.cookies and b"cookie" not in names:
            header_list.append([b"cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode("latin-1")])
        self.send_and_consume("http.request", {
            "reply_channel": self.reply_channel,
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": path,
            "query_string": query_string.encode("latin-1"),
            "root_path": "",
            "headers": header_list,
            "body": body,
            "client": ["127.0.0.1", 50000],
            "server": ["testserver", 80],
        })
        return self.get_response()

    def get(self, path: str, **kwargs: Any) -> HttpResponse | None:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: bytes = b"", content_type: str = "application/octet-stream",
             **kwargs: Any) -> HttpResponse | None:
        headers = [("content-type", content_type), ("content-length", str(len(body))), *kwargs.pop("headers", ())]
        return self.request("POST", path, body=body, headers=headers, **kwargs)

    def get_response(self) -> HttpResponse | None:
        """The response, once its last message arrived on the reply channel; None while it has not."""
        while True:
            # its own "name!" queue
            name, content = self.channel_layer.receive([self.reply_channel.split("!")[0] + "!"])
            if name is None:
                return None
            self._parts.append(content)
            if not content.get("more_content", False):
                break
        parts, self._parts = self._parts, []
        head = parts[0]
        if "status" not in head:
            raise AssertionError(f"the first response message has no status: {head!r:.200}")
        headers = [(bytes(k), bytes(v)) for k, v in head.get("headers", [])]
        for key, value in headers:
            if key.lower() == b"set-cookie":
                name_value = value.decode("latin-1").split(";", 1)[0]
                cookie, _, cookie_value = name_value.partition("=")
                self.cookies[cookie.strip()] = cookie_value.strip()
        return HttpResponse(int(head["status"]), headers, b"".join(bytes(p.get("content", b"")) for p in parts))
