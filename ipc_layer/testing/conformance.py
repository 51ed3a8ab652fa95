"""The conformance suite every channel layer of this project must pass.

One contract, many implementations, one suite (the IPC layer, the in-memory
layer, the Redis layer). It covers asgiref 1.1.2's ``ConformanceTestCase``
and the rest of the contract in issue 4: capacity globs, ``MessageTooLarge``,
group expiry, statistics, process channels made by
``new_process_channel()``, bad input raising specific exceptions, and a
bounded blocking receive.

Using it
--------
Subclass :class:`ConformanceTestCase` and either set ``layer_factory`` to a
callable taking the config as keyword arguments, or override
:meth:`~ConformanceTestCase.make_layer`::

    from ipc_layer.testing import ConformanceTestCase

    class TestMyLayer(ConformanceTestCase):
        def make_layer(self, **config):
            return MyLayer(prefix=unique_prefix(), **config)

        def close_layer(self, layer):
            super().close_layer(layer)     # flush + close
            remove_segment(layer)

or, in one line, ``TestMyLayer = conformance_case(MyLayer)``. The subclass
runs under ``unittest`` and under pytest (pytest collects ``TestCase``
subclasses whatever their name; the base itself sets ``__test__ = False``
and every subclass gets ``__test__ = True`` unless it sets its own).

Every test gets a fresh layer from ``make_layer(**layer_config)``, which
defaults to ``expiry=1, group_expiry=2, capacity=5`` plus a few capacity
globs and ``blocking_timeout=0.5``, so the expiry tests take a few seconds
in total. A layer that lacks a capability turns the matching ``supports_*``
flag off, and the tests needing it are skipped (extensions missing from
``layer.extensions`` are skipped too). Layers whose clock can be driven
override :meth:`~ConformanceTestCase.advance_time` to skip the sleeps.

The contract, as tested
-----------------------
* ``send``/``receive`` are FIFO per channel, copy the message on send, keep
  ``bytes`` and ``str`` apart, turn tuples into lists; ``receive`` returns
  ``(None, None)`` when nothing waits, and ``(full name, message)``.
* Names follow :mod:`ipc_layer.names`; bad names raise ``TypeError``,
  ``receive([])`` raises ``ValueError``; bad messages raise ``TypeError``
  (type) or ``ValueError`` (range) whose text contains the key path, e.g.
  ``message['headers'][1][1]``; nothing is queued and the layer keeps working.
* ``capacity`` counts unexpired messages of the queue (``name!x`` counts
  against ``name!``); the first matching glob of ``channel_capacity`` wins;
  ``ChannelFull`` exactly when the count equals the capacity.
* ``MessageTooLarge`` (a ``ValueError``) above ``max_message_size``; a
  1,000,000-byte body fits the default.
* ``send_group`` never raises ``ChannelFull``; membership lasts
  ``group_expiry`` after the last ``group_add`` and survives the expiry of
  the member's messages.
* ``messages_count`` counts every message queued (each group delivery is
  one) and ``channel_full_count`` every refusal (group skips included), both
  globally and per queue; ``messages_pending`` and ``messages_max_age`` (whole
  seconds) describe the queue now. ``flush`` zeroes everything.
* ``receive(block=True)`` returns ``(None, None)`` within
  ``blocking_timeout`` (plus slack) when idle, and wakes for a message sent
  from another thread.
"""

from __future__ import annotations

import threading
import time
import unittest
from collections.abc import Callable
from typing import Any, ClassVar

from ..base import BaseChannelLayer
from ..exceptions import ChannelFull, MessageTooLarge
from ..serializer import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["DEFAULT_LAYER_CONFIG", "ConformanceTestCase", "conformance_case"]

#: The configuration every test's layer is made with (see ``layer_config``).
DEFAULT_LAYER_CONFIG: dict[str, Any] = {
    "expiry": 1,
    "group_expiry": 2,
    "capacity": 5,
    "channel_capacity": {
        "cf.small.*": 2,
        # Shadowed by the glob above: first match wins.
        "cf.small.shadowed": 4,
        "cf.tiny!": 1,
    },
    "blocking_timeout": 0.5,
}


