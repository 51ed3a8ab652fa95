"""What ``/stats/`` shows: the channel layer's own counters, read by the worker that answers.

``global_statistics()`` (messages sent and ``ChannelFull`` refusals over the whole layer)
and ``channel_statistics(name)`` (sent, pending, age of the oldest pending message, full
refusals) for the channels the site uses, plus the size of each room's group and of the
long-poll group. Every layer of this project offers the ``statistics`` extension; a layer
without it shows the groups only.
"""

from __future__ import annotations

import os
from typing import Any

from worker.asgi import channel_layers

from . import longpoll
from .events import room_group
from .models import Room
from .tasks import TASKS

__all__ = ["CHANNELS", "snapshot"]

#: The channels whose statistics are shown.
CHANNELS = ("http.request", "http.disconnect", "websocket.connect", "websocket.receive",
            "websocket.disconnect", TASKS)


def snapshot() -> dict[str, Any]:
    layer = channel_layers["default"]
    has_stats = "statistics" in getattr(layer, "extensions", ())
    groups = {room_group(name): len(layer.group_channels(room_group(name)))
              for name in Room.objects.order_by("name").values_list("name", flat=True)}
    groups[longpoll.POLLERS] = len(layer.group_channels(longpoll.POLLERS))
    return {
        "layer": f"{type(layer).__module__}.{type(layer).__qualname__}",
        "prefix": getattr(layer, "prefix", None),
        "worker_pid": os.getpid(),
        "global": layer.global_statistics() if has_stats else None,
        "channels": {name: layer.channel_statistics(name) for name in CHANNELS} if has_stats else None,
        "groups": groups,
    }
