"""``ipc_layer.aio.IPCChannelLayer``: what the async conformance suite cannot see.

Sharing the segment with the sync layer, the dual exception classes, the
Channels 4 name rules, routing through one process queue (local buffers,
their bound and expiry), the hand-off of a wake-up whose receive was
cancelled, idle CPU, helper-thread lifecycle, FD watches and fork; most
tests run once per wake-up mode (``wakeup="fd"`` and ``"thread"``).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("channels", reason="channels 4 is not installed")

import channels.exceptions  # type: ignore[import-untyped]

import ipc_layer
from ipc_layer import aio, wakeup
from ipc_layer.aio import IPCChannelLayer
from ipc_layer.local_store import STORE
from tests.support import TEST_SEGMENT_SIZE, make_layer

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 2.0


@pytest.fixture(params=aio.WAKEUPS)
def make(prefix: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build aio layers on the test's prefix (the fixture removes the segment), once per wake-up mode."""
    built: list[IPCChannelLayer] = []

    def build(**config: Any) -> IPCChannelLayer:
        config.setdefault("segment_size", TEST_SEGMENT_SIZE)
        config.setdefault("wakeup", request.param)
        layer = IPCChannelLayer(prefix=prefix, **config)
        built.append(layer)
        return layer

    yield build
    for layer in built:  # as at exit: FD watches unregistered, FIFOs unlinked
        for watch in layer._engine.watches.values():
            with watch.cond:
                watch.close_fd_watches()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def _watch(layer: IPCChannelLayer, queue: str) -> Any:
    return layer._engine.watches[queue]


# -- sharing with the sync layer ---------------------------------------------------------------


def test_shares_channels_and_groups_with_the_sync_layer(make: Any, prefix: str) -> None:
    layer = make()
    sync = make_layer(prefix)

    async def main() -> None:
        consumer = await layer.new_channel()
        sync.send(consumer, {"type": "from.sync"})
        assert await layer.receive(consumer) == {"type": "from.sync"}
        await layer.send("worker.jobs", {"type": "from.aio", "body": b"\x00\xff"})
        assert sync.receive(["worker.jobs"]) == ("worker.jobs", {"type": "from.aio", "body": b"\x00\xff"})
        # Groups are the same C sets: a member added by one is reached by the other.
        await layer.group_add("room", consumer)
        sync.group_add("room", "legacy.reply!abc")
        sync.send_group("room", {"type": "chat", "n": 1})
        assert await layer.receive(consumer) == {"type": "chat", "n": 1}
        await layer.group_send("room", {"type": "chat", "n": 2})
        assert sync.receive(["legacy.reply!"]) == ("legacy.reply!abc", {"type": "chat", "n": 1})
        assert sync.receive(["legacy.reply!"]) == ("legacy.reply!abc", {"type": "chat", "n": 2})
        assert await layer.receive(consumer) == {"type": "chat", "n": 2}
        assert sorted(await layer.group_channels("room")) == sorted([consumer, "legacy.reply!abc"])

    run(main())
    assert layer.sync_layer.segment.prefix == prefix
    assert os.path.exists(f"/dev/shm/rbuf.{prefix}")


def test_exceptions_are_catchable_both_ways(make: Any) -> None:
    layer = make(capacity=1, max_message_size=1000)

    async def main() -> None:
        await layer.send("full.one", {"type": "x"})
        with pytest.raises(channels.exceptions.ChannelFull) as caught:
            await layer.send("full.one", {"type": "x"})
        assert isinstance(caught.value, ipc_layer.ChannelFull)
        assert "full.one" in str(caught.value)
        with pytest.raises(ipc_layer.MessageTooLarge) as too_big:
            await layer.send("big", {"body": b"x" * 2000})
        assert isinstance(too_big.value, channels.exceptions.MessageTooLarge)
        assert isinstance(too_big.value, ValueError)
        with pytest.raises(channels.exceptions.MessageTooLarge):
            await layer.group_send("g", {"body": b"x" * 2000})

    run(main())
    assert layer.ChannelFull is aio.ChannelFull


