"""``ipc_layer.loading``: a layer from its dotted path and CONFIG, and every mistake named.

The last tests run the same code with the backend switched by settings
only, the way the protocol server and workers will: a child process made
from ``{"BACKEND": ..., "CONFIG": ...}`` answers a parent made the same way,
over shared memory and over a real Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from ipc_layer import InMemoryChannelLayer, IPCChannelLayer
from ipc_layer.loading import InvalidLayerError, import_backend, layer_from_settings, load_layer
from tests.support import TEST_SEGMENT_SIZE

pytestmark = pytest.mark.timeout(60)


def test_loads_each_shipped_layer_by_path(prefix: str) -> None:
    memory = load_layer("ipc_layer.InMemoryChannelLayer", {"capacity": 7})
    assert isinstance(memory, InMemoryChannelLayer) and memory.capacity == 7
    for path in ("ipc_layer.IPCChannelLayer", "ipc_layer.layer.IPCChannelLayer"):
        layer = layer_from_settings(
            {"BACKEND": path, "CONFIG": {"prefix": prefix, "segment_size": TEST_SEGMENT_SIZE}}
        )
        assert isinstance(layer, IPCChannelLayer) and layer.prefix == prefix
        layer.send("load.test", {"type": "x"})
        assert layer.receive(["load.test"]) == ("load.test", {"type": "x"})
        layer.close()
    pytest.importorskip("redis")
    from ipc_layer.redis_layer import RedisChannelLayer

    assert import_backend("ipc_layer.redis_layer.RedisChannelLayer") is RedisChannelLayer


@pytest.mark.parametrize(
    ("path", "culprit"),
    [
        (None, "dotted path"),
        ("IPCChannelLayer", "dotted path"),
        (" ipc_layer.IPCChannelLayer", "dotted path"),
        ("ipc_layer.nosuchmodule.Layer", "cannot import module 'ipc_layer.nosuchmodule'"),
        ("ipc_layer.NoSuchLayer", "has no attribute 'NoSuchLayer'"),
        ("ipc_layer.__version__", "is a str, not a channel layer class"),
        ("ipc_layer.exceptions.ChannelFull", "lacks send, receive, new_channel"),
        ("ipc_layer.aio.IPCChannelLayer", r"Channels 4 \(async\) layer"),
    ],
)
def test_bad_backend_paths_are_named(path: Any, culprit: str) -> None:
    if path == "ipc_layer.aio.IPCChannelLayer":
        pytest.importorskip("channels")
    with pytest.raises(InvalidLayerError, match=culprit) as info:
        load_layer(path)
    assert isinstance(info.value, ValueError)
    if isinstance(path, str) and path.strip():
        assert path.strip() in str(info.value)


def test_bad_config_is_named() -> None:
    path = "ipc_layer.InMemoryChannelLayer"
    with pytest.raises(InvalidLayerError, match=r"unknown option\(s\) \['capcity', 'prefx'\]"):
        load_layer(path, {"capcity": 5, "prefx": "x"})
    with pytest.raises(InvalidLayerError, match="must be a mapping, got list"):
        load_layer(path, [("capacity", 5)])  # type: ignore[arg-type]
    with pytest.raises(InvalidLayerError, match="not option names"):
        load_layer(path, {"capacity-x": 5})
    with pytest.raises(InvalidLayerError, match="unknown keys \\['ROUTING'\\]"):
        layer_from_settings({"BACKEND": path, "ROUTING": "x.routes"})
    with pytest.raises(InvalidLayerError, match="no BACKEND"):
        layer_from_settings({"CONFIG": {}})
    with pytest.raises(InvalidLayerError, match="must be a mapping"):
        layer_from_settings(path)  # type: ignore[arg-type]
    # A bad value is the layer's own check, with its own message.
    with pytest.raises(ValueError, match="capacity"):
        load_layer(path, {"capacity": -1})


_CHILD = textwrap.dedent(
    """
    import json, sys
    from ipc_layer.loading import layer_from_settings
    layer = layer_from_settings(json.loads(sys.argv[1]))
    channel, message = layer.receive(["load.ping"], block=True)
    layer.send(message["reply"], {"type": "pong", "backend": type(layer).__module__})
    """
)


def _ping_child(settings: dict[str, Any]) -> dict[str, Any]:
    """Start a child built from ``settings``, ping it through a layer built the same way."""
    parent = layer_from_settings(settings)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(settings)])
    try:
        reply = parent.new_channel("load.reply?")
        parent.send("load.ping", {"type": "ping", "reply": reply})
        channel, message = parent.receive([reply], block=True)
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert channel == reply
    parent.flush()
    return message


def test_same_code_switches_backend_by_settings_shared_memory(prefix: str) -> None:
    settings = {
        "BACKEND": "ipc_layer.IPCChannelLayer",
        "CONFIG": {"prefix": prefix, "segment_size": TEST_SEGMENT_SIZE, "blocking_timeout": 20},
    }
    assert _ping_child(settings) == {"type": "pong", "backend": "ipc_layer.layer"}


@pytest.mark.redis
def test_same_code_switches_backend_by_settings_redis() -> None:
    from tests.redis_support import redis_url
    from tests.support import remove_keys, unique_key_prefix

    url = redis_url()  # SkipTest with the reason when no Redis can be had
    key_prefix = unique_key_prefix()
    settings = {
        "BACKEND": "ipc_layer.redis_layer.RedisChannelLayer",
        "CONFIG": {"hosts": [url], "prefix": key_prefix, "blocking_timeout": 20},
    }
    try:
        assert _ping_child(settings) == {"type": "pong", "backend": "ipc_layer.redis_layer"}
    finally:
        remove_keys(url, key_prefix)
