"""ipc_layer.serializer: ASGI-only msgpack with culprit-naming errors."""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc_layer.exceptions import MessageTooLarge
from ipc_layer.serializer import DEFAULT_MAX_MESSAGE_SIZE, MAX_DEPTH, Serializer, decode, encode


class Color(enum.IntEnum):
    RED = 1


class Safe(str):
    """Like Django's SafeString."""


def test_round_trip_keeps_bytes_and_str_apart() -> None:
    message = {"b": b"\xc2\xa3", "s": "\u00a3", "nested": {"l": [b"x", "x", (1, 2)]}}
    assert decode(encode(message)) == {"b": b"\xc2\xa3", "s": "\u00a3", "nested": {"l": [b"x", "x", [1, 2]]}}


def test_subclasses_of_allowed_types_are_accepted() -> None:
    message = OrderedDict([("color", Color.RED), ("html", Safe("<b>")), ("d", OrderedDict(a=1))])
    assert decode(encode(message)) == {"color": 1, "html": "<b>", "d": {"a": 1}}


def test_int_range_limits() -> None:
    ok = {"max": 2**64 - 1, "min": -(2**63)}
    assert decode(encode(ok)) == ok


@pytest.mark.parametrize(
    ("message", "error", "text"),
    [
        ({"s": {1, 2}}, TypeError, "message['s'] is {1, 2} of type set"),
        ({"o": object()}, TypeError, "message['o'] is <object object"),
        ({"headers": [[b"a", b"b"], [b"c", {3}]]}, TypeError, "message['headers'][1][1] is {3} of type set"),
        ({"t": (1, [2, frozenset()])}, TypeError, "message['t'][1][1] is frozenset() of type frozenset"),
        ({1: "x"}, TypeError, "message has the key 1 of type int; ASGI message keys must be str"),
        ({b"k": "x"}, TypeError, "message has the key b'k' of type bytes"),
        ({"a": {"b": {None: 1}}}, TypeError, "message['a']['b'] has the key None of type NoneType"),
        ({"l": [{"ok": 1}, {2: 3}]}, TypeError, "message['l'][1] has the key 2 of type int"),
        ({"ba": bytearray(b"x")}, TypeError, "message['ba'] is bytearray(b'x') of type bytearray"),
        ({"mv": memoryview(b"x")}, TypeError, "message['mv'] is <memory"),
        ({"ext": msgpack.ExtType(1, b"x")}, TypeError, "message['ext'] is ExtType"),
        ({"big": 2**64}, ValueError, "message['big'] is the int 18446744073709551616, outside msgpack's range"),
        ({"l": [1, -(2**63) - 1]}, ValueError, "message['l'][1] is the int"),
        ({"s": "\ud800"}, ValueError, "message['s'] is a str that is not valid UTF-8"),
    ],
)
def test_errors_name_the_key_path(message: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error) as caught:
        encode(message)
    assert text in str(caught.value)
    assert "ASGI" in str(caught.value) or error is ValueError


def test_errors_name_the_channel_or_group() -> None:
    with pytest.raises(TypeError, match=r"^message for channel 'http\.request': message\['x'\]"):
        encode({"x": {1}}, "http.request")
    with pytest.raises(TypeError, match=r"^message for group 'chat': message\['x'\]"):
        encode({"x": {1}}, "chat", kind="group")


@pytest.mark.parametrize("message", [["list"], "str", None, b"bytes", 1, (("a", 1),)])
def test_non_dict_message_is_type_error(message: Any) -> None:
    with pytest.raises(TypeError, match=f"message must be a dict, not .* of type {type(message).__name__}"):
        encode(message)


def test_reference_cycle_and_depth_limit() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH} containers deep"):
        encode({"c": cycle})
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert decode(encode({"d": deep})) == {"d": deep}
    with pytest.raises(ValueError) as caught:
        encode({"d": [deep]})
    assert len(str(caught.value)) < 400  # the path is abbreviated


