"""The shipped conformance suite against RedisChannelLayer sharded over three real
redis-server processes (private, free loopback ports, started for this module and
stopped after it). Each layer gets its own key prefix; closing it checks that
``flush`` left no key behind on any of the three.
"""

from __future__ import annotations

import unittest
from typing import Any, ClassVar

import pytest

from ipc_layer.base import BaseChannelLayer
from ipc_layer.redis_layer import RedisChannelLayer
from ipc_layer.testing import DEFAULT_LAYER_CONFIG, ConformanceTestCase
from tests.redis_support import private_servers, stop_servers
from tests.support import count_keys, remove_keys, unique_key_prefix

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


class TestShardedRedisConformance(ConformanceTestCase):
    # The suite's default expiries (1 s / 2 s), not the single-server module's
    # shorter ones: a first receive connects to three servers, and a 0.5 s
    # message expired before a loaded machine's reactor thread got to it.
    layer_config = DEFAULT_LAYER_CONFIG
    urls: ClassVar[list[str]]
    servers: ClassVar[list[Any]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.servers = private_servers(3)  # SkipTest with the reason when redis-server cannot start
        cls.urls = [server.url for server in cls.servers]

    @classmethod
    def tearDownClass(cls) -> None:
        stop_servers(cls.servers)
        super().tearDownClass()

    def make_layer(self, **config: Any) -> RedisChannelLayer:
        prefix = unique_key_prefix()
        for url in self.urls:
            self.addCleanup(remove_keys, url, prefix)
        return RedisChannelLayer(hosts=self.urls, prefix=prefix, **config)

    def make_peer_layer(self, layer: BaseChannelLayer) -> BaseChannelLayer:
        if not isinstance(layer, RedisChannelLayer):
            raise TypeError(f"not a RedisChannelLayer: {layer!r}")
        return RedisChannelLayer(hosts=self.urls, prefix=layer.prefix, **self.layer_config)

    def close_layer(self, layer: BaseChannelLayer) -> None:
        super().close_layer(layer)  # flush + close
        if isinstance(layer, RedisChannelLayer):
            for url in self.urls:
                self.assertEqual(count_keys(url, layer.prefix), 0, f"flush left keys under {layer.prefix!r} on {url}")


if __name__ == "__main__":  # pragma: no cover
    unittest.main()