def test_channels_4_name_rules(make: Any) -> None:
    layer = make()
    sync = layer.sync_layer
    hundred = "n" * 100
    sync.send(hundred, {"ok": True})  # the ASGI 1 layer takes 100 characters ...
    with pytest.raises(TypeError, match="at most 99"):
        run(layer.send(hundred, {}))  # ... Channels 4 (len < 100) does not
    with pytest.raises(TypeError, match=r"'\?'"):
        run(layer.send("single?reader", {}))
    with pytest.raises(TypeError, match="'caf\u00e9'"):
        run(layer.receive("caf\u00e9"))
    with pytest.raises(TypeError, match="must end at the '!'"):
        layer.require_valid_channel_name("a!b", receive=True)
    assert layer.require_valid_channel_name("a!", receive=True)
    with pytest.raises(TypeError):
        run(layer.new_channel("bad prefix"))
    with pytest.raises(TypeError):
        run(layer.new_channel("p" * 80))
    with pytest.raises(TypeError):
        run(layer.new_channel(None))


def test_capacity_globs_compiled_once_and_shared(make: Any) -> None:
    layer = make(capacity=10, channel_capacity={"specific.*": 3, "chat.*": 2})
    assert layer.get_capacity("chat.x") == 2
    assert layer.get_capacity("other") == 10
    assert layer._capacities is layer.sync_layer.capacities  # one compiled ChannelCapacities

    async def main() -> None:
        consumers = [await layer.new_channel() for _ in range(4)]
        assert layer.get_capacity(consumers[0]) == 3
        for consumer in consumers[:3]:  # one queue, one capacity for the process
            await layer.send(consumer, {"type": "x"})
        with pytest.raises(aio.ChannelFull):
            await layer.send(consumers[3], {"type": "x"})

    run(main())


def test_new_channel_names_share_one_process_queue(make: Any) -> None:
    layer = make()
    other = make()

    async def main() -> None:
        names = [await layer.new_channel() for _ in range(5)]
        queues = {name[: name.index("!") + 1] for name in names}
        assert len(queues) == 1
        (queue,) = queues
        assert queue.startswith("specific.") and len(queue) == len("specific.") + 12 + 1
        assert all(len(name) == len(queue) + 12 for name in names)
        # Another layer object (another process, as far as names go) gets its own queue.
        assert not (await other.new_channel()).startswith(queue)
        assert (await layer.new_channel("custom")).startswith("custom.")

    run(main())


# -- routing, buffers -----------------------------------------------------------------------------


def test_buffer_is_bounded_and_drops_with_a_debug_log(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    layer = make(capacity=3)
    caplog.set_level(logging.DEBUG, logger="ipc_layer")

    async def main() -> None:
        busy, idle = await layer.new_channel(), await layer.new_channel()
        for round_ in range(2):
            for n in range(2):
                await layer.send(idle, {"type": "x", "n": round_ * 2 + n})
            await layer.send(busy, {"type": "x"})
            # This receive takes idle's messages off shared memory into its buffer.
            assert await asyncio.wait_for(layer.receive(busy), TIMEOUT) == {"type": "x"}
        # The buffer holds the process queue's capacity (3): the 4th was dropped.
        got = [await asyncio.wait_for(layer.receive(idle), TIMEOUT) for _ in range(3)]
        assert [m["n"] for m in got] == [0, 1, 2]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(idle), 0.1)

    run(main())
    assert layer.buffer_dropped == 1
    drops = [r for r in caplog.records if "local buffer full" in r.getMessage()]
    assert len(drops) == 1 and drops[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_buffered_messages_expire_and_abandoned_buffers_are_swept(make: Any) -> None:
    layer = make(expiry=0.3)

    async def main() -> None:
        busy, abandoned = await layer.new_channel(), await layer.new_channel()
        await layer.send(abandoned, {"type": "x"})
        await layer.send(busy, {"type": "x"})
        await asyncio.wait_for(layer.receive(busy), TIMEOUT)
        queue = busy[: busy.index("!") + 1]
        assert STORE.has(layer.prefix, queue, abandoned)
        await asyncio.sleep(0.4)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(abandoned), 0.1)
        # A channel nobody receives on any more: swept by a later routing pass.
        other = await layer.new_channel()
        await layer.send(other, {"type": "x"})
        await layer.send(busy, {"type": "x"})
        await asyncio.wait_for(layer.receive(busy), TIMEOUT)
        await asyncio.sleep(0.4)
        await layer.send(busy, {"type": "x"})
        await asyncio.wait_for(layer.receive(busy), TIMEOUT)
        assert not STORE.has(layer.prefix, queue, other)

    run(main())


