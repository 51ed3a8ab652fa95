"""The in-process test tools' core: the layer swap, the routing override and the plain ``Client``.

Theory of operation
-------------------
A test case swaps a fresh ``InMemoryChannelLayer`` into :data:`worker.asgi.channel_layers`
for each alias it tests (``Channel("x").send`` in the code under test lands there), and
puts the old one back afterwards. A client's ``consume(channel)`` takes the next message of
``channel`` from that layer, finds its consumer with the alias's router (the site's
``CHANNEL_LAYERS[alias]["ROUTING"]`` plus the defaults, as a worker builds it, unless
:class:`apply_routes` replaced it) and runs it with :func:`worker.dispatch.consume`, inside
the pool's ``consumer_started`` / ``consumer_finished`` signals, so deferred sends,
``DenyConnection``, ``ConsumeLater`` and the session decorators behave as in a worker.
Django's ``request_started``/``request_finished`` are not sent: they close the database
connection, which a ``TestCase`` transaction needs.
"""

from __future__ import annotations

import copy
import functools
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.test import TestCase, TransactionTestCase

from ipc_layer import InMemoryChannelLayer

from .. import DEFAULT_CHANNEL_LAYER
from ..asgi import channel_layers
from ..channel import Group
from ..dispatch import consume as dispatch_consume
from ..message import Message
from ..routing import Router, include, router_from_settings

__all__ = ["ChannelTestCase", "ChannelTestCaseMixin", "Client", "TransactionChannelTestCase", "apply_routes",
           "router_for"]

# alias -> the router tests use instead of the settings' (apply_routes), innermost last
_overrides: dict[str, list[Router]] = {}
# alias -> the router built from settings (built once: importing routing is not free)
_from_settings: dict[str, Router] = {}


def router_for(alias: str = DEFAULT_CHANNEL_LAYER) -> Router:
    """The router the test tools dispatch with for ``alias``."""
    stack = _overrides.get(alias)
    if stack:
        return stack[-1]
    router = _from_settings.get(alias)
    if router is None:
        router = _from_settings[alias] = router_from_settings(alias)
    return router


@contextmanager
def _signals(message: Message) -> Iterator[None]:
    from ..signals import consumer_finished, consumer_started

    consumer_started.send(sender=Client, environ=None, message=message)
    try:
        yield
    finally:
        consumer_finished.send(sender=Client, message=message)


def run_message(message: Message, alias: str = DEFAULT_CHANNEL_LAYER, fail_on_none: bool = True) -> Any:
    """Find ``message``'s consumer with the alias's router and run it as a worker would."""
    match = router_for(alias).match(message)
    if match is None:
        if fail_on_none:
            raise AssertionError(f"no route matches the message on {message.channel.name!r}: {message.content!r:.200}")
        return None
    consumer, kwargs = match
    with _signals(message):
        dispatch_consume(consumer, message, kwargs)
    return None


class ChannelTestCaseMixin:
    """Fresh in-memory layers for ``test_channel_aliases`` during each test."""

    test_channel_aliases: Sequence[str] = (DEFAULT_CHANNEL_LAYER,)

    def _pre_setup(self) -> None:
        super()._pre_setup()  # type: ignore[misc]
        self._old_layers = {alias: channel_layers.set(alias, InMemoryChannelLayer())
                            for alias in self.test_channel_aliases}

    def _post_teardown(self) -> None:
        for alias, old in self._old_layers.items():
            channel_layers.set(alias, old)
        del self._old_layers
        super()._post_teardown()  # type: ignore[misc]

    def get_next_message(
        self, channel: str, alias: str = DEFAULT_CHANNEL_LAYER, require: bool = False
    ) -> Message | None:
        """The next message sent to ``channel`` during the test, or None (a test failure with ``require``)."""
        layer = channel_layers[alias]
        name, content = layer.receive([channel])
        if name is None:
            if require:
                self.fail(f"expected a message on channel {channel!r}, got none")  # type: ignore[attr-defined]
            return None
        return Message(content, name, layer)


class ChannelTestCase(ChannelTestCaseMixin, TestCase):
    """A Django ``TestCase`` with in-memory channel layers."""


