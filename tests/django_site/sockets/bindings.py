"""``Note`` bound to the group ``notes``: saves and deletes reach every socket of ``/multi/``."""

from __future__ import annotations

from typing import Any

from worker.binding.websockets import WebsocketBinding


class NoteBinding(WebsocketBinding):
    model = "sockets.Note"
    stream = "notes"
    fields = ["text"]  # "secret" never leaves the server, and clients cannot write it

    @classmethod
    def group_names(cls, instance: Any) -> list[str]:
        return ["notes"]

    def has_permission(self, user: Any, action: str, pk: Any) -> bool:
        return bool(user.is_authenticated) or action == "create"
