"""worker.generic: class-based WebSocket consumers and the demultiplexer, driven by worker.test's WSClient."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from tests.unit.worker import consumer_support

consumer_support.setup()

from ipc_layer import InMemoryChannelLayer  # noqa: E402
from worker import DEFAULT_CHANNEL_LAYER  # noqa: E402
from worker.asgi import channel_layers  # noqa: E402
from worker.channel import Group  # noqa: E402
from worker.exceptions import DenyConnection, SendNotAvailableOnDemultiplexer  # noqa: E402
from worker.generic import BaseConsumer  # noqa: E402
from worker.generic.websockets import (  # noqa: E402
    JsonWebsocketConsumer,
    WebsocketConsumer,
    WebsocketDemultiplexer,
    WebsocketMultiplexer,
)
from worker.message import Message  # noqa: E402
from worker.routing import route_class  # noqa: E402
from worker.test import WSClient, apply_routes  # noqa: E402

pytestmark = pytest.mark.timeout(60)

LOG: list[Any] = []


@pytest.fixture(autouse=True)
def layer() -> Any:
    fresh = InMemoryChannelLayer()
    old = channel_layers.set(DEFAULT_CHANNEL_LAYER, fresh)
    LOG.clear()
    yield fresh
    channel_layers.set(DEFAULT_CHANNEL_LAYER, old)


class Echo(WebsocketConsumer):
    groups: ClassVar[list[str]] = ["everyone"]

    def connection_groups(self, **kwargs: Any) -> list[str]:
        return ["everyone", f"room-{kwargs['room']}"]

    def connect(self, message: Message, **kwargs: Any) -> None:
        if kwargs["room"] == "closed":
            raise DenyConnection()
        super().connect(message, **kwargs)

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        LOG.append((text, bytes, kwargs, self.path))
        if text == "close":
            self.close(4000)
        elif text is not None:
            self.send(text=text.upper())
        else:
            self.send(bytes=bytes[::-1] if bytes else b"")

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        LOG.append(("disconnect", message["code"]))


ECHO = [route_class(Echo, path=r"^/echo/(?P<room>\w+)/$")]


@apply_routes(ECHO)
def test_websocket_consumer_connect_receive_groups_disconnect(layer: Any) -> None:
    client = WSClient()
    client.send_and_consume("websocket.connect", path="/echo/lobby/")
    assert sorted(layer.group_channels("everyone")) == [client.reply_channel]
    assert layer.group_channels("room-lobby") == [client.reply_channel]
    client.send_and_consume("websocket.receive", text="hi", path="/echo/lobby/")
    assert client.receive(json=False) == "HI"
    client.send_and_consume("websocket.receive", {"bytes": b"abc"}, path="/echo/lobby/")
    assert client.receive(json=False) == {"bytes": b"cba"}
    client.send_and_consume("websocket.receive", text="close", path="/echo/lobby/")
    assert client.receive(json=False) == {"close": 4000}
    client.send_and_consume("websocket.disconnect", {"code": 1000}, path="/echo/lobby/")
    assert layer.group_channels("everyone") == [] and layer.group_channels("room-lobby") == []
    assert LOG[0] == ("hi", None, {"room": "lobby"}, "/echo/lobby/")
    assert LOG[-1] == ("disconnect", 1000)


@apply_routes(ECHO)
def test_deny_connection_from_a_class_consumer() -> None:
    client = WSClient()
    with pytest.raises(AssertionError, match=r"not accepted: the consumer replied \{'close': True\}"):
        client.send_and_consume("websocket.connect", path="/echo/closed/")
    client.send_and_consume("websocket.connect", path="/echo/closed/", check_accept=False)
    assert client.receive(json=False) == {"close": True}


class Json(JsonWebsocketConsumer):
    channel_session = True

    def receive(self, content: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        seen = self.message.channel_session.get("seen", 0) + 1  # type: ignore[attr-defined]
        self.message.channel_session["seen"] = seen  # type: ignore[attr-defined]
        self.send({"echo": content, "seen": seen})


@apply_routes([route_class(Json, path=r"^/json/$")])
def test_json_consumer_with_channel_session(caplog: pytest.LogCaptureFixture) -> None:
    client = WSClient()
    client.send_and_consume("websocket.connect", path="/json/")
    client.send_and_consume("websocket.receive", text={"a": [1, 2]}, path="/json/")
    assert client.receive() == {"echo": {"a": [1, 2]}, "seen": 1}
    client.send_and_consume("websocket.receive", text=json.dumps("x"), path="/json/")
    assert client.receive() == {"echo": "x", "seen": 2}
    client.send_and_consume("websocket.receive", text="{not json", path="/json/")
    assert client.receive(json=False) == {"close": 1007}
    assert "a frame is not JSON" in caplog.text and "'/json/'" in caplog.text
    client.send_and_consume("websocket.receive", {"bytes": b"\x00"}, path="/json/")
    assert client.receive(json=False) == {"close": 1007}


class Ordered(WebsocketConsumer):
    strict_ordering = True

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        LOG.append(text)


@apply_routes([route_class(Ordered)])
def test_strict_ordering_on_a_class_consumer(layer: Any) -> None:
    client = WSClient(ordered=True)
    client.send_and_consume("websocket.connect")
    client.send("websocket.receive", text="one")  # order 1
    client.send("websocket.receive", text="two")  # order 2
    first = client.get_next_message("websocket.receive")
    second = client.get_next_message("websocket.receive")
    assert first is not None and second is not None
    from worker.test.base import run_message

    run_message(second)  # too early: parked, not run
    assert LOG == []
    run_message(first)  # runs, then puts "two" back on its channel
    assert LOG == ["one"]
    client.consume("websocket.receive")
    assert LOG == ["one", "two"]


class Login(WebsocketConsumer):
    http_user = True

    def connect(self, message: Message, **kwargs: Any) -> None:
        LOG.append(("connect", message.user.username))  # type: ignore[attr-defined]
        super().connect(message, **kwargs)

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        LOG.append(("receive", self.message.user.username))  # type: ignore[attr-defined]


@apply_routes([route_class(Login)])
def test_http_user_from_the_login_cookie() -> None:
    consumer_support.make_user("carol", "secret")
    client = WSClient()
    assert client.login(username="carol", password="secret")
    assert not client.login(username="carol", password="wrong")
    client.send_and_consume("websocket.connect")
    client.send_and_consume("websocket.receive", text="x")  # no cookie needed any more
    assert LOG == [("connect", "carol"), ("receive", "carol")]


class Rooms(JsonWebsocketConsumer):
    def connection_groups(self, **kwargs: Any) -> list[str]:
        return ["rooms"]

    def receive(self, content: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        LOG.append(("rooms", content, sorted(kwargs)))
        self.send({"joined": content["room"]})  # goes out on its stream


class Stats(JsonWebsocketConsumer):
    def connect(self, message: Message, **kwargs: Any) -> None:
        LOG.append(("stats connect", kwargs["multiplexer"].stream))

    def receive(self, content: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs["multiplexer"].send({"n": len(content)})


class Demux(WebsocketDemultiplexer):
    consumers: ClassVar[dict[str, Any]] = {"rooms": Rooms, "stats": Stats}


@apply_routes([route_class(Demux, path=r"^/multi/$")])
def test_demultiplexer(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = WSClient()
    client.send_and_consume("websocket.connect", path="/multi/")
    assert layer.group_channels("rooms") == [client.reply_channel]  # the stream consumer's groups
    assert ("stats connect", "stats") in LOG
    client.send_and_consume("websocket.receive", text={"stream": "rooms", "payload": {"room": 7}}, path="/multi/")
    assert client.receive() == {"stream": "rooms", "payload": {"joined": 7}}
    client.send_and_consume("websocket.receive", text={"stream": "stats", "payload": {"a": 1, "b": 2}},
                            path="/multi/")
    assert client.receive() == {"stream": "stats", "payload": {"n": 2}}
    for bad, why in [({"stream": "nope", "payload": {}}, "no consumer for stream 'nope'"),
                     ({"stream": "rooms", "payload": [1]}, "payload of stream 'rooms' is a list"),
                     ({"payload": {}}, "not {\"stream\"")]:
        client.send_and_consume("websocket.receive", text=bad, path="/multi/")
        assert client.receive(json=False) == {"close": 1007}
        assert why in caplog.text
    WebsocketMultiplexer.group_send("rooms", "rooms", {"news": 1})
    assert client.receive() == {"stream": "rooms", "payload": {"news": 1}}
    client.send_and_consume("websocket.disconnect", {"code": 1001}, path="/multi/")
    assert layer.group_channels("rooms") == []
    with pytest.raises(SendNotAvailableOnDemultiplexer):
        Demux.group_send("rooms", "x", {})


def test_group_send_helpers_and_frames(layer: Any) -> None:
    Group("g").add("test.client.a")
    WebsocketConsumer.group_send("g", text="t")
    JsonWebsocketConsumer.group_send("g", {"k": 1}, close=True)
    assert layer.receive(["test.client.a"])[1] == {"text": "t"}
    assert layer.receive(["test.client.a"])[1] == {"text": '{"k": 1}', "close": True}
    with pytest.raises(ValueError, match="needs text or bytes"):
        WebsocketConsumer.group_send("g")
    with pytest.raises(TypeError, match=r"send\(text=...\) must be a str"):
        WebsocketConsumer.group_send("g", text=b"x")  # type: ignore[arg-type]


class Plain(BaseConsumer):
    method_mapping: ClassVar[dict[str, str]] = {"thumbnails": "make", "thumbnails.done": "done"}
    size = 1

    def make(self, message: Message, **kwargs: Any) -> None:
        LOG.append(("make", message["id"], self.size, kwargs))

    def done(self, message: Message, **kwargs: Any) -> None:
        LOG.append(("done", message["id"]))


def test_base_consumer_dispatch_and_as_route(layer: Any) -> None:
    r = Plain.as_route(attrs={"size": 64}, id=r"^(?P<n>\d+)$")
    assert r.channel_names() == {"thumbnails", "thumbnails.done"}
    with apply_routes([r]):
        from worker.test import Client

        Client().send_and_consume("thumbnails", {"id": "5"})
        Client().send_and_consume("thumbnails.done", {"id": "5"})
    assert LOG == [("make", "5", 64, {"n": "5"}), ("done", "5")]
    with pytest.raises(ValueError, match="method_mapping does not map"):
        Plain(Message({}, "elsewhere", layer))
    with pytest.raises(TypeError, match="must be a dict"):
        Plain.as_route(attrs=[1])  # type: ignore[arg-type]