class TransactionChannelTestCase(ChannelTestCaseMixin, TransactionTestCase):
    """A Django ``TransactionTestCase`` with in-memory channel layers."""


class Client:
    """Sends messages with its own reply channel and runs their consumers in-process."""

    def __init__(self, alias: str = DEFAULT_CHANNEL_LAYER) -> None:
        self.alias = alias
        # A normal channel: the in-memory layer receives on it directly, groups take it.
        self.reply_channel = f"test.client.{secrets.token_hex(6)}"

    @property
    def channel_layer(self) -> Any:
        return channel_layers[self.alias]

    def get_next_message(self, channel: str) -> Message | None:
        name, content = self.channel_layer.receive([channel])
        if name is None:
            return None
        return Message(content, name, self.channel_layer)

    def get_consumer_by_channel(self, channel: str) -> Any:
        match = router_for(self.alias).match(Message({"text": ""}, channel, self.channel_layer))
        return match[0] if match else None

    def send(self, to: str, content: dict[str, Any] | None = None) -> None:
        """Send ``content`` (a copy, with this client's ``reply_channel``) to channel ``to``."""
        content = copy.deepcopy(content or {})
        content.setdefault("reply_channel", self.reply_channel)
        self.channel_layer.send(to, content)

    def consume(self, channel: str, fail_on_none: bool = True) -> Any:
        """Take the next message of ``channel`` and run its consumer (AssertionError if none)."""
        message = self.get_next_message(channel)
        if message is None:
            if fail_on_none:
                raise AssertionError(f"no message on channel {channel!r}")
            return None
        return run_message(message, self.alias, fail_on_none)

    def send_and_consume(self, channel: str, content: dict[str, Any] | None = None, fail_on_none: bool = True) -> Any:
        """Send a message to ``channel`` and run its consumer."""
        self.send(channel, content)
        return self.consume(channel, fail_on_none=fail_on_none)

    def receive(self) -> dict[str, Any] | None:
        """The content of the next message on this client's reply channel, or None."""
        message = self.get_next_message(self.reply_channel)
        return message.content if message is not None else None

    def join_group(self, group_name: str) -> None:
        Group(group_name, channel_layer=self.channel_layer).add(self.reply_channel)


class apply_routes:  # noqa: N801 - Channels 1.x's name
    """Use ``routes`` (a list of routes, or a list of such lists) instead of the settings' routing.

    The default routes (Django views for ``http.request``, ``asgi.delay``, accept-all
    WebSocket consumers) still follow them, as in a worker.
    """

    def __init__(self, routes: Any, aliases: Sequence[str] = (DEFAULT_CHANNEL_LAYER,)) -> None:
        if isinstance(routes, (list, tuple)):
            if routes and isinstance(routes[0], (list, tuple)):
                routes = [include(list(r)) for r in routes]
        else:
            routes = [routes]
        self.router = Router(list(routes))
        # The defaults after them, as a worker has (the site's Django views for http.request, ...):
        # Channels 1.x dropped those too, so an apply_routes test could not reach a view.
        self.router.check_default()
        self.aliases = list(aliases)

    def enter(self) -> None:
        for alias in self.aliases:
            _overrides.setdefault(alias, []).append(self.router)

    def exit(self, *exc: object) -> None:
        for alias in self.aliases:
            stack = _overrides.get(alias, [])
            if self.router in stack:
                stack.remove(self.router)

    def __enter__(self) -> apply_routes:
        self.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.exit()

    def __call__(self, test_func: Any) -> Any:
        if isinstance(test_func, type):
            cls: Any = test_func
            old_setup, old_teardown = cls.setUp, cls.tearDown

            def setUp(this: Any) -> None:  # noqa: N802
                self.enter()
                old_setup(this)

            def tearDown(this: Any) -> None:  # noqa: N802
                try:
                    old_teardown(this)
                finally:
                    self.exit()

            cls.setUp, cls.tearDown = setUp, tearDown
            return test_func

        @functools.wraps(test_func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with self:
                return test_func(*args, **kwargs)

        return inner

