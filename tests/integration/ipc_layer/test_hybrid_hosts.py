"""Two "hosts" on this machine (two segment prefixes, one Redis) running HybridChannelLayer.

Every host here is one or more real processes (``spawn``), so messages cross
between processes the way they cross between machines: through the Redis
server this module starts for itself (its ``INFO commandstats`` then counts
only this module's traffic), the hosts' inboxes and their forwarders.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import TEST_SEGMENT_SIZE, remove_segment, unique_key_prefix

redis = pytest.importorskip("redis")

from bench.redis_server import RedisServer, RedisUnavailable  # noqa: E402
from ipc_layer.hybrid import HybridChannelLayer  # noqa: E402
from ipc_layer.hybrid_facts import FORWARDER_SET  # noqa: E402

pytestmark = [pytest.mark.redis, pytest.mark.integration, pytest.mark.timeout(120)]

_SPAWN = multiprocessing.get_context("spawn")
#: Long enough that an idle forwarder's blocking receive (one BLPOP per
#: blocking_timeout) does not run out during a test; short enough that a
#: closed layer's threads end soon after.
_BLOCKING = 20.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except RedisUnavailable as exc:
        pytest.skip(f"no redis-server for the hybrid host tests: {exc}")
    try:
        yield server
    finally:
        server.stop()


class Site:
    """The settings every host of one test's site shares, and per-host configs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key_prefix = unique_key_prefix()
        self.prefixes: list[str] = []

    def config(self, host: str, **extra: Any) -> dict[str, Any]:
        prefix = f"{self.key_prefix[:-1]}{host}"
        if prefix not in self.prefixes:
            self.prefixes.append(prefix)
        return {"prefix": prefix, "host": host, "blocking_timeout": _BLOCKING,
                "ipc": {"segment_size": TEST_SEGMENT_SIZE},
                "redis": {"url": self.url, "prefix": self.key_prefix}, **extra}

    def layer(self, host: str, **extra: Any) -> HybridChannelLayer:
        return HybridChannelLayer(**self.config(host, **extra))