def test_many_consumers_in_one_process(make: Any, prefix: str) -> None:
    layer = make(capacity=1000)
    sync = make_layer(prefix, capacity=1000)

    async def main() -> None:
        channels_ = [await layer.new_channel() for _ in range(200)]
        tasks = [asyncio.create_task(layer.receive(c)) for c in channels_]
        await asyncio.sleep(0.05)
        # Sent from another "process" (the sync layer), in reverse order.
        for i in reversed(range(len(channels_))):
            sync.send(channels_[i], {"type": "x", "i": i})
        got = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT * 5)
        assert [m["i"] for m in got] == list(range(len(channels_)))
        watch = _watch(layer, channels_[0][: channels_[0].index("!") + 1])
        assert not watch.by_loop and not watch.by_channel
        assert STORE.count(layer.prefix, channels_[0][: channels_[0].index("!") + 1]) == 0

    run(main())


def test_woken_then_cancelled_receive_passes_the_wake_up_on(make: Any, prefix: str) -> None:
    layer = make()
    sync = make_layer(prefix)

    async def main() -> None:
        routed = await layer.new_channel()
        for target in ("plain.queue", routed):
            queue = target[: target.index("!") + 1] if "!" in target else target
            # woken_first: the wake-up of the first waiter has run (its future
            # holds a result) when it is cancelled; else it is still queued.
            for woken_first in (False, True):
                first = asyncio.create_task(layer.receive(target))
                await asyncio.sleep(0.02)
                second = asyncio.create_task(layer.receive(target))
                await asyncio.sleep(0.02)
                watch = _watch(layer, queue)
                waiters = list(next(iter(watch.by_loop.values())))
                assert len(waiters) == 2
                sync.send(target, {"type": "x", "woken_first": woken_first})
                # The helper thread disarms, then schedules one wake-up per
                # loop: for the oldest waiter.
                deadline = time.monotonic() + TIMEOUT
                while watch.thread_wanted:
                    assert time.monotonic() < deadline, "the helper thread never fired"
                    time.sleep(0.001)  # noqa: ASYNC251 - blocks the loop on purpose: no wake-up may run
                if woken_first:
                    while not waiters[0].future.done():
                        await asyncio.sleep(0)
                assert not waiters[1].future.done()
                first.cancel()  # before it could take the message
                got = await asyncio.wait_for(second, TIMEOUT)
                assert got == {"type": "x", "woken_first": woken_first}
                assert first.cancelled()

    run(main())


# -- waiting: no polling, threads ------------------------------------------------------------------


def test_idle_receive_costs_no_cpu(make: Any) -> None:
    layer = make()

    async def main() -> float:
        channel = await layer.new_channel()
        waiting = [asyncio.create_task(layer.receive(c)) for c in (channel, "idle.plain")]
        await asyncio.sleep(0.1)
        start = time.process_time()
        await asyncio.sleep(1.0)
        used = time.process_time() - start
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return used

    assert run(main()) < 0.05  # every thread of the process, over a second of waiting


def test_helper_thread_exits_when_idle_and_restarts(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeup, "IDLE_EXIT", 0.1)
    monkeypatch.setattr(wakeup, "WATCH_SLICE", 0.1)
    layer = make(wakeup="thread")

    async def round_trip() -> Any:
        waiting = asyncio.create_task(layer.receive("helper.q"))
        await asyncio.sleep(0.02)
        await layer.send("helper.q", {"type": "x"})
        return await asyncio.wait_for(waiting, TIMEOUT)

    assert run(round_trip()) == {"type": "x"}
    watch = _watch(layer, "helper.q")
    thread = watch.thread
    assert thread is not None
    thread.join(TIMEOUT)
    assert not thread.is_alive() and watch.thread is None
    assert run(round_trip()) == {"type": "x"}


def test_waiters_of_a_closed_loop_are_dropped(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeup, "WATCH_SLICE", 0.05)
    layer = make(wakeup="thread")
    loop = asyncio.new_event_loop()
    task = loop.create_task(layer.receive("closed.loop"))
    loop.run_until_complete(asyncio.sleep(0.02))
    loop.close()  # without cancelling the receive: its coroutine never runs again
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # abandoned on purpose
    watch = _watch(layer, "closed.loop")
    deadline = time.monotonic() + TIMEOUT
    while watch.by_loop:
        assert time.monotonic() < deadline, "the closed loop's waiter was never dropped"
        time.sleep(0.01)
    assert not watch.thread_wanted
    # Nothing was taken: the next receive, on a live loop, gets the message.
    layer.sync_layer.send("closed.loop", {"type": "x"})
    assert run(layer.receive("closed.loop")) == {"type": "x"}


