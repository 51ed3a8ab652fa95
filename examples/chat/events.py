"""Pushing JSON events to the sockets of a room (from a consumer, a view or the task worker)."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from worker import Group

__all__ = ["room_group", "send_to_room"]


def room_group(room: str) -> str:
    """The group of a room's sockets (room names are slugs: ASCII, as layer names must be)."""
    return f"room-{room}"


def send_to_room(room: str, event: dict[str, Any], immediately: bool = False) -> None:
    """One text frame with ``event`` as JSON to every socket in ``room`` (deferred inside a consumer)."""
    Group(room_group(room)).send({"text": json.dumps(event, cls=DjangoJSONEncoder)}, immediately=immediately)
