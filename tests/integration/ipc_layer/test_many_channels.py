"""A worker serves any number of channels in one blocking receive (issue 10).

One process blocks in ``IPCChannelLayer.receive(channels, block=True)`` on
100 or 5,000 channels; another process ``send_group``s to a group holding
all of them.  The receiver must be woken (it sleeps on its waiter row's bell
past 64 queues) and then take every copy, each from the right channel.
"""
from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from tests.support import make_layer

pytestmark = pytest.mark.integration

CTX = multiprocessing.get_context("fork")


def blocked_receiver(prefix: str, channels: list[str], conn: Any) -> None:
    # A blocking_timeout far past the parent's poll: a receive that is not woken
    # would find the messages at its deadline; here it must be woken.
    layer = make_layer(prefix, blocking_timeout=600.0, segment_size=32 << 20)
    try:
        layer.receive(channels)  # warm the caches: the first blocking call sleeps at once
        conn.send("ready")
        first = layer.receive(channels, block=True)
        rest = [layer.receive(channels, block=True) for _ in range(len(channels) - 1)]
        conn.send((first, rest, layer.receive(channels)))
    finally:
        layer.close()


@pytest.mark.parametrize("n", [100, 5000])
def test_blocking_receive_woken_by_group_send_from_another_process(layer_prefix: str,
                                                                   n: int) -> None:
    channels = [f"wide.{i}" for i in range(n)]
    sender = make_layer(layer_prefix, segment_size=32 << 20, capacity=10)
    try:
        for c in channels:
            sender.group_add("wide", c)
        parent, child = CTX.Pipe()
        p = CTX.Process(target=blocked_receiver, args=(layer_prefix, channels, child))
        p.start()
        try:
            assert parent.poll(30) and parent.recv() == "ready"
            # An event, not a time: the receiver's waiter row is live on the
            # last channel's queue (its list in cells, asleep on its bell).
            seg = sender._seg
            for _ in range(100000):
                if seg.queue_stats(channels[-1].encode())["waiters"]:
                    break
                parent.poll(0.001)
            assert seg.queue_stats(channels[-1].encode())["waiters"] == 1
            # Spawned by another process entirely: the send_group is this one's.
            sender.send_group("wide", {"text": "all"})
            assert parent.poll(60), "the blocked receiver was not woken by the group send"
            first, rest, after = parent.recv()
        finally:
            p.join(30)
        assert p.exitcode == 0
        got = [first, *rest]
        assert all(message == {"text": "all"} for _, message in got)
        assert sorted(channel for channel, _ in got) == sorted(channels)
        assert after == (None, None)
        sender._seg.check()
    finally:
        sender.close()
