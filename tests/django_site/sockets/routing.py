"""``ROUTING`` of the consumer tests: the chat tutorial, the other sockets, the background channels,
then the HTTP side's own routes (``tests.django_site.routing``)."""

from __future__ import annotations

from worker.routing import include, route, route_class

from . import consumers
from .chat import chat_routing

channel_routing = [
    include(chat_routing),
    route_class(consumers.EchoJson, path=r"^/json/$"),
    route_class(consumers.Multi, path=r"^/multi/$"),
    route_class(consumers.Ordered, path=r"^/ordered/$"),
    route_class(consumers.Unordered, path=r"^/unordered/$"),
    route("websocket.connect", consumers.guarded_connect, path=r"^/guarded/$"),
    route("thumbnails", consumers.make_thumbnail),
    route("delayed.done", consumers.delayed_done),
    route("http.disconnect", consumers.poll_disconnect, path=r"^/c/poll/"),
    include("tests.django_site.routing.channel_routing"),
]
