"""``ROUTING`` of the test site: user routes, before the default consumers (appended by the router)."""

from __future__ import annotations

from worker.http import ViewConsumer
from worker.routing import route

from . import consumers

#: Django views with a short body stall timeout (the live 408 test waits for it).
impatient_views = ViewConsumer(body_timeout=2)

channel_routing = [
    route("http.request", consumers.raw_http, path=r"^/x/$"),
    route("http.request", impatient_views, path=r"^/slow/"),
]
