"""worker.delay (held messages), long-poll (ResponseLater through the view consumer), worker.binding."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tests.unit.worker import consumer_support

consumer_support.setup()

from ipc_layer import InMemoryChannelLayer  # noqa: E402
from worker import DEFAULT_CHANNEL_LAYER  # noqa: E402
from worker.asgi import channel_layers  # noqa: E402
from worker.delay import DELAY_CHANNEL, DelayScheduler, delay_consumer, send_delayed  # noqa: E402
from worker.message import Message  # noqa: E402
from worker.routing import include  # noqa: E402
from worker.test import HttpClient, WSClient, apply_routes  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def layer() -> Any:
    fresh = InMemoryChannelLayer()
    old = channel_layers.set(DEFAULT_CHANNEL_LAYER, fresh)
    yield fresh
    channel_layers.set(DEFAULT_CHANNEL_LAYER, old)


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A layer that records sends and lets the test wait for them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.arrived = threading.Event()

    def send(self, channel: str, content: dict[str, Any]) -> None:
        self.sent.append((channel, content))
        self.arrived.set()


def test_the_scheduler_sends_in_due_order_and_hands_back_the_rest() -> None:
    clock = ManualClock()
    s = DelayScheduler(clock=clock)
    out = Recorder()
    s.schedule(out, "late", {"n": 2}, 5000)
    s.schedule(out, "soon", {"n": 1}, 0)  # due now: the thread sends it at once
    assert out.arrived.wait(10)
    assert out.sent == [("soon", {"n": 1})]
    assert s.pending() == 1
    clock.now += 2.0
    assert s.hand_back() == 1  # the worker stops: 3 s left, back to asgi.delay for another worker
    assert out.sent[1] == (DELAY_CHANNEL, {"channel": "late", "content": {"n": 2}, "delay": 3000.0})
    assert s.pending() == 0


def test_the_scheduler_wakes_for_an_earlier_entry() -> None:
    clock = ManualClock()
    s = DelayScheduler(clock=clock)
    out = Recorder()
    s.schedule(out, "far", {}, 3_600_000)  # the thread sleeps for an hour ...
    s.schedule(out, "now", {}, 0)  # ... and is woken by this one
    assert out.arrived.wait(10)
    assert out.sent == [("now", {})]
    s.hand_back()


def test_delay_consumer_checks_its_message(layer: Any, caplog: pytest.LogCaptureFixture) -> None:
    cases: list[tuple[dict[str, Any], str]] = [({"channel": "bad name", "content": {}, "delay": 1}, "'channel'"),
                         ({"channel": "x", "content": [1], "delay": 1}, "'content' must be a dict"),
                         ({"channel": "x", "content": {}, "delay": -1}, "'delay' must be milliseconds"),
                         ({"channel": "x", "content": {}, "delay": True}, "'delay' must be milliseconds"),
                         ({"channel": "x", "content": {}}, "'delay' must be milliseconds")]
    for content, why in cases:
        delay_consumer(Message(content, DELAY_CHANNEL, layer))
        assert why in caplog.text
    with pytest.raises(ValueError, match="send_delayed: 'delay'"):
        send_delayed("x", {}, 10**12)


def test_send_delayed_round_trip(layer: Any) -> None:
    send_delayed("reminders", {"id": 3}, 0, immediately=True)
    name, content = layer.receive([DELAY_CHANNEL])
    assert (name, content) == (DELAY_CHANNEL, {"channel": "reminders", "content": {"id": 3}, "delay": 0})
    delay_consumer(Message(content, name, layer))
    layer.blocking_timeout = 10.0
    assert layer.receive(["reminders"], block=True) == ("reminders", {"id": 3})


@apply_routes([include("tests.django_site.sockets.routing.channel_routing")])
def test_long_poll_answered_by_one_group_send_and_cleaned_on_disconnect(layer: Any) -> None:
    from tests.django_site.sockets import views

    clients = [HttpClient() for _ in range(5)]
    for client in clients:
        assert client.get("/c/poll/") is None  # ResponseLater: no answer yet, nothing sent
    assert sorted(views.POLLERS.channel_names()) == sorted(c.reply_channel for c in clients)
    gone = clients.pop()
    gone.send_and_consume("http.disconnect", {"path": "/c/poll/"}, fail_on_none=True)
    assert len(views.POLLERS.channel_names()) == 4
    notify = HttpClient().get("/c/notify/?text=hello")
    assert notify is not None and notify.json() == {"answered": 4}
    for client in clients:
        response = client.get_response()
        assert response is not None and (response.status_code, response.content) == (200, b"hello")
    assert views.POLLERS.channel_names() == []


def test_binding_sends_saves_and_deletes_and_applies_permitted_edits(layer: Any) -> None:
    from tests.django_site.sockets.models import Note

    with apply_routes([include("tests.django_site.sockets.routing.channel_routing")]):
        client = WSClient()
        client.send_and_consume("websocket.connect", path="/multi/")
        assert layer.group_channels("notes") == [client.reply_channel]
        note = Note.objects.create(text="first", secret="s")
        created = client.receive()
        assert created == {"stream": "notes", "payload": {"action": "create", "pk": note.pk,
                                                           "data": {"text": "first"}, "model": "sockets.note"}}
        note.text = "second"
        note.save()
        assert client.receive()["payload"]["action"] == "update"
        # Inbound: an anonymous client may create (the binding says so), not update or delete.
        frame = {"stream": "notes", "payload": {"action": "create", "data": {"text": "from ws", "secret": "x"}}}
        client.send_and_consume("websocket.receive", text=json.dumps(frame), path="/multi/")
        made = Note.objects.get(text="from ws")
        assert made.secret == ""  # not a bound field: clients cannot write it
        assert client.receive()["payload"]["data"] == {"text": "from ws"}
        frame = {"stream": "notes", "payload": {"action": "delete", "pk": made.pk}}
        client.send_and_consume("websocket.receive", text=json.dumps(frame), path="/multi/")
        assert Note.objects.filter(pk=made.pk).exists()
        pk = note.pk
        note.delete()
        assert client.receive()["payload"] == {"action": "delete", "pk": pk, "data": {"text": "second"},
                                               "model": "sockets.note"}
        made.delete()

