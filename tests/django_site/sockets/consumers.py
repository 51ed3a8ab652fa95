"""The test site's other consumers: JSON echo, demultiplexer, ordered echo, background work."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from django.conf import settings

from worker.exceptions import DenyConnection
from worker.generic.websockets import JsonWebsocketConsumer, WebsocketConsumer, WebsocketDemultiplexer
from worker.security.websockets import allowed_hosts_only

from .bindings import NoteBinding


def _state(*parts: str) -> str:
    folder = os.path.join(os.path.dirname(settings.DATABASES["default"]["NAME"]), *parts[:-1])
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, parts[-1])


class EchoJson(JsonWebsocketConsumer):
    """``/json/``: every JSON frame comes back as ``{"echo": ..., "pid": worker pid}``; ``?deny`` refuses."""

    def connect(self, message: Any, **kwargs: Any) -> None:
        if b"deny" in (message.get("query_string") or b""):
            raise DenyConnection()
        super().connect(message, **kwargs)

    def receive(self, content: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        self.send({"echo": content, "pid": os.getpid()})


class Multi(WebsocketDemultiplexer):
    """``/multi/``: stream ``echo`` (EchoJson) and ``notes`` (the bound model)."""

    groups: ClassVar[list[str]] = ["notes"]
    consumers: ClassVar[dict[str, Any]] = {"echo": EchoJson, "notes": NoteBinding.consumer}


class Ordered(WebsocketConsumer):
    """``/ordered/``: each text frame echoed, in the socket's order, one at a time."""

    strict_ordering = True

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        self.send(text=text)


class Unordered(WebsocketConsumer):
    """``/unordered/``: the same without ordering (the control case)."""

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        self.send(text=text)


@allowed_hosts_only
def guarded_connect(message: Any, **kwargs: Any) -> None:
    """``/guarded/``: only browsers on a page of this site (``Origin`` in ALLOWED_HOSTS) connect."""
    message.reply_channel.send({"accept": True})


def make_thumbnail(message: Any, **kwargs: Any) -> None:
    """``thumbnails``: a background task; records which worker process ran it."""
    with open(_state("tasks", str(message["id"])), "w") as f:
        f.write(str(os.getpid()))


def delayed_done(message: Any, **kwargs: Any) -> None:
    """``delayed.done``: records when a delayed message arrived (wall clock, like its sender)."""
    with open(_state("delayed", str(message["id"])), "w") as f:
        f.write(repr(time.time()))


def poll_disconnect(message: Any, **kwargs: Any) -> None:
    """``http.disconnect`` of a long-poll request: its reply channel leaves the group."""
    from .views import POLLERS

    POLLERS.discard(message.reply_channel)
