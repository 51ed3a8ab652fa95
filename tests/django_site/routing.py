"""``ROUTING`` of the test site: user routes, before the default HTTP consumer (appended by the router)."""

from __future__ import annotations

from worker.routing import route

from . import consumers

channel_routing = [
    route("http.request", consumers.raw_http, path=r"^/x/$"),
]
