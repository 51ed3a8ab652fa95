"""The kill loop through the layer API: SIGKILL at random moments, then invariants.

Under load, through ``IPCChannelLayer`` only:

- two senders cycle through four kinds of send: a normal channel shared by
  two receivers (``kl.q``), a process-specific channel (``kl.p!s<id>``), a
  group send (``kl-room``: members ``kl.g1`` and ``kl.p!g``, plus members
  that come and go), and a small-capacity channel (``kl.small``, 5) where
  ``ChannelFull`` is expected and logged;
- two receivers block in ``receive(block=True)`` on overlapping lists;
- a churn process adds, refreshes and discards group members and reads
  the statistics.

One process at a time is SIGKILLed after a random delay and respawned,
``--kills`` times (tests/conftest.py's option; 30 by default), and
``Segment.check()`` runs after every kill. Then everything stops, the
parent drains what is left and verifies:

- the segment's invariants, and no waiter row left after ``recover()``;
- nothing duplicated, nothing received that was not sent;
- each sender's messages in order per channel and receiver;
- every confirmed send delivered (group sends: to both members), except
  at most one message per receiver kill (the one it was holding);
- capacity and memory back to full: all cells free after the drain, and
  ``kl.small`` takes exactly 5 messages again.

Every process keeps a write-ahead log with one unbuffered ``os.write`` per
line, so a SIGKILL leaves its history up to the message in hand:
senders ``S <n> <kind>`` before and ``D <n>``/``F <n>`` after each send,
receivers ``R <channel> <sender> <n>`` per message.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ipc_layer import ChannelFull, IPCChannelLayer
from tests.support import make_layer

pytestmark = [pytest.mark.integration, pytest.mark.killloop]

CTX = multiprocessing.get_context("fork")
DEFAULT_KILLS = 30
KINDS = ("q", "p", "g", "small")
RECEIVE_LISTS = {"r0": ["kl.q", "kl.p!"], "r1": ["kl.q", "kl.g1", "kl.small"]}
CONFIG: dict[str, Any] = {
    "capacity": 100_000,
    "channel_capacity": {"kl.small": 5, "kl.tmp*": 3},
    "blocking_timeout": 0.2,
    "segment_size": 64 << 20,
}


def layer_for(prefix: str) -> IPCChannelLayer:
    layer: IPCChannelLayer = make_layer(prefix, **CONFIG)
    return layer


class Log:
    """Append-only, one unbuffered write per line (survives SIGKILL up to the last line)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")


def read_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


# -- the processes ------------------------------------------------------------------


def run_sender(prefix: str, logdir: Path, index: int, stop: Any) -> None:
    path = logdir / f"s{index}.log"
    done = [int(row[1]) for row in read_lines(path) if row[0] == "S"]
    n = max(done, default=-1) + 1  # continue after the last incarnation
    log = Log(path)
    layer = layer_for(prefix)
    while not stop.value:
        kind = KINDS[n % len(KINDS)]
        message = {"s": index, "n": n, "pad": b"k" * (n % 300)}
        log.write(f"S {n} {kind}")
        try:
            if kind == "q":
                layer.send("kl.q", message)
            elif kind == "p":
                layer.send(f"kl.p!s{index}", message)
            elif kind == "g":
                layer.send_group("kl-room", message)
            else:
                layer.send("kl.small", message)
            log.write(f"D {n}")
        except ChannelFull:
            log.write(f"F {n}")
        n += 1
        time.sleep(0.0003)


def run_receiver(prefix: str, logdir: Path, name: str, stop: Any) -> None:
    log = Log(logdir / f"{name}.log")
    layer = layer_for(prefix)
    channels = RECEIVE_LISTS[name]
    idle = 0
    while idle < 2 or not stop.value:
        channel, message = layer.receive(channels, block=True)
        if channel is None:
            idle += 1
            continue
        idle = 0
        log.write(f"R {channel} {message['s']} {message['n']}")


def run_churn(prefix: str, logdir: Path, _: str, stop: Any) -> None:
    layer = layer_for(prefix)
    k = 0
    while not stop.value:
        layer.group_add("kl-room", "kl.g1")
        layer.group_add("kl-room", "kl.p!g")
        layer.group_add("kl-room", f"kl.tmp{k % 3}")
        layer.group_discard("kl-room", f"kl.tmp{(k + 1) % 3}")
        layer.group_channels("kl-room")
        layer.channel_statistics("kl.q")
        layer.global_statistics()
        k += 1
        time.sleep(0.001)


ROLES: dict[str, tuple[Callable[..., None], Any]] = {
    "s0": (run_sender, 0),
    "s1": (run_sender, 1),
    "r0": (run_receiver, "r0"),
    "r1": (run_receiver, "r1"),
    "churn": (run_churn, "churn"),
}


# -- the loop -----------------------------------------------------------------------------


def kills_option(request: pytest.FixtureRequest) -> int:
    try:
        value = int(request.config.getoption("--kills"))
    except ValueError:  # the option is not defined: bounded default
        value = DEFAULT_KILLS
    return max(1, value)


def report(request: pytest.FixtureRequest, line: str) -> None:
    try:
        add = request.getfixturevalue("report_line")
    except pytest.FixtureLookupError:
        print(line)
        return
    add(line)