# -- FD watches ----------------------------------------------------------------------------------


def _fifos(prefix: str) -> list[str]:
    return glob.glob(f"/dev/shm/rbuf.{prefix}~w~*")


def test_fd_wakeup_uses_no_helper_thread(make: Any, prefix: str) -> None:
    layer = make(wakeup="fd")

    async def main() -> Any:
        waiting = asyncio.create_task(layer.receive("fd.q"))
        await asyncio.sleep(0.02)
        assert len(_fifos(prefix)) == 1
        layer.sync_layer.send("fd.q", {"type": "x"})  # from outside the loop's code path
        return await asyncio.wait_for(waiting, TIMEOUT)

    assert run(main()) == {"type": "x"}
    watch = _watch(layer, "fd.q")
    assert watch.thread is None and watch.fd_watches


def test_fd_spin_lets_other_tasks_run_and_takes_without_sleeping(make: Any) -> None:
    """With spin_us the receive looks between loop iterations: other tasks keep running, and a
    message that comes within the budget is taken with no waiter, armed watch or kernel sleep."""
    layer = make(wakeup="fd", spin_us=5_000_000)  # longer than the test: it never sleeps

    async def main() -> tuple[Any, Any, int]:
        routed = await layer.new_channel()
        got = []
        for target in ("spin.plain", routed):
            ticks = 0
            receiving = asyncio.create_task(layer.receive(target))

            async def ticker(receiving: asyncio.Task[Any]) -> None:
                nonlocal ticks
                while not receiving.done():
                    ticks += 1
                    await asyncio.sleep(0)

            ticking = asyncio.create_task(ticker(receiving))
            await asyncio.sleep(0.05)
            assert not receiving.done() and ticks > 10, ticks  # the loop was never blocked
            layer.sync_layer.send(target, {"type": "spun", "to": target})
            got.append(await asyncio.wait_for(receiving, TIMEOUT))
            await ticking
        return got[0], got[1], ticks

    plain, routed_msg, _ = run(main())
    assert plain == {"type": "spun", "to": "spin.plain"}
    assert routed_msg["type"] == "spun"
    for watch in layer._engine.watches.values():
        # Spinning polls the loop's FD watch (lock-free) but never arms it or registers.
        assert watch.thread is None and not watch.by_loop
        assert all(lw.state != wakeup.ARMED for lw in watch.fd_watches.values())


def test_fd_spin_cancelled_takes_nothing_and_expired_spin_sleeps(make: Any) -> None:
    layer = make(wakeup="fd", spin_us=5_000_000)
    short = make(wakeup="fd", spin_us=2_000)

    async def main() -> Any:
        spinning = asyncio.create_task(layer.receive("spin.cancel"))
        await asyncio.sleep(0.02)
        spinning.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spinning
        layer.sync_layer.send("spin.cancel", {"type": "kept"})
        assert layer.sync_layer.receive(["spin.cancel"]) == ("spin.cancel", {"type": "kept"})

        # A 2 ms budget runs out: the receive then sleeps on its FD watch, idle.
        waiting = asyncio.create_task(short.receive("spin.sleep"))
        await asyncio.sleep(0.1)
        watch = _watch(short, "spin.sleep")
        assert watch.by_loop and watch.fd_watches
        start = time.process_time()
        await asyncio.sleep(0.3)
        assert time.process_time() - start < 0.05  # asleep, not spinning
        short.sync_layer.send("spin.sleep", {"type": "late"})
        return await asyncio.wait_for(waiting, TIMEOUT)

    assert run(main()) == {"type": "late"}


def test_fd_watch_of_a_closed_loop_is_closed(make: Any, prefix: str) -> None:
    layer = make(wakeup="fd")
    loop = asyncio.new_event_loop()
    task = loop.create_task(layer.receive("fd.closed"))
    loop.run_until_complete(asyncio.sleep(0.02))
    loop.close()
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # abandoned on purpose
    watch = _watch(layer, "fd.closed")
    assert len(watch.fd_watches) == 1 and len(_fifos(prefix)) == 1
    # The next wait (another loop) notices the closed one and drops it.

    async def main() -> Any:
        waiting = asyncio.create_task(layer.receive("fd.closed"))
        await asyncio.sleep(0.02)
        await layer.send("fd.closed", {"type": "x"})
        return await asyncio.wait_for(waiting, TIMEOUT)

    assert run(main()) == {"type": "x"}
    assert loop not in watch.fd_watches and loop not in watch.by_loop
    assert len(_fifos(prefix)) == 1  # the new loop's (asyncio.run's loop, closed now too)


