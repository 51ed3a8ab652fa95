"""The kill loop: SIGKILL one process at a random moment, respawn it, repeat.

Under load: two senders (to three capacity-limited queues, and tagged fan-out
to a set of two member queues plus a routed member that comes and goes),
three receivers (blocking receive; wait() then
receive(timeout=0); receive with a spin budget) and a churn process that
adds, refreshes, sweeps and discards set members.  One process at a time is
SIGKILLed after a random delay and respawned, ``--kills`` times (default 30;
``--kills 1000`` for the long run); ``Segment.check()`` runs after every kill.

Every process keeps a write-ahead log, appended with one unbuffered write per
line so that a SIGKILL leaves the history up to the record in hand:

- sender ``s<id>.log``: ``S <seq> <target>`` before a send (target: queue
  index or ``F`` for fan-out), ``D <seq>`` (``D <seq> <sent> <skipped>``)
  after it returned;
- receiver ``r<id>.log``: ``R <queue index> <sender> <seq>`` per record.

Afterwards the checker verifies: the invariants (``check()``), no waiter
left once every process is gone and ``recover()`` ran, no queue under a name
nobody sends to (a misrouted fan-out copy), capacity back to full after a
drain (all cells free, each limited queue takes exactly its capacity again),
every payload and tag intact, nothing duplicated, each sender's records in order per queue and
receiver, every confirmed record delivered except at most one per receiver
kill, and at most one in-flight record per sender kill.  It reports kills,
EOWNERDEAD repairs (``info()['repairs']``) and records lost.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import random
import re
import secrets
import signal
import struct
import time
from pathlib import Path

import pytest

from _ringbuf import QueueFull, Segment, now_ns

pytestmark = [pytest.mark.integration, pytest.mark.killloop]

SIZE = 32 << 20
SLOTS = 1024
CAPACITY = 64
QUEUES = [b"kl.q0", b"kl.q1", b"kl.q2"]  # indexes 0-2: capacity-limited, plain sends
MEMBERS = [b"kl.m0", b"kl.m1"]           # indexes 3-4: fan-out members, always in the set
EXTRA = b"kl.extra"                       # index 5: a member that comes and goes (not accounted)
EXTRA_MEMBER = EXTRA + b"!tag"            # routed: its copies go to EXTRA, tagged b"!tag"
GROUP = b"kl.grp"
NAMES = QUEUES + MEMBERS + [EXTRA]
BACKLOG = 500  # senders pause fan-out while a member queue holds more

RUN, STOP_WRITERS, STOP_ALL = 0, 1, 2


def filler(sid: int, seq: int) -> bytes:
    """Most records take one to four cells; one in eight is 16-48 KiB, so that copying it
    keeps the lock long enough for kills to land inside critical sections."""
    n = (seq * 37 + sid) % 700
    if seq % 8 == 3:
        n = 16384 + (seq * 7919) % 32768
    return bytes([seq & 0xFF]) * n


def payload(sid: int, seq: int) -> bytes:
    return struct.pack("<II", sid, seq) + filler(sid, seq)


def untag(idx: int, data: bytes) -> bytes | None:
    """Strip the tag frame of a fan-out copy (queues 3-5), checking it is the member's."""
    if idx < len(QUEUES):
        return data
    tag = EXTRA_MEMBER[len(EXTRA):] if idx == len(NAMES) - 1 else b""
    if data[:1 + len(tag)] != bytes([len(tag)]) + tag:
        return None
    return data[1 + len(tag):]


def parse(data: bytes | None) -> tuple[int, int] | None:
    if data is None or len(data) < 8:
        return None
    sid, seq = struct.unpack_from("<II", data)
    if data[8:] != filler(sid, seq):
        return None
    return sid, seq