def test_kill_loop_through_the_layer(layer_prefix: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    kills = kills_option(request)
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)  # timing and victims only, never names
    parent = layer_for(layer_prefix)
    parent.flush()
    parent.group_add("kl-room", "kl.g1")
    parent.group_add("kl-room", "kl.p!g")
    # Lock-free: a child SIGKILLed inside Event.is_set() held the Event's
    # lock for good, and the parent's stop.set() then blocked forever.
    stop = CTX.RawValue("b", 0)

    def spawn(role: str) -> multiprocessing.process.BaseProcess:
        target, arg = ROLES[role]
        proc = CTX.Process(target=target, args=(layer_prefix, tmp_path, arg, stop), name=role)
        proc.start()
        return proc

    procs = {role: spawn(role) for role in ROLES}
    killed: Counter[str] = Counter()
    try:
        time.sleep(0.3)
        for _ in range(kills):
            time.sleep(rng.uniform(0.02, 0.2))
            role = rng.choice(sorted(ROLES))
            proc = procs[role]
            assert proc.is_alive(), f"{role} died on its own (exit code {proc.exitcode}); seed {seed}"
            os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
            proc.join(10)
            killed[role] += 1
            parent.segment.check()
            procs[role] = spawn(role)
        time.sleep(0.3)
    finally:
        stop.value = 1
        for proc in procs.values():
            proc.join(20)
            if proc.is_alive():  # pragma: no cover - a hung process fails the test below
                os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
                proc.join(5)
    assert all(proc.exitcode == 0 for proc in procs.values()), {r: p.exitcode for r, p in procs.items()}

    # -- drain and segment invariants ---------------------------------------------------
    seg = parent.segment
    seg.check()
    seg.recover()
    info = seg.info()
    assert info["waiters_used"] == 0, "a dead receiver's waiter row survived recover()"
    leftovers: list[tuple[str, str, list[str]]] = []
    for channels in (["kl.q", "kl.p!"], ["kl.g1", "kl.small"]):
        while True:
            channel, message = parent.receive(channels)
            if channel is None:
                break
            leftovers.append(("parent", channel, [str(message["s"]), str(message["n"])]))
    for tmp in ("kl.tmp0", "kl.tmp1", "kl.tmp2"):
        while parent.receive([tmp]) != (None, None):
            pass
    info = seg.info()
    assert info["cells_free"] == info["cells_total"], "record memory leaked"
    for n in range(5):
        parent.send("kl.small", {"n": n})
    with pytest.raises(ChannelFull):
        parent.send("kl.small", {"n": 5})
    seg.check()

    # -- the logs ------------------------------------------------------------------------------
    sent: dict[tuple[int, int], str] = {}
    confirmed: set[tuple[int, int]] = set()
    for index in (0, 1):
        for row in read_lines(tmp_path / f"s{index}.log"):
            if row[0] == "S" and len(row) == 3:
                sent[(index, int(row[1]))] = row[2]
            elif row[0] == "D" and len(row) == 2:
                confirmed.add((index, int(row[1])))
    deliveries: list[tuple[str, str, int, int]] = []
    for name in RECEIVE_LISTS:
        for row in read_lines(tmp_path / f"{name}.log"):
            if row[0] == "R" and len(row) == 4:
                deliveries.append((name, row[1], int(row[2]), int(row[3])))
    deliveries += [(who, channel, int(s), int(n)) for who, channel, (s, n) in leftovers]

    seen = Counter((channel, s, n) for _, channel, s, n in deliveries)
    duplicated = [key for key, count in seen.items() if count > 1]
    assert not duplicated, f"delivered twice: {duplicated[:5]} (seed {seed})"

    def expected_channels(s: int, kind: str) -> list[str]:
        return {"q": ["kl.q"], "p": [f"kl.p!s{s}"], "g": ["kl.g1", "kl.p!g"], "small": ["kl.small"]}[kind]

    for _, channel, s, n in deliveries:
        kind = sent.get((s, n))
        assert kind is not None, f"received {channel} {s} {n}, which was never sent"
        assert channel in expected_channels(s, kind), f"{s}/{n} ({kind}) arrived on {channel}"

    order: dict[tuple[str, str, int], int] = {}
    for who, channel, s, n in deliveries:
        key = (who, channel, s)
        assert n > order.get(key, -1), f"{who}: sender {s} out of order on {channel} (seed {seed})"
        order[key] = n

    lost = [(s, n, channel) for (s, n) in sorted(confirmed)
            for channel in expected_channels(s, sent[(s, n)]) if (channel, s, n) not in seen]
    receiver_kills = killed["r0"] + killed["r1"]
    report(request, f"kills {sum(killed.values())} {dict(killed)}, repairs {info['repairs']}, "
                    f"confirmed sends {len(confirmed)}, deliveries {len(deliveries)}, lost {len(lost)} "
                    f"(allowed {receiver_kills}), seed {seed}")
    assert len(lost) <= receiver_kills, f"lost {len(lost)} > receiver kills {receiver_kills}: {lost[:5]}"
    assert len(confirmed) > 100, "too little traffic to mean anything"
    parent.close()
