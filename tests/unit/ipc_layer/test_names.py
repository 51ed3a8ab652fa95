"""ipc_layer.names: ASGI 1 channel and group name rules."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc_layer import names

VALID_CHANNELS = [
    "http.request",
    "a",
    "A-Z_0.9",
    "http.request.body?abc123",
    "daphne.response.AbCdEfGhIj!KlMnOpQrSt",
    "name!",
    "name!x",
    "name?-._",
    "x" * 100,
    "x" * 98 + "!y",
]

INVALID_CHANNELS = [
    ("", "must not be empty"),
    ("x" * 101, "101 characters long, over the limit of 100"),
    ("with space", "invalid character ' ' at index 4"),
    ("\u00a3_test", "invalid character '\u00a3' at index 0"),
    ("caf\u00e9", "invalid character"),
    ("line\n", "invalid character '\\n'"),
    ("pattern?", "ends with '?'"),
    ("!leading", "must not start with '!'"),
    ("?leading", "must not start with '?'"),
    ("two!bangs!", "more than one '!' or '?'"),
    ("a?b!c", "more than one '!' or '?'"),
    ("a!b?c", "more than one '!' or '?'"),
]


@pytest.mark.parametrize("name", VALID_CHANNELS)
def test_valid_channels(name: str) -> None:
    assert names.validate_channel(name) == name


@pytest.mark.parametrize(("name", "reason"), INVALID_CHANNELS)
def test_invalid_channels_name_the_culprit(name: str, reason: str) -> None:
    with pytest.raises(TypeError) as caught:
        names.validate_channel(name)
    text = str(caught.value)
    assert reason in text
    if name and len(name) <= 100:
        assert repr(name) in text


@pytest.mark.parametrize("value", [None, 1, b"bytes", ["list"], 1.5])
def test_non_str_names_are_type_errors(value: object) -> None:
    for check in (names.validate_channel, names.validate_receive_channel, names.validate_group):
        with pytest.raises(TypeError, match=f"must be a str, not {type(value).__name__}"):
            check(value)


def test_long_name_is_quoted_truncated() -> None:
    with pytest.raises(TypeError) as caught:
        names.validate_channel("y" * 10_000)
    assert len(str(caught.value)) < 300
    assert "10000 chars" in str(caught.value)


def test_receive_channel_rules() -> None:
    assert names.validate_receive_channel("name!") == "name!"
    assert names.validate_receive_channel("name?abc") == "name?abc"
    assert names.validate_receive_channel("plain") == "plain"
    with pytest.raises(TypeError, match=r"cannot receive on the process-specific channel 'name!x' directly"):
        names.validate_receive_channel("name!x")
    with pytest.raises(TypeError, match="receive on 'name!'"):
        names.validate_receive_channel("name!x")
    with pytest.raises(TypeError, match="ends with '\\?'"):
        names.validate_receive_channel("name?")


def test_receive_channels_argument() -> None:
    assert names.validate_receive_channels(["a", "b!"]) == ["a", "b!"]
    assert names.validate_receive_channels(("a",)) == ["a"]
    with pytest.raises(TypeError, match="list of channel names, not str"):
        names.validate_receive_channels("abc")
    with pytest.raises(TypeError, match="not NoneType"):
        names.validate_receive_channels(None)
    with pytest.raises(TypeError, match="not set"):
        names.validate_receive_channels({"a"})
    with pytest.raises(ValueError, match="at least one channel"):
        names.validate_receive_channels([])
    with pytest.raises(TypeError, match="'bad name'"):
        names.validate_receive_channels(["ok", "bad name"])


@pytest.mark.parametrize("group", ["g", "chat.room-1_a", "x" * 100])
def test_valid_groups(group: str) -> None:
    assert names.validate_group(group) == group


@pytest.mark.parametrize(
    ("group", "reason"),
    [
        ("", "must not be empty"),
        ("g!", "invalid character '!'"),
        ("g?x", "invalid character '?'"),
        ("a b", "invalid character ' '"),
        ("x" * 101, "over the limit of 100"),
    ],
)
def test_invalid_groups(group: str, reason: str) -> None:
    with pytest.raises(TypeError, match=re.escape(reason)):
        names.validate_group(group)


def test_new_channel_patterns() -> None:
    assert names.validate_new_channel_pattern("http.request.body?") == "http.request.body?"
    limit = names.MAX_NAME_LENGTH - names.SUFFIX_LENGTH
    assert names.validate_new_channel_pattern("x" * (limit - 1) + "?")
    with pytest.raises(TypeError, match=f"at most {limit}"):
        names.validate_new_channel_pattern("x" * limit + "?")
    with pytest.raises(TypeError, match="new_process_channel"):
        names.validate_new_channel_pattern("test!")
    with pytest.raises(TypeError, match="contains '!'"):
        names.validate_new_channel_pattern("test!foo?")
    for bad in ("test", "test?foo", "a??", "?x?"):
        with pytest.raises(TypeError, match="exactly one '\\?'"):
            names.validate_new_channel_pattern(bad)
    with pytest.raises(TypeError, match="must not be empty"):
        names.validate_new_channel_pattern("?")
    with pytest.raises(TypeError, match="invalid character ' '"):
        names.validate_new_channel_pattern("bad name?")


def test_new_channel_name() -> None:
    made = {names.new_channel_name("p.q?") for _ in range(500)}
    assert len(made) == 500
    for name in made:
        assert name.startswith("p.q?")
        assert len(name) == len("p.q?") + names.SUFFIX_LENGTH
        names.validate_channel(name)


def test_process_prefix_and_name() -> None:
    name = names.new_process_channel_name("daphne.response")
    assert re.fullmatch(r"daphne\.response\.[A-Za-z0-9]{12}!", name)
    names.validate_receive_channel(name)
    names.validate_channel(name + "client")
    limit = names.MAX_NAME_LENGTH - names.SUFFIX_LENGTH - 2
    assert len(names.new_process_channel_name("x" * limit)) == names.MAX_NAME_LENGTH
    with pytest.raises(TypeError, match=f"at most {limit}"):
        names.new_process_channel_name("x" * (limit + 1))
    for bad in ("p!", "p?", "", "a b"):
        with pytest.raises(TypeError):
            names.validate_process_prefix(bad)


def test_split_and_non_local_name() -> None:
    assert names.split_process_channel("name!suffix") == ("name!", "suffix")
    assert names.split_process_channel("name!") == ("name!", "")
    assert names.split_process_channel("plain") == ("plain", "")
    assert names.split_process_channel("single?x") == ("single?x", "")
    assert names.non_local_name("a.b!c") == "a.b!"
    assert names.non_local_name("a.b!") == "a.b!"
    assert names.non_local_name("a.b") == "a.b"
    assert names.is_process_channel("a!b")
    assert not names.is_process_channel("a?b")


def test_random_suffix_alphabet() -> None:
    suffix = names.random_suffix(200)
    assert len(suffix) == 200
    assert set(suffix) <= set(string.ascii_letters + string.digits)


def test_validation_is_remembered_and_failures_are_not() -> None:
    names._CHANNELS_OK.clear()
    for _ in range(3):
        assert names.validate_channel("cached.channel.name") == "cached.channel.name"
    assert names._CHANNELS_OK == {"cached.channel.name": "cached.channel.name"}
    for _ in range(2):
        with pytest.raises(TypeError, match="invalid character"):
            names.validate_channel("bad name")
    with pytest.raises(TypeError, match="must be a str"):
        names.validate_channel(["unhashable"])
    assert "bad name" not in names._CHANNELS_OK


_NAME_CHARS = st.sampled_from(string.ascii_letters + string.digits + "-_.")


@settings(deadline=None)
@given(
    base=st.text(_NAME_CHARS, min_size=1, max_size=40),
    marker=st.sampled_from(["", "!", "?"]),
    local=st.text(_NAME_CHARS, min_size=1, max_size=40),
)
def test_generated_valid_names(base: str, marker: str, local: str) -> None:
    name = base + marker + (local if marker else "")
    assert names.validate_channel(name) == name
    assert names.non_local_name(name).startswith(base)


@settings(deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_text_is_valid_or_type_error(text: str) -> None:
    try:
        names.validate_channel(text)
    except TypeError as exc:
        assert str(exc)
    else:
        assert re.fullmatch(r"[A-Za-z0-9\-_.]+([!?][A-Za-z0-9\-_.]*)?", text)
        assert len(text) <= 100 and not text.endswith("?")
