"""ipc_layer.capacity: default and per-glob channel capacities."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest

from ipc_layer.capacity import DEFAULT_CAPACITY, ChannelCapacities, validate_capacity


def test_default() -> None:
    assert ChannelCapacities().get("anything") == DEFAULT_CAPACITY == 100
    assert ChannelCapacities(7).get("anything") == 7


def test_globs_first_match_wins() -> None:
    caps = ChannelCapacities(
        10,
        OrderedDict([("http.request", 200), ("daphne.response*", 3), ("http.*", 50), ("http.disconnect", 999)]),
    )
    assert caps.get("http.request") == 200
    assert caps.get("http.request.body?x") == 50
    assert caps.get("http.disconnect") == 50
    assert caps.get("daphne.response.abc!") == 3
    assert caps.get("websocket.receive") == 10
    # An exact glob does not match longer names.
    assert ChannelCapacities(10, {"http.request": 200}).get("http.request2") == 10


def test_process_channel_uses_non_local_name() -> None:
    caps = ChannelCapacities(10, {"daphne.response.*!": 4, "reply!": 2})
    assert caps.get("daphne.response.abc!client") == caps.get("daphne.response.abc!") == 4
    assert caps.get("reply!x") == 2
    # The stale README example "http.response!*" still matches the queue.
    assert ChannelCapacities(10, {"http.response!*": 6}).get("http.response!abc") == 6


def test_compiled_regex_keys() -> None:
    caps = ChannelCapacities(10, {re.compile(r"^ws\."): 5, "w*": 6})
    assert caps.get("ws.receive") == 5
    assert caps.get("wx") == 6


@pytest.mark.parametrize("value", [0, -1])
def test_capacity_below_one_is_value_error(value: int) -> None:
    with pytest.raises(ValueError, match=re.escape("capacity must be an int in 1..4294967295") + f".*got {value}"):
        ChannelCapacities(value)
    with pytest.raises(ValueError, match=re.escape("channel_capacity['x*'] must be an int in 1..") + f".*got {value}"):
        ChannelCapacities(10, {"x*": value})


@pytest.mark.parametrize("value", [True, 1.5, "3", None])
def test_non_int_capacity_is_type_error(value: object) -> None:
    with pytest.raises(TypeError, match=f"not {type(value).__name__}"):
        validate_capacity(value, "capacity")
    with pytest.raises(TypeError, match=re.escape("channel_capacity['x*']")):
        ChannelCapacities(10, {"x*": value})  # type: ignore[dict-item]


def test_bad_key_is_type_error() -> None:
    with pytest.raises(TypeError, match="channel_capacity key 123"):
        ChannelCapacities(10, {123: 4})  # type: ignore[dict-item]


def test_lookups_are_cached_and_config_is_copied() -> None:
    source: dict[str | re.Pattern[str], int] = {"a*": 2}
    caps = ChannelCapacities(10, source)
    source["b*"] = 3
    assert caps.channel_capacity == {"a*": 2}
    for _ in range(3):
        assert caps.get("abc") == 2
    assert caps._known == {"abc": 2}
    assert "a*" in repr(caps)
