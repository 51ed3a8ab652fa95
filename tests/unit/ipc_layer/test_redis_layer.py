"""RedisChannelLayer beyond the conformance suite: configuration, key layout,
TTLs, expiry on the blocking path, flush scope, no polling, one-script fan-out.

Runs against the same Redis as the conformance tests (``tests/redis_support.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ipc_layer import ChannelFull
from ipc_layer.redis_layer import RedisChannelLayer
from tests.redis_support import redis_url
from tests.support import count_keys, remove_keys, unique_key_prefix

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def url() -> str:
    import unittest

    try:
        return redis_url()
    except unittest.SkipTest as exc:
        pytest.skip(str(exc))


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(url)
    yield conn
    conn.close()


@pytest.fixture
def make(url: str) -> Iterator[Any]:
    """``make(**config)`` -> a layer on a fresh prefix; flushed, closed and checked empty after."""
    made: list[RedisChannelLayer] = []

    def factory(**config: Any) -> RedisChannelLayer:
        config.setdefault("prefix", unique_key_prefix())
        layer = RedisChannelLayer(url, **config)
        made.append(layer)
        return layer

    yield factory
    for layer in made:
        layer.flush()
        layer.close()
        remove_keys(url, layer._prefix)


def commandstats(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


# -- configuration ----------------------------------------------------------------


def test_url_or_hosts_shapes(url: str) -> None:
    port = redis.ConnectionPool.from_url(url).connection_kwargs["port"]
    for config in (
        {"hosts": [url]},
        {"hosts": [("127.0.0.1", port)]},
        {"hosts": [{"address": url}]},
        {"hosts": [{"host": "127.0.0.1", "port": port}]},
    ):
        layer = RedisChannelLayer(prefix=unique_key_prefix(), **config)
        try:
            layer.send("cfg.x", {"ok": True})
            assert layer.receive(["cfg.x"]) == ("cfg.x", {"ok": True})
        finally:
            layer.flush()
            layer.close()


def test_bad_configuration_names_the_culprit() -> None:
    with pytest.raises(TypeError, match="url or hosts, not both"):
        RedisChannelLayer("redis://127.0.0.1:1/0", hosts=["redis://127.0.0.1:1/0"])
    with pytest.raises(ValueError, match="more than once"):
        RedisChannelLayer(hosts=["redis://a:1/0", "redis://a:1/0"])
    with pytest.raises(ValueError, match="hosts is empty"):
        RedisChannelLayer(hosts=[])
    with pytest.raises(TypeError, match="hosts must be a list"):
        RedisChannelLayer(hosts="redis://127.0.0.1:1/0")
    with pytest.raises(TypeError, match=r"hosts\[1\] must be"):
        RedisChannelLayer(hosts=["redis://a:1/0", 1234])
    with pytest.raises(TypeError, match=r"hosts\[0\] must be a \(host str, port int\) pair"):
        RedisChannelLayer(hosts=[("a", "6379")])
    with pytest.raises(ValueError, match=r"hosts\[0\]: 'http://a' is not a Redis URL"):
        RedisChannelLayer(hosts=["http://a"])
    with pytest.raises(ValueError, match=r"hosts\[0\] sets \['decode_responses'\]"):
        RedisChannelLayer(hosts=[{"host": "a", "decode_responses": True}])
    with pytest.raises(TypeError, match=r"hosts\[0\]\['master_name'\]"):
        RedisChannelLayer(hosts=[{"sentinels": [("a", 26379)]}])
    with pytest.raises(TypeError, match=r"hosts\[0\]\['sentinels'\]\[0\]"):
        RedisChannelLayer(hosts=[{"sentinels": ["a:26379"], "master_name": "m"}])
    with pytest.raises(ValueError, match="retry_timeout"):
        RedisChannelLayer(retry_timeout=0)
    with pytest.raises(TypeError, match="outage_error_after"):
        RedisChannelLayer(outage_error_after="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="url must be"):
        RedisChannelLayer(1234)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prefix must be a str"):
        RedisChannelLayer(prefix=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix must be a non-empty"):
        RedisChannelLayer(prefix="")
    with pytest.raises(ValueError, match=r"url: socket_timeout=1\.0 must exceed blocking_timeout=5"):
        RedisChannelLayer("redis://127.0.0.1:1/0?socket_timeout=1", blocking_timeout=5)
    with pytest.raises(ValueError, match="expiry"):
        RedisChannelLayer(expiry=0)


def test_construction_does_not_connect() -> None:
    # Port 1 never has a Redis: only the first command may fail.
    layer = RedisChannelLayer("redis://127.0.0.1:1/0", prefix="p")
    assert layer._prefix == "p:"
    assert "127.0.0.1:1/0" in repr(layer)
    with pytest.raises(redis.ConnectionError):
        layer.send("x", {})
    layer.close()


def test_hiredis_parser_is_used(make: Any) -> None:
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    layer = make()
    pool = layer._shards[0].pool
    connection = pool.get_connection()
    try:
        assert "Hiredis" in type(connection._parser).__name__
    finally:
        pool.release(connection)


# -- key layout and TTLs ------------------------------------------------------------


def test_keys_and_ttls(make: Any, client: redis.Redis) -> None:
    layer = make(expiry=30, group_expiry=300, capacity=7, channel_capacity={"kt.small!": 2})
    p = layer._prefix
    layer.send("kt.q", {"n": 1})
    layer.send("kt.small!a", {"n": 2})
    layer.group_add("kt-g", "kt.small!b")
    layer.group_add("kt-g", "kt.other")
    keys = {key.decode() for key in client.scan_iter(match=p + "*")}
    assert keys == {
        f"{p}q:kt.q", f"{p}q:kt.small!", f"{p}s:kt.q", f"{p}s:kt.small!", f"{p}stats",
        f"{p}g:kt-g", f"{p}gc:kt-g",
    }
    # Abandoned queues vanish after expiry; groups after group_expiry; stats after an hour.
    assert 29_000 < client.pttl(f"{p}q:kt.q") <= 30_000
    assert 299_000 < client.pttl(f"{p}g:kt-g") <= 300_000
    assert 299_000 < client.pttl(f"{p}gc:kt-g") <= 300_000
    assert 3_599_000 < client.pttl(f"{p}s:kt.q") <= 3_600_000
    assert client.pttl(f"{p}stats") == -1
    # Member capacities are fixed at join time from the globs.
    assert client.hgetall(f"{p}gc:kt-g") == {b"kt.small!b": b"2", b"kt.other": b"7"}
    # Entries: "<deadline ms>:<local part>:<msgpack>".
    entry = client.lindex(f"{p}q:kt.small!", 0)
    assert isinstance(entry, bytes)
    deadline, local, payload = entry.split(b":", 2)
    seconds, micros = client.time()
    assert 29_000 < int(deadline) - (seconds * 1000 + micros // 1000) <= 30_000
    assert local == b"a"
    assert layer.serializer.decode(payload) == {"n": 2}
    layer.group_discard("kt-g", "kt.small!b")
    assert client.hgetall(f"{p}gc:kt-g") == {b"kt.other": b"7"}


def test_queue_key_vanishes_with_its_messages(make: Any, client: redis.Redis) -> None:
    layer = make(expiry=0.2)
    layer.send("kv.q", {"n": 1})
    assert client.exists(layer._queue_key("kv.q"))
    time.sleep(0.35)
    assert not client.exists(layer._queue_key("kv.q"))


def test_ttl_is_only_extended(make: Any, client: redis.Redis) -> None:
    prefix = unique_key_prefix()
    long = make(prefix=prefix, expiry=30)
    short = make(prefix=prefix, expiry=0.5)
    long.send("te.q", {"n": "long"})
    short.send("te.q", {"n": "short"})
    assert client.pttl(long._queue_key("te.q")) > 29_000
    time.sleep(0.7)
    # The short message expired; the long-lived one stays deliverable.
    assert long.receive(["te.q"]) == ("te.q", {"n": "long"})
    assert long.receive(["te.q"]) == (None, None)


# -- expiry on the blocking path ------------------------------------------------------


def test_blocking_receive_drops_expired_and_keeps_waiting(make: Any) -> None:
    layer = make(expiry=0.2, blocking_timeout=3)
    for n in range(5):
        layer.send("bx.q!a", {"stale": n})
    time.sleep(0.3)
    # BLPOP pops an expired entry first; it must be dropped, the other stale
    # ones cleared, and the wait resumed until the fresh message comes.
    sender = threading.Timer(0.3, layer.send, ("bx.q!b", {"fresh": True}))
    started = time.monotonic()
    sender.start()
    try:
        result = layer.receive(["bx.q!"], block=True)
    finally:
        sender.join()
    assert result == ("bx.q!b", {"fresh": True})
    assert 0.2 < time.monotonic() - started < 2.0
    assert layer.channel_statistics("bx.q!")["messages_pending"] == 0


def test_blocking_receive_of_only_expired_times_out(make: Any) -> None:
    layer = make(expiry=0.1, blocking_timeout=0.4)
    layer.send("bo.q", {"stale": True})
    time.sleep(0.2)
    started = time.monotonic()
    assert layer.receive(["bo.q"], block=True) == (None, None)
    assert 0.3 < time.monotonic() - started < 1.5


def test_blocking_receive_is_fair(make: Any) -> None:
    layer = make(capacity=50)
    for n in range(20):
        layer.send("fair.busy", {"n": n})
    layer.send("fair.quiet", {"n": 0})
    # The quiet channel's message is not stuck behind the busy one's backlog.
    got = [layer.receive(["fair.busy", "fair.quiet"], block=True)[0] for _ in range(3)]
    assert "fair.quiet" in got


def test_receive_prefers_the_oldest_head(make: Any) -> None:
    layer = make()
    layer.send("old.b", {"n": 0})
    time.sleep(0.005)
    layer.send("old.a", {"n": 1})
    assert layer.receive(["old.a", "old.b"]) == ("old.b", {"n": 0})
    assert layer.receive(["old.a", "old.b"]) == ("old.a", {"n": 1})


# -- capacity and fan-out ----------------------------------------------------------


def test_capacity_has_no_overshoot_under_threads(make: Any) -> None:
    layer = make(capacity=20)
    ok: list[int] = []
    full: list[int] = []
    start = threading.Barrier(8)

    def sender(index: int) -> None:
        start.wait()
        for n in range(10):
            try:
                layer.send("ov.q", {"t": index, "n": n})
                ok.append(1)
            except ChannelFull:
                full.append(1)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(ok), len(full)) == (20, 60)
    stats = layer.channel_statistics("ov.q")
    assert (stats["messages_pending"], stats["messages_count"], stats["channel_full_count"]) == (20, 20, 60)


def test_send_group_is_one_script(private: Any) -> None:
    # On a server of its own: the shared one's counters also count other test runs.
    client = redis.Redis.from_url(private.url)
    layer = RedisChannelLayer(private.url, prefix=unique_key_prefix(), capacity=3,
                              channel_capacity={"fo.tiny*": 1})
    try:
        _one_script(layer, client)
    finally:
        layer.flush()
        layer.close()
        client.close()


def _one_script(layer: RedisChannelLayer, client: redis.Redis) -> None:
    members = [f"fo.m{i}" for i in range(100)] + [f"fo.p!{i}" for i in range(2)] + ["fo.tiny"]
    for member in members:
        layer.group_add("fo-g", member)
    layer.send("fo.tiny", {"already": "full"})
    # The first call of a script costs a NOSCRIPT EVALSHA plus SCRIPT LOAD; warm it up.
    layer.send_group("fo-nobody", {"n": 0})
    before = commandstats(client, "evalsha") + commandstats(client, "eval")
    layer.send_group("fo-g", {"n": 1})
    assert commandstats(client, "evalsha") + commandstats(client, "eval") - before == 1
    for i in range(100):
        assert layer.receive([f"fo.m{i}"]) == (f"fo.m{i}", {"n": 1})
    assert {layer.receive(["fo.p!"])[0] for _ in range(2)} == {"fo.p!0", "fo.p!1"}
    # The glob-capacity member (1) was full: skipped, counted, not raised.
    assert layer.receive(["fo.tiny"]) == ("fo.tiny", {"already": "full"})
    assert layer.receive(["fo.tiny"]) == (None, None)
    assert layer.channel_statistics("fo.tiny")["channel_full_count"] == 1


def test_send_group_skip_logs_at_debug_only(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    layer = make(capacity=1)
    layer.group_add("lg-g", "lg.full")
    layer.send("lg.full", {})
    with caplog.at_level("DEBUG", logger="ipc_layer.redis_layer"):
        layer.send_group("lg-g", {"n": 1})
    assert [record.levelname for record in caplog.records] == ["DEBUG"]
    assert "skipped 1 full" in caplog.records[0].getMessage()


def test_many_expired_group_members_are_pruned(make: Any, client: redis.Redis) -> None:
    layer = make(group_expiry=0.2)
    for i in range(2500):  # more than one unpack() chunk
        client.zadd(layer._group_keys("pr-g")[0], {f"pr.m{i}": 0})
        client.hset(layer._group_keys("pr-g")[1], f"pr.m{i}", 1)
    layer.group_add("pr-g", "pr.live")
    layer.send_group("pr-g", {"n": 1})
    assert layer.group_channels("pr-g") == ["pr.live"]
    assert client.hkeys(layer._group_keys("pr-g")[1]) == [b"pr.live"]
    assert layer.receive(["pr.live"]) == ("pr.live", {"n": 1})


# -- group delivery: one payload, one round trip per receiving process --------------


@pytest.fixture(scope="module")
def private() -> Iterator[Any]:
    """A redis-server of this module's own, where command counters see only these tests."""
    import unittest

    from tests.redis_support import private_servers, stop_servers

    try:
        servers = private_servers(1)
    except unittest.SkipTest as exc:
        pytest.skip(str(exc))
    yield servers[0]
    stop_servers(servers)