@pytest.fixture
def site(redis_server: RedisServer) -> Iterator[Site]:
    site = Site(redis_server.url)
    try:
        yield site
    finally:
        for prefix in site.prefixes:
            remove_segment(prefix)
        client = redis.Redis.from_url(redis_server.url)
        keys = list(client.scan_iter(match=site.key_prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


# -- the processes of a host ------------------------------------------------------------


def _host_process(config: dict[str, Any], out: Any, stop: Any) -> None:
    """A host's process: receives on its own '!' channel and does what the messages say."""
    layer = HybridChannelLayer(**config)
    mine = layer.new_process_channel("proc")
    out.put(("ready", mine, os.getpid()))
    while True:
        channel, message = layer.receive([mine], block=True)
        if channel is None or message is None:
            continue
        command = message.get("cmd")
        if command == "echo":
            layer.send(message["reply_to"], {"echo": message["n"], "host": layer.host})
        elif command == "join":
            layer.group_add(message["group"], mine + message["member"])
            layer.send(message["reply_to"], {"joined": message["member"]})
        elif command == "send_group":
            layer.send_group(message["group"], message["payload"])
        else:
            out.put(("got", channel, message))


def _local_worker(config: dict[str, Any], out: Any, stop: Any) -> None:
    """A host's worker: answers http.request (a local channel) on the request's reply channel."""
    layer = HybridChannelLayer(**config)
    out.put(("ready", None, os.getpid()))
    while True:
        channel, message = layer.receive(["http.request"], block=True)
        if channel is not None and message is not None:
            layer.send(message["reply_channel"], {"status": 200, "n": message["n"]})


class Proc:
    def __init__(self, target: Any, config: dict[str, Any]) -> None:
        self.out = _SPAWN.Queue()
        self.stop = _SPAWN.Event()
        self.process = _SPAWN.Process(target=target, args=(config, self.out, self.stop), daemon=True)
        self.process.start()
        kind, self.channel, self.pid = self.out.get(timeout=60)
        assert kind == "ready"

    def got(self, timeout: float = 30) -> tuple[str, dict[str, Any]]:
        kind, channel, message = self.out.get(timeout=timeout)
        assert kind == "got"
        return channel, message

    def close(self) -> None:
        # Its receives wait up to blocking_timeout (20 s, so that idle forwarders
        # stay quiet in Redis): kill it; the fixture removes its segment files.
        self.process.kill()
        self.process.join(10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.close()


def _receive(layer: HybridChannelLayer, channels: list[str], timeout: float = 30) -> tuple[str, dict[str, Any]]:
    """The next message on ``channels``, failing the test after ``timeout`` seconds of nothing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        channel, message = layer.receive(channels, block=True)
        if channel is not None and message is not None:
            return channel, message
    pytest.fail(f"nothing arrived on {channels!r} within {timeout} s")


def _forwarder_pids(layer: HybridChannelLayer) -> list[int]:
    return [int(member.split()[1]) for member in layer.segment.set_members(FORWARDER_SET)]


def _wait_forwarder(layer: HybridChannelLayer, pids: set[int], timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = set(_forwarder_pids(layer)) & pids
        if live:
            return live.pop()
        time.sleep(0.05)
    pytest.fail(f"no forwarder among {pids} registered within {timeout} s")


# -- tests -----------------------------------------------------------------------------


def test_messages_cross_between_hosts_both_ways(site: Site, procs: list[Proc]) -> None:
    a = site.layer("hostA", blocking_timeout=1)
    try:
        b = Proc(_host_process, site.config("hostB"))
        procs.append(b)
        mine = a.new_process_channel("test")
        assert "h-hostA" in mine and "h-hostB" in b.channel
        for n in range(5):
            # A -> B's process (B's inbox, B's forwarder), then B -> A's channel (A's).
            a.send(b.channel + "x", {"cmd": "echo", "n": n, "reply_to": mine + f"r{n}"})
            assert _receive(a, [mine]) == (mine + f"r{n}", {"echo": n, "host": "hostB"})
        assert a.receive([mine]) == (None, None)
    finally:
        a.close()


def test_a_group_send_reaches_members_on_both_hosts_once(site: Site, procs: list[Proc]) -> None:
    a = site.layer("hostA", blocking_timeout=1)
    try:
        b = Proc(_host_process, site.config("hostB"))
        procs.append(b)
        mine = a.new_process_channel("test")
        a.group_add("chat", mine + "a1")
        a.group_add("chat", mine + "a2")
        for member in ("b1", "b2"):
            a.send(b.channel, {"cmd": "join", "group": "chat", "member": member, "reply_to": mine + "ctl"})
            assert _receive(a, [mine]) == (mine + "ctl", {"joined": member})
        # A cross-host add: A puts a channel of host B's process in the group.
        a.group_add("chat", b.channel + "b3")

        a.send_group("chat", {"text": "from A"})
        got_a = {(channel, message["text"]) for channel, message in (_receive(a, [mine]) for _ in range(2))}
        assert got_a == {(mine + "a1", "from A"), (mine + "a2", "from A")}
        got_b = {(channel, message["text"]) for channel, message in (b.got() for _ in range(3))}
        assert got_b == {(b.channel + member, "from A") for member in ("b1", "b2", "b3")}

        # And from B: B's members get it from B's segment, A's through A's forwarder.
        a.send(b.channel, {"cmd": "send_group", "group": "chat", "payload": {"text": "from B"}})
        got_a = {(channel, message["text"]) for channel, message in (_receive(a, [mine]) for _ in range(2))}
        assert got_a == {(mine + "a1", "from B"), (mine + "a2", "from B")}
        got_b = {(channel, message["text"]) for channel, message in (b.got() for _ in range(3))}
        assert got_b == {(b.channel + member, "from B") for member in ("b1", "b2", "b3")}

        # Exactly once: the copy each host's own forwarder got back was dropped there.
        a.send(b.channel, {"cmd": "echo", "n": 0, "reply_to": mine + "end"})
        assert _receive(a, [mine]) == (mine + "end", {"echo": 0, "host": "hostB"})
        assert a.receive([mine]) == (None, None)
        assert b.out.empty()
        assert set(a.group_channels("chat")) == {mine + "a1", mine + "a2"}
    finally:
        a.close()


def _commandstats(client: Any) -> dict[str, int]:
    return {name: int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls per command between two snapshots, without the INFO of the snapshot itself."""
    return {name: calls - before.get(name, 0) for name, calls in after.items()
            if calls != before.get(name, 0) and name != "cmdstat_info"}


def test_local_request_response_touches_no_redis_key(site: Site, procs: list[Proc],
                                                      redis_server: RedisServer) -> None:
    a = site.layer("hostA")
    try:
        procs.append(Proc(_local_worker, site.config("hostA")))
        procs.append(Proc(_host_process, site.config("hostB")))
        reply = a.new_process_channel("server")
        a.receive([reply])  # this process volunteers as a forwarder too, before counting
        body = a.new_channel("http.request.body?")
        assert a.is_local("http.request") and a.is_local(reply) and a.is_local(body)
        client = redis.Redis.from_url(redis_server.url)
        before = _commandstats(client)
        requests = 200
        for n in range(requests):
            a.send("http.request", {"n": n, "reply_channel": reply + f"c{n}"})
            assert _receive(a, [reply]) == (reply + f"c{n}", {"status": 200, "n": n})
            a.send(body, {"content": b"x", "n": n})
            assert a.receive([body]) == (body, {"content": b"x", "n": n})
        during = _delta(before, _commandstats(client))
        # 400 requests and responses, 200 body chunks: at most the idle forwarders'
        # blocking receives ending (one per forwarder per blocking_timeout, 20 s here)
        # reach Redis, nothing per message.
        assert sum(during.values()) <= 6, during
        # The measurement does see cross-host traffic: one message to host B and back.
        before = _commandstats(client)
        a.send(procs[1].channel + "x", {"cmd": "echo", "n": 1, "reply_to": reply + "x"})
        assert _receive(a, [reply]) == (reply + "x", {"echo": 1, "host": "hostB"})
        assert sum(_delta(before, _commandstats(client)).values()) >= 2
        client.close()
    finally:
        a.close()


def test_another_process_of_the_host_takes_over_a_killed_forwarder(site: Site, procs: list[Proc]) -> None:
    a = site.layer("hostA", blocking_timeout=1)
    try:
        first, second = Proc(_host_process, site.config("hostB")), Proc(_host_process, site.config("hostB"))
        procs += [first, second]
        watcher = site.layer("hostB", blocking_timeout=1)  # reads host B's segment, never receives
        try:
            active = _wait_forwarder(watcher, {first.pid, second.pid})
            survivor = second if active == first.pid else first
            os.kill(active, signal.SIGKILL)
            # The kernel dropped the dead forwarder's flock: the survivor forwards now.
            # (A message sent while Redis still hands the inbox to the dead one's
            # blocked receive would be lost, the documented one in flight: wait for
            # the survivor first.)
            assert _wait_forwarder(watcher, {survivor.pid}) == survivor.pid
            mine = a.new_process_channel("test")
            a.send(survivor.channel, {"cmd": "echo", "n": 7, "reply_to": mine + "r"})
            assert _receive(a, [mine]) == (mine + "r", {"echo": 7, "host": "hostB"})
        finally:
            watcher.close()
    finally:
        a.close()


def _sleeper(seconds: float) -> None:
    time.sleep(seconds)


def test_a_forked_child_does_not_keep_the_forwarder_lock(site: Site) -> None:
    parent = site.layer("hostA", blocking_timeout=0.5)
    parent.receive([parent.new_process_channel("p")])  # volunteers: the only one, so it forwards
    deadline = time.monotonic() + 30
    while parent.forwarder_state != "ACTIVE" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert parent.forwarder_state == "ACTIVE"
    child = multiprocessing.get_context("fork").Process(target=_sleeper, args=(60,), daemon=True)
    child.start()
    try:
        parent.close()  # the parent's forwarder stops and closes its lock fd
        successor = site.layer("hostA", blocking_timeout=0.5)
        try:
            successor.receive([successor.new_process_channel("s")])
            # With the child still holding an inherited copy of the lock fd, this stays STANDBY.
            deadline = time.monotonic() + 30
            while successor.forwarder_state != "ACTIVE" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert successor.forwarder_state == "ACTIVE"
        finally:
            successor.close()
    finally:
        child.kill()
        child.join(10)


def test_a_blocking_twisted_receive_is_woken_by_another_hosts_message(site: Site, procs: list[Proc]) -> None:
    from twisted.internet.pollreactor import PollReactor

    from ipc_layer.testing.conformance import run_reactor_until

    a = site.layer("hostA", blocking_timeout=5)
    try:
        b = Proc(_host_process, site.config("hostB"))
        procs.append(b)
        mine = a.new_process_channel("server")
        a.receive([mine])  # the forwarder of host A starts

        def start(reactor: Any) -> Any:
            # The reply crosses Redis, A's forwarder queues it in A's segment, and the
            # segment's FD watch wakes the reactor: no thread waits in Redis for it.
            reactor.callLater(0.1, a.send, b.channel, {"cmd": "echo", "n": 3, "reply_to": mine + "tw"})
            return a.receive_twisted([mine], reactor)

        outcome = run_reactor_until(PollReactor(), start, timeout=30)
        assert outcome and tuple(outcome[0]) == (mine + "tw", {"echo": 3, "host": "hostB"})
    finally:
        a.close()


def test_stats_show_a_local_channel_nobody_consumes(site: Site) -> None:
    layer = site.layer("hostA", local_channels=["http.*", "tasks"])
    try:
        layer.send("tasks", {"job": 1})
        layer.send("http.request", {"n": 1})
        layer.receive(["http.request"])  # a consumer of http.request registers
        run = subprocess.run([sys.executable, "-m", "ipc_layer.cli", "stats", "--prefix", layer.prefix],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert "WARNING: local channel 'tasks' holds messages and nobody consumes it on this host" in run.stdout
        assert "local channels consumed here: http.request" in run.stdout
        assert "hybrid layer: host 'hostA'" in run.stdout
        layer.send("http.request", {"n": 2})  # waiting, but http.request has a consumer
        run = subprocess.run([sys.executable, "-m", "ipc_layer.cli", "stats", "--prefix", layer.prefix],
                             capture_output=True, text=True, timeout=60)
        assert "'http.request' holds messages" not in run.stdout
    finally:
        layer.close()


def test_a_segment_refuses_a_second_host_name(site: Site) -> None:
    layer = site.layer("hostA")
    try:
        with pytest.raises(ValueError, match="segment .* belongs to hybrid host 'hostA', and this layer says "
                                             "host='hostZ'"):
            HybridChannelLayer(**{**site.config("hostA"), "host": "hostZ"})
    finally:
        layer.close()


def test_this_hosts_traffic_goes_on_while_redis_is_down(site: Site) -> None:
    server = RedisServer().start()
    config = {**site.config("hostA"), "redis": {"url": server.url, "prefix": site.key_prefix}}
    layer = HybridChannelLayer(**{**config, "blocking_timeout": 0.5})
    try:
        mine = layer.new_process_channel("server")
        layer.receive([mine])  # the forwarder runs
        server.stop()
        layer.send("http.request", {"n": 1})
        assert layer.receive(["http.request"]) == ("http.request", {"n": 1})
        layer.send(mine + "x", {"n": 2})
        assert layer.receive([mine], block=True) == (mine + "x", {"n": 2})
        with pytest.raises(redis.exceptions.ConnectionError):
            layer.send("server.h-hostB.AbCdEfGhIjKl!x", {"n": 3})
    finally:
        layer.close()
        server.stop()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_receiver(config: dict[str, Any], channels: list[str], out: Any) -> None:
    layer = HybridChannelLayer(**config)
    layer.receive(channels)  # the forwarder volunteers, caches warm
    out.put("ready")
    while True:
        layer.receive(channels, block=True)


@pytest.mark.parametrize("channels", [["http.request"], ["http.request", "tasks"]], ids=["local", "mixed"])
def test_an_idle_receiver_and_its_forwarder_and_pump_use_no_cpu(site: Site, channels: list[str]) -> None:
    # The process waits on the segment's futex, its forwarder in Redis on the inbox,
    # and for the mixed list its pump in Redis on "tasks": all asleep, none polling.
    out = _SPAWN.Queue()
    process = _SPAWN.Process(target=_idle_receiver, args=(site.config("hostA"), channels, out), daemon=True)
    process.start()
    try:
        assert out.get(timeout=60) == "ready"
        time.sleep(0.2)
        pid = process.pid
        assert pid is not None
        before = _cpu_seconds(pid)
        time.sleep(2.0)
        used = _cpu_seconds(pid) - before
        assert used < 0.04, f"an idle hybrid receiver on {channels} used {used:.3f} s of CPU in 2 s"
    finally:
        process.kill()
        process.join(10)


def test_cross_host_traffic_resumes_after_a_redis_restart(site: Site, procs: list[Proc]) -> None:
    server = RedisServer().start()
    try:
        def config(host: str) -> dict[str, Any]:
            return {**site.config(host), "blocking_timeout": 1.0,
                    "redis": {"url": server.url, "prefix": site.key_prefix}}

        a = HybridChannelLayer(**config("hostA"))
        try:
            b = Proc(_host_process, config("hostB"))
            procs.append(b)
            mine = a.new_process_channel("test")
            a.send(b.channel, {"cmd": "echo", "n": 1, "reply_to": mine + "r"})
            assert _receive(a, [mine]) == (mine + "r", {"echo": 1, "host": "hostB"})
            server.restart()  # what Redis held is gone; both hosts' forwarders reconnect
            a.send(b.channel, {"cmd": "echo", "n": 2, "reply_to": mine + "r"})
            assert _receive(a, [mine]) == (mine + "r", {"echo": 2, "host": "hostB"})
            # This host's own traffic never needed Redis.
            a.send(mine + "local", {"n": 3})
            assert a.receive([mine]) == (mine + "local", {"n": 3})
        finally:
            a.close()
    finally:
        server.stop()
