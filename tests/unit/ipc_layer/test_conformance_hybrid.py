"""The shipped conformance suite against HybridChannelLayer: shared memory + a real Redis.

Two runs, so that both sides carry the suite's traffic:

- ``TestHybridLocalConformance``: ``local_channels=["cf.*"]``: the suite's
  normal channels and the ``!``/``?`` channels the layer makes stay in this
  host's segment; ``!`` names the suite makes by hand (``cf.spr!a``, made by
  no hybrid layer, so of no host) and groups go through Redis, and a receive
  on ``["cf.other", "cf.wake!"]`` mixes both sides (the pump).
- ``TestHybridRemoteConformance``: the default ``local_channels`` (``http.*``,
  ``websocket.*``): every ``cf.*`` channel is a Redis channel.

Each layer gets its own segment prefix (removed afterwards, with the
forwarder's lock file) and its own Redis key prefix (checked empty after
``flush``), on the Redis of ``IPC_TEST_REDIS_URL`` (or a private one).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from ipc_layer.base import BaseChannelLayer
from ipc_layer.hybrid import HybridChannelLayer
from ipc_layer.testing import DEFAULT_LAYER_CONFIG, ConformanceTestCase
from tests.redis_support import redis_url
from tests.support import TEST_SEGMENT_SIZE, count_keys, remove_keys, remove_segment, unique_key_prefix, unique_prefix

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]


class _HybridCase(ConformanceTestCase):
    __test__ = False
    layer_config = {**DEFAULT_LAYER_CONFIG, "expiry": 0.5, "group_expiry": 1.0}
    local_channels: ClassVar[tuple[str, ...]] = ()
    url: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.url = redis_url()  # raises SkipTest with the reason when there is no Redis

    def _make(self, prefix: str, key_prefix: str, **config: Any) -> HybridChannelLayer:
        return HybridChannelLayer(
            prefix=prefix, host="cfhost", local_channels=self.local_channels,
            ipc={"segment_size": TEST_SEGMENT_SIZE}, redis={"url": self.url, "prefix": key_prefix},
            **config,
        )

    def make_layer(self, **config: Any) -> HybridChannelLayer:
        prefix, key_prefix = unique_prefix(), unique_key_prefix()
        # Registered first, so they run last: whatever a failing test left behind goes.
        self.addCleanup(remove_segment, prefix)
        self.addCleanup(remove_keys, self.url, key_prefix)
        return self._make(prefix, key_prefix, **config)

    def make_peer_layer(self, layer: BaseChannelLayer) -> BaseChannelLayer:
        if not isinstance(layer, HybridChannelLayer):
            raise TypeError(f"not a HybridChannelLayer: {layer!r}")
        return self._make(layer.prefix, layer.redis_layer.prefix, **self.layer_config)

    def close_layer(self, layer: BaseChannelLayer) -> None:
        super().close_layer(layer)  # flush + close
        if isinstance(layer, HybridChannelLayer):
            self.assertEqual(count_keys(self.url, layer.redis_layer.prefix), 0,
                             f"flush left keys under {layer.redis_layer.prefix!r}")


class TestHybridLocalConformance(_HybridCase):
    __test__ = True
    local_channels = ("cf.*",)


class TestHybridRemoteConformance(_HybridCase):
    __test__ = True
    local_channels = ("http.*", "websocket.*")
