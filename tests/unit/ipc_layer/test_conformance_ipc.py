"""The shipped conformance suite against ``IPCChannelLayer``.

Every layer a test makes gets its own segment prefix, unlinked from
/dev/shm after the test; peers share the prefix of the layer they mirror.
Expiry is real time (the deadlines live in the C core), so the suite's
expiry tests sleep: about 10 s in all.
"""
from __future__ import annotations

from typing import Any

from ipc_layer import BaseChannelLayer
from ipc_layer.testing import ConformanceTestCase
from tests.support import make_layer, remove_segment, unique_prefix


class TestIPCConformance(ConformanceTestCase):
    def make_layer(self, **config: Any) -> BaseChannelLayer:
        prefix = unique_prefix()
        self.addCleanup(remove_segment, prefix)
        return make_layer(prefix, **config)

    def make_peer_layer(self, layer: BaseChannelLayer) -> BaseChannelLayer:
        return make_layer(layer.prefix, **self.layer_config)  # type: ignore[attr-defined]


class TestIPCConformanceSpinning(ConformanceTestCase):
    """The blocking tests again with a spin budget before the futex sleep."""

    layer_config = {**ConformanceTestCase.layer_config, "spin_us": 50}

    def make_layer(self, **config: Any) -> BaseChannelLayer:
        prefix = unique_prefix()
        self.addCleanup(remove_segment, prefix)
        return make_layer(prefix, **config)


# Only the blocking tests are worth a second run.
for _name in list(vars(ConformanceTestCase)):
    if _name.startswith("test_") and "blocking" not in _name:
        setattr(TestIPCConformanceSpinning, _name, None)
