"""RedisChannelLayer sharded over three private redis-server processes: placement by
consistent hash, a blocking receive over several shards (no polling, nothing lost when
two shards answer at once), group fan-out across shards with one payload per shard,
and the hosts shapes channels_redis takes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ipc_layer.redis_layer import RedisChannelLayer
from ipc_layer.redis_shards import consistent_hash
from tests.redis_support import private_servers, stop_servers
from tests.support import unique_key_prefix

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[Any]]:
    import unittest

    try:
        started = private_servers(3)
    except unittest.SkipTest as exc:
        pytest.skip(str(exc))
    yield started
    stop_servers(started)


@pytest.fixture
def clients(servers: list[Any]) -> Iterator[list[redis.Redis]]:
    made = [redis.Redis.from_url(server.url) for server in servers]
    yield made
    for client in made:
        client.close()


@pytest.fixture
def make(servers: list[Any]) -> Iterator[Any]:
    made: list[RedisChannelLayer] = []

    def factory(**config: Any) -> RedisChannelLayer:
        config.setdefault("prefix", unique_key_prefix())
        config.setdefault("hosts", [server.url for server in servers])
        layer = RedisChannelLayer(**config)
        made.append(layer)
        return layer

    yield factory
    for layer in made:
        layer.flush()
        layer.close()


def keys_by_shard(clients: list[redis.Redis], prefix: str) -> list[set[str]]:
    return [{key.decode() for key in client.scan_iter(match=prefix + "*")} for client in clients]


def calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def names_on(shard: int, stem: str, count: int = 3, ring: int = 3) -> list[str]:
    """``count`` channel names ``stem<n>`` that hash to ``shard``."""
    found = [f"{stem}{n}" for n in range(1000) if consistent_hash(f"{stem}{n}", ring) == shard]
    return found[:count]


def test_every_name_lives_on_its_consistent_hash_shard(make: Any, clients: list[redis.Redis]) -> None:
    layer = make()
    channels = [f"sh.c{n}" for n in range(30)]
    for channel in channels:
        layer.send(channel, {"to": channel})
    layer.send("sh.proc!x", {"n": 1})
    layer.group_add("sh-group", "sh.c0")
    held = keys_by_shard(clients, layer._prefix)
    for channel in [*channels, "sh.proc!"]:
        home = consistent_hash(channel, 3)
        assert [f"{layer._prefix}q:{channel}" in keys for keys in held] == [i == home for i in range(3)]
    assert f"{layer._prefix}g:sh-group" in held[consistent_hash("sh-group", 3)]
    # The channels spread: every server holds some of the 30 queues.
    assert all(any(key.startswith(layer._prefix + "q:sh.c") for key in keys) for keys in held)
    for channel in channels:
        assert layer.receive([channel]) == (channel, {"to": channel})


def test_blocking_receive_over_three_shards_wakes_and_does_not_poll(
        make: Any, clients: list[redis.Redis]) -> None:
    layer = make(blocking_timeout=1.0)
    channels = [names_on(shard, "sp.w")[0] for shard in range(3)]
    layer.global_statistics()  # connect and check every server first
    before = [calls(client, "blpop") for client in clients]
    started = time.monotonic()
    assert layer.receive(channels, block=True) == (None, None)
    assert 0.9 < time.monotonic() - started < 2.5
    # One BLPOP per shard for the whole second: the waits happen inside Redis.
    assert [calls(client, "blpop") - b for client, b in zip(clients, before, strict=True)] == [1, 1, 1]
    for target in channels:
        unblocks = [calls(client, "client|unblock") for client in clients]
        timer = threading.Timer(0.2, layer.send, (target, {"to": target}))
        timer.start()
        try:
            assert layer.receive(channels, block=True) == (target, {"to": target})
        finally:
            timer.join()
        # The other two shards' waits were ended by CLIENT UNBLOCK, not left to time out.
        ended = [calls(client, "client|unblock") - u for client, u in zip(clients, unblocks, strict=True)]
        assert ended == [0 if channel == target else 1 for channel in channels]
        assert not any("b" in entry.get("flags", "") for client in clients for entry in client.client_list())


def test_two_shards_answering_at_once_lose_nothing_and_keep_order(make: Any) -> None:
    layer = make()
    first, second = names_on(0, "sp.a")[0], names_on(1, "sp.b")[0]
    layer.send(first, {"n": 1})
    layer.send(first, {"n": 2})
    layer.send(second, {"n": 3})
    # Both shards' BLPOPs return at once: one reply wins, the other shard's popped
    # entry goes back to the head of its queue.
    got = [layer.receive([first, second], block=True) for _ in range(3)]
    assert sorted(got, key=lambda item: item[1]["n"]) == [(first, {"n": 1}), (first, {"n": 2}), (second, {"n": 3})]
    assert [message["n"] for channel, message in got if channel == first] == [1, 2]
    assert layer.receive([first, second]) == (None, None)
    assert layer.channel_statistics(first)["messages_pending"] == 0


def test_send_group_reaches_members_on_every_shard_with_one_payload_per_shard(
        make: Any, clients: list[redis.Redis]) -> None:
    layer = make(capacity=5)
    members = [name for shard in range(3) for name in names_on(shard, "sg.m", 2)]
    processes = [names_on(shard, "sg.p")[0] + "!" for shard in range(3)]
    processes = [name for name in processes if consistent_hash(name, 3) in range(3)]
    for member in members:
        layer.group_add("sg-g", member)
    for process in processes:
        for local in ("a", "b"):
            layer.group_add("sg-g", process + local)
    body = b"x" * 10_000
    layer.send_group("sg-g", {"body": body})
    held = keys_by_shard(clients, layer._prefix)
    shards_with_members = {consistent_hash(name, 3) for name in [*members, *processes]}
    for index, keys in enumerate(held):
        payloads = [key for key in keys if key.startswith(layer._prefix + "d:")]
        assert len(payloads) == (1 if index in shards_with_members else 0), (index, keys)
    for member in members:
        assert layer.receive([member]) == (member, {"body": body})
    for process in processes:
        assert {layer.receive([process], block=True)[0] for _ in range(2)} == {process + "a", process + "b"}
    layer.close()  # sends the reference decrements it still owes
    # Every reference taken: the stored payloads are gone.
    assert not any(key.startswith(layer._prefix + "d:") for keys in keys_by_shard(clients, layer._prefix)
                   for key in keys)
    assert layer.global_statistics()["messages_count"] == len(members) + 2 * len(processes)


def test_hosts_shapes_mixed(make: Any, servers: list[Any]) -> None:
    ports = [server.port for server in servers]
    layer = make(hosts=[servers[0].url, ("127.0.0.1", ports[1]), {"address": servers[2].url},
                        ][:3])
    other = make(prefix=layer.prefix, hosts=[{"host": "127.0.0.1", "port": ports[0]},
                                             {"address": f"redis://127.0.0.1:{ports[1]}/0"},
                                             f"redis://127.0.0.1:{ports[2]}"])
    for n in range(12):
        layer.send(f"hs.c{n}", {"n": n})
    for n in range(12):
        assert other.receive([f"hs.c{n}"]) == (f"hs.c{n}", {"n": n})
    assert layer.locations == [f"redis://127.0.0.1:{ports[0]}/0", f"127.0.0.1:{ports[1]}",
                               f"redis://127.0.0.1:{ports[2]}/0"]


def test_a_down_shard_does_not_hold_up_the_others() -> None:
    import unittest

    try:
        own = private_servers(3)
    except unittest.SkipTest as exc:
        pytest.skip(str(exc))
    layer = RedisChannelLayer(hosts=[server.url for server in own], prefix=unique_key_prefix(),
                              blocking_timeout=5)
    try:
        channels = [names_on(shard, "dn.c")[0] for shard in range(3)]
        layer.global_statistics()
        own[2].kill()
        layer.send(channels[0], {"n": 0})
        # Shard 2 is left out of the wait: the message on shard 0 comes at once,
        # not after the 5 s bound.
        started = time.monotonic()
        assert layer.receive(channels, block=True) == (channels[0], {"n": 0})
        assert time.monotonic() - started < 4
        timer = threading.Timer(0.2, layer.send, (channels[1], {"n": 1}))
        timer.start()
        try:
            assert layer.receive(channels, block=True) == (channels[1], {"n": 1})
        finally:
            timer.join()
    finally:
        layer.close()
        stop_servers(own)


def test_entries_popped_by_a_losing_shard_are_pushed_back(make: Any, clients: list[redis.Redis],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from ipc_layer import redis_layer
    from ipc_layer.redis_shards import Script

    # Skip the look (it always sees nothing), so that both shards' BLPOPs pop at
    # once: the race between a first answer and the unblock, every time.
    monkeypatch.setattr(redis_layer, "PEEK_SCRIPT", Script("peek-nothing", "return false"))
    # The push-back, counted (in a key under the layer's prefix, which flush removes).
    counted = "redis.call('INCR', KEYS[1] .. ':requeued')\n" + redis_layer.REQUEUE_SCRIPT.source
    monkeypatch.setattr(redis_layer, "REQUEUE_SCRIPT", Script("requeue-counted", counted))
    layer = make()
    first, second = names_on(0, "pb.a")[0], names_on(1, "pb.b")[0]
    layer.send(first, {"n": 1})
    layer.send(first, {"n": 2})
    layer.send(second, {"n": 3})
    got = [layer.receive([first, second], block=True) for _ in range(3)]
    assert sorted(got, key=lambda item: item[1]["n"]) == [(first, {"n": 1}), (first, {"n": 2}), (second, {"n": 3})]
    assert [message["n"] for channel, message in got if channel == first] == [1, 2]
    assert layer.receive([first, second]) == (None, None)
    requeued = sum(int(client.get(key) or 0) for client in clients
                   for key in client.scan_iter(match=layer._prefix + "*:requeued"))
    assert requeued >= 1
