"""HybridChannelLayer's own rules: names carrying hosts, routing, settings errors, the pump.

The contract as a whole is the conformance suite's (test_conformance_hybrid.py);
two hosts in separate processes are tests/integration/ipc_layer/test_hybrid_hosts.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from ipc_layer import names, options
from ipc_layer.hybrid import HybridChannelLayer, default_host, host_of, inbox_channel
from ipc_layer.loading import layer_from_settings
from ipc_layer.redis_layer import RedisChannelLayer
from tests.redis_support import redis_url
from tests.support import TEST_SEGMENT_SIZE, remove_keys, unique_key_prefix

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture
def url() -> str:
    try:
        return redis_url()
    except Exception as exc:  # unittest.SkipTest included
        pytest.skip(str(exc))


@pytest.fixture
def key_prefix(url: str) -> Iterator[str]:
    prefix = unique_key_prefix()
    try:
        yield prefix
    finally:
        remove_keys(url, prefix)


def _config(prefix: str, url: str, key_prefix: str, **extra: Any) -> dict[str, Any]:
    return {"prefix": prefix, "host": "hostA", "blocking_timeout": 0.5,
            "ipc": {"segment_size": TEST_SEGMENT_SIZE}, "redis": {"url": url, "prefix": key_prefix}, **extra}


@pytest.fixture
def layer(prefix: str, url: str, key_prefix: str) -> Iterator[HybridChannelLayer]:
    made = HybridChannelLayer(**_config(prefix, url, key_prefix))
    try:
        yield made
    finally:
        made.close()


def test_names_the_layer_makes_carry_its_host(layer: HybridChannelLayer) -> None:
    process = layer.new_process_channel("server")
    single = layer.new_channel("http.request.body?")
    assert process.startswith("server.h-hostA.") and process.endswith("!")
    assert single.startswith("http.request.body?h-hostA.")
    for name in (process, process + "client7", single):
        assert names.validate_channel(name) == name
        assert host_of(name) == "hostA"
        assert layer.is_local(name)


@pytest.mark.parametrize(("name", "host"), [
    ("server.h-web-1.AbCdEfGhIjKl!", "web-1"),
    ("server.h-web-1.AbCdEfGhIjKl!x9", "web-1"),
    ("a.b.h-h.AbCdEfGhIjKl!", "h"),
    ("x?h-web2.AbCdEfGhIjKl", "web2"),
    ("daphne.response.AbCdEfGhIj!KlMnOpQrSt", None),  # made by another layer: no host
    ("server.h-web1.short!", None),
    ("x?AbCdEfGhIjKl", None),
    ("x?h-web2.AbCdEfGhIjKl.more", None),
    ("http.request", None),
    ("h-web1.AbCdEfGhIjKl!", None),  # no prefix before the tag
])
def test_host_of(name: str, host: str | None) -> None:
    assert host_of(name) == host


def test_default_host_is_per_machine_and_prefix() -> None:
    one = default_host("site", "web1.example.com")
    assert one == default_host("site", "web1.example.com")
    assert one != default_host("other", "web1.example.com")
    assert one != default_host("site", "web2.example.com")
    assert one.startswith("web1-example")
    assert options.HOST.validate(one) == one
    assert options.HOST.validate(default_host("p", "ü" * 80)) is not None


def test_where_each_channel_goes(layer: HybridChannelLayer) -> None:
    assert layer.is_local("http.request") and layer.is_local("websocket.receive")
    # enforce_ordering parks a socket's messages there; the socket's host's workers use it.
    assert layer.is_local("__wait__.0123456789abcdef0123456789abcdef")
    assert not layer.is_local("thumbnails")
    assert not layer.is_local("server.h-hostB.AbCdEfGhIjKl!x")
    assert not layer.is_local("daphne.response.AbCdEfGhIj!x")


def test_local_traffic_stays_out_of_redis(layer: HybridChannelLayer) -> None:
    reply = layer.new_process_channel("server")
    layer.send("http.request", {"reply_channel": reply + "c1"})
    assert layer.redis_layer.global_statistics()["messages_count"] == 0
    assert layer.local_layer.receive(["http.request"]) == ("http.request", {"reply_channel": reply + "c1"})
    layer.send(reply + "c1", {"status": 200})
    assert layer.local_layer.receive([reply]) == (reply + "c1", {"status": 200})
    assert layer.redis_layer.global_statistics()["messages_count"] == 0


def test_another_hosts_channel_goes_to_its_inbox(layer: HybridChannelLayer, url: str, key_prefix: str) -> None:
    target = "server.h-hostB.AbCdEfGhIjKl!c3"
    layer.send(target, {"text": "hi"})
    plain = RedisChannelLayer(url, prefix=key_prefix)
    try:
        assert plain.receive([inbox_channel("hostB")]) == (
            inbox_channel("hostB"), {"text": "hi", "__asgi_channel__": target})
    finally:
        plain.close()


def test_a_full_inbox_names_the_host(prefix: str, url: str, key_prefix: str) -> None:
    layer = HybridChannelLayer(**_config(prefix, url, key_prefix, inbox_capacity=2))
    try:
        for n in range(2):
            layer.send("server.h-hostB.AbCdEfGhIjKl!c", {"n": n})
        with pytest.raises(layer.ChannelFull, match="on host 'hostB', whose inbox in Redis is full"):
            layer.send("server.h-hostB.AbCdEfGhIjKl!c", {"n": 2})
    finally:
        layer.close()


def test_receiving_on_another_hosts_channel_is_refused(layer: HybridChannelLayer) -> None:
    with pytest.raises(ValueError, match="belongs to host 'hostB' and this layer is host 'hostA'"):
        layer.receive(["server.h-hostB.AbCdEfGhIjKl!"])


def test_group_names_must_leave_room_for_the_host_member(layer: HybridChannelLayer) -> None:
    room = names.MAX_NAME_LENGTH - len(inbox_channel("hostA"))
    channel = layer.new_process_channel("p") + "x"
    layer.group_add("g" * room, channel)
    with pytest.raises(ValueError, match=f"at most {room} fit"):
        layer.group_add("g" * (room + 1), channel)


def test_long_prefixes_and_patterns_are_refused_naming_them(layer: HybridChannelLayer) -> None:
    with pytest.raises(TypeError, match="process channel prefix 'p{80}' is 80 characters long"):
        layer.new_process_channel("p" * 80)
    with pytest.raises(TypeError, match="new_channel pattern 'q{80}\\?' is 81 characters long"):
        layer.new_channel("q" * 80 + "?")


@pytest.mark.parametrize(("config", "error", "text"), [
    ({"host": "bad host"}, ValueError, "host 'bad host' must be 1..24 ASCII letters"),
    ({"host": "x" * 25}, ValueError, "must be 1..24"),
    ({"local_channels": "http.*"}, TypeError, "local_channels must be a list of channel-name globs"),
    ({"local_channels": ["ok", ""]}, ValueError, "local_channels: '' is not a channel-name glob"),
    ({"ipc": {"expiry": 5}}, TypeError, "ipc['expiry']: set 'expiry' at the top level"),
    ({"ipc": {"prefix": "x"}}, TypeError, "ipc['prefix']: set 'prefix' at the top level"),
    ({"ipc": {"segmentsize": 5}}, TypeError, "ipc got unknown option 'segmentsize'"),
    ({"ipc": {"segment_size": -1}}, ValueError, "segment_size must be an int"),
    ({"redis": {"capacity": 5}}, TypeError, "redis['capacity']: set 'capacity' at the top level"),
    ({"redis": {"hosst": []}}, TypeError, "redis got unknown option 'hosst'"),
    ({"redis": ["redis://x"]}, TypeError, "redis must be a mapping of ipc_layer.redis_layer.RedisChannelLayer"),
    ({"inbox_capacity": 0}, ValueError, "inbox_capacity must be an int in 1.."),
])
def test_bad_settings_are_named(config: dict[str, Any], error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text.replace("[", "\\[").replace("]", "\\]").replace("*", "\\*")):
        HybridChannelLayer(**config)


def test_loadable_by_settings(prefix: str, url: str, key_prefix: str) -> None:
    layer = layer_from_settings({"BACKEND": "ipc_layer.hybrid.HybridChannelLayer",
                                 "CONFIG": _config(prefix, url, key_prefix)})
    try:
        assert isinstance(layer, HybridChannelLayer) and layer.host == "hostA"
        assert "twisted" in layer.extensions
    finally:
        layer.close()


def test_a_mixed_receive_takes_nothing_from_redis_while_nobody_waits(
        layer: HybridChannelLayer, url: str, key_prefix: str) -> None:
    # A worker's receive over a local channel and a Redis one: the pump waits in
    # Redis for it, and stops doing so once nobody waits.
    layer.send("http.request", {"n": 1})
    assert layer.receive(["http.request", "tasks"], block=True) == ("http.request", {"n": 1})
    # The pump's wait in flight ends within blocking_timeout (0.5 s); after that a
    # message for "tasks" must stay in Redis for whichever host's consumer asks.
    time.sleep(layer.blocking_timeout * 3)
    plain = RedisChannelLayer(url, prefix=key_prefix)
    try:
        layer.send("tasks", {"job": 1})
        time.sleep(layer.blocking_timeout * 2)
        assert plain.receive(["tasks"]) == ("tasks", {"job": 1})
    finally:
        plain.close()
    # And a waiting mixed receive gets a Redis message at once, without polling.
    layer.send("tasks", {"job": 2})
    assert layer.receive(["http.request", "tasks"], block=True) == ("tasks", {"job": 2})


def test_consumers_register_again_after_a_flush(layer: HybridChannelLayer) -> None:
    from ipc_layer.hybrid_facts import CONSUMERS_SET

    layer.receive(["http.request"])
    assert layer.segment.set_members(CONSUMERS_SET) == [b"http.request"]
    layer.flush()
    assert layer.segment.set_members(CONSUMERS_SET) == []
    layer.receive(["http.request"])  # within the refresh period, yet registered again
    assert layer.segment.set_members(CONSUMERS_SET) == [b"http.request"]
