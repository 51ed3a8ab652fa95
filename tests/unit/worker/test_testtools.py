"""worker.test on itself: the layer swap, get_next_message, apply_routes, the HTTP client over views and consumers."""

from __future__ import annotations

import unittest
from typing import Any

import pytest

from tests.unit.worker import consumer_support

consumer_support.setup()

from ipc_layer import InMemoryChannelLayer  # noqa: E402
from worker import DEFAULT_CHANNEL_LAYER  # noqa: E402
from worker.asgi import channel_layers  # noqa: E402
from worker.channel import Channel  # noqa: E402
from worker.message import Message  # noqa: E402
from worker.routing import route  # noqa: E402
from worker.test import ChannelTestCase, Client, HttpClient, apply_routes, router_for  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def thumbnail(message: Message, **kwargs: Any) -> None:
    Channel("thumbnails.done").send({"id": message["id"], "size": kwargs.get("size")})


def hello(message: Message) -> None:
    message.reply_channel.send({"status": 201, "headers": [[b"x-from", b"consumer"]],  # type: ignore[union-attr]
                                "content": b"hello ", "more_content": True})
    message.reply_channel.send({"content": message["path"].encode()})  # type: ignore[union-attr]


class SwapTests(ChannelTestCase):
    def test_the_layer_is_a_fresh_in_memory_one(self) -> None:
        layer = channel_layers[DEFAULT_CHANNEL_LAYER]
        self.assertIsInstance(layer, InMemoryChannelLayer)
        Channel("thumbnails").send({"id": 1})
        message = self.get_next_message("thumbnails", require=True)
        assert message is not None
        self.assertEqual(message.content, {"id": 1})
        self.assertIsNone(self.get_next_message("thumbnails"))
        with self.assertRaisesRegex(AssertionError, "expected a message on channel 'thumbnails'"):
            self.get_next_message("thumbnails", require=True)

    @apply_routes([route("thumbnails", thumbnail, id=r"^\d+$")])
    def test_send_and_consume_through_apply_routes(self) -> None:
        Client().send_and_consume("thumbnails", {"id": "7"})
        done = self.get_next_message("thumbnails.done", require=True)
        assert done is not None
        self.assertEqual(done.content, {"id": "7", "size": None})
        with self.assertRaisesRegex(AssertionError, "no route matches the message on 'thumbnails'"):
            Client().send_and_consume("thumbnails", {"id": "x"})
        with self.assertRaisesRegex(AssertionError, "no message on channel 'empty'"):
            Client().consume("empty")
        self.assertIsNone(Client().consume("empty", fail_on_none=False))


def test_the_test_case_puts_the_old_layer_back() -> None:
    before = channel_layers.set(DEFAULT_CHANNEL_LAYER, marker := InMemoryChannelLayer())
    try:
        result = unittest.TestResult()
        unittest.defaultTestLoader.loadTestsFromTestCase(SwapTests).run(result)
        assert result.wasSuccessful(), result.failures + result.errors
        assert result.testsRun == 2
        assert channel_layers[DEFAULT_CHANNEL_LAYER] is marker
    finally:
        channel_layers.set(DEFAULT_CHANNEL_LAYER, before)


@pytest.fixture
def layer() -> Any:
    fresh = InMemoryChannelLayer()
    old = channel_layers.set(DEFAULT_CHANNEL_LAYER, fresh)
    yield fresh
    channel_layers.set(DEFAULT_CHANNEL_LAYER, old)


def test_apply_routes_on_a_class_and_nested_lists(layer: Any) -> None:
    @apply_routes([[route("a", thumbnail)], [route("b", thumbnail, size=r"^(?P<size>\d+)$")]])
    class Case(unittest.TestCase):
        def test_it(self) -> None:
            Client().send_and_consume("b", {"id": 1, "size": "9"})

    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(Case).run(result)
    assert result.wasSuccessful(), result.errors
    assert layer.receive(["thumbnails.done"])[1] == {"id": 1, "size": "9"}
    assert "a" not in router_for().channels


def test_http_client_through_the_sites_django_views(layer: Any) -> None:
    client = HttpClient()
    response = client.get("/meta/?a=1&a=2")
    assert response is not None and response.status_code == 200
    assert response.json()["get"] == {"a": ["1", "2"]}
    client.get("/set-cookie/?flavour=ginger")
    response = client.get("/cookies/")
    assert response is not None and response.json()["cookies"]["flavour"] == "ginger"
    response = client.post("/json/", b'{"numbers": [1, 2]}', content_type="application/json")
    assert response is not None and response.json()["sum"] == 3
    response = client.get("/missing/")
    assert response is not None and response.status_code == 404


@apply_routes([route("http.request", hello, path=r"^/hello/")])
def test_http_client_with_a_low_level_consumer(layer: Any) -> None:
    response = HttpClient().get("/hello/there")
    assert response is not None
    assert (response.status_code, response.content) == (201, b"hello /hello/there")
    assert response.header("X-From") == "consumer"