def open_log(path: Path):
    """Append-only, unbuffered; terminate a line a killed predecessor left half-written."""
    f = open(path, "ab", buffering=0)  # noqa: SIM115 (returned: the caller closes it)
    if f.tell():
        with open(path, "rb") as r:
            r.seek(-1, os.SEEK_END)
            if r.read(1) != b"\n":
                f.write(b"\n")
    return f


def last_started(path: Path) -> int:
    """The last sequence number a sender's log says it was about to send (-1 if none)."""
    if not path.exists():
        return -1
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 8192))
        tail = f.read()
    for line in reversed(tail.split(b"\n")[:-1]):  # complete lines only
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"S":
            return int(parts[1])
    return -1


# -- the processes --------------------------------------------------------------------


def sender_main(prefix: str, sid: int, logdir: str, stop) -> None:
    seg = Segment(prefix, create=False)
    path = Path(logdir) / f"s{sid}.log"
    seq = last_started(path) + 1  # the in-flight record of a killed predecessor is not resent
    log = open_log(path)
    rng = random.Random(secrets.randbits(32))
    while stop.value == RUN:
        data = payload(sid, seq)
        if rng.random() < 0.2:
            if seq % 16 == 0:
                while (stop.value == RUN and
                       max(seg.queue_stats(m)["pending"] for m in MEMBERS) > BACKLOG):
                    time.sleep(0.001)
            log.write(b"S %d F\n" % seq)
            sent, skipped = seg.fanout(GROUP, data, tagged=True)
            log.write(b"D %d %d %d\n" % (seq, sent, skipped))
        else:
            qi = rng.randrange(len(QUEUES))
            log.write(b"S %d %d\n" % (seq, qi))
            while True:
                try:
                    seg.send(QUEUES[qi], data, capacity=CAPACITY)
                    break
                except QueueFull:  # receivers drain until the senders are gone
                    time.sleep(0.0005)
            log.write(b"D %d\n" % seq)
        seq += 1


def receiver_main(prefix: str, rid: int, logdir: str, stop) -> None:
    seg = Segment(prefix, create=False)
    log = open_log(Path(logdir) / f"r{rid}.log")
    style = rid % 3
    while True:
        if style == 0:
            got = seg.receive(NAMES, timeout=0.1)
        elif style == 1:  # the event-loop pattern: wait in a helper, take without blocking
            got = seg.receive(NAMES, timeout=0) if seg.wait(NAMES, timeout=0.1) else None
        else:
            got = seg.receive(NAMES, timeout=0.1, spin_us=50)
        if got is None:
            if stop.value == STOP_ALL:
                return
            continue
        idx, data = got
        rec = parse(untag(idx, data))
        if rec is None:
            log.write(b"BAD %d %s\n" % (idx, data[:40].hex().encode()))
        else:
            log.write(b"R %d %d %d\n" % (idx, rec[0], rec[1]))


def churn_main(prefix: str, stop) -> None:
    seg = Segment(prefix, create=False)
    n = 0
    while stop.value == RUN:
        n += 1
        for m in MEMBERS:
            seg.set_add(GROUP, m)  # refresh: they must never drop out
        seg.set_add(GROUP, EXTRA_MEMBER, deadline_ns=now_ns() + 2_000_000 if n % 2 else 0,
                    queue_len=len(EXTRA))
        ghost = b"kl.ghost%d!x" % (n % 4)  # expired at once, never gets a copy
        seg.set_add(GROUP, ghost, deadline_ns=1, queue_len=len(ghost) - 2)
        seg.set_members(GROUP)  # sweeps the ghosts
        if n % 3 == 0:
            seg.set_discard(GROUP, EXTRA_MEMBER)
        seg.recover()  # sweeps dead waiters and expired records: a long critical section
        if n % 50 == 0:
            time.sleep(0.001)


# -- the checker ---------------------------------------------------------------------------


_LINE = re.compile(rb"^(S) (\d+) ([0-9F])$|^(D) (\d+)(?: (\d+) (\d+))?$")


