"""A Hypothesis state machine: the real segment against a plain Python model.

The model mirrors the core's documented semantics exactly, including *when*
expired records and members are swept (a record with deadline 1 is expired
from the start; it stays counted in ``pending`` and holds its cells until a
sweep reaches it), so that after every step the invariant can compare
statistics, names and the number of free cells, and run ``Segment.check()``.

Time is deterministic: deadlines are 0 (never), 1 (already past) or far in
the future.  Fan-out copies (and the records of one send_batch) share one
enqueue time, so a receive over several queues breaks the tie by the order of
the names it was given.  Set members may be routed (``queue_len``: copies go
to ``member[:queue_len]``, tagged copies start with ``len(tag)`` and the
tag) and may state a capacity; a set's members are walked newest first.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from _ringbuf import QueueFull, RecordTooLarge, Segment

FAR = 1 << 62
QUEUES = [b"qa", b"qb", b"qc", b"qd"]
SETS = [b"s1", b"qa"]  # a set may share a queue's name: different kinds of key
MAX_RECORD = 1280  # small, so a receive_batch often fills its buffer
CELL_PAYLOAD = 256 - 8
FIRST_PAYLOAD = CELL_PAYLOAD - 24

deadlines = st.sampled_from([0, 1, FAR])
capacities = st.sampled_from([0, 0, 1, 2, 3])
payloads = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=FIRST_PAYLOAD - 2, max_size=FIRST_PAYLOAD + CELL_PAYLOAD + 2),
    st.integers(0, 3).map(lambda k: bytes([k]) * (FIRST_PAYLOAD + k * CELL_PAYLOAD)),
)
queue_lists = st.lists(st.sampled_from(QUEUES), min_size=1, max_size=4, unique=True)
# (member name, queue_len choices): plain names, and process-style names routed to a prefix.
# Several route to qa, so tagged copies for different members meet in one queue.
MEMBERS = {b"qa": [2], b"qb": [2], b"qa!t1": [2, 5], b"qa!t22": [2, 6], b"qa!t333": [2],
           b"qc!z": [2, 4]}
member_deadlines = st.sampled_from([0, 0, FAR, 1])  # members mostly live
members = st.sampled_from(sorted(MEMBERS)).flatmap(
    lambda m: st.tuples(st.just(m), st.sampled_from(MEMBERS[m])))


def cells_needed(n: int) -> int:
    if n <= FIRST_PAYLOAD:
        return 1
    return 1 + (n - FIRST_PAYLOAD + CELL_PAYLOAD - 1) // CELL_PAYLOAD


def expired(deadline: int) -> bool:
    return deadline == 1


@dataclass
class Rec:
    data: bytes
    deadline: int
    order: int  # stands for the enqueue time; fan-out copies share one


@dataclass
class Queue:
    records: list[Rec] = field(default_factory=list)
    capacity: int = 0
    sent: int = 0
    full: int = 0


@dataclass
class Member:
    deadline: int
    queue_len: int
    capacity: int


class Model:
    def __init__(self) -> None:
        self.clock = itertools.count()
        self.reset()

    def reset(self) -> None:
        self.queues: dict[bytes, Queue] = {}
        # set -> member -> row (swept or not), in insertion order; the core walks newest first
        self.sets: dict[bytes, dict[bytes, Member]] = {}
        self.sent = self.received = self.full = self.expired = 0

    # sweeps, exactly where the core does them
    def live_head(self, q: Queue) -> None:
        while q.records and expired(q.records[0].deadline):
            q.records.pop(0)
            self.expired += 1

    def purge(self, q: Queue) -> None:
        keep = [r for r in q.records if not expired(r.deadline)]
        self.expired += len(q.records) - len(keep)
        q.records = keep

    def live_set(self, name: bytes) -> dict[bytes, Member]:
        rows = self.sets.get(name, {})
        for m in [m for m, row in rows.items() if expired(row.deadline)]:
            del rows[m]
        if not rows:
            self.sets.pop(name, None)
        return rows

    def enqueue(self, name: bytes, data: bytes, deadline: int, capacity: int, order: int) -> bool:
        q = self.queues.setdefault(name, Queue())
        if capacity:
            q.capacity = capacity
        if q.capacity and len(q.records) >= q.capacity:
            self.purge(q)
            if len(q.records) >= q.capacity:
                q.full += 1
                self.full += 1
                return False
        q.records.append(Rec(data, deadline, order))
        q.sent += 1
        self.sent += 1
        return True


class SegmentVsModel(RuleBasedStateMachine):
    prefix = "unset"
    runs = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.seg = Segment(f"{self.prefix}.{next(self.runs)}", size=2 << 20, slots=64, waiters=4,
                           max_record=MAX_RECORD)
        self.model = Model()

    def teardown(self) -> None:
        import _ringbuf

        self.seg.close()
        _ringbuf.unlink(self.seg.prefix, force=True)

    @rule(q=st.sampled_from(QUEUES), data=payloads, deadline=deadlines, capacity=capacities)
    def send(self, q: bytes, data: bytes, deadline: int, capacity: int) -> None:
        ok = self.model.enqueue(q, data, deadline, capacity, next(self.model.clock))
        if ok:
            self.seg.send(q, data, deadline_ns=deadline, capacity=capacity)
        else:
            with pytest.raises(QueueFull) as info:
                self.seg.send(q, data, deadline_ns=deadline, capacity=capacity)
            assert type(info.value) is QueueFull and q.decode() in str(info.value)

    @rule(q=st.sampled_from(QUEUES), batch=st.lists(payloads, max_size=5), deadline=deadlines,
          capacity=capacities)
    def send_batch(self, q: bytes, batch: list[bytes], deadline: int, capacity: int) -> None:
        order = next(self.model.clock)  # one lock hold, one enqueue time
        n = 0
        for data in batch:
            if not self.model.enqueue(q, data, deadline, capacity, order):
                break
            n += 1
        assert self.seg.send_batch(q, batch, deadline_ns=deadline, capacity=capacity) == n

    @rule(q=st.sampled_from(QUEUES))
    def send_too_large(self, q: bytes) -> None:
        with pytest.raises(RecordTooLarge):
            self.seg.send(q, bytes(MAX_RECORD + 1))

    def pick_oldest(self, names: list[bytes]) -> tuple[int, Queue] | None:
        best = None
        for i, name in enumerate(names):
            q = self.model.queues.get(name)
            if q is None:
                continue
            self.model.live_head(q)
            if q.records and (best is None or q.records[0].order < best[1].records[0].order):
                best = (i, q)
        return best

    @rule(names=queue_lists)
    def receive(self, names: list[bytes]) -> None:
        best = self.pick_oldest(names)
        expect = None
        if best is not None:
            expect = (best[0], best[1].records.pop(0).data)
            self.model.received += 1
        assert self.seg.receive(names, timeout=0) == expect

    @rule(names=queue_lists, most=st.integers(1, 6))
    def receive_batch(self, names: list[bytes], most: int) -> None:
        expect: list[tuple[int, bytes]] = []
        used = 0
        best = self.pick_oldest(names)
        while best is not None:
            data = best[1].records[0].data
            if used + len(data) > MAX_RECORD:  # the batch must fit one max_record buffer
                break
            best[1].records.pop(0)
            self.model.received += 1
            expect.append((best[0], data))
            used += len(data)
            if len(expect) == most:
                break
            best = self.pick_oldest(names)
        assert self.seg.receive_batch(names, most, timeout=0) == expect

    @rule(names=queue_lists)
    def wait(self, names: list[bytes]) -> None:
        live = False
        for name in names:
            q = self.model.queues.get(name)
            if q is not None:
                self.model.live_head(q)
                live = live or bool(q.records)
        assert self.seg.wait(names, timeout=0) is live

    @rule(q=st.sampled_from(QUEUES))
    def queue_stats(self, q: bytes) -> None:
        mq = self.model.queues.get(q)
        got = self.seg.queue_stats(q)
        if mq is None:
            assert got == {"sent": 0, "full": 0, "pending": 0, "oldest_age_ns": 0, "capacity": 0,
                           "waiters": 0}
            return
        self.model.live_head(mq)
        assert (got["sent"], got["full"], got["pending"], got["capacity"], got["waiters"]) == (
            mq.sent, mq.full, len(mq.records), mq.capacity, 0)
        if not mq.records:
            assert got["oldest_age_ns"] == 0

    @rule(s=st.sampled_from(SETS),
          adds=st.lists(st.tuples(members, member_deadlines, capacities), min_size=1, max_size=3))
    def set_add(self, s: bytes, adds: list[tuple[tuple[bytes, int], int, int]]) -> None:
        for (m, queue_len), deadline, capacity in adds:
            # A re-add refreshes the row in place (it keeps its place in the member list).
            self.model.sets.setdefault(s, {})[m] = Member(deadline, queue_len, capacity)
            self.seg.set_add(s, m, deadline_ns=deadline, queue_len=queue_len, capacity=capacity)

    @rule(s=st.sampled_from(SETS), m=st.sampled_from(sorted(MEMBERS)))
    def set_discard(self, s: bytes, m: bytes) -> None:
        rows = self.model.sets.get(s)
        if rows is not None:
            rows.pop(m, None)
            if not rows:
                del self.model.sets[s]
        self.seg.set_discard(s, m)

    @rule(s=st.sampled_from(SETS))
    def set_members(self, s: bytes) -> None:
        expect = sorted(self.model.live_set(s))
        assert sorted(self.seg.set_members(s)) == expect

    @rule(s=st.sampled_from(SETS), data=payloads, deadline=deadlines, capacity=capacities,
          tagged=st.booleans())
    def fanout(self, s: bytes, data: bytes, deadline: int, capacity: int, tagged: bool) -> None:
        order = next(self.model.clock)
        sent = skipped = 0
        rows = self.model.live_set(s)
        for m in reversed(list(rows)):  # newest member first
            row = rows[m]
            qname, tag = m[:row.queue_len], m[row.queue_len:]
            q = self.model.queues.get(qname)
            # The member's capacity, else the queue's stored one, else the fan-out's.
            cap = row.capacity or (0 if q is not None and q.capacity else capacity)
            record = bytes([len(tag)]) + tag + data if tagged else data
            if self.model.enqueue(qname, record, deadline, cap, order):
                sent += 1
            else:
                skipped += 1
        got = self.seg.fanout(s, data, deadline_ns=deadline, capacity=capacity, tagged=tagged)
        assert got == (sent, skipped)

    @rule(dice=st.integers(0, 7))
    def flush(self, dice: int) -> None:
        if dice:  # rarely: a flush wipes the state every other rule builds up
            return
        self.model.reset()
        self.seg.flush()

    @rule()
    def stats_reset(self) -> None:
        m = self.model
        m.sent = m.received = m.full = m.expired = 0
        for q in m.queues.values():
            q.sent = q.full = 0
        self.seg.stats_reset()

    @rule()
    def recover(self) -> None:
        for q in self.model.queues.values():
            self.model.purge(q)
        for s in list(self.model.sets):
            self.model.live_set(s)
        assert self.seg.recover() == 0  # no dead waiters here

    @invariant()
    def agrees(self) -> None:
        self.seg.check()
        m = self.model
        info = self.seg.info()
        used = sum(cells_needed(len(r.data)) for q in m.queues.values() for r in q.records)
        assert info["cells_total"] - info["cells_free"] == used
        assert (info["queues"], info["sets"], info["members"]) == (
            len(m.queues), len(m.sets), sum(len(rows) for rows in m.sets.values()))
        assert (info["sent"], info["received"], info["full"], info["expired"]) == (
            m.sent, m.received, m.full, m.expired)
        assert info["waiters_used"] == 0 and info["repairs"] == 0
        assert sorted(self.seg.list_queues()) == sorted(m.queues)
        assert sorted(self.seg.list_sets()) == sorted(m.sets)


def test_segment_matches_model(prefix: str) -> None:
    SegmentVsModel.prefix = prefix
    run_state_machine_as_test(
        SegmentVsModel,
        settings=settings(max_examples=150, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