def test_group_payload_is_stored_once_and_drained_in_one_round_trip(private: Any) -> None:
    client = redis.Redis.from_url(private.url)
    layer = RedisChannelLayer(private.url, prefix=unique_key_prefix(), capacity=200)
    try:
        base = layer.new_process_channel("gd")
        for i in range(100):
            layer.group_add("gd-g", f"{base}{i}")
        body = bytes(range(256)) * 256  # 64 KiB
        layer.receive([base])  # the scripts are loaded: no NOSCRIPT below
        layer.send_group("gd-g", {"body": body})
        p = layer._prefix
        payloads = [key for key in client.scan_iter(match=p + "d:*")]
        assert len(payloads) == 1
        assert client.hget(payloads[0], "r") == b"100"
        # 100 entries that reference the payload, not 100 copies of it.
        assert (client.memory_usage(f"{p}q:{base}") or 0) < len(body)
        before = {name: commandstats(client, name) for name in ("blpop", "evalsha", "eval")}
        got = [layer.receive([base], block=True) for _ in range(100)]
        after = {name: commandstats(client, name) for name in ("blpop", "evalsha", "eval")}
        # (Members joined in the same millisecond come in name order: a group has no order.)
        assert sorted(got, key=lambda item: int(str(item[0])[len(base):])) == [
            (f"{base}{i}", {"body": body}) for i in range(100)]
        # One BLPOP and the batch pipelined behind it: one round trip for 100 deliveries.
        assert after["blpop"] - before["blpop"] == 1
        assert after["evalsha"] - before["evalsha"] + after["eval"] - before["eval"] == 1
        # 99 references were taken by the batch; the BLPOP's one is owed until the next command.
        assert client.hget(payloads[0], "r") == b"1"
        assert layer.receive([base]) == (None, None)
        assert not client.exists(payloads[0])
    finally:
        layer.flush()
        layer.close()
        client.close()


