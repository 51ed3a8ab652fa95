"""The room's WebSocket: who is logged in comes from the page's session cookie.

``RoomConsumer`` is a ``JsonWebsocketConsumer`` with ``http_user = True``: on connect the
user of the HTTP session (the ``sessionid`` cookie the browser sends with the handshake)
is copied into the socket's channel session, so every later frame of that socket, on
whichever worker, has ``message.user``. The socket is in the room's group from connect to
disconnect (``connection_groups``); a chat line is saved, then sent to the group.

A handshake is refused (403) before the group is joined when its ``Origin`` is not one of
``ALLOWED_HOSTS`` (another site's page opening our socket with the user's cookies) or
nobody is logged in, so the group never holds a refused socket. ``ipc-server`` still sends
``websocket.disconnect`` for it (the application saw the connect): only a socket whose
connect was accepted (``"joined"`` in its channel session) tells the room it left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from worker.exceptions import DenyConnection
from worker.generic.websockets import JsonWebsocketConsumer
from worker.message import Message
from worker.security.websockets import allowed_hosts_only

from .events import room_group, send_to_room
from .models import MAX_MESSAGE, ChatMessage, Room

__all__ = ["RoomConsumer"]

logger = logging.getLogger(__name__)


class RoomConsumer(JsonWebsocketConsumer):
    http_user = True

    def connection_groups(self, room: str = "", **kwargs: Any) -> Iterable[str]:
        return [room_group(room)]

    @allowed_hosts_only
    def raw_connect(self, message: Message, **kwargs: Any) -> None:
        if not message.user.is_authenticated:  # type: ignore[attr-defined]
            logger.info("refused a socket on %r: nobody is logged in", message.get("path"))
            raise DenyConnection()
        super().raw_connect(message, **kwargs)

    def connect(self, message: Message, room: str = "", **kwargs: Any) -> None:
        super().connect(message, **kwargs)  # accept
        message.channel_session["joined"] = True  # type: ignore[attr-defined]
        send_to_room(room, {"type": "presence", "user": self.username, "joined": True})

    def receive(self, content: Any = None, room: str = "", **kwargs: Any) -> None:  # type: ignore[override]
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            self.send({"type": "error", "error": 'send {"text": "a non-empty message"}'})
            return
        text = text.strip()
        if len(text) > MAX_MESSAGE:
            self.send({"type": "error", "error": f"a message has at most {MAX_MESSAGE} characters"})
            return
        chat_room, _ = Room.objects.get_or_create(name=room)
        line = ChatMessage.objects.create(room=chat_room, user=self.message.user, text=text)  # type: ignore[attr-defined]
        send_to_room(room, line.as_event())

    def disconnect(self, message: Message, room: str = "", **kwargs: Any) -> None:
        if not message.channel_session.get("joined"):  # type: ignore[attr-defined]
            return  # a refused handshake's disconnect: it never joined
        send_to_room(room, {"type": "presence", "user": self.username, "joined": False})

    @property
    def username(self) -> str:
        user = getattr(self.message, "user", None)
        return user.get_username() if user is not None and user.is_authenticated else ""
