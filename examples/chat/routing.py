"""``ROUTING`` of the chat example: the room sockets, the long-poll's disconnects, the task channel.

Everything else (every other ``http.request``) goes to Django's views (urls.py), which the
router appends itself.
"""

from __future__ import annotations

from worker.routing import route, route_class

from . import longpoll
from .consumers import RoomConsumer
from .tasks import TASKS, run_task

channel_routing = [
    route_class(RoomConsumer, path=r"^/ws/room/(?P<room>[-a-zA-Z0-9_]{1,40})/$"),
    route("http.disconnect", longpoll.gone, path=r"^/counter/poll/$"),
    route(TASKS, run_task),
]
