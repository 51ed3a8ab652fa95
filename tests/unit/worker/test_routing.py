"""worker.routing: routes, filters, include prefixes, the defaults, and start-up errors naming the route."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from ipc_layer import InMemoryChannelLayer
from worker.exceptions import RoutingError
from worker.message import Message
from worker.routing import (
    DEFAULT_HTTP_CONSUMER,
    Router,
    connect_consumer,
    include,
    null_consumer,
    route,
    route_class,
)

pytestmark = pytest.mark.timeout(60)

REPO = pathlib.Path(__file__).resolve().parents[3]


def msg(channel: str, **content: Any) -> Message:
    return Message(content, channel, InMemoryChannelLayer())


def chat(message: Message, **kwargs: Any) -> None:
    pass


def other(message: Message, **kwargs: Any) -> None:
    pass


# a routing list importable by dotted path (tests.unit.worker.test_routing.INNER)
INNER = [route("websocket.receive", chat, path=r"^/(?P<room>\w+)/$")]


class Chat:
    @classmethod
    def channel_names(cls) -> set[str]:
        return {"websocket.connect", "websocket.receive"}

    def __init__(self, message: Message, **kwargs: Any) -> None:
        self.kwargs = kwargs


def test_route_matches_channel_and_filters_with_named_groups() -> None:
    r = route("websocket.connect", chat, path=r"^/chat/(?P<room>\w+)/$")
    assert r.match(msg("websocket.connect", path="/chat/lobby/")) == (chat, {"room": "lobby"})
    assert r.match(msg("websocket.connect", path="/chat/")) is None
    assert r.match(msg("websocket.receive", path="/chat/lobby/")) is None  # other channel
    assert r.match(msg("websocket.connect")) is None  # key missing
    assert r.channel_names() == {"websocket.connect"}


def test_filter_values_bytes_ints_and_other_types() -> None:
    r = route("http.request", chat, query_string=r"^a=(?P<a>\d+)")
    assert r.match(msg("http.request", query_string=b"a=12&b=3")) == (chat, {"a": "12"})
    assert r.match(msg("http.request", query_string=b"\xff")) is None  # latin-1, never a decode error
    o = route("websocket.receive", chat, order=r"^[0-2]$")
    assert o.match(msg("websocket.receive", order=2)) == (chat, {})
    assert o.match(msg("websocket.receive", order=3)) is None
    assert o.match(msg("websocket.receive", order=None)) is None
    assert o.match(msg("websocket.receive", order=True)) is None  # bools are not numbers here


def test_route_on_several_channels_and_by_dotted_path() -> None:
    r = route(["websocket.connect", b"websocket.receive"], "tests.unit.worker.test_routing.chat")
    assert r.consumer is chat
    assert r.channel_names() == {"websocket.connect", "websocket.receive"}
    assert r.match(msg("websocket.receive")) == (chat, {})


def test_include_strips_the_prefix_and_merges_kwargs() -> None:
    inner = [
        route("websocket.receive", chat, path=r"^/(?P<room>\w+)/$"),
        route("websocket.receive", other, path=r"^/$"),
    ]
    r = Router([include(inner, path=r"^/(?P<site>\w+)/chat")])
    message = msg("websocket.receive", path="/a/chat/lobby/")
    assert r.match(message) == (chat, {"site": "a", "room": "lobby"})
    assert message["path"] == "/a/chat/lobby/"  # the consumer gets the message unchanged
    assert r.match(msg("websocket.receive", path="/a/chat/")) == (other, {"site": "a"})
    assert r.match(msg("websocket.receive", path="/b/news/lobby/")) is None
    assert r.channels == {"websocket.receive"}


def test_nested_includes_and_dotted_path_routing() -> None:
    r = Router([include([include("tests.unit.worker.test_routing.INNER", path=r"^/chat")], path=r"^/v1")])
    assert r.match(msg("websocket.receive", path="/v1/chat/x/")) == (chat, {"room": "x"})
    assert r.match(msg("websocket.receive", path="/v1/x/")) is None


def test_foreign_routable_inside_include_sees_stripped_values() -> None:
    seen = []

    class Mine:
        def match(self, message: Any) -> Any:
            seen.append((message.channel.name, message["path"]))
            return (other, {}) if message["path"] == "/x" else None

        def channel_names(self) -> set[str]:
            return {"http.request"}

    r = Router([include([Mine()], path=r"^/api")])
    assert r.match(msg("http.request", path="/api/x")) == (other, {})
    assert seen == [("http.request", "/x")]


def test_first_match_wins_and_dict_routing() -> None:
    r = Router([route("a", chat, path="^/x"), route("a", other)])
    assert r.match(msg("a", path="/x")) == (chat, {})
    assert r.match(msg("a", path="/y")) == (other, {})
    d = Router({"thumbnails": chat, "b": "tests.unit.worker.test_routing.other"})
    assert d.match(msg("thumbnails")) == (chat, {})
    assert d.match(msg("b")) == (other, {})
    assert d.channels == {"thumbnails", "b"}


def test_route_class() -> None:
    r = route_class(Chat, path=r"^/rooms/(?P<n>\d+)")
    assert r.channel_names() == {"websocket.connect", "websocket.receive"}
    assert r.match(msg("websocket.receive", path="/rooms/4")) == (Chat, {"n": "4"})
    with pytest.raises(RoutingError, match=r"route_class\(.*chat\): the class has no channel_names"):
        route_class(chat)


def test_defaults_come_after_user_routes() -> None:
    http = lambda message: None  # noqa: E731
    r = Router([route("http.request", chat, path=r"^/x/$")])
    r.check_default(http)
    assert r.match(msg("http.request", path="/x/")) == (chat, {})
    assert r.match(msg("http.request", path="/y/")) == (http, {})
    assert r.match(msg("websocket.connect", path="/")) == (connect_consumer, {})
    assert r.match(msg("websocket.disconnect", path="/")) == (null_consumer, {})
    assert r.channels == {"http.request", "asgi.delay", "websocket.connect", "websocket.receive",
                          "websocket.disconnect"}
    assert r.describe()[0].startswith("http.request (path='^/x/$') -> tests.unit.worker.test_routing.chat")


def test_connect_consumer_accepts() -> None:
    layer = InMemoryChannelLayer()
    connect_consumer(Message({"reply_channel": "websocket.send!abc", "path": "/"}, "websocket.connect", layer))
    assert layer.receive(["websocket.send!"]) == ("websocket.send!abc", {"accept": True})


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: route("a", chat, path=r"^/(unclosed"),
         r"route a -> .*chat: filter path='\^/\(unclosed' is not a valid regex"),
        (lambda: route("a", chat, path=r"^/(\d+)/$"), r"route a -> .*chat: filter path=.* has positional groups"),
        (lambda: route("a", chat, path=3), r"filter path=3 must be a regex"),
        (lambda: route("a", "tests.unit.worker.nope.chat"),
         r"route\('a', 'tests.unit.worker.nope.chat'\): consumer .* cannot import module"),
        (lambda: route("a", "tests.unit.worker.test_routing.missing"), r"has no attribute 'missing'"),
        (lambda: route("a", "nodots"), r"'nodots' is not a dotted path"),
        (lambda: route("a", 42),  # type: ignore[arg-type]
         r"the consumer 42 is a int, not callable"),
        (lambda: route("bad name!", chat), r"route\('bad name!', .*chat\):"),
        (lambda: route([], chat), r"no channel names"),
        (lambda: Router([route("a", chat), [route("b", chat)]]),
         r"entry #1 of channel routing .* is a list; wrap a nested routing list in include\(\)"),
        (lambda: Router([route("a", chat), "x"]), r"entry #1 of channel routing .* is 'x', not a route\(\)"),
        (lambda: Router("tests.unit.worker.nope.routing"),
         r"channel routing 'tests.unit.worker.nope.routing': cannot import"),
        (lambda: Router("tests.unit.worker.test_routing.chat"), r"must be a list of route"),
        (lambda: include(INNER, path=r"^(x"), r"include\(.*\): filter path='\^\(x' is not a valid regex"),
    ],
)
def test_bad_routes_fail_when_built_naming_the_route(build: Any, error: str) -> None:
    with pytest.raises(RoutingError, match=error):
        build()


def test_routing_errors_are_value_errors_and_improperly_configured() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ValueError):
        route("a", 42)  # type: ignore[arg-type]
    with pytest.raises(ImproperlyConfigured):
        route("a", 42)  # type: ignore[arg-type]


SETTINGS = """
CHANNEL_LAYERS = {
    "default": {"BACKEND": "ipc_layer.inmemory.InMemoryChannelLayer", "ROUTING": "siteapp.routing"},
    "bare": {"BACKEND": "ipc_layer.inmemory.InMemoryChannelLayer"},
    "broken": {"BACKEND": "ipc_layer.inmemory.InMemoryChannelLayer", "ROUTING": "siteapp.nope"},
}
SECRET_KEY = "x"
"""

SITEAPP = """
from worker.routing import route
def mine(message): pass
def views(message): pass
routing = [route("http.request", mine, path=r"^/mine/$"), route("thumbnails", mine)]
"""

SCRIPT = """
import django, sys
django.setup()
from worker.message import Message
from worker.routing import router_from_settings
from worker.exceptions import RoutingError, InvalidChannelLayerError
import siteapp
r = router_from_settings("default", http_consumer="siteapp.views")
def m(channel, **c): return Message(c, channel, None)
assert r.match(m("http.request", path="/mine/"))[0] is siteapp.mine
assert r.match(m("http.request", path="/other/"))[0] is siteapp.views
assert r.match(m("thumbnails"))[0] is siteapp.mine
assert "thumbnails" in r.channels and "websocket.connect" in r.channels
bare = router_from_settings("bare", http_consumer="siteapp.views")
assert bare.match(m("http.request", path="/mine/"))[0] is siteapp.views
try:
    router_from_settings("broken")
except RoutingError as e:
    assert "siteapp.nope" in str(e), e
else:
    raise SystemExit("broken routing accepted")
try:
    router_from_settings("nope")
except InvalidChannelLayerError as e:
    assert "no alias 'nope'" in str(e) and "'bare'" in str(e), e
else:
    raise SystemExit("unknown alias accepted")
# the catch-all's default is the site's Django views, by dotted path
sys.modules["worker.http"] = type(sys)("worker.http")
sys.modules["worker.http"].view_consumer = siteapp.views
assert router_from_settings("bare").match(m("http.request", path="/"))[0] is siteapp.views
print("ok")
"""


def test_router_from_settings(tmp_path: pathlib.Path) -> None:
    # Its own process: Django's settings are process-wide and other tests configure them.
    (tmp_path / "siteset.py").write_text(SETTINGS)
    (tmp_path / "siteapp.py").write_text(SITEAPP)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="siteset",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert DEFAULT_HTTP_CONSUMER == "worker.http.view_consumer"
