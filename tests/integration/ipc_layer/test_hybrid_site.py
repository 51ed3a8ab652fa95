"""A whole site on two "hosts" of this machine with HybridChannelLayer: issue 16's end-to-end test.

Each host is its own segment prefix with its own ``ipc-server`` and worker pool (``ipc-worker``
running the test Django site, ``tests.django_site``, routed through ``tests.django_site.chat``); one
``redis-server`` this module starts links them, so its ``INFO commandstats`` counts only
this site. A WebSocket client on host A and one on host B, both in one chat group, see
each other's messages; HTTP to each host is served by that host's workers and leaves the
Redis command counters where they were.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import remove_segment, unique_key_prefix
from tests.worker_support import LayerUnderTest, Pool, running_pool

redis = pytest.importorskip("redis")
httpx = pytest.importorskip("httpx")
ws_client = pytest.importorskip("websockets.sync.client")

from bench.redis_server import RedisServer, RedisUnavailable  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(240)]

BACKEND = "ipc_layer.hybrid.HybridChannelLayer"
ROUTING = "tests.django_site.chat.chat_routing"
#: Each blocking receive waits this long (the layer's default); an idle host's forwarder
#: then makes one blocking receive in Redis (BLPOP + TIME) per BLOCKING seconds.
BLOCKING = 5.0
#: Commands one ending blocking receive of a forwarder costs (an upper bound).
COMMANDS_PER_WAIT = 3


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except RedisUnavailable as exc:
        pytest.skip(f"no redis-server for the two-host site: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hosts(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pool]]:
    key_prefix = unique_key_prefix()
    pools: dict[str, Pool] = {}
    with contextlib.ExitStack() as stack:
        for host in ("hostA", "hostB"):
            prefix = f"{key_prefix[:-1]}{host}"
            config: dict[str, Any] = {
                "prefix": prefix, "host": host, "blocking_timeout": BLOCKING,
                "ipc": {"segment_size": 32 << 20},
                "redis": {"url": redis_server.url, "prefix": key_prefix},
            }
            layer = LayerUnderTest("hybrid", BACKEND, config, prefix,
                                   cleanup=lambda prefix=prefix: remove_segment(prefix))  # type: ignore[misc]
            # The workers read the site's settings: prefix from IPC_TEST_PREFIX, the rest here.
            rest = {key: value for key, value in config.items() if key != "prefix"}
            pools[host] = stack.enter_context(
                running_pool(layer, tmp_path_factory.mktemp(host), workers=2, layer_config=rest, routing=ROUTING))
        yield pools


def _ws(site: Pool) -> Any:
    return ws_client.connect(f"ws://127.0.0.1:{site.port}/chat/", open_timeout=30, close_timeout=5)


def _commands(client: Any) -> dict[str, int]:
    return {name: int(stats["calls"]) for name, stats in client.info("commandstats").items()
            if name != "cmdstat_info"}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: calls - before.get(name, 0) for name, calls in after.items() if calls != before.get(name, 0)}


def test_a_chat_spans_both_hosts(hosts: dict[str, Pool]) -> None:
    with _ws(hosts["hostA"]) as alice, _ws(hosts["hostB"]) as bob:
        # Each handshake completes after its worker joined the socket to the group.
        alice.send("hello from A")
        assert alice.recv(timeout=30) == "hello from A"
        assert bob.recv(timeout=30) == "hello from A"
        bob.send("hello from B")
        assert bob.recv(timeout=30) == "hello from B"
        assert alice.recv(timeout=30) == "hello from B"
        for n in range(5):
            (alice if n % 2 else bob).send(f"message {n}")
            assert alice.recv(timeout=30) == f"message {n}"
            assert bob.recv(timeout=30) == f"message {n}"
        with pytest.raises(TimeoutError):
            alice.recv(timeout=0.5)  # nothing twice


def test_http_to_each_host_is_served_locally_without_touching_redis(
        hosts: dict[str, Pool], redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        for site in hosts.values():  # connections, workers and forwarders are up
            with httpx.Client(base_url=site.url, timeout=60) as http:
                assert http.get("/x/").status_code == 200
        before = _commands(client)
        started = time.monotonic()
        requests = 0
        for site in hosts.values():
            with httpx.Client(base_url=site.url, timeout=60) as http:
                for n in range(20):
                    response = http.get("/x/" if n % 2 else f"/?n={n}")
                    assert response.status_code == 200, response.text
                    requests += 1
        elapsed = time.monotonic() - started
        during = _delta(before, _commands(client))
        # 40 requests, each an http.request to a worker and an http.response back, on
        # two hosts: Redis saw only the idle blocking receives of the two hosts'
        # forwarders that ended meanwhile (one per BLOCKING s each), nothing per request.
        waits = 2 * (int(elapsed / BLOCKING) + 1)
        assert sum(during.values()) <= waits * COMMANDS_PER_WAIT, (during, elapsed)
        assert requests == 40
        # The counters do move for what crosses hosts: one chat message.
        before = _commands(client)
        with _ws(hosts["hostA"]) as alice:
            alice.send("counted")
            assert alice.recv(timeout=30) == "counted"
        assert sum(_delta(before, _commands(client)).values()) >= 2
    finally:
        client.close()
