"""The shipped conformance suite against InMemoryChannelLayer.

Run twice: with a manual clock (the expiry tests cost no time), and with the
real monotonic clock and shorter expiries, which checks that the suite's own
sleeps and margins hold in real time without making the run slow.
"""

from __future__ import annotations

from typing import Any

from ipc_layer import InMemoryChannelLayer
from ipc_layer.testing import DEFAULT_LAYER_CONFIG, ConformanceTestCase, ManualClock


class TestInMemoryConformance(ConformanceTestCase):
    def make_layer(self, **config: Any) -> InMemoryChannelLayer:
        if not hasattr(self, "clock"):
            self.clock = ManualClock()
        return InMemoryChannelLayer(clock=self.clock, **config)

    def advance_time(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestInMemoryConformanceRealClock(ConformanceTestCase):
    """The same suite in real time."""

    layer_factory = InMemoryChannelLayer
    layer_config = {**DEFAULT_LAYER_CONFIG, "expiry": 0.4, "group_expiry": 0.8}