def test_fd_watch_idle_close_and_lost_poke(make: Any, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeup, "FD_SLICE", 0.05)
    monkeypatch.setattr(wakeup, "IDLE_EXIT", 0.1)
    layer = make(wakeup="fd")

    async def main() -> None:
        waiting = asyncio.create_task(layer.receive("fd.lost"))
        await asyncio.sleep(0.02)
        watch = _watch(layer, "fd.lost")
        (lw,) = watch.fd_watches.values()
        assert lw.state == wakeup.ARMED
        # A sender that died between disarming the row and poking: the record
        # is linked, no byte ever comes. The slice timer covers it.
        lw.core.drain()
        lw.loop.remove_reader(lw.fd)
        layer.sync_layer.send("fd.lost", {"type": "x"})
        assert await asyncio.wait_for(waiting, TIMEOUT) == {"type": "x"}
        # Idle: the watch is closed on the loop after _IDLE_EXIT.
        deadline = time.monotonic() + TIMEOUT
        while watch.fd_watches:
            assert time.monotonic() < deadline, "the idle FD watch was never closed"
            await asyncio.sleep(0.02)
        assert _fifos(prefix) == []

    run(main())


def test_fd_falls_back_to_the_thread_when_the_waiter_table_is_full(make: Any, prefix: str) -> None:
    layer = make(wakeup="fd", waiters=1)
    blocker = layer.sync_layer.segment.watch((b"other",))  # takes the only row
    try:
        async def main() -> Any:
            waiting = asyncio.create_task(layer.receive("fd.full"))
            await asyncio.sleep(0.02)
            await layer.send("fd.full", {"type": "x"})
            return await asyncio.wait_for(waiting, TIMEOUT)

        # The helper thread cannot get a row either while the blocker holds it:
        # free it once the fallback is chosen.
        async def scenario() -> Any:
            waiting = asyncio.create_task(main())
            await asyncio.sleep(0.05)
            watch = _watch(layer, "fd.full")
            assert not watch.fd_watches and watch.thread is not None
            blocker.close()
            return await waiting

        assert run(scenario()) == {"type": "x"}
    finally:
        blocker.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_layer_made_before_fork_works_in_the_child(make: Any) -> None:
    layer = make()
    parent_channel = run(layer.new_channel())
    assert run(asyncio.wait_for(layer.send(parent_channel, {"type": "x"}), TIMEOUT)) is None
    assert run(layer.receive(parent_channel)) == {"type": "x"}  # helper thread running in the parent
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            async def child() -> None:
                mine = await layer.new_channel()
                assert mine.split("!")[0] != parent_channel.split("!")[0]
                waiting = asyncio.create_task(layer.receive(mine))
                await asyncio.sleep(0.02)
                await layer.send(mine, {"type": "child"})
                assert await asyncio.wait_for(waiting, TIMEOUT) == {"type": "child"}
                await layer.send(parent_channel, {"type": "from.child"})

            asyncio.run(child())
            code = 0
        finally:
            os.write(write_fd, bytes([code]))
            os._exit(code)
    os.close(write_fd)
    assert os.read(read_fd, 1) == b"\x00"
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert run(asyncio.wait_for(layer.receive(parent_channel), TIMEOUT)) == {"type": "from.child"}


def test_group_send_skips_full_members_without_warning(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    layer = make(capacity=1)
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        await layer.group_add("g", "member.full")
        await layer.group_add("g", "member.ok")
        await layer.send("member.full", {"type": "x"})
        await layer.group_send("g", {"type": "g"})
        assert await layer.receive("member.ok") == {"type": "g"}

    run(main())
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]


def test_close_and_close_pools_are_no_ops(make: Any) -> None:
    layer = make()

    async def main() -> None:
        await layer.close()
        await layer.close_pools()
        await layer.send("after.close", {"type": "x"})
        assert await layer.receive("after.close") == {"type": "x"}

    run(main())
    assert layer.extensions == ["groups", "flush"]
    assert "prefix=" in repr(layer)
