"""``IPCChannelLayer`` beyond the shipped conformance suite.

The wire format as the core stores it, group members' per-glob capacity,
back-pressure from an exhausted segment, size limits, bad input (each a
specific exception, and the layer keeps working), configuration errors,
sharing between instances and prefixes, and fork safety.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

import _ringbuf
from ipc_layer import ChannelFull, IPCChannelLayer, LayoutMismatch, MessageTooLarge
from tests.support import make_layer, remove_segment, unique_prefix


@pytest.fixture
def layer(layer_prefix: str) -> Iterator[IPCChannelLayer]:
    lay = make_layer(layer_prefix, capacity=5, channel_capacity={"small.*": 2, "tiny!": 1})
    try:
        yield lay
    finally:
        lay.close()


def packed(message: Any) -> bytes:  # Any: the tests also pack what no layer would send
    return msgpack.packb(message, use_bin_type=True)


# -- wire format --------------------------------------------------------------------


def test_wire_format_normal_channel(layer: IPCChannelLayer) -> None:
    layer.send("wire.a", {"k": b"v"})
    # No frame: a msgpack map starts with a byte >= 0x80, a frame with a tag length < 0x80.
    assert layer.segment.receive((b"wire.a",)) == (0, packed({"k": b"v"}))


def test_wire_format_process_channel(layer: IPCChannelLayer) -> None:
    layer.send("wire.p!abc", {"k": 1})
    layer.send("wire.p!", {"k": 2})
    assert layer.segment.receive((b"wire.p!",)) == (0, b"\x03abc" + packed({"k": 1}))
    assert layer.segment.receive((b"wire.p!",)) == (0, packed({"k": 2}))


def test_a_payload_that_would_read_as_a_frame_is_refused(layer: IPCChannelLayer) -> None:
    """Unframed records rely on msgpack maps starting at >= 0x80: a serializer that breaks it is
    refused at send, naming the channel, instead of being misrouted at receive."""
    layer._encode = lambda message, channel: msgpack.packb(5)
    with pytest.raises(TypeError, match=r"channel 'wire.bad'.*starting with 0x05, not a msgpack map"):
        layer.send("wire.bad", {"k": 1})
    assert layer.segment.receive((b"wire.bad",)) is None
    layer.send("wire.bad!tagged", {"k": 1})  # framed: any payload is fine
    assert layer.segment.receive((b"wire.bad!",)) == (0, b"\x06tagged\x05")


def test_wire_format_group_copies(layer: IPCChannelLayer) -> None:
    layer.group_add("wg", "wire.g!tag")
    layer.group_add("wg", "wire.n")
    layer.send_group("wg", {"k": 3})
    assert layer.segment.receive((b"wire.g!",)) == (0, b"\x03tag" + packed({"k": 3}))
    assert layer.segment.receive((b"wire.n",)) == (0, b"\x00" + packed({"k": 3}))


def test_records_written_by_the_core_are_read_back(layer: IPCChannelLayer) -> None:
    layer.segment.send(b"raw.p!", b"\x02xy" + packed({"from": "core"}))
    layer.segment.send(b"raw.p!", b"\x00" + packed({"from": "empty frame"}))
    layer.segment.send(b"raw.p!", packed({"from": "no frame"}))
    assert layer.receive(["raw.p!"]) == ("raw.p!xy", {"from": "core"})
    assert layer.receive(["raw.p!"]) == ("raw.p!", {"from": "empty frame"})
    assert layer.receive(["raw.p!"]) == ("raw.p!", {"from": "no frame"})


@pytest.mark.parametrize("record", [
    b"\x00" + packed([1, 2]), b"\x00\xc1", b"\x00" + packed({1: "int key"}),
    b"\x00" + packed({"a": 1})[:-1],
    b"",                                   # no byte at all
    b"\x05ab",                             # a frame longer than the record
    b"\x02\xff\xfe" + packed({"a": 1}),    # a tag that is not ASCII
    b"\x7f\x05\x00\x01a",                  # a grouped record cut short
], ids=["list", "bad-byte", "int-key", "truncated", "empty", "frame-past-end", "non-ascii-tag",
        "grouped-cut"])
def test_records_that_are_not_messages_are_dropped_and_logged(
        layer: IPCChannelLayer, record: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """A bad record fails no receive: it is dropped, logged naming its queue, and the next comes."""
    layer.segment.send(b"raw.bad", record)
    layer.send("raw.bad", {"next": "fine"})
    with caplog.at_level("ERROR", logger="ipc_layer.layer"):
        assert layer.receive(["raw.bad"]) == ("raw.bad", {"next": "fine"})
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "'raw.bad'" in errors[0] and "not a message" in errors[0], errors
    layer.segment.send(b"raw.bad", record)
    assert layer.receive(["raw.bad"]) == (None, None)  # alone: nothing to return, no raise


def test_groups_and_channels_are_separate_namespaces(layer: IPCChannelLayer) -> None:
    layer.group_add("same", "same")
    layer.send_group("same", {"n": 1})
    assert layer.receive(["same"]) == ("same", {"n": 1})


# -- capacity -----------------------------------------------------------------------


def test_group_member_gets_its_glob_capacity_without_a_direct_send(layer: IPCChannelLayer) -> None:
    layer.group_add("cap", "small.only-via-group")
    layer.group_add("cap", "tiny!a")
    layer.group_add("cap", "tiny!b")
    layer.group_add("cap", "default.member")
    for n in range(6):
        layer.send_group("cap", {"n": n})
    assert layer.channel_statistics("small.only-via-group")["messages_pending"] == 2
    assert layer.channel_statistics("tiny!")["messages_pending"] == 1
    assert layer.channel_statistics("default.member")["messages_pending"] == 5
    with pytest.raises(ChannelFull):
        layer.send("small.only-via-group", {"direct": True})


def test_capacity_counts_process_channel_against_its_queue(layer: IPCChannelLayer) -> None:
    layer.send("tiny!a", {})
    with pytest.raises(ChannelFull, match="tiny!b"):
        layer.send("tiny!b", {})


def test_segment_memory_exhausted_is_channel_full(layer_prefix: str) -> None:
    lay = make_layer(layer_prefix, capacity=1000, segment_size=1 << 20, slots=256, waiters=16,
                     max_message_size=64 << 10)
    try:
        body = b"x" * 60_000
        with pytest.raises(ChannelFull, match="memory"):
            for n in range(100):
                lay.send(f"mem.{n % 3}", {"body": body})
        # Other channels recover as soon as something is taken.
        assert lay.receive(["mem.0"])[0] == "mem.0"
        lay.send("mem.other", {"small": True})
        assert lay.receive(["mem.other"]) == ("mem.other", {"small": True})
        assert lay.global_statistics()["channel_full_count"] >= 1
    finally:
        lay.close()


def test_name_table_exhausted_is_channel_full(layer_prefix: str) -> None:
    lay = make_layer(layer_prefix, slots=64)
    try:
        with pytest.raises(ChannelFull):
            for n in range(200):
                lay.send(f"slot.{n}", {})
        assert lay.receive(["slot.0"]) == ("slot.0", {})
    finally:
        lay.close()


# -- sizes ------------------------------------------------------------------------------


def test_message_too_large(layer: IPCChannelLayer) -> None:
    with pytest.raises(MessageTooLarge, match="'big'"):
        layer.send("big", {"body": b"x" * (layer.max_message_size + 1)})
    with pytest.raises(MessageTooLarge):
        layer.send_group("big-group", {"body": b"x" * (layer.max_message_size + 1)})
    body = b"x" * (layer.max_message_size - 100)
    layer.group_add("fits", "fits.1!tag")
    layer.send("fits.0", {"body": body})
    layer.send_group("fits", {"body": body})
    assert layer.receive(["fits.0"]) == ("fits.0", {"body": body})
    assert layer.receive(["fits.1!"]) == ("fits.1!tag", {"body": body})


def test_segment_made_for_smaller_messages(layer_prefix: str) -> None:
    small = make_layer(layer_prefix, max_message_size=1000)
    big = make_layer(layer_prefix, max_message_size=100_000)
    try:
        with pytest.raises(MessageTooLarge, match="segment"):
            big.send("sized", {"body": b"x" * 5000})
        big.send("sized", {"body": b"x" * 500})
        assert small.receive(["sized"]) == ("sized", {"body": b"x" * 500})
    finally:
        small.close()
        big.close()


# -- bad input ------------------------------------------------------------------------


BAD_MESSAGES: list[tuple[Any, type[Exception], str]] = [
    ({"s": {1, 2}}, TypeError, "message['s']"),
    ({"o": object()}, TypeError, "message['o']"),
    ({"big": 2**64}, ValueError, "message['big']"),
    ({"small": -(2**63) - 1}, ValueError, "message['small']"),
    ({1: "x"}, TypeError, "key"),
    ({b"k": "x"}, TypeError, "key"),
    ({"deep": {"er": [{"x": frozenset()}]}}, TypeError, "message['deep']['er'][0]['x']"),
    ({"s": "\udc80"}, ValueError, "message['s']"),
    ([("not", "a dict")], TypeError, "dict"),
]


@pytest.mark.parametrize(("message", "error", "culprit"), BAD_MESSAGES)
def test_bad_message_is_specific_and_layer_keeps_working(
    layer: IPCChannelLayer, message: Any, error: type[Exception], culprit: str
) -> None:
    with pytest.raises(error) as caught:
        layer.send("bad.msg", message)
    assert culprit in str(caught.value)
    assert "'bad.msg'" in str(caught.value)
    with pytest.raises(error):
        layer.send_group("bad-group", message)
    assert layer.receive(["bad.msg"]) == (None, None)
    layer.send("good", {"still": "fine"})
    assert layer.receive(["good"]) == ("good", {"still": "fine"})
    assert layer.global_statistics()["messages_count"] == 1


BAD_NAMES: list[Any] = ["", "sp ace", "x" * 101, "\u00e9", "a!b!c", "a?", "a?b?c", None, 3, b"bytes",
                        ["list"], ("tuple",)]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_type_errors_naming_them(layer: IPCChannelLayer, name: Any) -> None:
    with pytest.raises(TypeError) as caught:
        layer.send(name, {})
    if isinstance(name, str) and name:
        assert repr(name)[:40] in str(caught.value)
    with pytest.raises(TypeError):
        layer.receive([name])
    with pytest.raises(TypeError):
        layer.group_add("grp", name)
    with pytest.raises(TypeError):
        layer.group_add(name, "ok")
    with pytest.raises(TypeError):
        layer.channel_statistics(name)
    layer.send("ok", {})
    assert layer.receive(["ok"]) == ("ok", {})


def test_bad_receive_lists(layer: IPCChannelLayer) -> None:
    with pytest.raises(TypeError, match="not str"):
        layer.receive("abc")
    with pytest.raises(TypeError, match="'x!y'"):
        layer.receive(("ok", "x!y"))
    with pytest.raises(TypeError):
        layer.receive((["unhashable"],))
    with pytest.raises(ValueError, match="at least one"):
        layer.receive(())
    # Any number of channels (issue 10): see test_receive_over_many_channels.
    assert layer.receive([f"many.{n}" for n in range(100)]) == (None, None)
    layer.send("ok", {})
    assert layer.receive(("ok",)) == ("ok", {})


def test_cached_names_are_not_confused_with_strings(layer: IPCChannelLayer) -> None:
    layer.send("a", {})
    assert layer.receive(["a"]) == ("a", {})
    assert layer.receive(("a",)) == (None, None)
    with pytest.raises(TypeError):
        layer.receive("a")


def test_segment_options_refused_by_the_core_name_the_prefix(layer_prefix: str) -> None:
    with pytest.raises(ValueError, match=layer_prefix):
        make_layer(layer_prefix, segment_size=1 << 20)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("prefix", "", ValueError),
        ("prefix", "a/b", ValueError),
        ("prefix", 5, TypeError),
        ("spin_us", -1, ValueError),
        ("spin_us", 1.5, TypeError),
        ("segment_size", -1, ValueError),
        ("capacity", 0, ValueError),
        ("expiry", "60", TypeError),
        ("max_message_size", 0, ValueError),
    ],
)
def test_bad_configuration(option: str, value: Any, error: type[Exception]) -> None:
    config: dict[str, Any] = {"prefix": unique_prefix()}
    config[option] = value
    try:
        with pytest.raises(error, match=option):
            IPCChannelLayer(**config)
    finally:
        if isinstance(config["prefix"], str) and config["prefix"]:
            try:
                remove_segment(config["prefix"])
            except _ringbuf.RingBufError:
                pass


def test_layout_mismatch_is_refused(layer_prefix: str) -> None:
    with open(f"/dev/shm/rbuf.{layer_prefix}", "wb") as f:
        f.write(b"NOTOURS!" * 8192)
    os.chmod(f"/dev/shm/rbuf.{layer_prefix}", 0o600)  # ours and private: only the content is wrong
    with pytest.raises(LayoutMismatch, match=layer_prefix):
        make_layer(layer_prefix)


# -- sharing --------------------------------------------------------------------------


def test_instances_share_and_prefixes_separate(layer: IPCChannelLayer) -> None:
    peer = make_layer(layer.prefix)
    other_prefix = unique_prefix()
    other = make_layer(other_prefix)
    try:
        layer.send("shared", {"n": 1})
        other.send("shared", {"n": 2})
        peer.group_add("g", "shared")
        assert layer.group_channels("g") == ["shared"]
        assert other.group_channels("g") == []
        other.flush()
        assert peer.receive(["shared"]) == ("shared", {"n": 1})
        layer.send("shared", {"n": 3})
        layer.flush()
        assert peer.receive(["shared"]) == (None, None)
        other.send("shared", {"n": 4})
        assert other.receive(["shared"]) == ("shared", {"n": 4})
    finally:
        peer.close()
        other.close()
        remove_segment(other_prefix)


def test_statistics(layer: IPCChannelLayer) -> None:
    for n in range(5):
        layer.send("st!a", {"n": n})
    with pytest.raises(ChannelFull):
        layer.send("st!b", {})
    layer.receive(["st!"])
    stats = layer.channel_statistics("st!zzz")
    assert stats == {"messages_count": 5, "messages_pending": 4, "messages_max_age": 0,
                     "channel_full_count": 1}
    assert layer.channel_statistics("never.used") == {
        "messages_count": 0, "messages_pending": 0, "messages_max_age": 0, "channel_full_count": 0}
    assert layer.global_statistics() == {"messages_count": 5, "channel_full_count": 1}


def test_new_channel_and_process_channel(layer: IPCChannelLayer) -> None:
    made = {layer.new_channel("nc?") for _ in range(100)}
    assert len(made) == 100
    assert all(name.startswith("nc?") and len(name) == 15 for name in made)
    with pytest.raises(TypeError):
        layer.new_channel("nc!")
    mine = layer.new_process_channel("srv")
    layer.send(mine + "client", {"to": "me"})
    assert layer.receive([mine]) == (mine + "client", {"to": "me"})


def test_layer_cannot_be_pickled(layer: IPCChannelLayer) -> None:
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(layer)


def test_repr_names_prefix(layer: IPCChannelLayer) -> None:
    assert layer.prefix in repr(layer)


def test_closed_layer_raises(layer_prefix: str) -> None:
    lay = make_layer(layer_prefix)
    lay.close()
    with pytest.raises(ValueError, match="closed"):
        lay.send("x", {})


# -- fork safety ------------------------------------------------------------------------


def test_layer_made_before_fork_works_in_child(layer: IPCChannelLayer) -> None:
    layer.send("to.child", {"n": 1})
    # Warm the caches the child inherits.
    layer.receive(["to.parent!"])
    pid = os.fork()
    if pid == 0:  # child: report through the exit status only
        code = 1
        try:
            if layer.receive(["to.child"], block=True) == ("to.child", {"n": 1}):
                layer.send("to.parent!kid", {"pid": os.getpid()})
                layer.group_add("fam", "to.parent!grp")
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert layer.receive(["to.parent!"], block=True) == ("to.parent!kid", {"pid": pid})
    layer.send_group("fam", {"all": True})
    assert layer.receive(["to.parent!"]) == ("to.parent!grp", {"all": True})


@pytest.mark.parametrize("n", [1, 64, 65, 500, 5000])
@pytest.mark.parametrize("block", [False, True])
def test_receive_over_many_channels(layer: IPCChannelLayer, n: int, block: bool) -> None:
    """No bound on the receive list: past 64 queues the core sleeps on a bell
    word of its own that a send to any of them rings (a blocking receive that
    finds the message queued returns it at once; the woken case is in
    tests/integration/ipc_layer/test_many_channels.py)."""
    channels = [f"many.{i}" for i in range(n)] + ["many.proc!"]
    assert layer.receive(channels) == (None, None)
    layer.send(channels[n - 1], {"n": n})
    layer.send("many.proc!abc", {"proc": True})
    assert layer.receive(channels, block=block) == (channels[n - 1], {"n": n})
    assert layer.receive(channels, block=block) == ("many.proc!abc", {"proc": True})
    assert layer.receive(channels) == (None, None)
    for c in channels[:n]:
        layer.group_add("many-group", c)
    layer.send_group("many-group", {"g": 1})
    seen = set()
    for _ in range(n):
        channel, message = layer.receive(channels, block=block)
        assert message == {"g": 1}
        seen.add(channel)
    assert seen == set(channels[:n])
    assert layer.receive(channels) == (None, None)
