"""The async (Channels 4) conformance suite against ``ipc_layer.aio.IPCChannelLayer``,
and against Channels' own ``InMemoryChannelLayer`` as a check of the suite itself.

Every shared-memory layer gets its own segment prefix, removed from /dev/shm
after the test. The in-memory run skips what that layer cannot do, each with
the reason read in channels 4.3's ``channels/layers.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

channels_exceptions = pytest.importorskip("channels.exceptions", reason="channels 4 is not installed")
channels_layers = pytest.importorskip("channels.layers", reason="channels 4 is not installed")

from ipc_layer import exceptions
from ipc_layer.testing.aio_conformance import AsyncConformanceTestCase
from tests.support import TEST_SEGMENT_SIZE, remove_segment, unique_prefix

pytestmark = pytest.mark.timeout(60)


class TestIPCAioConformance(AsyncConformanceTestCase):
    channel_full_types = (channels_exceptions.ChannelFull, exceptions.ChannelFull)

    def make_layer(self, **config: Any) -> Any:
        from ipc_layer.aio import IPCChannelLayer

        prefix = unique_prefix()
        self.addCleanup(remove_segment, prefix)
        return IPCChannelLayer(prefix=prefix, segment_size=TEST_SEGMENT_SIZE, **config)


class TestIPCAioSpinConformance(TestIPCAioConformance):
    """The same suite with a spin budget: receives look between loop iterations before sleeping."""

    def make_layer(self, **config: Any) -> Any:
        config.setdefault("spin_us", 2_000)
        return super().make_layer(**config)


class TestInMemoryAioConformance(AsyncConformanceTestCase):
    """The suite's sanity check: Channels' reference layer passes what it claims to do."""

    layer_factory = channels_layers.InMemoryChannelLayer
    channel_full_types = (channels_exceptions.ChannelFull,)
    unsupported: ClassVar[dict[str, str]] = {
        "capacity_globs": "InMemoryChannelLayer stores channel_capacity uncompiled; get_capacity() "
                          "then fails to unpack the glob strings",
        "shared_process_capacity": "InMemoryChannelLayer keeps one queue per full channel name",
        "precise_group_expiry": "InMemoryChannelLayer stamps memberships in whole seconds",
        "membership_survives_expiry": "InMemoryChannelLayer removes a channel from every group when "
                                      "one of its messages expires",
        "threads": "InMemoryChannelLayer's asyncio.Queue objects belong to one loop and are not thread-safe",
        "closed_loop": "a waiter of a closed loop stays in InMemoryChannelLayer's asyncio.Queue",
        "type_errors": "InMemoryChannelLayer checks the message type with assert",
    }