def test_blocking_receive_does_not_poll(private: Any) -> None:
    # On a server of its own: the shared one's counters also count other test runs.
    client = redis.Redis.from_url(private.url)
    layer = RedisChannelLayer(private.url, prefix=unique_key_prefix(), blocking_timeout=1.0)
    layer.global_statistics()  # connect and check the server first
    before = {name: commandstats(client, name) for name in ("blpop", "evalsha", "eval")}
    started = time.monotonic()
    assert layer.receive(["np.a", "np.b", "np.c!"], block=True) == (None, None)
    assert 0.9 < time.monotonic() - started < 2.0
    after = {name: commandstats(client, name) for name in ("blpop", "evalsha", "eval")}
    # One BLPOP for the whole second: the wait happens inside Redis; the one
    # script is the batch pipelined after it for the pinned queue np.c!.
    assert after["blpop"] - before["blpop"] == 1
    assert after["evalsha"] - before["evalsha"] + after["eval"] - before["eval"] == 1
    layer.close()
    client.close()


def test_small_group_payloads_are_copied(make: Any, client: redis.Redis) -> None:
    layer = make()
    for local in "abc":
        layer.group_add("gs-g", f"gs.p!{local}")
    layer.send_group("gs-g", {"n": 1})
    assert list(client.scan_iter(match=layer._prefix + "d:*")) == []
    assert {layer.receive(["gs.p!"])[0] for _ in range(3)} == {"gs.p!a", "gs.p!b", "gs.p!c"}


