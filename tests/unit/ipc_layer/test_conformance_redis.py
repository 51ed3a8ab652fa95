"""The shipped conformance suite against RedisChannelLayer on a real redis-server.

The server comes from ``IPC_TEST_REDIS_URL`` or is started privately (see
``tests/redis_support.py``); without either the class is skipped with the
reason. Every layer gets its own key prefix, and closing it checks that
``flush`` really left no key behind.

Expiries are shortened (0.5 s / 1 s, as the in-memory real-clock run does)
so the suite's real sleeps stay short.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from ipc_layer.base import BaseChannelLayer
from ipc_layer.redis_layer import RedisChannelLayer
from ipc_layer.testing import DEFAULT_LAYER_CONFIG, ConformanceTestCase
from tests.redis_support import redis_url
from tests.support import count_keys, remove_keys, unique_key_prefix

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


class TestRedisConformance(ConformanceTestCase):
    layer_config = {**DEFAULT_LAYER_CONFIG, "expiry": 0.5, "group_expiry": 1.0}
    url: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.url = redis_url()  # raises SkipTest with the reason when there is no Redis

    def make_layer(self, **config: Any) -> RedisChannelLayer:
        prefix = unique_key_prefix()
        # Registered first, so it runs last: whatever a failing test left behind goes.
        self.addCleanup(remove_keys, self.url, prefix)
        return RedisChannelLayer(self.url, prefix=prefix, **config)

    def make_peer_layer(self, layer: BaseChannelLayer) -> BaseChannelLayer:
        if not isinstance(layer, RedisChannelLayer):
            raise TypeError(f"not a RedisChannelLayer: {layer!r}")
        return RedisChannelLayer(self.url, prefix=layer.prefix, **self.layer_config)

    def close_layer(self, layer: BaseChannelLayer) -> None:
        super().close_layer(layer)  # flush + close
        if isinstance(layer, RedisChannelLayer):
            self.assertEqual(count_keys(self.url, layer.prefix), 0, f"flush left keys under {layer.prefix!r}")