def read_sender_log(path: Path) -> tuple[dict[int, bytes], dict[int, tuple[int, int] | None]]:
    started: dict[int, bytes] = {}
    done: dict[int, tuple[int, int] | None] = {}
    for line in path.read_bytes().split(b"\n"):
        m = _LINE.match(line)
        if not m:
            continue
        if m.group(1):
            started[int(m.group(2))] = m.group(3)
        elif m.group(6) is not None:
            done[int(m.group(5))] = (int(m.group(6)), int(m.group(7)))
        else:
            done[int(m.group(5))] = None
    return started, done


def read_receiver_log(path: Path) -> tuple[list[tuple[int, int, int]], list[bytes]]:
    got: list[tuple[int, int, int]] = []
    bad: list[bytes] = []
    if not path.exists():
        return got, bad
    for line in path.read_bytes().split(b"\n"):
        parts = line.split()
        if len(parts) == 4 and parts[0] == b"R":
            got.append((int(parts[1]), int(parts[2]), int(parts[3])))
        elif parts and parts[0] == b"BAD":
            bad.append(line)
    return got, bad


def test_kill_loop(prefix: str, tmp_path: Path, kills: int, report_line) -> None:
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("fork")
    stop = ctx.RawValue("i", RUN)  # lock-free: a killed process can hold no lock on it
    seg = Segment(prefix, size=SIZE, slots=SLOTS)
    for m in MEMBERS:
        seg.set_add(GROUP, m)
    logdir = str(tmp_path)

    def spawn(role: tuple[str, int]):
        kind, i = role
        if kind == "sender":
            p = ctx.Process(target=sender_main, args=(prefix, i, logdir, stop))
        elif kind == "receiver":
            p = ctx.Process(target=receiver_main, args=(prefix, i, logdir, stop))
        else:
            p = ctx.Process(target=churn_main, args=(prefix, stop))
        p.start()
        return p

    roles = [("sender", 0), ("sender", 1), ("receiver", 0), ("receiver", 1), ("receiver", 2),
             ("churn", 0)]
    procs = {role: spawn(role) for role in roles}
    killed: collections.Counter[str] = collections.Counter()
    t0 = time.monotonic()
    try:
        time.sleep(0.3)  # let the load build up
        for k in range(kills):
            time.sleep(rng.uniform(0.001, 0.04))
            role = rng.choice(roles)
            p = procs[role]
            os.kill(p.pid, signal.SIGKILL)
            p.join(10)
            assert p.exitcode == -signal.SIGKILL, f"{role} exited with {p.exitcode} before the kill"
            killed[role[0]] += 1
            try:
                seg.check()
            except Exception as exc:
                raise AssertionError(f"after kill {k + 1} ({role}, seed {seed}): {exc}") from exc
            procs[role] = spawn(role)
        kill_time = time.monotonic() - t0

        # Stop the writers, then let the receivers drain and leave.  Nobody may hang.
        stop.value = STOP_WRITERS
        for role, p in procs.items():
            if role[0] != "receiver":
                p.join(30)
                assert p.exitcode == 0, f"{role} stuck or failed at stop: exit code {p.exitcode}"
        stop.value = STOP_ALL
        for role, p in procs.items():
            if role[0] == "receiver":
                p.join(30)
                assert p.exitcode == 0, f"{role} stuck or failed at stop: exit code {p.exitcode}"
    finally:
        for p in procs.values():
            if p.is_alive():
                p.kill()
                p.join(5)

    # -- the segment ------------------------------------------------------------------------
    seg.check()
    swept = seg.recover()  # waiter rows of receivers killed in their sleep
    info = seg.info()
    assert info["waiters_used"] == 0, f"stuck waiters: {info}"
    for name in NAMES:
        assert seg.queue_stats(name)["waiters"] == 0
    drained: list[tuple[int, int, int]] = []
    bad: list[bytes] = []
    stray = sorted(set(seg.list_queues()) - set(NAMES))
    assert not stray, f"records or queues under names nobody sent to: {stray}"
    while (got := seg.receive(NAMES, timeout=0)) is not None:
        rec = parse(untag(got[0], got[1]))
        if rec is None:
            bad.append(got[1][:40])
        else:
            drained.append((got[0], rec[0], rec[1]))
    info = seg.info()
    assert info["cells_free"] == info["cells_total"], f"cells leaked: {info}"
    assert info["waiters_used"] == 0
    repairs = info["repairs"]
    for q in QUEUES:
        for i in range(CAPACITY):
            seg.send(q, b"refill %d" % i)  # the stored capacity applies
        with pytest.raises(QueueFull):
            seg.send(q, b"one too many")
        assert seg.queue_stats(q)["pending"] == CAPACITY
    seg.flush()
    info = seg.info()
    assert info["cells_free"] == info["cells_total"]
    seg.check()
    seg.close()

    # -- the records ------------------------------------------------------------------------
    deliveries: list[tuple[int, int, int]] = list(drained)
    for rid in range(3):
        logged, bad_lines = read_receiver_log(tmp_path / f"r{rid}.log")
        bad += bad_lines
        deliveries += logged
        last: dict[tuple[int, int], int] = {}
        for idx, sid, seq in logged:
            assert last.get((idx, sid), -1) < seq, \
                f"receiver {rid}: sender {sid} out of order on queue {idx} at {seq} (seed {seed})"
            last[(idx, sid)] = seq
    assert not bad, f"corrupt records delivered: {bad[:5]}"
    counts = collections.Counter(deliveries)
    dups = [rec for rec, n in counts.items() if n > 1]
    assert not dups, f"records delivered twice: {dups[:10]} (seed {seed})"

    lost_confirmed: list[tuple[int, int, int]] = []
    inflight_lost: list[tuple[int, int]] = []
    sent_total = unconfirmed = 0
    for sid in range(2):
        started, done = read_sender_log(tmp_path / f"s{sid}.log")
        sent_total += len(done)
        unconfirmed += len(set(started) - set(done))  # at most one per killed sender
        assert set(done) <= set(started)
        for seq, target in started.items():
            copies = [int(target)] if target != b"F" else [3, 4]
            fan = done.get(seq)
            if seq in done and (target != b"F" or (fan is not None and fan[1] == 0)):
                lost_confirmed += [(i, sid, seq) for i in copies if (i, sid, seq) not in counts]
            elif seq not in done and any((i, sid, seq) not in counts for i in copies):
                inflight_lost.append((sid, seq))
        for idx, s, seq in counts:
            if s == sid:
                assert seq in started, f"delivered {idx}/{sid}/{seq} was never sent"
                target = started[seq]
                assert (target == b"F" and idx >= 3) or (target != b"F" and idx == int(target)), \
                    f"record {sid}/{seq} for {target!r} delivered on queue {idx}"
    summary = (f"seed {seed}: {kills} kills ({dict(killed)}) in {kill_time:.1f} s, "
               f"{repairs} EOWNERDEAD repairs, {swept} dead waiters swept, {sent_total} records sent, "
               f"{len(deliveries)} delivered, lost: {len(lost_confirmed)} confirmed "
               f"(<= {killed['receiver']} receiver kills), {len(inflight_lost)} in flight "
               f"(<= {killed['sender']} sender kills)")
    report_line(summary)
    print(summary)
    assert unconfirmed <= killed["sender"], f"{unconfirmed} unconfirmed sends, {summary}"
    assert len(lost_confirmed) <= killed["receiver"], \
        f"lost {lost_confirmed[:10]}; {summary}"
    assert len(inflight_lost) <= killed["sender"], summary
    assert len(lost_confirmed) + len(inflight_lost) <= kills, summary
    assert sent_total > 100, f"too little traffic to mean anything: {summary}"
