"""A real Channels 4 site on ``ipc_layer.aio.IPCChannelLayer``, with another process in the room.

Django is configured in-test (``settings.configure``) with
``CHANNEL_LAYERS = {"default": {"BACKEND": "ipc_layer.aio.IPCChannelLayer", ...}}``;
a chat ``AsyncJsonWebsocketConsumer`` joins a group on connect and is driven
by ``channels.testing.WebsocketCommunicator``. A second Python process
(started with ``subprocess``, so nothing is inherited) uses the same prefix:

* with the synchronous ``ipc_layer.IPCChannelLayer`` it ``send_group``s to
  the room, and both connected sockets get the message;
* with ``ipc_layer.aio.IPCChannelLayer`` it joins the room with a channel of
  its own, and gets what a socket says (the consumer's ``group_send``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("channels.testing", reason="channels 4 with daphne (channels.testing) is not installed")

import django
from django.conf import settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = __file__.rsplit("/tests/", 1)[0]
TIMEOUT = 10


from channels.generic.websocket import AsyncJsonWebsocketConsumer  # type: ignore[import-untyped]
from channels.layers import get_channel_layer  # type: ignore[import-untyped]
from channels.routing import URLRouter  # type: ignore[import-untyped]
from channels.testing import WebsocketCommunicator  # type: ignore[import-untyped]
from django.test import override_settings
from django.urls import path

urlpatterns: list[Any] = []


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """The Channels tutorial's chat room, JSON flavour."""

    async def connect(self) -> None:
        self.room = f"chat-{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room, self.channel_name)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        await self.channel_layer.group_send(self.room, {"type": "chat.message", "text": content["text"]})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"]})


application = URLRouter([path("ws/chat/<str:room>/", ChatConsumer.as_asgi())])


@pytest.fixture(scope="module")
def django_settings() -> None:
    """A minimal settings module, configured once per process (Django allows no second time)."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="channels4-site-test",
            INSTALLED_APPS=["channels"],
            DATABASES={},
            ROOT_URLCONF=__name__,
            CHANNEL_LAYERS={},
        )
        django.setup()


@pytest.fixture
def site(prefix: str, django_settings: None) -> Iterator[str]:
    """The site's CHANNEL_LAYERS on the test's own prefix (segment removed afterwards)."""
    layers = {"default": {"BACKEND": "ipc_layer.aio.IPCChannelLayer",
                          "CONFIG": {"prefix": prefix, "capacity": 100, "expiry": 60,
                                     "group_expiry": 86400, "segment_size": 8 << 20}}}
    with override_settings(CHANNEL_LAYERS=layers):
        yield prefix


def _python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-X", "dev", "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"the other process failed (exit {proc.returncode}): {out}"
    return out


async def _readline(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), TIMEOUT)
    assert line, "the other process exited early"
    return line.strip()


def test_group_send_from_another_process_reaches_every_socket(site: str) -> None:
    from ipc_layer.aio import IPCChannelLayer

    assert isinstance(get_channel_layer(), IPCChannelLayer)

    async def main() -> str:
        alice = WebsocketCommunicator(application, "/ws/chat/lobby/")
        bob = WebsocketCommunicator(application, "/ws/chat/lobby/")
        assert (await alice.connect(TIMEOUT))[0]
        assert (await bob.connect(TIMEOUT))[0]
        # A worker-style process, synchronous (ASGI 1) layer, same prefix.
        other = _python(f"""
            from ipc_layer import IPCChannelLayer
            layer = IPCChannelLayer(prefix={site!r})
            layer.send_group("chat-lobby", {{"type": "chat.message", "text": "hello from another process"}})
            print("sent", flush=True)
        """)
        out = await asyncio.to_thread(_finish, other)
        for socket in (alice, bob):
            assert await socket.receive_json_from(TIMEOUT) == {"text": "hello from another process"}
        await alice.disconnect()
        # Bob is still in the room, Alice is not.
        layer = get_channel_layer()
        assert len(await layer.group_channels("chat-lobby")) == 1
        await bob.disconnect()
        assert await layer.group_channels("chat-lobby") == []
        return out

    assert asyncio.run(main()) == "sent\n"


def test_socket_message_reaches_a_consumer_in_another_process(site: str) -> None:
    async def main() -> None:
        # Another Channels 4 process (the async layer) in the same room.
        other = _python(f"""
            import asyncio, json, sys
            from ipc_layer.aio import IPCChannelLayer

            async def main():
                layer = IPCChannelLayer(prefix={site!r})
                mine = await layer.new_channel()
                await layer.group_add("chat-lobby", mine)
                print("joined", flush=True)
                message = await asyncio.wait_for(layer.receive(mine), {TIMEOUT})
                print(json.dumps(message), flush=True)
                sys.stdin.readline()  # until the socket side is done
                await layer.group_discard("chat-lobby", mine)

            asyncio.run(main())
        """)
        try:
            assert await _readline(other) == "joined"
            socket = WebsocketCommunicator(application, "/ws/chat/lobby/")
            assert (await socket.connect(TIMEOUT))[0]
            await socket.send_json_to({"text": "anyone there?"})
            # The group_send reaches this socket and the other process's consumer.
            assert await socket.receive_json_from(TIMEOUT) == {"text": "anyone there?"}
            assert json.loads(await _readline(other)) == {"type": "chat.message", "text": "anyone there?"}
            await socket.disconnect()
        finally:
            assert other.stdin is not None
            other.stdin.write("done\n")
            other.stdin.flush()
            await asyncio.to_thread(_finish, other)

    asyncio.run(main())
