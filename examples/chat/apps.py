"""The app config: SQLite in WAL mode on every connection (several worker processes write at once)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig

__all__ = ["ChatConfig"]


def _sqlite_pragmas(sender: Any, connection: Any, **kwargs: Any) -> None:
    # WAL lets readers go on while one worker writes; without it a page view waits for
    # every chat message being saved. busy_timeout is also set by the "timeout" option.
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")


class ChatConfig(AppConfig):
    name = "examples.chat"
    label = "chat"
    verbose_name = "Chat example"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        connection_created.connect(_sqlite_pragmas, dispatch_uid="examples.chat.sqlite_pragmas")