def test_max_size() -> None:
    serializer = Serializer(max_size=100)
    serializer.encode({"b": b"x" * 80})
    with pytest.raises(MessageTooLarge) as caught:
        serializer.encode({"b": b"x" * 99, "c": [1] * 10}, "http.request")  # over once encoded
    text = str(caught.value)
    assert "message for channel 'http.request'" in text
    assert "117 bytes encoded, over the limit of 100 bytes" in text
    assert isinstance(caught.value, ValueError)
    with pytest.raises(MessageTooLarge, match="holds 200 bytes of str/bytes values, over the limit "
                                              "of 100 bytes"):
        serializer.encode({"b": b"x" * 200}, "http.request")  # over before it is encoded
    assert Serializer(max_size=None).encode({"b": b"x" * 200})
    assert Serializer().max_size == DEFAULT_MAX_MESSAGE_SIZE == 1 << 20


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-5, ValueError), (True, TypeError), ("1", TypeError)])
def test_bad_max_size(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_size"):
        Serializer(max_size=value)


def test_packer_is_clean_after_a_failure() -> None:
    serializer = Serializer()
    with pytest.raises(ValueError):
        serializer.encode({"a": "ok", "big": 2**70})
    assert serializer.encode({"b": 1}) == msgpack.packb({"b": 1}, use_bin_type=True)


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({1: 2}), msgpack.packb({"a": 1}) + b"\x00"]
)
def test_decode_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ValueError, match="decode"):
        decode(data)


def test_threads_encode_independently() -> None:
    serializer = Serializer()
    failures: list[str] = []

    def work(index: int) -> None:
        for n in range(2000):
            message = {"t": index, "n": n, "pad": b"x" * (index * 10)}
            if serializer.decode(serializer.encode(message)) != message:
                failures.append(f"{index}/{n}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


# No deadline: the suite shares a small CI box with C builds.
_settings = settings(max_examples=60, deadline=None)


@_settings
@given(st.dictionaries(st.text(max_size=8), _values, max_size=6))
def test_round_trip_property(message: dict[str, Any]) -> None:
    assert decode(encode(message)) == message


@_settings
@given(st.dictionaries(st.text(max_size=8), _values, min_size=1, max_size=6), st.data())
def test_one_bad_value_is_always_found(message: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(message)))
    message[key] = [message[key], {"x": {1, 2}}]
    with pytest.raises(TypeError) as caught:
        encode(message)
    assert f"message[{key!r}][1]['x'] is {{1, 2}} of type set" in str(caught.value)


@pytest.mark.parametrize(("message", "text"), [
    ({"\ud800": 1}, "message has the key '\\ud800', a str that is not valid UTF-8 "
                    "(surrogates not allowed at index 0)"),
    ({"headers": {"ok": 1, "b\udcff": 2}}, "message['headers'] has the key 'b\\udcff', a str that "
                                            "is not valid UTF-8 (surrogates not allowed at index 1)"),
])
def test_surrogate_in_a_key_is_named(message: dict[str, Any], text: str) -> None:
    """It was a TypeError ("cannot be encoded with msgpack") that named neither key nor path."""
    with pytest.raises(ValueError) as info:
        Serializer().encode(message, "chan")
    assert str(info.value) == f"message for channel 'chan': {text}"


@pytest.mark.parametrize("big", [b"x" * (2 << 20), "y" * (2 << 20)], ids=["bytes", "str"])
def test_oversized_values_are_refused_before_encoding(big: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body whose length alone is over the limit is never packed (a 200 MiB one was, whole)."""
    serializer = Serializer(max_size=1 << 20)

    def no_packing(self: Serializer) -> None:
        raise AssertionError("the message was encoded before it was refused")

    monkeypatch.setattr(Serializer, "_packer", no_packing)
    with pytest.raises(MessageTooLarge) as info:
        serializer.encode({"type": "http.request", "body": big}, "http.request")
    assert str(info.value) == (
        f"message for channel 'http.request': message holds {len('http.request') + (2 << 20):,} "
        "bytes of str/bytes values, "
        "over the limit of 1,048,576 bytes (max_message_size) before it is even encoded; split "
        "large bodies into chunks"
    )


def test_size_precheck_leaves_messages_under_the_limit_alone() -> None:
    serializer = Serializer(max_size=1000)
    # 990 bytes of values fit the pre-check; the encoding (with keys and headers) is over.
    with pytest.raises(MessageTooLarge, match="bytes encoded, over the limit of 1,000"):
        serializer.encode({"a": b"x" * 495, "b": "y" * 495})
    assert len(serializer.encode({"a": b"x" * 900})) <= 1000
    assert Serializer(max_size=None).encode({"a": b"x" * (2 << 20)})  # no limit: no pre-check