def test_buffered_deliveries_expire(make: Any) -> None:
    layer = make(expiry=0.3)
    for local in "abc":
        layer.group_add("ge-g", f"ge.p!{local}")
    layer.send_group("ge-g", {"n": 1})
    assert layer.receive(["ge.p!"])[0] == "ge.p!a"  # b and c are now in this instance's buffer
    assert layer._buffer
    time.sleep(0.45)
    assert layer.receive(["ge.p!"]) == (None, None)


def test_flush_empties_the_buffer(make: Any) -> None:
    layer = make()
    for local in "ab":
        layer.group_add("gf-g", f"gf.p!{local}")
    layer.send_group("gf-g", {"n": 1})
    assert layer.receive(["gf.p!"])[0] == "gf.p!a"
    layer.flush()
    assert layer.receive(["gf.p!"]) == (None, None)


def test_normal_channels_are_never_batched(make: Any) -> None:
    prefix = unique_key_prefix()
    first, second = make(prefix=prefix), make(prefix=prefix)
    for member in ("nb.a", "nb.b"):
        first.group_add("nb-g", member)
    for n in range(3):
        first.send("nb.a", {"n": n})
    first.send_group("nb-g", {"n": 3})
    assert first.receive(["nb.a", "nb.b"])[1] == {"n": 0}
    # A competing worker still finds the rest in Redis, not in first's buffer.
    assert not first._buffer
    assert second.receive(["nb.a"]) == ("nb.a", {"n": 1})
    assert second.receive(["nb.b"]) == ("nb.b", {"n": 3})


