"""``IPCChannelLayer`` across real processes.

- N sender and M receiver processes on one normal channel: nothing
  duplicated, nothing lost below capacity, each receiver sees each
  producer's messages in order.
- The same on ``!`` channels: each receiver owns a ``name!`` channel, every
  sender writes to ``name!<sender>`` of each; single reader, so each
  producer's messages arrive in order and with the full channel name.
- Capacity across processes: senders racing into one channel get exactly
  ``capacity`` sends through, then ``ChannelFull``; the same for ``name!x``
  channels counting against ``name!``.
- A group send from one process reaches receivers blocked in others.

Worker functions live at module level; processes are forked and attach
their own layer (the parent's is never used in a child here).
"""
from __future__ import annotations

import multiprocessing
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from ipc_layer import IPCChannelLayer
from tests.support import make_layer

pytestmark = pytest.mark.integration

CTX = multiprocessing.get_context("fork")
SENDERS = 3
RECEIVERS = 2
PER_SENDER = 2000
BIG = 100_000


def sender(prefix: str, index: int, targets: list[str], count: int, start: Any) -> None:
    layer = make_layer(prefix, capacity=BIG, segment_size=64 << 20)
    start.wait()
    for n in range(count):
        for target in targets:
            layer.send(target.format(sender=index), {"s": index, "n": n, "pad": b"x" * 60})
    layer.close()


def receiver(prefix: str, channels: list[str], results: Any, start: Any) -> None:
    layer = make_layer(prefix, capacity=BIG, segment_size=64 << 20, blocking_timeout=0.5)
    got: list[tuple[str, int, int]] = []
    start.wait()
    idle_since = None
    while True:
        channel, message = layer.receive(channels, block=True)
        if channel is None:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 3:
                break
            continue
        idle_since = None
        if message.get("stop"):
            break
        got.append((channel, message["s"], message["n"]))
    results.put(got)
    layer.close()


def run_all(prefix: str, sender_targets: list[str], receiver_channels: list[list[str]],
            stop: list[str]) -> list[list[tuple[str, int, int]]]:
    make_layer(prefix, capacity=BIG, segment_size=64 << 20).close()  # size it before the race
    start = CTX.Barrier(SENDERS + len(receiver_channels))
    results = CTX.Queue()
    receivers = [CTX.Process(target=receiver, args=(prefix, chans, results, start))
                 for chans in receiver_channels]
    senders = [CTX.Process(target=sender, args=(prefix, i, sender_targets, PER_SENDER, start))
               for i in range(SENDERS)]
    for p in receivers + senders:
        p.start()
    for p in senders:
        p.join(60)
        assert p.exitcode == 0
    layer = make_layer(prefix, capacity=BIG)
    for channel in stop:
        layer.send(channel, {"stop": True})
    layer.close()
    logs = [results.get(timeout=60) for _ in receivers]
    for p in receivers:
        p.join(10)
        assert p.exitcode == 0
    return logs


def assert_in_order(log: list[tuple[str, int, int]]) -> None:
    last: dict[tuple[str, int], int] = {}
    for channel, s, n in log:
        assert n > last.get((channel, s), -1), f"sender {s} out of order on {channel}: {n} after {last[(channel, s)]}"
        last[(channel, s)] = n


def test_senders_and_receivers_on_one_channel(layer_prefix: str) -> None:
    logs = run_all(layer_prefix, ["mp.work"], [["mp.work"]] * RECEIVERS, ["mp.work"] * RECEIVERS)
    everything = Counter((s, n) for log in logs for _, s, n in log)
    assert max(everything.values()) == 1, "a message was delivered twice"
    assert set(everything) == {(s, n) for s in range(SENDERS) for n in range(PER_SENDER)}, "messages lost"
    for log in logs:
        assert_in_order(log)
    assert all(log for log in logs), "one receiver got nothing: wake-ups go to one process only?"


def test_process_channels(layer_prefix: str) -> None:
    owned = [f"mp.rx{r}!" for r in range(RECEIVERS)]
    targets = [name + "from{sender}" for name in owned]
    logs = run_all(layer_prefix, targets, [[name] for name in owned], [name + "stop" for name in owned])
    # Logs arrive in the order the receivers finish: give each its owner.
    assert all(logs)
    logs = sorted(logs, key=lambda log: log[0][0])
    for r, log in enumerate(logs):
        assert len(log) == SENDERS * PER_SENDER
        assert len(set(log)) == len(log)
        for channel, s, _ in log:
            assert channel == f"mp.rx{r}!from{s}"
        assert_in_order(log)
        by_sender = defaultdict(list)
        for _, s, n in log:
            by_sender[s].append(n)
        assert all(ns == list(range(PER_SENDER)) for ns in by_sender.values())


def fill_until_full(prefix: str, channel: str, results: Any, start: Any) -> None:
    layer = make_layer(prefix, capacity=50)
    start.wait()
    sent = refused = 0
    while refused < 20:
        try:
            layer.send(channel.replace("*", str(sent)), {"n": sent})
            sent += 1
        except IPCChannelLayer.ChannelFull:
            refused += 1
    results.put(sent)
    layer.close()


@pytest.mark.parametrize("channel", ["mp.cap", "mp.capp!*"])
def test_channel_full_exactly_at_capacity_across_processes(layer_prefix: str, channel: str) -> None:
    make_layer(layer_prefix, capacity=50).close()
    start = CTX.Barrier(4)
    results = CTX.Queue()
    procs = [CTX.Process(target=fill_until_full, args=(layer_prefix, channel, results, start)) for _ in range(4)]
    for p in procs:
        p.start()
    total = sum(results.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(10)
    assert total == 50
    layer = make_layer(layer_prefix, capacity=50)
    queue = channel.split("!")[0] + "!" if "!" in channel else channel
    stats = layer.channel_statistics(queue)
    assert stats["messages_pending"] == 50 and stats["messages_count"] == 50
    assert stats["channel_full_count"] == 80
    received = 0
    while layer.receive([queue]) != (None, None):
        received += 1
    assert received == 50
    layer.close()


def group_receiver(prefix: str, channel: str, conn: Any) -> None:
    layer = make_layer(prefix, blocking_timeout=5)
    layer.group_add("mp-room", channel)
    conn.send("ready")
    conn.send(layer.receive([channel.split("!")[0] + "!" if "!" in channel else channel], block=True))
    layer.close()


def test_group_send_wakes_receivers_in_other_processes(layer_prefix: str) -> None:
    members = ["mp.room.a", "mp.room.b", "mp.srv!conn1"]
    pipes, procs = [], []
    for member in members:
        parent, child = CTX.Pipe()
        p = CTX.Process(target=group_receiver, args=(layer_prefix, member, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    for parent in pipes:
        assert parent.poll(10) and parent.recv() == "ready"
    layer = make_layer(layer_prefix)
    time.sleep(0.1)  # let them block
    started = time.monotonic()
    layer.send_group("mp-room", {"text": "hello"})
    got = [parent.recv() if parent.poll(5) else None for parent in pipes]
    elapsed = time.monotonic() - started
    assert got == [(member, {"text": "hello"}) for member in members]
    assert elapsed < 1.0
    for p in procs:
        p.join(5)
    layer.close()
