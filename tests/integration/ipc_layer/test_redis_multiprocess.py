"""RedisChannelLayer with senders and receivers in separate processes.

- N senders, M blocking receivers on one channel: each receiver sees every
  producer's messages in order, nothing is duplicated, nothing lost below
  capacity; the same through a ``name!`` channel (full names come back).
- Concurrent senders against a small capacity: exactly ``capacity``
  messages get in, every other send raises ``ChannelFull`` (the Lua check is
  atomic with the push), for a plain and a ``name!`` queue.
- Group fan-out: receiver processes, each with its own process channel and
  several members in one group, get every ``send_group`` once per member in
  order; a full member is skipped without an exception.
- A blocked receiver in another process wakes on a send in well under its
  ``blocking_timeout`` (no polling interval to wait out).
- Fork safety: a layer used before ``fork()`` works in the child and keeps
  working in the parent (redis-py pools reconnect after a pid change).

Worker functions live at module level; processes are forked (fast), and
each child builds its own layer from the URL and prefix, as real workers do.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
import unittest
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ipc_layer import ChannelFull
from ipc_layer.redis_layer import RedisChannelLayer
from tests.redis_support import redis_url
from tests.support import remove_keys, unique_key_prefix

pytestmark = [pytest.mark.redis, pytest.mark.integration, pytest.mark.timeout(120)]

CTX = multiprocessing.get_context("fork")
STOP = "STOP"


@pytest.fixture(scope="module")
def url() -> str:
    try:
        return redis_url()
    except unittest.SkipTest as exc:
        pytest.skip(str(exc))


@pytest.fixture
def prefix(url: str) -> Iterator[str]:
    name = unique_key_prefix()
    yield name
    remove_keys(url, name)


def _child(target: Callable[..., Any], results: Any, *args: Any) -> None:
    """Run ``target`` and put ("ok", value) or ("error", traceback) on ``results``."""
    try:
        results.put(("ok", target(*args)))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def run_all(targets: list[tuple[Callable[..., Any], tuple[Any, ...]]], before_join: Callable[[], None] | None = None,
            timeout: float = 60) -> list[Any]:
    """Start one process per (target, args); return their values in completion order."""
    results = CTX.Queue()
    procs = [CTX.Process(target=_child, args=(target, results, *args)) for target, args in targets]
    for proc in procs:
        proc.start()
    finished = False
    try:
        if before_join is not None:
            before_join()
        values = []
        for _ in procs:
            status, value = results.get(timeout=timeout)
            if status != "ok":
                pytest.fail(f"child process failed:\n{value}")
            values.append(value)
        finished = True
    finally:
        for proc in procs:
            # After a failure the others may wait for ever (e.g. for a STOP): no grace.
            proc.join(10 if finished else 0.1)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return values


def layer_for(url: str, prefix: str, **config: Any) -> RedisChannelLayer:
    return RedisChannelLayer(url, prefix=prefix, **config)


# -- workers ------------------------------------------------------------------------


def send_sequence(url: str, prefix: str, sid: int, channel: str, count: int) -> int:
    with layer_for(url, prefix, capacity=10_000) as layer:
        for seq in range(count):
            target = channel.replace("{sid}", str(sid))
            layer.send(target, {"sid": sid, "seq": seq, "pad": b"x" * (seq % 300)})
    return count


def receive_until_stop(url: str, prefix: str, channel: str) -> list[tuple[str, int, int]]:
    got: list[tuple[str, int, int]] = []
    with layer_for(url, prefix, capacity=10_000, blocking_timeout=1.0) as layer:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            name, message = layer.receive([channel], block=True)
            if name is None or message is None:
                continue
            if message.get(STOP):
                return got
            if message["pad"] != b"x" * (message["seq"] % 300):
                raise ValueError(f"corrupt message {message!r}")
            got.append((name, message["sid"], message["seq"]))
    raise TimeoutError(f"no STOP on {channel!r} within 60 s; got {len(got)} messages")


def send_until_full(url: str, prefix: str, channel: str, attempts: int, capacity: int, start: Any) -> tuple[int, int]:
    with layer_for(url, prefix, capacity=capacity) as layer:
        layer.global_statistics()  # connect before the barrier, so the sends race
        start.wait()
        ok = full = 0
        for n in range(attempts):
            try:
                layer.send(channel.replace("{pid}", str(os.getpid())), {"n": n})
                ok += 1
            except ChannelFull:
                full += 1
    return ok, full


def group_member(url: str, prefix: str, group: str, members: int, expect: int, ready: Any) -> dict[str, list[int]]:
    with layer_for(url, prefix, blocking_timeout=1.0) as layer:
        base = layer.new_process_channel("mp.srv")
        for i in range(members):
            layer.group_add(group, f"{base}c{i}")
        ready.put(base)
        got: dict[str, list[int]] = {}
        total = 0
        deadline = time.monotonic() + 60
        while total < members * expect and time.monotonic() < deadline:
            name, message = layer.receive([base], block=True)
            if name is None or message is None:
                continue
            got.setdefault(name[len(base):], []).append(message["n"])
            total += 1
        if layer.receive([base]) != (None, None):
            raise ValueError("a member got more messages than were sent")
    return got


def wait_and_time(url: str, prefix: str, channel: str, ready: Any) -> float:
    with layer_for(url, prefix, blocking_timeout=5.0) as layer:
        layer.global_statistics()
        ready.put(True)
        name, message = layer.receive([channel], block=True)
        woke = time.time()
        if message is None:
            raise TimeoutError("blocking receive returned nothing")
        return woke - float(message["sent_at"])


# -- tests --------------------------------------------------------------------------------


def check_fifo_and_complete(received: list[list[tuple[str, int, int]]], senders: int, count: int) -> None:
    seen: set[tuple[int, int]] = set()
    for messages in received:
        last: dict[int, int] = {}
        for _, sid, seq in messages:
            assert seq > last.get(sid, -1), f"producer {sid} out of order: {seq} after {last.get(sid)}"
            last[sid] = seq
            assert (sid, seq) not in seen, f"duplicate {(sid, seq)}"
            seen.add((sid, seq))
    assert seen == {(sid, seq) for sid in range(senders) for seq in range(count)}


def test_senders_and_receivers_fifo_per_producer_no_loss(url: str, prefix: str) -> None:
    senders, receivers, count = 4, 3, 300
    channel = "mp.work"
    sender_procs = [
        CTX.Process(target=send_sequence, args=(url, prefix, sid, channel, count)) for sid in range(senders)
    ]

    def produce() -> None:
        for proc in sender_procs:
            proc.start()
        for proc in sender_procs:
            proc.join(60)
        assert [proc.exitcode for proc in sender_procs] == [0] * senders
        with layer_for(url, prefix, capacity=10_000) as layer:
            for _ in range(receivers):
                layer.send(channel, {STOP: True})

    received = run_all([(receive_until_stop, (url, prefix, channel))] * receivers, before_join=produce)
    assert all(name == channel for messages in received for name, _, _ in messages)
    check_fifo_and_complete(received, senders, count)


def test_process_channel_across_processes(url: str, prefix: str) -> None:
    senders, count = 3, 200
    procs = [CTX.Process(target=send_sequence, args=(url, prefix, sid, "mp.reply!s{sid}", count))
             for sid in range(senders)]

    def produce() -> None:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        with layer_for(url, prefix, capacity=10_000) as layer:
            layer.send("mp.reply!stop", {STOP: True})

    [received] = run_all([(receive_until_stop, (url, prefix, "mp.reply!"))], before_join=produce)
    assert all(name == f"mp.reply!s{sid}" for name, sid, _ in received)
    check_fifo_and_complete([received], senders, count)


@pytest.mark.parametrize("channel, queue", [("mp.cap", "mp.cap"), ("mp.capp!{pid}", "mp.capp!")])
def test_channel_full_exactly_at_capacity(url: str, prefix: str, channel: str, queue: str) -> None:
    procs, attempts, capacity = 6, 30, 40
    start = CTX.Barrier(procs)
    results = run_all([(send_until_full, (url, prefix, channel, attempts, capacity, start))] * procs)
    ok = sum(value[0] for value in results)
    full = sum(value[1] for value in results)
    assert (ok, full) == (capacity, procs * attempts - capacity)
    with layer_for(url, prefix, capacity=capacity) as layer:
        stats = layer.channel_statistics(queue)
        assert (stats["messages_pending"], stats["messages_count"], stats["channel_full_count"]) == (
            capacity, capacity, procs * attempts - capacity)
        drained = 0
        while layer.receive([queue]) != (None, None):
            drained += 1
        assert drained == capacity


def test_group_fanout_across_processes(url: str, prefix: str) -> None:
    receivers, members, messages = 3, 4, 25
    group = "mp-room"
    ready = CTX.Queue()

    def broadcast() -> None:
        bases = [ready.get(timeout=30) for _ in range(receivers)]
        with layer_for(url, prefix, capacity=1) as layer:
            # A member that is full all along: skipped every time, never raises.
            layer.send("mp.stuck", {"n": -1})
            layer.group_add(group, "mp.stuck")
        with layer_for(url, prefix, capacity=1000) as layer:
            assert len(layer.group_channels(group)) == receivers * members + 1
            for n in range(messages):
                layer.send_group(group, {"n": n})
            assert layer.channel_statistics("mp.stuck")["channel_full_count"] == messages
            assert len(set(bases)) == receivers

    results = run_all([(group_member, (url, prefix, group, members, messages, ready))] * receivers,
                      before_join=broadcast)
    for got in results:
        assert got == {f"c{i}": list(range(messages)) for i in range(members)}


def test_blocked_receiver_wakes_on_send_from_another_process(url: str, prefix: str) -> None:
    ready = CTX.Queue()

    def send_later() -> None:
        ready.get(timeout=30)
        time.sleep(0.3)  # let the receiver enter BLPOP
        with layer_for(url, prefix) as layer:
            layer.send("mp.wake!x", {"sent_at": time.time()})

    [latency] = run_all([(wait_and_time, (url, prefix, "mp.wake!", ready))], before_join=send_later)
    assert 0 <= latency < 0.25, f"woke {latency * 1000:.1f} ms after the send"


def child_uses_inherited_layer(layer: RedisChannelLayer) -> list[Any]:
    layer.send("fk.from-child", {"pid": os.getpid()})
    got = layer.receive(["fk.to-child"], block=True)
    return [got, len(layer._shards[0].pool._available_connections) + len(layer._shards[0].pool._in_use_connections)]


def test_fork_safety(url: str, prefix: str) -> None:
    with layer_for(url, prefix, blocking_timeout=2.0) as layer:
        layer.send("fk.to-child", {"from": "parent"})  # opens the parent's connection
        parent_conns = list(layer._shards[0].pool._available_connections)
        assert len(parent_conns) == 1
        [(got, child_conns)] = run_all([(child_uses_inherited_layer, (layer,))])
        assert got == ("fk.to-child", {"from": "parent"})
        assert child_conns == 1  # the child opened its own; the parent's socket was not shared
        # The parent's pooled socket still works and is the same one.
        _, from_child = layer.receive(["fk.from-child"])
        assert from_child is not None and from_child["pid"] != os.getpid()
        assert layer._shards[0].pool._available_connections == parent_conns
        for _ in range(20):
            layer.send("fk.after", {"n": 1})
            assert layer.receive(["fk.after"]) == ("fk.after", {"n": 1})
        layer.flush()
