"""``ipc_layer.local_store``: one store for messages already taken off shared memory.

Its rules (module docstring): one owner per (prefix, queue), order per
channel and across the queue, one expiry (taken time + expiry), one bound
(the queue's capacity per channel), cleared in a forked child.
"""

from __future__ import annotations

import os
import time

from ipc_layer.local_store import LocalStore

FAR = 1 << 62  # a deadline that never passes in a test


def test_queue_wide_and_per_channel_takes_keep_order() -> None:
    store = LocalStore()
    store.put_many("p", "q!", [("q!a", {"n": 1}), ("q!b", {"n": 2}), ("q!a", {"n": 3})], FAR, 0)
    assert store.count("p", "q!") == 3 and sorted(store.channels("p", "q!")) == ["q!a", "q!b"]
    assert store.take("p", "q!", "q!a") == {"n": 1}
    # Queue-wide: the oldest held message of any channel; the one handed out is skipped.
    assert store.take_any("p", ("other!", "q!")) == ("q!b", {"n": 2})
    assert store.take_any("p", ("q!",)) == ("q!a", {"n": 3})
    assert store.take_any("p", ("q!",)) is None and store.take("p", "q!", "q!a") is None
    assert not store


def test_owner_is_prefix_and_queue() -> None:
    store = LocalStore()
    store.put("p1", "q!", "q!a", {"n": 1}, FAR, 0)
    assert store.take("p2", "q!", "q!a") is None and store.take_any("p2", ("q!",)) is None
    assert store.take("p1", "other!", "q!a") is None
    store.put("p2", "q!", "q!a", {"n": 2}, FAR, 0)
    store.clear("p1")
    assert store.count("p1", "q!") == 0 and store.take("p2", "q!", "q!a") == {"n": 2}


def test_bound_per_channel_drops_and_counts() -> None:
    store = LocalStore()
    assert store.put("p", "q!", "q!a", {"n": 1}, FAR, 2)
    assert store.put("p", "q!", "q!a", {"n": 2}, FAR, 2)
    assert not store.put("p", "q!", "q!a", {"n": 3}, FAR, 2)  # the channel holds its capacity
    assert store.put("p", "q!", "q!b", {"n": 4}, FAR, 2)  # per channel, not per queue
    assert store.dropped("p", "q!") == 1
    assert [store.take("p", "q!", "q!a") for _ in range(3)] == [{"n": 1}, {"n": 2}, None]


def test_expiry_is_a_deadline_set_when_taken_off_shared_memory_and_swept() -> None:
    store = LocalStore()
    now = time.monotonic_ns()
    store.put("p", "q!", "q!old", {"n": 1}, now + 50_000_000, 0)  # 50 ms
    store.put("p", "q!", "q!new", {"n": 2}, FAR, 0)
    time.sleep(0.1)
    assert store.take("p", "q!", "q!old") is None
    # The sweep (at the first take after the earliest deadline) released the abandoned channel.
    assert store.channels("p", "q!") == ["q!new"] and store.count("p", "q!") == 1
    store.put("p", "q!", "q!x", {"n": 3}, time.monotonic_ns() - 1, 0)  # already past
    assert store.take_any("p", ("q!",)) == ("q!new", {"n": 2})
    assert store.take_any("p", ("q!",)) is None and not store


def test_many_channel_takes_do_not_grow_the_queue_order() -> None:
    store = LocalStore()
    for _ in range(50):
        store.put_many("p", "q!", [(f"q!{i}", {"n": i}) for i in range(100)], FAR, 0)
        for i in range(99):
            assert store.take("p", "q!", f"q!{i}") == {"n": i}
    held = store._queues[("p", "q!")]
    assert held.live == 50 and len(held.order) <= 2 * held.live + 64 + 100


def test_a_forked_child_starts_empty() -> None:
    store = LocalStore()
    store.put("p", "q!", "q!a", {"n": 1}, FAR, 0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = not store and store.take("p", "q!", "q!a") is None
        store.put("p", "q!", "q!a", {"n": 2}, FAR, 0)  # its lock works
        os._exit(0 if ok and store.take("p", "q!", "q!a") == {"n": 2} else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.take("p", "q!", "q!a") == {"n": 1}  # still the parent's
