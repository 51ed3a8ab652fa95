"""Grouped records (``ipc_layer.grouped``): one ``send_group`` record for a process's channels.

The members of a group that share a process queue (``name!a``, ``name!b``)
get one record; a receive on ``name!`` splits it, returns the first message
and keeps the others pending in the process, ahead of anything newer. The
Channels 4 adapter wakes its waiters for pending messages.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from ipc_layer import IPCChannelLayer
from ipc_layer.grouped import split
from tests.support import TEST_SEGMENT_SIZE

pytestmark = pytest.mark.timeout(60)


def make(prefix: str, **config: Any) -> IPCChannelLayer:
    config.setdefault("segment_size", TEST_SEGMENT_SIZE)
    return IPCChannelLayer(prefix=prefix, **config)


def queue_of(channel: str) -> str:
    return channel[: channel.index("!") + 1]


def test_one_record_per_process_queue_split_on_receive(prefix: str) -> None:
    layer = make(prefix)
    base = layer.new_process_channel("srv")
    members = [base + tag for tag in ("a", "bb", "c")]
    for member in members:
        layer.group_add("room", member)
    layer.group_add("room", "plain.member")
    layer.send_group("room", {"type": "m", "body": [1]})
    queue = queue_of(base)
    assert layer.segment.queue_stats(queue.encode())["pending"] == 1  # one record, three messages
    got = [layer.receive([queue]) for _ in range(3)]
    assert sorted(channel for channel, _ in got) == sorted(members)
    got[0][1]["body"].append(2)  # each message is its own dict
    assert got[1][1] == got[2][1] == {"type": "m", "body": [1]}
    assert layer.receive([queue]) == (None, None)
    assert layer.receive(["plain.member"]) == ("plain.member", {"type": "m", "body": [1]})


def test_pending_comes_first_is_shared_and_answers_a_blocking_receive(prefix: str) -> None:
    first, second = make(prefix), make(prefix, blocking_timeout=5)
    base = first.new_process_channel("srv")
    queue = queue_of(base)
    for tag in ("x", "y"):
        first.group_add("g", base + tag)
    first.send_group("g", {"type": "old"})
    first.send(base + "z", {"type": "new"})
    assert first.receive([queue])[1] == {"type": "old"}
    start = time.monotonic()
    assert second.receive([queue], block=True)[1] == {"type": "old"}  # pending, not the segment
    assert time.monotonic() - start < 1.0
    assert second.receive([queue]) == (base + "z", {"type": "new"})


def test_pending_expires_and_flush_drops_it(prefix: str) -> None:
    layer = make(prefix, expiry=0.2)
    base = layer.new_process_channel("srv")
    queue = queue_of(base)
    for tag in ("a", "b", "c"):
        layer.group_add("g", base + tag)
    layer.send_group("g", {"type": "x"})
    assert layer.receive([queue])[0] is not None
    assert layer.pending_count(queue) == 2
    time.sleep(0.3)
    assert layer.receive([queue]) == (None, None)
    assert layer.pending_count(queue) == 0
    layer.send_group("g", {"type": "y"})
    assert layer.receive([queue])[0] is not None
    layer.flush()
    assert layer.pending_count(queue) == 0 and layer.receive([queue]) == (None, None)


def test_forked_child_does_not_inherit_pending(prefix: str) -> None:
    layer = make(prefix)
    base = layer.new_process_channel("srv")
    queue = queue_of(base)
    for tag in ("a", "b"):
        layer.group_add("g", base + tag)
    layer.send_group("g", {"type": "x"})
    assert layer.receive([queue])[0] is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0 if layer.pending_count(queue) == 0 and layer.receive([queue]) == (None, None) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert layer.receive([queue])[0] is not None  # still the parent's


def test_big_group_is_split_over_records_that_fit(prefix: str) -> None:
    layer = make(prefix, max_message_size=4096)
    base = layer.new_process_channel("srv")
    queue = queue_of(base)
    members = [f"{base}{i:04d}{'t' * 40}" for i in range(300)]
    for member in members:
        layer.group_add("big", member)
    layer.send_group("big", {"type": "x", "pad": "p" * 3000})
    records = layer.segment.queue_stats(queue.encode())["pending"]
    assert 2 <= records < 300
    got = []
    while (result := layer.receive([queue]))[0] is not None:
        got.append(result[0])
    assert sorted(got) == sorted(members)


def test_full_process_queue_skips_the_record(prefix: str) -> None:
    layer = make(prefix, capacity=1)
    base = layer.new_process_channel("srv")
    queue = queue_of(base)
    for tag in ("a", "b"):
        layer.group_add("g", base + tag)
    layer.send(base + "z", {"type": "fill"})
    layer.send_group("g", {"type": "x"})  # skipped: never raises
    assert layer.receive([queue]) == (base + "z", {"type": "fill"})
    assert layer.receive([queue]) == (None, None)


def test_split_refuses_malformed_records() -> None:
    with pytest.raises(ValueError, match="malformed grouped record on queue 'q!'"):
        split("q!", b"\x7f\x01\x00\x01a\x80")  # one tag is never grouped
    for truncated in (b"\x7f\x02", b"\x7f\x02\x00\x01a\x05ab", b"\x7f\x02\x00\x01\xff\x01b\x80"):
        with pytest.raises(ValueError, match="malformed grouped record"):
            split("q!", truncated)
    assert split("q!", b"\x7f\x02\x00\x01a\x02bc\x80") == (["q!a", "q!bc"], b"\x80")


def test_aio_two_receivers_of_one_loop_both_get_theirs(prefix: str) -> None:
    """One poke wakes one waiter per loop; the other waiter's message is pending in the
    process, not in the segment, so the adapter must wake it rather than re-arm."""
    pytest.importorskip("channels")
    from ipc_layer.aio import IPCChannelLayer as AioLayer

    layer = AioLayer(prefix=prefix, segment_size=TEST_SEGMENT_SIZE)
    sync = make(prefix)
    base = sync.new_process_channel("srv")
    queue = queue_of(base)
    for tag in ("a", "b"):
        sync.group_add("g", base + tag)

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(layer.receive(queue)) for _ in range(2)]
        await asyncio.sleep(0.05)  # both asleep, the loop's FD watch armed
        sync.send_group("g", {"type": "both"})
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 0.5))  # well inside the 1 s slice

    try:
        assert asyncio.run(main()) == [{"type": "both"}, {"type": "both"}]
        assert sync.pending_count(queue) == 0
    finally:
        for watch in layer._engine.watches.values():
            with watch.cond:
                watch.close_fd_watches()