def test_group_capacity_is_checked_per_member_of_one_queue(make: Any) -> None:
    layer = make(capacity=3)
    layer.send("gc.p!x", {"n": 0})
    for local in "abcd":
        layer.group_add("gc-g", f"gc.p!{local}")
    layer.send_group("gc-g", {"n": 1})
    # Room for two of the four members of gc.p!: a and b, the rest skipped and counted.
    got = [layer.receive(["gc.p!"])[0] for _ in range(4)]
    assert got == ["gc.p!x", "gc.p!a", "gc.p!b", None]
    assert layer.channel_statistics("gc.p!")["channel_full_count"] == 2


# -- flush scope and statistics ----------------------------------------------------------


def test_flush_touches_only_its_prefix(make: Any, client: redis.Redis, url: str) -> None:
    base = unique_key_prefix().rstrip(":")
    mine = make(prefix=base)
    neighbour = make(prefix=base + "2")  # "<base>2:" must survive a flush of "<base>:"
    other_key = f"{base}-unrelated"
    client.set(other_key, b"keep")
    try:
        mine.send("fl.q", {"n": 1})
        mine.group_add("fl-g", "fl.q")
        neighbour.send("fl.q", {"n": 2})
        mine.flush()
        assert count_keys(url, mine._prefix) == 0
        assert mine.receive(["fl.q"]) == (None, None)
        assert neighbour.receive(["fl.q"]) == ("fl.q", {"n": 2})
        assert client.get(other_key) == b"keep"
    finally:
        client.delete(other_key)


def test_glob_characters_in_prefix_are_escaped(make: Any, client: redis.Redis) -> None:
    base = unique_key_prefix().rstrip(":")
    starred = make(prefix=base + "*")
    plain = make(prefix=base + "x")
    starred.send("gl.q", {"n": 1})
    plain.send("gl.q", {"n": 2})
    starred.flush()
    assert plain.receive(["gl.q"]) == ("gl.q", {"n": 2})


def test_statistics_shared_between_instances(make: Any) -> None:
    prefix = unique_key_prefix()
    first, second = make(prefix=prefix), make(prefix=prefix)
    first.send("st.q", {})
    second.send("st.q", {})
    assert first.global_statistics() == {"messages_count": 2, "channel_full_count": 0}
    assert second.channel_statistics("st.q")["messages_pending"] == 2


def test_new_channel_skips_names_in_use(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ipc_layer import names

    layer = make()
    layer.send("nc.x?taken", {})
    suffixes = iter(["taken", "free"])
    monkeypatch.setattr(names, "random_suffix", lambda *args: next(suffixes))
    assert layer.new_channel("nc.x?") == "nc.x?free"


def test_close_ends_a_receive_blocked_in_another_thread(make: Any) -> None:
    layer = make(blocking_timeout=60)
    layer.global_statistics()
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(layer.receive(["cl.q"], block=True)), daemon=True)
    thread.start()
    time.sleep(0.3)  # let it block in BLPOP
    layer.close()
    # Its socket is closed under it and it does not reconnect for the 60 s bound.
    thread.join(10)
    assert not thread.is_alive()
    assert results == [(None, None)]
