"""A chat room for the multi-host tests: every WebSocket of ``/chat/`` joins group "chat".

``IPC_TEST_ROUTING=tests.django_site.chat.chat_routing`` selects it (the site's own routes
follow, so HTTP works as usual). A frame a client sends goes to every socket in the room,
on whichever host of the site it is connected.
"""

from __future__ import annotations

from typing import Any

from worker.generic.websockets import WebsocketConsumer
from worker.routing import route_class

from .routing import channel_routing

__all__ = ["ChatConsumer", "chat_routing"]


class ChatConsumer(WebsocketConsumer):
    groups = ["chat"]

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        if text is not None:
            self.group_send("chat", text=text)


chat_routing = [route_class(ChatConsumer, path=r"^/chat/$"), *channel_routing]