class ConformanceTestCase(unittest.TestCase):
    """Base class of the shipped channel-layer conformance suite."""

    # pytest: not a test class itself; __init_subclass__ flips it back on.
    __test__ = False

    #: Keyword arguments of every ``make_layer`` call from ``setUp``.
    layer_config: ClassVar[dict[str, Any]] = DEFAULT_LAYER_CONFIG
    #: Optional callable ``(**config) -> layer`` used by the default ``make_layer``.
    layer_factory: ClassVar[Callable[..., BaseChannelLayer] | None] = None

    #: Capability flags; turn one off to skip the tests that need it.
    supports_groups: ClassVar[bool] = True
    supports_flush: ClassVar[bool] = True
    supports_statistics: ClassVar[bool] = True
    supports_expiry: ClassVar[bool] = True
    supports_group_expiry: ClassVar[bool] = True
    supports_blocking: ClassVar[bool] = True
    supports_threads: ClassVar[bool] = True

    #: Extra seconds added when waiting for something to expire, for layers
    #: whose deadlines are coarser than the clock (e.g. whole milliseconds).
    expiry_margin: ClassVar[float] = 0.25
    #: Slack allowed on top of ``blocking_timeout`` for an idle blocking receive.
    blocking_slack: ClassVar[float] = 1.5

    layer: BaseChannelLayer

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # Loaded directly by unittest discovery: nothing to test against.
        if cls.make_layer is ConformanceTestCase.make_layer and cls.layer_factory is None:
            raise unittest.SkipTest(f"{cls.__name__} sets neither layer_factory nor make_layer()")

    def setUp(self) -> None:
        super().setUp()
        self.layer = self.new_layer()
        if self._has("flush"):
            self.layer.flush()

    # -- hooks -------------------------------------------------------------

    def make_layer(self, **config: Any) -> BaseChannelLayer:
        """Return a new, empty layer built with ``config``. Override or set ``layer_factory``."""
        factory = type(self).layer_factory
        if factory is None:
            raise NotImplementedError(f"{type(self).__name__} must set layer_factory or override make_layer()")
        return factory(**config)

    def close_layer(self, layer: BaseChannelLayer) -> None:
        """Dispose of a layer made by ``make_layer``: flush it (if it can) and close it."""
        if self.supports_flush and "flush" in layer.extensions:
            layer.flush()
        close = getattr(layer, "close", None)
        if close is not None:
            close()

    def make_peer_layer(self, layer: BaseChannelLayer) -> BaseChannelLayer | None:
        """Return another instance sharing ``layer``'s state, or None (test skipped)."""
        return None

    def advance_time(self, seconds: float) -> None:
        """Let ``seconds`` pass for the layer's clock (real sleep by default)."""
        time.sleep(seconds)

    # -- helpers -------------------------------------------------------------

    def new_layer(self, **overrides: Any) -> BaseChannelLayer:
        """A layer built with ``layer_config`` updated by ``overrides``, closed after the test."""
        layer = self.make_layer(**{**self.layer_config, **overrides})
        self.addCleanup(self.close_layer, layer)
        return layer

    def _has(self, extension: str) -> bool:
        flag = {"groups": self.supports_groups, "flush": self.supports_flush,
                "statistics": self.supports_statistics}[extension]
        return flag and extension in self.layer.extensions

    def require(self, extension: str) -> None:
        if not self._has(extension):
            self.skipTest(f"layer lacks the {extension!r} extension")

    def require_flag(self, flag: str) -> None:
        if not getattr(self, f"supports_{flag}"):
            self.skipTest(f"layer does not support {flag}")

    def assertEmpty(self, channel: str, layer: BaseChannelLayer | None = None) -> None:
        result = (layer or self.layer).receive([channel])
        self.assertEqual(result, (None, None), f"expected nothing on {channel!r}")

    def assertReceives(self, channels: list[str], channel: str, message: dict[str, Any]) -> None:
        self.assertEqual(self.layer.receive(channels), (channel, message))

    def receive_message(self, channels: list[str]) -> dict[str, Any]:
        """The message a non-blocking receive on ``channels`` returns; fails the test on nothing."""
        channel, message = self.layer.receive(channels)
        if message is None:
            self.fail(f"expected a message on {channels!r}, got nothing")
        return message

    def fill(self, channel: str, count: int) -> None:
        for i in range(count):
            self.layer.send(channel, {"n": i})

    # -- send / receive ----------------------------------------------------

    def test_send_receive(self) -> None:
        self.layer.send("cf.sr", {"value": "blue"})
        self.layer.send("cf.sr", {"value": "green"})
        self.layer.send("cf.sr2", {"value": "red"})
        self.assertReceives(["cf.sr"], "cf.sr", {"value": "blue"})
        self.assertReceives(["cf.sr"], "cf.sr", {"value": "green"})
        self.assertReceives(["cf.sr", "cf.sr2"], "cf.sr2", {"value": "red"})
        self.assertEmpty("cf.sr")
        self.assertEmpty("cf.sr2")

    def test_receive_nothing_returns_none_pair(self) -> None:
        result = self.layer.receive(["cf.never"])
        self.assertIsInstance(result, tuple)
        self.assertEqual(result, (None, None))

    def test_receive_on_several_channels(self) -> None:
        for name in ("cf.m1", "cf.m2", "cf.m3"):
            self.layer.send(name, {"from": name})
        got = {}
        for _ in range(3):
            channel, message = self.layer.receive(["cf.m1", "cf.m2", "cf.m3"])
            self.assertIsNotNone(channel)
            got[channel] = message
        self.assertEqual(got, {name: {"from": name} for name in ("cf.m1", "cf.m2", "cf.m3")})
        self.assertEqual(self.layer.receive(["cf.m1", "cf.m2", "cf.m3"]), (None, None))

    def test_receive_accepts_tuple(self) -> None:
        self.layer.send("cf.tuple", {"a": 1})
        self.assertEqual(self.layer.receive(("cf.tuple",)), ("cf.tuple", {"a": 1}))

    def test_fifo(self) -> None:
        self.fill("cf.fifo", self.layer.capacity)
        for i in range(self.layer.capacity):
            self.assertReceives(["cf.fifo"], "cf.fifo", {"n": i})
        self.assertEmpty("cf.fifo")

    def test_bytes_and_str_stay_distinct(self) -> None:
        message = {
            "values": {
                "utf-bytes": b"\xc2\xa3",
                "unicode": "\u00a3",
                "emoji": "\U0001f612",
                "control": b"\x01\x00\x03\x21",
            },
            "same-bytes": b"abc",
            "same-str": "abc",
            "not-utf8": b"\xff\xfe",
        }
        self.layer.send("cf.str", message)
        received = self.receive_message(["cf.str"])
        self.assertEqual(received, message)
        for key in ("utf-bytes", "control"):
            self.assertIs(type(received["values"][key]), bytes)
        for key in ("unicode", "emoji"):
            self.assertIs(type(received["values"][key]), str)
        self.assertIs(type(received["same-bytes"]), bytes)
        self.assertIs(type(received["same-str"]), str)

    def test_value_types_round_trip(self) -> None:
        message = {
            "int_max": 2**63 - 1,
            "int_min": -(2**63),
            "uint_max": 2**64 - 1,
            "zero": 0,
            "float": 1.5,
            "true": True,
            "false": False,
            "none": None,
            "list": [1, "a", b"b", [None, {"deep": [1.25]}]],
            "tuple": (1, 2),
            "nested": {"a": {"b": [{"c": 1}]}},
            "empty_dict": {},
            "empty_list": [],
            "empty_bytes": b"",
            "empty_str": "",
            "headers": [[b"host", b"example.com"], [b"x-dup", b"1"], [b"x-dup", b"2"]],
        }
        self.layer.send("cf.types", message)
        received = self.receive_message(["cf.types"])
        expected = dict(message, tuple=[1, 2])
        self.assertEqual(received, expected)
        self.assertIs(received["true"], True)
        self.assertIs(received["false"], False)
        self.assertIs(type(received["float"]), float)
        self.assertIs(type(received["tuple"]), list)

    def test_message_copied_on_send(self) -> None:
        message: dict[str, Any] = {"value": [1, 2, 3], "inner": {"k": "v"}}
        self.layer.send("cf.copy", message)
        message["value"][0] = "new value"
        message["inner"]["k"] = "changed"
        message["added"] = True
        self.assertReceives(["cf.copy"], "cf.copy", {"value": [1, 2, 3], "inner": {"k": "v"}})

    def test_names_up_to_100_characters(self) -> None:
        name = "cf." + "x" * 97
        self.assertEqual(len(name), 100)
        self.layer.send(name, {"long": True})
        self.assertReceives([name], name, {"long": True})
        with self.assertRaises(TypeError):
            self.layer.send(name + "x", {"long": True})

    def test_daphne_style_reply_channel(self) -> None:
        name = "daphne.response.AbCdEfGhIj!KlMnOpQrSt"
        self.layer.send(name, {"status": 200})
        self.assertReceives(["daphne.response.AbCdEfGhIj!"], name, {"status": 200})

    def test_receive_many_is_deprecated_alias(self) -> None:
        self.layer.send("cf.many", {"a": 1})
        with self.assertWarns(DeprecationWarning):
            result = self.layer.receive_many(["cf.many"])
        self.assertEqual(result, ("cf.many", {"a": 1}))

    # -- process-specific channels -------------------------------------------

    def test_process_channel_receive(self) -> None:
        self.layer.send("cf.spr!a", {"best": "ponies"})
        self.assertReceives(["cf.spr!"], "cf.spr!a", {"best": "ponies"})
        self.layer.send("cf.spr!b", {"best": "pangolins"})
        self.assertReceives(["cf.spr!"], "cf.spr!b", {"best": "pangolins"})

    def test_process_channel_is_fifo_across_local_parts(self) -> None:
        for i, local in enumerate("abcab"):
            self.layer.send(f"cf.pf!{local}", {"n": i})
        for i, local in enumerate("abcab"):
            self.assertReceives(["cf.pf!"], f"cf.pf!{local}", {"n": i})

    def test_process_channels_are_separate(self) -> None:
        self.layer.send("cf.p1!x", {"to": 1})
        self.layer.send("cf.p2!y", {"to": 2})
        self.assertReceives(["cf.p1!"], "cf.p1!x", {"to": 1})
        self.assertEmpty("cf.p1!")
        self.assertReceives(["cf.p2!"], "cf.p2!y", {"to": 2})

    def test_receive_with_local_part_is_type_error(self) -> None:
        with self.assertRaises(TypeError) as caught:
            self.layer.receive(["cf.spr!c"])
        self.assertIn("cf.spr!c", str(caught.exception))

    def test_new_process_channel(self) -> None:
        name = self.layer.new_process_channel("cf.proc")
        self.assertIsInstance(name, str)
        self.assertTrue(name.startswith("cf.proc."), name)
        self.assertTrue(name.endswith("!"), name)
        self.assertEqual(name.count("!"), 1, name)
        self.assertNotEqual(name, self.layer.new_process_channel("cf.proc"))
        self.layer.send(name + "client1", {"n": 1})
        self.layer.send(name + "client2", {"n": 2})
        self.assertReceives([name], name + "client1", {"n": 1})
        self.assertReceives([name], name + "client2", {"n": 2})
        self.assertEmpty(name)

    def test_new_process_channel_bad_prefix(self) -> None:
        for prefix in ("cf.p!", "cf.p?", "", "has space", "x" * 100):
            with self.subTest(prefix=prefix), self.assertRaises(TypeError):
                self.layer.new_process_channel(prefix)

    # -- new_channel ---------------------------------------------------------

    def test_new_channel_single_reader(self) -> None:
        pattern = "cf.foo?"
        name1 = self.layer.new_channel(pattern)
        self.assertIsInstance(name1, str)
        self.assertTrue(name1.startswith(pattern), name1)
        self.assertFalse(name1.endswith("?"), name1)
        self.assertEqual(name1.count("?"), 1, name1)
        self.layer.send(name1, {"value": "blue"})
        name2 = self.layer.new_channel(pattern)
        self.assertNotEqual(name1, name2)
        self.assertReceives([name1, name2], name1, {"value": "blue"})

    def test_new_channel_names_are_unique(self) -> None:
        made = [self.layer.new_channel("cf.uniq?") for _ in range(200)]
        self.assertEqual(len(set(made)), len(made))

    def test_new_channel_rejects_other_patterns(self) -> None:
        for pattern in ("cf.test!", "cf.test", "cf.test!foo", "cf.test?foo", "", "?", "cf??", "bad name?"):
            with self.subTest(pattern=pattern), self.assertRaises(TypeError):
                self.layer.new_channel(pattern)
        with self.assertRaises(TypeError):
            self.layer.new_channel(123)  # type: ignore[arg-type]

    # -- capacity --------------------------------------------------------------

    def test_capacity(self) -> None:
        capacity = self.layer.capacity
        self.fill("cf.cap", capacity)
        with self.assertRaises(self.layer.ChannelFull):
            self.layer.send("cf.cap", {"one": "too many"})
        with self.assertRaises(ChannelFull):
            self.layer.send("cf.cap", {"one": "too many"})
        self.assertReceives(["cf.cap"], "cf.cap", {"n": 0})
        self.layer.send("cf.cap", {"n": capacity})
        with self.assertRaises(ChannelFull):
            self.layer.send("cf.cap", {"one": "too many"})

    def test_capacity_does_not_affect_other_channels(self) -> None:
        self.fill("cf.cap.full", self.layer.capacity)
        self.layer.send("cf.cap.other", {"fine": True})
        self.assertReceives(["cf.cap.other"], "cf.cap.other", {"fine": True})

    def test_capacity_is_shared_by_process_channel(self) -> None:
        for i in range(self.layer.capacity):
            self.layer.send(f"cf.capp!{i}", {"hey": "there"})
        with self.assertRaises(ChannelFull):
            self.layer.send("cf.capp!final", {"hey": "there"})
        self.layer.send("cf.capp2!x", {"other": "process"})

    def test_capacity_globs_first_match_wins(self) -> None:
        self.assertEqual(self.layer.get_capacity("cf.small.x"), 2)
        self.assertEqual(self.layer.get_capacity("cf.small.shadowed"), 2)
        self.assertEqual(self.layer.get_capacity("cf.tiny!abc"), 1)
        self.assertEqual(self.layer.get_capacity("cf.other"), self.layer.capacity)
        for channel, capacity in (("cf.small.x", 2), ("cf.small.shadowed", 2)):
            self.fill(channel, capacity)
            with self.subTest(channel=channel), self.assertRaises(ChannelFull):
                self.layer.send(channel, {"over": True})
        self.layer.send("cf.tiny!a", {"n": 0})
        with self.assertRaises(ChannelFull):
            self.layer.send("cf.tiny!b", {"n": 1})

    def test_exception_attributes(self) -> None:
        self.assertTrue(issubclass(self.layer.ChannelFull, ChannelFull))
        self.assertTrue(issubclass(self.layer.MessageTooLarge, MessageTooLarge))
        self.assertTrue(issubclass(self.layer.MessageTooLarge, ValueError))

    # -- message size ------------------------------------------------------------

    def test_message_too_large(self) -> None:
        limit = getattr(self.layer, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
        with self.assertRaises(self.layer.MessageTooLarge) as caught:
            self.layer.send("cf.big", {"body": b"x" * (limit + 1)})
        self.assertIsInstance(caught.exception, ValueError)
        self.assertIn(str(limit), str(caught.exception).replace(",", ""))
        self.assertEmpty("cf.big")
        self.layer.send("cf.big", {"body": b"small"})
        self.assertReceives(["cf.big"], "cf.big", {"body": b"small"})

    def test_one_megabyte_message(self) -> None:
        body = bytes(range(256)) * 3906 + b"x" * 64  # 1,000,000 bytes
        self.layer.send("cf.mb", {"body": body, "more_content": False})
        self.assertReceives(["cf.mb"], "cf.mb", {"body": body, "more_content": False})

    # -- groups ------------------------------------------------------------------

    def test_groups(self) -> None:
        self.require("groups")
        self.layer.group_add("cf-group", "cf.tg1")
        self.layer.group_add("cf-group", "cf.tg2")
        self.layer.group_add("cf-group", "cf.tg3")
        self.layer.group_discard("cf-group", "cf.tg3")
        self.layer.send_group("cf-group", {"value": "orange"})
        self.assertReceives(["cf.tg1"], "cf.tg1", {"value": "orange"})
        self.assertReceives(["cf.tg2"], "cf.tg2", {"value": "orange"})
        self.assertEmpty("cf.tg3")

    def test_groups_process_channels(self) -> None:
        self.require("groups")
        for local in ("a", "b", "c"):
            self.layer.group_add("cf-pgroup", f"cf.tgp!{local}")
        self.layer.group_discard("cf-pgroup", "cf.tgp!b")
        self.layer.send_group("cf-pgroup", {"value": "orange"})
        received = {self.layer.receive(["cf.tgp!"])[0] for _ in range(2)}
        self.assertEqual(received, {"cf.tgp!a", "cf.tgp!c"})
        self.assertEmpty("cf.tgp!")

    def test_group_channels(self) -> None:
        self.require("groups")
        for name in ("cf.gc1", "cf.gc2", "cf.gc3!x"):
            self.layer.group_add("cf-gc", name)
        self.assertEqual(set(self.layer.group_channels("cf-gc")), {"cf.gc1", "cf.gc2", "cf.gc3!x"})
        self.layer.group_discard("cf-gc", "cf.gc1")
        self.assertEqual(set(self.layer.group_channels("cf-gc")), {"cf.gc2", "cf.gc3!x"})
        self.assertEqual(list(self.layer.group_channels("cf-nobody")), [])

    def test_group_add_is_idempotent(self) -> None:
        self.require("groups")
        self.layer.group_add("cf-idem", "cf.idem")
        self.layer.group_add("cf-idem", "cf.idem")
        self.assertEqual(list(self.layer.group_channels("cf-idem")), ["cf.idem"])
        self.layer.send_group("cf-idem", {"once": True})
        self.assertReceives(["cf.idem"], "cf.idem", {"once": True})
        self.assertEmpty("cf.idem")

    def test_group_discard_absent_is_noop(self) -> None:
        self.require("groups")
        self.layer.group_discard("cf-none", "cf.none")
        self.layer.group_add("cf-some", "cf.member")
        self.layer.group_discard("cf-some", "cf.stranger")
        self.assertEqual(list(self.layer.group_channels("cf-some")), ["cf.member"])

    def test_send_group_to_empty_group(self) -> None:
        self.require("groups")
        self.layer.send_group("cf-empty", {"nobody": "home"})

    def test_send_group_skips_full_members(self) -> None:
        self.require("groups")
        capacity = self.layer.capacity
        self.fill("cf.gfull", capacity)
        self.layer.group_add("cf-gfull", "cf.gfull")
        self.layer.group_add("cf-gfull", "cf.gok")
        self.layer.send_group("cf-gfull", {"value": "skip the full one"})
        self.assertReceives(["cf.gok"], "cf.gok", {"value": "skip the full one"})
        for i in range(capacity):
            self.assertReceives(["cf.gfull"], "cf.gfull", {"n": i})
        self.assertEmpty("cf.gfull")

    def test_send_group_message_errors(self) -> None:
        self.require("groups")
        self.layer.group_add("cf-gerr", "cf.gerr")
        limit = getattr(self.layer, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
        with self.assertRaises(MessageTooLarge):
            self.layer.send_group("cf-gerr", {"body": b"x" * (limit + 1)})
        with self.assertRaises(TypeError):
            self.layer.send_group("cf-gerr", ["not", "a", "dict"])  # type: ignore[arg-type]
        with self.assertRaises(TypeError) as caught:
            self.layer.send_group("cf-gerr", {"bad": {1, 2}})
        self.assertIn("message['bad']", str(caught.exception))
        self.assertEmpty("cf.gerr")

    def test_group_names_are_validated(self) -> None:
        self.require("groups")
        for group in ("bad group", "g!", "g?x", "", "x" * 101):
            with self.subTest(group=group), self.assertRaises(TypeError):
                self.layer.group_add(group, "cf.ok")
        for channel in ("bad channel", "cf.pattern?", ""):
            with self.subTest(channel=channel), self.assertRaises(TypeError):
                self.layer.group_add("cf-ok", channel)
        with self.assertRaises(TypeError):
            self.layer.send_group("bad group", {})
        with self.assertRaises(TypeError):
            self.layer.group_channels("bad group")

    def test_group_expiry(self) -> None:
        self.require("groups")
        self.require_flag("group_expiry")
        expiry = self.layer.group_expiry
        if expiry > 20:
            self.skipTest("group_expiry too long to test")
        self.layer.group_add("cf-gexp", "cf.gexp.refreshed")
        self.layer.group_add("cf-gexp", "cf.gexp.once")
        self.advance_time(expiry * 0.6)
        self.layer.group_add("cf-gexp", "cf.gexp.refreshed")
        self.advance_time(expiry * 0.6)
        # 1.2 x expiry after the first add, 0.6 x after the refresh.
        self.assertEqual(list(self.layer.group_channels("cf-gexp")), ["cf.gexp.refreshed"])
        self.layer.send_group("cf-gexp", {"n": 1})
        self.assertReceives(["cf.gexp.refreshed"], "cf.gexp.refreshed", {"n": 1})
        self.assertEmpty("cf.gexp.once")
        self.advance_time(expiry * 0.4 + self.expiry_margin)
        self.assertEqual(list(self.layer.group_channels("cf-gexp")), [])
        self.layer.send_group("cf-gexp", {"n": 2})
        self.assertEmpty("cf.gexp.refreshed")

    def test_group_membership_survives_message_expiry(self) -> None:
        self.require("groups")
        self.require_flag("expiry")
        wait = self.layer.expiry + self.expiry_margin
        if wait >= self.layer.group_expiry:
            self.skipTest("group_expiry must exceed expiry for this test")
        self.layer.group_add("cf-gsurv", "cf.gsurv")
        self.layer.send_group("cf-gsurv", {"n": 1})
        self.advance_time(wait)
        self.assertEmpty("cf.gsurv")
        self.assertEqual(list(self.layer.group_channels("cf-gsurv")), ["cf.gsurv"])
        self.layer.send_group("cf-gsurv", {"n": 2})
        self.assertReceives(["cf.gsurv"], "cf.gsurv", {"n": 2})

    # -- expiry ------------------------------------------------------------------

    def test_message_expiry_frees_capacity(self) -> None:
        self.require_flag("expiry")
        self.fill("cf.exp", self.layer.capacity)
        self.layer.send("cf.exp.other!x", {"also": "expires"})
        self.advance_time(self.layer.expiry + self.expiry_margin)
        self.assertEmpty("cf.exp")
        self.assertEmpty("cf.exp.other!")
        if self._has("statistics"):
            self.assertEqual(self.layer.channel_statistics("cf.exp")["messages_pending"], 0)
        self.fill("cf.exp", self.layer.capacity)
        self.assertReceives(["cf.exp"], "cf.exp", {"n": 0})

    # -- flush -----------------------------------------------------------------------

    def test_flush(self) -> None:
        self.require("flush")
        self.layer.send("cf.fl", {"value": "blue"})
        self.layer.send("cf.fl!x", {"value": "blue"})
        self.layer.flush()
        self.assertEmpty("cf.fl")
        self.assertEmpty("cf.fl!")
        self.layer.send("cf.fl", {"value": "after"})
        self.assertReceives(["cf.fl"], "cf.fl", {"value": "after"})

    def test_flush_groups(self) -> None:
        self.require("flush")
        self.require("groups")
        self.layer.group_add("cf-fg", "cf.fg")
        self.layer.send_group("cf-fg", {"value": "blue"})
        self.layer.flush()
        self.assertEmpty("cf.fg")
        self.assertEqual(list(self.layer.group_channels("cf-fg")), [])
        self.layer.send_group("cf-fg", {"value": "after"})
        self.assertEmpty("cf.fg")

    def test_flush_resets_statistics(self) -> None:
        self.require("flush")
        self.require("statistics")
        self.fill("cf.fs", self.layer.capacity)
        with self.assertRaises(ChannelFull):
            self.layer.send("cf.fs", {})
        self.layer.flush()
        self.assertEqual(self.layer.global_statistics(), {"messages_count": 0, "channel_full_count": 0})
        self.assertEqual(
            self.layer.channel_statistics("cf.fs"),
            {"messages_count": 0, "messages_pending": 0, "messages_max_age": 0, "channel_full_count": 0},
        )

    # -- statistics ------------------------------------------------------------------

    def test_statistics_keys_and_types(self) -> None:
        self.require("statistics")
        stats = self.layer.global_statistics()
        self.assertEqual(set(stats), {"messages_count", "channel_full_count"})
        channel_stats = self.layer.channel_statistics("cf.keys")
        self.assertEqual(
            set(channel_stats), {"messages_count", "messages_pending", "messages_max_age", "channel_full_count"}
        )
        for value in [*stats.values(), *channel_stats.values()]:
            self.assertIs(type(value), int)

    def test_statistics_counts(self) -> None:
        self.require("statistics")
        capacity = self.layer.capacity
        self.fill("cf.st", capacity)
        with self.assertRaises(ChannelFull):
            self.layer.send("cf.st", {"over": True})
        self.layer.send("cf.st2", {"n": 0})
        self.layer.receive(["cf.st"])
        self.assertEqual(
            self.layer.channel_statistics("cf.st"),
            {"messages_count": capacity, "messages_pending": capacity - 1, "messages_max_age": 0,
             "channel_full_count": 1},
        )
        self.assertEqual(self.layer.global_statistics(), {"messages_count": capacity + 1, "channel_full_count": 1})

    def test_statistics_process_channel_and_groups(self) -> None:
        self.require("statistics")
        self.layer.send("cf.stp!a", {"n": 0})
        self.layer.send("cf.stp!b", {"n": 1})
        by_queue = self.layer.channel_statistics("cf.stp!")
        self.assertEqual(by_queue["messages_count"], 2)
        self.assertEqual(by_queue["messages_pending"], 2)
        self.assertEqual(self.layer.channel_statistics("cf.stp!a"), by_queue)
        if self._has("groups"):
            self.fill("cf.stg.full", self.layer.capacity)
            self.layer.group_add("cf-stg", "cf.stg.full")
            self.layer.group_add("cf-stg", "cf.stg.ok")
            self.layer.send_group("cf-stg", {"n": 2})
            self.assertEqual(self.layer.channel_statistics("cf.stg.ok")["messages_count"], 1)
            self.assertEqual(self.layer.channel_statistics("cf.stg.full")["channel_full_count"], 1)
            self.assertEqual(
                self.layer.global_statistics(),
                {"messages_count": 2 + self.layer.capacity + 1, "channel_full_count": 1},
            )

    def test_statistics_max_age(self) -> None:
        self.require("statistics")
        self.require_flag("expiry")
        layer = self.new_layer(expiry=10)
        if "flush" in layer.extensions:
            layer.flush()
        layer.send("cf.age", {"n": 0})
        self.advance_time(1.1)
        layer.send("cf.age", {"n": 1})
        stats = layer.channel_statistics("cf.age")
        self.assertEqual(stats["messages_pending"], 2)
        self.assertIn(stats["messages_max_age"], (1, 2))

    # -- bad input -------------------------------------------------------------------

    BAD_CHANNEL_NAMES: ClassVar[tuple[Any, ...]] = (
        "", "with space", "x" * 101, "\u00fcmlaut", "\u00a3_test", "pattern?", "two!bangs!",
        "a?b!c", "line\n", "!leading", "?leading", "tab\t", "slash/", None, 123, b"bytes", ["list"],
    )

    def assertLayerStillWorks(self) -> None:
        self.layer.send("cf.after", {"still": "working"})
        self.assertReceives(["cf.after"], "cf.after", {"still": "working"})

    def test_bad_channel_names(self) -> None:
        for name in self.BAD_CHANNEL_NAMES:
            with self.subTest(name=name):
                with self.assertRaises(TypeError) as caught:
                    self.layer.send(name, {"value": 1})
                if isinstance(name, str) and 0 < len(name) <= 100:
                    self.assertIn(repr(name), str(caught.exception))
                with self.assertRaises(TypeError):
                    self.layer.receive([name])
        self.assertLayerStillWorks()

    def test_bad_receive_arguments(self) -> None:
        with self.assertRaises(TypeError):
            self.layer.receive("cf.bare-string")  # a str is an Iterable[str] to the type checker
        with self.assertRaises(TypeError):
            self.layer.receive(None)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            self.layer.receive([])
        with self.assertRaises(TypeError):
            self.layer.receive(["cf.ok", "bad name"])
        self.assertLayerStillWorks()

    def test_bad_messages(self) -> None:
        cases: list[tuple[Any, type[Exception], str]] = [
            (["not", "a", "dict"], TypeError, "dict"),
            ("string", TypeError, "dict"),
            (None, TypeError, "dict"),
            (b"bytes", TypeError, "dict"),
            ({"s": {1, 2}}, TypeError, "message['s']"),
            ({"o": object()}, TypeError, "message['o']"),
            ({"headers": [[b"a", b"b"], [b"c", {3}]]}, TypeError, "message['headers'][1][1]"),
            ({1: "int key"}, TypeError, "1"),
            ({"n": {2: 1}}, TypeError, "message['n']"),
            ({"b": bytearray(b"x")}, TypeError, "message['b']"),
            ({"big": 2**64}, ValueError, "message['big']"),
            ({"neg": -(2**63) - 1}, ValueError, "message['neg']"),
        ]
        for message, error, culprit in cases:
            with self.subTest(message=message):
                with self.assertRaises(error) as caught:
                    self.layer.send("cf.badmsg", message)
                self.assertIn(culprit, str(caught.exception))
        self.assertEmpty("cf.badmsg")
        if self._has("statistics"):
            self.assertEqual(self.layer.global_statistics()["messages_count"], 0)
        self.assertLayerStillWorks()

    # -- blocking --------------------------------------------------------------------

    def test_blocking_receive_times_out(self) -> None:
        self.require_flag("blocking")
        bound = self.layer.blocking_timeout + self.blocking_slack
        started = time.monotonic()
        result = self.layer.receive(["cf.idle"], block=True)
        elapsed = time.monotonic() - started
        self.assertEqual(result, (None, None))
        self.assertLess(elapsed, bound)

    def test_blocking_receive_returns_pending_message_at_once(self) -> None:
        self.require_flag("blocking")
        self.layer.send("cf.ready", {"n": 1})
        started = time.monotonic()
        self.assertEqual(self.layer.receive(["cf.ready"], block=True), ("cf.ready", {"n": 1}))
        self.assertLess(time.monotonic() - started, 0.2)

    def test_blocking_receive_wakes_on_send_from_thread(self) -> None:
        self.require_flag("blocking")
        self.require_flag("threads")
        layer = self.new_layer(blocking_timeout=5)
        if "flush" in layer.extensions:
            layer.flush()
        sender = threading.Timer(0.1, layer.send, ("cf.wake!x", {"woke": True}))
        started = time.monotonic()
        sender.start()
        try:
            result = layer.receive(["cf.other", "cf.wake!"], block=True)
        finally:
            sender.join()
        self.assertEqual(result, ("cf.wake!x", {"woke": True}))
        self.assertLess(time.monotonic() - started, 2.5)

    # -- the twisted extension (ASGI 1: receive_twisted -> Deferred) ---------------------

    def run_on_reactor(self, start: Callable[[Any], Any], timeout: float = 10.0) -> Any:
        """Run a private reactor until the Deferred ``start(reactor)`` returns fires; its result."""
        if "twisted" not in self.layer.extensions:
            self.skipTest("layer lacks the 'twisted' extension")
        try:
            from twisted.internet.pollreactor import PollReactor
        except ImportError:  # pragma: no cover - Twisted is a dependency of the project
            self.skipTest("Twisted is not installed")
        outcome = run_reactor_until(PollReactor(), start, timeout)  # type: ignore[no-untyped-call]
        if not outcome:
            self.fail(f"receive_twisted did not fire within {timeout} s")
        result = outcome[0]
        if hasattr(result, "raiseException"):  # a Failure
            result.raiseException()
        return result

    def test_twisted_receive_takes_a_pending_message(self) -> None:
        self.layer.send("cf.tw.ready", {"n": 1})
        result = self.run_on_reactor(lambda reactor: self.layer.receive_twisted(["cf.tw.ready"], reactor))
        self.assertEqual(tuple(result), ("cf.tw.ready", {"n": 1}))

    def test_twisted_receive_wakes_on_a_later_send(self) -> None:
        self.require_flag("blocking")

        def start(reactor: Any) -> Any:
            reactor.callLater(0.1, self.layer.send, "cf.tw!x", {"woke": True})
            return self.layer.receive_twisted(["cf.tw.other", "cf.tw!"], reactor)

        self.assertEqual(tuple(self.run_on_reactor(start)), ("cf.tw!x", {"woke": True}))

    def test_twisted_receive_wakes_on_send_from_thread(self) -> None:
        self.require_flag("blocking")
        self.require_flag("threads")
        sender = threading.Timer(0.1, self.layer.send, ("cf.tw.thread", {"from": "thread"}))

        def start(reactor: Any) -> Any:
            sender.start()
            return self.layer.receive_twisted(["cf.tw.thread"], reactor)

        try:
            result = self.run_on_reactor(start)
        finally:
            sender.join()
        self.assertEqual(tuple(result), ("cf.tw.thread", {"from": "thread"}))

    def test_twisted_receives_in_a_row_keep_fifo_order(self) -> None:
        count = min(20, self.layer.capacity)
        for i in range(count):
            self.layer.send("cf.tw.fifo", {"i": i})
        got: list[int] = []

        def start(reactor: Any) -> Any:
            from twisted.internet import defer

            done: Any = defer.Deferred()

            def next_one(result: Any = None) -> None:
                if result is not None:
                    got.append(result[1]["i"])
                if len(got) == count:
                    done.callback(got)
                    return
                self.layer.receive_twisted(["cf.tw.fifo"], reactor).addCallbacks(next_one, done.errback)

            next_one()
            return done

        self.assertEqual(self.run_on_reactor(start), list(range(count)))

    # -- concurrency and sharing -------------------------------------------------------

    def test_concurrent_senders_keep_per_channel_order(self) -> None:
        self.require_flag("threads")
        capacity = self.layer.capacity
        errors: list[BaseException] = []

        def produce(index: int) -> None:
            try:
                for n in range(capacity):
                    self.layer.send(f"cf.thread{index}", {"t": index, "n": n})
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        for index in range(4):
            for n in range(capacity):
                self.assertReceives([f"cf.thread{index}"], f"cf.thread{index}", {"t": index, "n": n})

    def test_peer_instances_share_state(self) -> None:
        peer = self.make_peer_layer(self.layer)
        if peer is None:
            self.skipTest("layer instances do not share state")
        self.addCleanup(getattr(peer, "close", lambda: None))
        self.layer.send("cf.peer", {"from": "first"})
        self.assertEqual(peer.receive(["cf.peer"]), ("cf.peer", {"from": "first"}))
        if self._has("groups"):
            peer.group_add("cf-peer", "cf.peer!a")
            self.layer.send_group("cf-peer", {"from": "group"})
            self.assertEqual(peer.receive(["cf.peer!"]), ("cf.peer!a", {"from": "group"}))
        if self._has("flush"):
            self.layer.send("cf.peer", {"to": "flush"})
            peer.flush()
            self.assertEmpty("cf.peer")

    # -- configuration -------------------------------------------------------------------

    def test_configuration_attributes(self) -> None:
        config = self.layer_config
        self.assertEqual(self.layer.expiry, config.get("expiry", self.layer.expiry))
        self.assertEqual(self.layer.group_expiry, config.get("group_expiry", self.layer.group_expiry))
        self.assertEqual(self.layer.capacity, config.get("capacity", self.layer.capacity))
        for extension in ("groups", "flush", "statistics"):
            if getattr(self, f"supports_{extension}"):
                self.assertIn(extension, self.layer.extensions)
        for extension in self.layer.extensions:
            self.assertIsInstance(extension, str)


def run_reactor_until(reactor: Any, start: Callable[[Any], Any], timeout: float = 10.0) -> list[Any]:
    """Run ``reactor`` (a private one) until the Deferred ``start(reactor)`` returns fires.

    Returns ``[result]`` (a Failure on an error), or ``[]`` when nothing fired
    within ``timeout`` seconds; the reactor is stopped either way.
    """
    outcome: list[Any] = []

    def begin() -> None:
        deferred = start(reactor)
        deferred.addBoth(outcome.append)
        deferred.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(begin)
    guard = reactor.callLater(timeout, reactor.stop)
    reactor.run(installSignalHandlers=False)
    if guard.active():
        guard.cancel()
    return outcome


def conformance_case(
    factory: Callable[..., BaseChannelLayer],
    name: str | None = None,
    **attributes: Any,
) -> type[ConformanceTestCase]:
    """Make a :class:`ConformanceTestCase` subclass whose layers come from ``factory``.

    ``attributes`` set class attributes (``layer_config``, ``supports_*``,
    ``expiry_margin``...). Assign the result to a ``Test...`` name in a test
    module for pytest or unittest to collect it.
    """
    class_name = name or f"Test{getattr(factory, '__name__', 'Layer')}Conformance"
    namespace: dict[str, Any] = {"layer_factory": staticmethod(factory), **attributes}
    return type(class_name, (ConformanceTestCase,), namespace)
