"""Test tools for consumers (Channels 1.x's ``channels.test``), in-process on the in-memory layer.

* :class:`ChannelTestCase` / :class:`TransactionChannelTestCase`: Django test cases whose
  channel layers (``test_channel_aliases``) are fresh in-memory layers for each test;
  ``get_next_message(channel, require=False)`` reads what the code under test sent.
* :class:`Client`, :class:`WSClient`, :class:`HttpClient`: send a message as a protocol
  server would and run its consumer at once (``send_and_consume``), through the site's
  routing and the same dispatch as a worker (deferred sends, ``DenyConnection``, ...).
* :class:`apply_routes`: a decorator / context manager replacing the routing for a test.
"""

from __future__ import annotations

from .base import ChannelTestCase, ChannelTestCaseMixin, Client, TransactionChannelTestCase, apply_routes, router_for
from .http import HttpClient, HttpResponse
from .websocket import WSClient

__all__ = [
    "ChannelTestCase",
    "ChannelTestCaseMixin",
    "Client",
    "HttpClient",
    "HttpResponse",
    "TransactionChannelTestCase",
    "WSClient",
    "apply_routes",
    "router_for",
]

