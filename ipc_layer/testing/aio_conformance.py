"""The async conformance suite: the Channels 4 channel-layer contract, for any layer.

The synchronous suite (:mod:`ipc_layer.testing.conformance`) checks the
ASGI 1 contract; this one checks what a Channels 4 site relies on from a
``CHANNEL_LAYERS`` backend (``channels.layers.BaseChannelLayer``'s
coroutines): ``send``, ``receive(channel)`` returning the message,
``new_channel()``, groups, capacity, expiry, ``flush``, name validation,
cancellation safety, and use from several event loops and threads.

It imports neither ``channels`` nor pytest: only ``unittest`` (and
``asgiref`` inside the one test that needs ``async_to_sync``), so the same
suite runs against any implementation.

Using it
--------
Subclass :class:`AsyncConformanceTestCase` and set ``layer_factory`` (or
override :meth:`~AsyncConformanceTestCase.make_layer`) and
``channel_full_types`` (the exception classes ``send`` to a full channel must
raise an instance of, e.g. ``(channels.exceptions.ChannelFull,)``)::

    from ipc_layer.testing.aio_conformance import AsyncConformanceTestCase

    class TestMyLayer(AsyncConformanceTestCase):
        channel_full_types = (channels.exceptions.ChannelFull,)

        def make_layer(self, **config):
            return MyLayer(**config)

or ``TestMyLayer = aio_conformance_case(MyLayer, channel_full_types=(...))``.
Each test gets a fresh layer made from ``layer_config`` (short expiries, so
the expiry tests take about a second each). A layer that lacks a capability
names it in :attr:`~AsyncConformanceTestCase.unsupported`, a mapping from
capability to the reason, and the tests needing it are skipped with that
reason.

Capabilities (keys of ``unsupported``):

``capacity_globs``
    ``channel_capacity`` globs are honoured (then ``layer_config`` may hold them).
``shared_process_capacity``
    all ``new_channel()`` channels of a process share one capacity (one queue).
``precise_group_expiry``
    membership ends ``group_expiry`` seconds after the last add, to within
    a quarter of a second.
``membership_survives_expiry``
    a member whose message expired stays in its groups.
``threads``
    coroutines on other threads' event loops may use the layer at the same time.
``closed_loop``
    a loop closed while one of its coroutines waits in ``receive`` does not
    break receives on other loops.
``type_errors``
    a message that is not a dict raises ``TypeError`` (not ``AssertionError``).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import unittest
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

__all__ = ["AIO_LAYER_CONFIG", "AsyncConformanceTestCase", "aio_conformance_case"]

T = TypeVar("T")

#: The configuration every test's layer is made with (see ``layer_config``).
AIO_LAYER_CONFIG: dict[str, Any] = {
    "expiry": 0.6,
    "group_expiry": 1.2,
    "capacity": 5,
}

#: Globs added to ``layer_config`` when ``capacity_globs`` is supported.
CAPACITY_GLOBS: dict[str, int] = {
    "cf.small.*": 2,
    "cf.small.shadowed": 4,  # shadowed by the glob above: first match wins
}


class AsyncConformanceTestCase(unittest.IsolatedAsyncioTestCase):
    """Base class of the async (Channels 4) conformance suite."""

    # pytest: not a test class itself; __init_subclass__ flips it back on.
    __test__ = False

    #: Keyword arguments of every ``make_layer`` call.
    layer_config: ClassVar[dict[str, Any]] = AIO_LAYER_CONFIG
    #: Optional callable ``(**config) -> layer`` used by the default ``make_layer``.
    layer_factory: ClassVar[Callable[..., Any] | None] = None
    #: ``send`` to a full channel raises an instance of every one of these.
    channel_full_types: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Capabilities this layer lacks -> why (the skip reason).
    unsupported: ClassVar[dict[str, str]] = {}
    #: Longest a test waits for a message that should arrive.
    receive_timeout: ClassVar[float] = 2.0
    #: How long a test waits to conclude that nothing arrives.
    nothing_timeout: ClassVar[float] = 0.1
    #: Extra seconds when waiting for something to expire.
    expiry_margin: ClassVar[float] = 0.25

    layer: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if cls.make_layer is AsyncConformanceTestCase.make_layer and cls.layer_factory is None:
            raise unittest.SkipTest(f"{cls.__name__} sets neither layer_factory nor make_layer()")

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.layer = await self.new_layer()

    # -- hooks -------------------------------------------------------------

    def make_layer(self, **config: Any) -> Any:
        """Return a new layer built with ``config``. Override or set ``layer_factory``."""
        factory = type(self).layer_factory
        if factory is None:
            raise NotImplementedError(f"{type(self).__name__} must set layer_factory or override make_layer()")
        return factory(**config)

    async def close_layer(self, layer: Any) -> None:
        """Dispose of a layer: flush it and await its ``close()`` if it has one."""
        await layer.flush()
        close = getattr(layer, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result

    # -- helpers -------------------------------------------------------------

    def config(self, **overrides: Any) -> dict[str, Any]:
        config = dict(self.layer_config)
        if self.supports("capacity_globs"):
            config.setdefault("channel_capacity", dict(CAPACITY_GLOBS))
        config.update(overrides)
        return config

    async def new_layer(self, **overrides: Any) -> Any:
        """A flushed layer made from ``layer_config`` and ``overrides``, closed after the test."""
        layer = self.make_layer(**self.config(**overrides))
        self.addAsyncCleanup(self.close_layer, layer)
        await layer.flush()
        return layer

    def supports(self, capability: str) -> bool:
        return capability not in self.unsupported

    def require(self, capability: str) -> None:
        if capability in self.unsupported:
            self.skipTest(f"{capability}: {self.unsupported[capability]}")

    async def receive(self, channel: str, layer: Any = None) -> Any:
        """``receive(channel)``, failing the test after ``receive_timeout``."""
        return await asyncio.wait_for((layer or self.layer).receive(channel), self.receive_timeout)

    async def assertNothing(self, channel: str, layer: Any = None) -> None:
        """Nothing arrives on ``channel`` within ``nothing_timeout`` (the receive is cancelled)."""
        try:
            message = await asyncio.wait_for((layer or self.layer).receive(channel), self.nothing_timeout)
        except asyncio.TimeoutError:  # noqa: UP041 - Python 3.10's wait_for raises this one
            return
        self.fail(f"expected nothing on {channel!r}, got {message!r}")

    async def assertFull(self, channel: str, message: dict[str, Any]) -> None:
        if not self.channel_full_types:
            raise unittest.SkipTest("channel_full_types is not set")
        with self.assertRaises(self.channel_full_types[0]) as caught:
            await self.layer.send(channel, message)
        for kind in self.channel_full_types:
            self.assertIsInstance(caught.exception, kind)

    def in_thread(self, func: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``func`` in a new thread; return its result or raise its exception."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = func()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                box["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self.fail(f"thread still running after {timeout} s")
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result

    # -- send / receive --------------------------------------------------------

    async def test_send_receive_fifo(self) -> None:
        for n in range(self.layer.capacity):
            await self.layer.send("cf.fifo", {"type": "test", "n": n})
        for n in range(self.layer.capacity):
            self.assertEqual(await self.receive("cf.fifo"), {"type": "test", "n": n})
        await self.assertNothing("cf.fifo")

    async def test_channels_are_separate(self) -> None:
        await self.layer.send("cf.one", {"type": "test", "to": 1})
        await self.layer.send("cf.two", {"type": "test", "to": 2})
        self.assertEqual(await self.receive("cf.two"), {"type": "test", "to": 2})
        self.assertEqual(await self.receive("cf.one"), {"type": "test", "to": 1})

    async def test_message_copied_and_types_kept(self) -> None:
        message: dict[str, Any] = {
            "type": "test",
            "bytes": b"\xc2\xa3\x00",
            "text": "\u00a3\U0001f612",
            "int": 2**63 - 1,
            "float": 1.5,
            "bool": True,
            "none": None,
            "list": [1, "a", b"b", {"deep": [1.25]}],
            "nested": {"a": {"b": []}},
        }
        await self.layer.send("cf.copy", message)
        message["list"][0] = "changed"
        message["nested"]["a"]["b"].append(1)
        received = await self.receive("cf.copy")
        self.assertEqual(received["list"][0], 1)
        self.assertEqual(received["nested"], {"a": {"b": []}})
        self.assertIs(type(received["bytes"]), bytes)
        self.assertIs(type(received["text"]), str)
        self.assertIs(received["bool"], True)
        self.assertEqual(received["bytes"], b"\xc2\xa3\x00")
        self.assertEqual(received["int"], 2**63 - 1)

    async def test_receive_waits_without_blocking_the_loop(self) -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        receiving = asyncio.create_task(self.layer.receive("cf.wait"))
        await asyncio.sleep(0.1)
        self.assertFalse(receiving.done())
        self.assertGreater(ticks, 5, "the loop did not run while receive() waited")
        await self.layer.send("cf.wait", {"type": "test", "late": True})
        self.assertEqual(await asyncio.wait_for(receiving, self.receive_timeout), {"type": "test", "late": True})
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)

    # -- new_channel and routing -------------------------------------------------

    async def test_new_channel(self) -> None:
        name = await self.layer.new_channel()
        self.assertIsInstance(name, str)
        self.assertTrue(name.startswith("specific."), name)
        self.assertEqual(name.count("!"), 1, name)
        self.assertFalse(name.endswith("!"), name)
        self.assertTrue(self.layer.require_valid_channel_name(name))
        await self.layer.send(name, {"type": "test", "n": 1})
        self.assertEqual(await self.receive(name), {"type": "test", "n": 1})

    async def test_new_channel_names_are_unique(self) -> None:
        made = [await self.layer.new_channel() for _ in range(200)]
        self.assertEqual(len(set(made)), len(made))

    async def test_new_channel_prefix(self) -> None:
        name = await self.layer.new_channel("cf.custom.")
        self.assertTrue(name.startswith("cf.custom."), name)
        await self.layer.send(name, {"type": "test"})
        self.assertEqual(await self.receive(name), {"type": "test"})

    async def test_consumers_get_their_own_messages(self) -> None:
        channels = [await self.layer.new_channel() for _ in range(4)]
        tasks = {c: asyncio.create_task(self.layer.receive(c)) for c in channels}
        await asyncio.sleep(0.02)
        for i, channel in reversed(list(enumerate(channels))):
            await self.layer.send(channel, {"type": "test", "for": i})
        for i, channel in enumerate(channels):
            self.assertEqual(await asyncio.wait_for(tasks[channel], self.receive_timeout), {"type": "test", "for": i})

    async def test_message_for_idle_consumer_waits_for_it(self) -> None:
        busy, idle = await self.layer.new_channel(), await self.layer.new_channel()
        waiting = asyncio.create_task(self.layer.receive(busy))
        await asyncio.sleep(0.02)
        await self.layer.send(idle, {"type": "test", "n": 1})
        await self.layer.send(idle, {"type": "test", "n": 2})
        await self.layer.send(busy, {"type": "test", "n": 3})
        self.assertEqual(await asyncio.wait_for(waiting, self.receive_timeout), {"type": "test", "n": 3})
        self.assertEqual(await self.receive(idle), {"type": "test", "n": 1})
        self.assertEqual(await self.receive(idle), {"type": "test", "n": 2})
        await self.assertNothing(idle)

    # -- cancellation ---------------------------------------------------------------

    async def test_cancelled_receive_loses_nothing(self) -> None:
        channel = await self.layer.new_channel()
        for plain in ("cf.cancel", channel):
            waiting = asyncio.create_task(self.layer.receive(plain))
            await asyncio.sleep(0.02)
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            self.assertTrue(waiting.cancelled())
            await self.layer.send(plain, {"type": "test", "after": "cancel"})
            self.assertEqual(await self.receive(plain), {"type": "test", "after": "cancel"})

    async def test_receive_cancelled_as_its_message_arrives(self) -> None:
        # The message arrives and the receive is cancelled in the same loop
        # iteration: either the receive returned it, or a later one does.
        channel = await self.layer.new_channel()
        for target in ("cf.race", channel):
            for delay in (0, 1, 2, 3, 5, 8):
                waiting = asyncio.create_task(self.layer.receive(target))
                await asyncio.sleep(0.005)
                await self.layer.send(target, {"type": "test", "delay": delay})
                for _ in range(delay):
                    await asyncio.sleep(0)
                waiting.cancel()
                results = await asyncio.gather(waiting, return_exceptions=True)
                if waiting.cancelled():
                    got = await self.receive(target)
                else:
                    got = results[0]
                self.assertEqual(got, {"type": "test", "delay": delay}, f"{target} delay {delay}")
                await self.assertNothing(target)

    async def test_wait_for_timeout_then_receive(self) -> None:
        channel = await self.layer.new_channel()
        for target in ("cf.timeout", channel):
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(self.layer.receive(target), 0.05)
            await self.layer.send(target, {"type": "test"})
            self.assertEqual(await self.receive(target), {"type": "test"})

    # -- capacity ---------------------------------------------------------------------

    async def test_capacity(self) -> None:
        capacity = self.layer.capacity
        for n in range(capacity):
            await self.layer.send("cf.cap", {"type": "test", "n": n})
        await self.assertFull("cf.cap", {"type": "test", "n": "over"})
        await self.layer.send("cf.cap.other", {"type": "test"})
        self.assertEqual(await self.receive("cf.cap"), {"type": "test", "n": 0})
        await self.layer.send("cf.cap", {"type": "test", "n": capacity})
        await self.assertFull("cf.cap", {"type": "test", "n": "over"})

    async def test_capacity_globs_first_match_wins(self) -> None:
        self.require("capacity_globs")
        self.assertEqual(self.layer.get_capacity("cf.small.x"), 2)
        self.assertEqual(self.layer.get_capacity("cf.small.shadowed"), 2)
        self.assertEqual(self.layer.get_capacity("cf.other"), self.layer.capacity)
        for channel in ("cf.small.x", "cf.small.shadowed"):
            for n in range(2):
                await self.layer.send(channel, {"type": "test", "n": n})
            await self.assertFull(channel, {"type": "test"})

    async def test_process_channels_share_capacity(self) -> None:
        self.require("shared_process_capacity")
        channels = [await self.layer.new_channel() for _ in range(self.layer.capacity + 1)]
        for channel in channels[:-1]:
            await self.layer.send(channel, {"type": "test"})
        await self.assertFull(channels[-1], {"type": "test"})

    # -- groups ------------------------------------------------------------------------

    async def test_group_send(self) -> None:
        members = ["cf.g.plain", await self.layer.new_channel(), await self.layer.new_channel()]
        for member in members:
            await self.layer.group_add("cf-group", member)
        await self.layer.group_add("cf-group", members[0])  # idempotent
        await self.layer.group_send("cf-group", {"type": "test", "to": "all"})
        for member in members:
            self.assertEqual(await self.receive(member), {"type": "test", "to": "all"})
            await self.assertNothing(member)

    async def test_group_discard(self) -> None:
        await self.layer.group_add("cf-gd", "cf.gd.stays")
        await self.layer.group_add("cf-gd", "cf.gd.leaves")
        await self.layer.group_discard("cf-gd", "cf.gd.leaves")
        await self.layer.group_discard("cf-gd", "cf.gd.never")  # not a member: fine
        await self.layer.group_discard("cf-nothing", "cf.gd.never")  # no such group: fine
        await self.layer.group_send("cf-gd", {"type": "test"})
        self.assertEqual(await self.receive("cf.gd.stays"), {"type": "test"})
        await self.assertNothing("cf.gd.leaves")

    async def test_group_send_to_empty_group(self) -> None:
        await self.layer.group_send("cf-empty", {"type": "test"})

    async def test_group_send_skips_full_members(self) -> None:
        capacity = self.layer.capacity
        for n in range(capacity):
            await self.layer.send("cf.gf.full", {"type": "test", "n": n})
        await self.layer.group_add("cf-gf", "cf.gf.full")
        await self.layer.group_add("cf-gf", "cf.gf.ok")
        await self.layer.group_send("cf-gf", {"type": "test", "group": True})
        self.assertEqual(await self.receive("cf.gf.ok"), {"type": "test", "group": True})
        for n in range(capacity):
            self.assertEqual(await self.receive("cf.gf.full"), {"type": "test", "n": n})
        await self.assertNothing("cf.gf.full")

    async def test_group_membership_survives_message_expiry(self) -> None:
        self.require("membership_survives_expiry")
        await self.layer.group_add("cf-gsurv", "cf.gsurv")
        await self.layer.group_send("cf-gsurv", {"type": "test", "n": 1})
        await asyncio.sleep(self.layer.expiry + self.expiry_margin)
        await self.assertNothing("cf.gsurv")
        await self.layer.group_send("cf-gsurv", {"type": "test", "n": 2})
        self.assertEqual(await self.receive("cf.gsurv"), {"type": "test", "n": 2})

    async def test_group_expiry(self) -> None:
        self.require("precise_group_expiry")
        expiry = self.layer.group_expiry
        await self.layer.group_add("cf-gexp", "cf.gexp.refreshed")
        await self.layer.group_add("cf-gexp", "cf.gexp.once")
        await asyncio.sleep(expiry * 0.6)
        await self.layer.group_add("cf-gexp", "cf.gexp.refreshed")
        await asyncio.sleep(expiry * 0.6)
        # 1.2 x expiry after the first add, 0.6 x after the refresh.
        await self.layer.group_send("cf-gexp", {"type": "test", "n": 1})
        self.assertEqual(await self.receive("cf.gexp.refreshed"), {"type": "test", "n": 1})
        await self.assertNothing("cf.gexp.once")
        await asyncio.sleep(expiry * 0.4 + self.expiry_margin)
        await self.layer.group_send("cf-gexp", {"type": "test", "n": 2})
        await self.assertNothing("cf.gexp.refreshed")

    # -- expiry and flush -----------------------------------------------------------------

    async def test_message_expiry(self) -> None:
        channel = await self.layer.new_channel()
        for n in range(self.layer.capacity):
            await self.layer.send("cf.exp", {"type": "test", "n": n})
        await self.layer.send(channel, {"type": "test"})
        await asyncio.sleep(self.layer.expiry + self.expiry_margin)
        await self.assertNothing("cf.exp")
        await self.assertNothing(channel)
        for n in range(self.layer.capacity):  # expired messages freed the capacity
            await self.layer.send("cf.exp", {"type": "test", "n": n})

    async def test_flush(self) -> None:
        channel = await self.layer.new_channel()
        await self.layer.send("cf.fl", {"type": "test"})
        await self.layer.send(channel, {"type": "test"})
        await self.layer.group_add("cf-fl", "cf.fl.member")
        await self.layer.flush()
        await self.assertNothing("cf.fl")
        await self.assertNothing(channel)
        await self.layer.group_send("cf-fl", {"type": "test"})
        await self.assertNothing("cf.fl.member")
        await self.layer.send("cf.fl", {"type": "test", "after": True})
        self.assertEqual(await self.receive("cf.fl"), {"type": "test", "after": True})

    # -- names and messages ------------------------------------------------------------------

    #: Refused by Channels 4's own validation (``len < 100``, no ``?``, ASCII before any ``!``).
    BAD_CHANNEL_NAMES: ClassVar[tuple[Any, ...]] = (
        "", "with space", "x" * 100, "\u00fcmlaut", "\u00a3_test", "pattern?", "single?reader",
        "two!bangs!", "!leading", "tab\t", "slash/", None, 123, b"bytes",
    )
    BAD_GROUP_NAMES: ClassVar[tuple[Any, ...]] = ("", "bad group", "g!", "g?x", "x" * 100, None, b"g")

    async def test_bad_channel_names(self) -> None:
        for name in self.BAD_CHANNEL_NAMES:
            with self.subTest(name=name):
                with self.assertRaises(TypeError):
                    await self.layer.send(name, {"type": "test"})
                with self.assertRaises(TypeError):
                    await asyncio.wait_for(self.layer.receive(name), self.receive_timeout)
                with self.assertRaises(TypeError):
                    await self.layer.group_add("cf-ok", name)
                with self.assertRaises(TypeError):
                    self.layer.require_valid_channel_name(name)
        await self.layer.send("cf.after", {"type": "test"})
        self.assertEqual(await self.receive("cf.after"), {"type": "test"})

    async def test_good_channel_names(self) -> None:
        for name in ("x" * 99, "a-b_c.D9", "cf.proc!", "cf.proc!client-1.x_y"):
            with self.subTest(name=name):
                self.assertTrue(self.layer.require_valid_channel_name(name))
                await self.layer.send(name, {"type": "test", "name": name})
                self.assertEqual(await self.receive(name), {"type": "test", "name": name})

    async def test_bad_group_names(self) -> None:
        for name in self.BAD_GROUP_NAMES:
            with self.subTest(name=name):
                with self.assertRaises(TypeError):
                    await self.layer.group_add(name, "cf.ok")
                with self.assertRaises(TypeError):
                    await self.layer.group_discard(name, "cf.ok")
                with self.assertRaises(TypeError):
                    await self.layer.group_send(name, {"type": "test"})
                with self.assertRaises(TypeError):
                    self.layer.require_valid_group_name(name)
        self.assertTrue(self.layer.require_valid_group_name("g" * 99))

    async def test_non_dict_message(self) -> None:
        self.require("type_errors")
        for message in (["list"], "text", None, b"bytes"):
            with self.subTest(message=message), self.assertRaises(TypeError):
                await self.layer.send("cf.badmsg", message)
        await self.assertNothing("cf.badmsg")

    def test_extensions(self) -> None:
        self.assertIn("groups", self.layer.extensions)
        self.assertIn("flush", self.layer.extensions)

    # -- loops and threads ---------------------------------------------------------------------

    def _run_in_new_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return self.in_thread(lambda: asyncio.run(make()))

    def test_several_loops_in_turn(self) -> None:
        channel = self.in_thread(lambda: asyncio.run(self.layer.new_channel()))

        async def round_trip(n: int) -> Any:
            # The receive waits first, so each new loop goes through the
            # wake-up path, not only the ready-message path.
            waiting = asyncio.create_task(self.layer.receive(channel))
            plain = asyncio.create_task(self.layer.receive("cf.loops"))
            await asyncio.sleep(0.02)
            await self.layer.send(channel, {"type": "test", "n": n})
            await self.layer.send("cf.loops", {"type": "test", "n": n})
            return await asyncio.wait_for(asyncio.gather(waiting, plain), self.receive_timeout)

        for n in range(3):
            self.assertEqual(self._run_in_new_loop(lambda n=n: round_trip(n)),  # type: ignore[misc]
                             [{"type": "test", "n": n}] * 2)

    def test_async_to_sync(self) -> None:
        try:
            from asgiref.sync import async_to_sync
        except ImportError:  # pragma: no cover - asgiref comes with Channels
            self.skipTest("asgiref is not installed")

        def sync_code() -> list[Any]:
            channel = async_to_sync(self.layer.new_channel)()
            async_to_sync(self.layer.send)(channel, {"type": "test", "n": 1})
            async_to_sync(self.layer.group_add)("cf-sync", channel)
            async_to_sync(self.layer.group_send)("cf-sync", {"type": "test", "n": 2})
            got = [async_to_sync(self.layer.receive)(channel) for _ in range(2)]
            if self.supports("threads"):
                # A blocking receive in sync code, woken by a send from another thread.
                timer = threading.Timer(0.05, async_to_sync(self.layer.send), ("cf.sync", {"type": "test", "n": 3}))
                timer.start()
                got.append(async_to_sync(self.layer.receive)("cf.sync"))
                timer.join()
            return got

        expected = [{"type": "test", "n": 1}, {"type": "test", "n": 2}]
        if self.supports("threads"):
            expected.append({"type": "test", "n": 3})
        self.assertEqual(self.in_thread(sync_code), expected)

    async def test_loops_in_threads_at_once(self) -> None:
        self.require("threads")
        channels = [await self.layer.new_channel() for _ in range(3)]
        ready = threading.Barrier(len(channels) + 1)
        results: dict[str, Any] = {}

        def consumer(channel: str) -> None:
            async def run() -> None:
                waiting = asyncio.create_task(self.layer.receive(channel))
                await asyncio.sleep(0.01)
                ready.wait(5)
                results[channel] = await asyncio.wait_for(waiting, self.receive_timeout)

            asyncio.run(run())

        threads = [threading.Thread(target=consumer, args=(c,), daemon=True) for c in channels]
        for thread in threads:
            thread.start()
        await asyncio.get_running_loop().run_in_executor(None, ready.wait, 5)
        for i, channel in enumerate(channels):
            await self.layer.send(channel, {"type": "test", "n": i})
        for thread in threads:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5)
        self.assertEqual(results, {c: {"type": "test", "n": i} for i, c in enumerate(channels)})

    async def test_send_from_another_thread_wakes_receive(self) -> None:
        self.require("threads")
        channel = await self.layer.new_channel()
        waiting = asyncio.create_task(self.layer.receive(channel))
        await asyncio.sleep(0.02)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: asyncio.run(self.layer.send(channel, {"type": "test", "from": "thread"})))
        self.assertEqual(await asyncio.wait_for(waiting, self.receive_timeout), {"type": "test", "from": "thread"})

    async def test_loop_closed_while_receiving(self) -> None:
        self.require("closed_loop")
        first, second = await self.layer.new_channel(), await self.layer.new_channel()
        leftovers: list[Any] = []

        def abandon() -> None:
            # A loop closed with a receive still waiting (no cancellation):
            # its coroutine never runs again.
            loop = asyncio.new_event_loop()
            task = loop.create_task(self.layer.receive(first))
            loop.run_until_complete(asyncio.sleep(0.05))
            leftovers.append(task)
            loop.close()

        self.in_thread(abandon)
        waiting = asyncio.create_task(self.layer.receive(second))
        await asyncio.sleep(0.02)
        await self.layer.send(first, {"type": "test", "to": "first"})
        await self.layer.send(second, {"type": "test", "to": "second"})
        self.assertEqual(await asyncio.wait_for(waiting, self.receive_timeout), {"type": "test", "to": "second"})
        # The abandoned receive took nothing: its message is still there.
        self.assertEqual(await self.receive(first), {"type": "test", "to": "first"})
        for task in leftovers:
            task._log_destroy_pending = False  # abandoned on purpose: no 'destroyed but pending' log


def aio_conformance_case(
    factory: Callable[..., Any],
    name: str | None = None,
    **attributes: Any,
) -> type[AsyncConformanceTestCase]:
    """Make an :class:`AsyncConformanceTestCase` subclass whose layers come from ``factory``.

    ``attributes`` set class attributes (``channel_full_types``,
    ``unsupported``, ``layer_config``...). Assign the result to a ``Test...``
    name in a test module for pytest or unittest to collect it.
    """
    class_name = name or f"Test{getattr(factory, '__name__', 'Layer')}AsyncConformance"
    namespace: dict[str, Any] = {"layer_factory": staticmethod(factory), **attributes}
    return type(class_name, (AsyncConformanceTestCase,), namespace)

