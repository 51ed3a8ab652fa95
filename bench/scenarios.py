"""The scenarios: what each process does (role functions), and how a case is summarised.

Role functions run in child processes (:func:`run_role`) as ``role(driver, args, ctx)`` and
return plain data (numbers, lists, dicts); the parent turns those into one result row per
case with :func:`summarize`. Timestamps that cross processes are ``CLOCK_MONOTONIC``
nanoseconds, which every process on the host shares.

Each role is written once, as an ``async def`` awaiting an :class:`~bench.drivers.AioDriver`,
and runs in one of two forms:

- with a Channels 4 layer driven natively, as that coroutine: one ``run_until_complete`` per
  role, every layer operation a plain ``await`` (as a Channels 4 consumer runs);
- with a synchronous :class:`~bench.drivers.Driver` (the ASGI 1 layers, the raw baselines,
  and Channels 4 layers under ``--aio-driving per-call``), as its synchronous twin, which
  :mod:`bench.unasync` derives from the same source (``async def`` -> ``def``, ``await x``
  -> ``x``), not by stepping the coroutine (``coro.send(None)`` until ``StopIteration``),
  which slows a ~6 us shared-memory round trip by ~0.4 us (why: :mod:`bench.unasync`).

So role bodies use no ``asyncio`` and no ``time.sleep`` (``await driver.pause(s)``), and
wait at barriers through :func:`_wait` (the driver settles its background work first).

======== ====================================================================================
pingpong one client sends, one server echoes to the client's reply channel; round-trip
         percentiles per repeat (time bounded and count bounded).
oneway   one producer process -> one consumer process, as fast as they go; msgs/s at the
         consumer (from the producer's first send to the consumer's last receive).
mpmc     N producers -> M consumers on one channel (default 2 -> 2), msgs/s in total.
group    one drainer process owns n member channels in a group; the sender's
         ``send_group``/``group_send`` call time, and the time until the drainer has
         received every member's copy.
wide     one drainer process receives with ONE receive call over 100 plain channels (as an
         ASGI 1 worker serves every routed channel), fed by a ``send_group`` to a group
         holding all of them; the send call time and the time until the drainer has taken
         every copy. ASGI 1 and raw layers only: a Channels 4 receive takes one channel.
idle     a receiver blocked on an empty channel; its CPU time over the window, measured by
         the parent from ``/proc/<pid>`` (and the Redis server's, when the bench started it);
         then a waker process sends one message: the latency of that first wake-up.
mixed    a steady rate (default 500 msg/s, open loop) of mixed sizes (90% 100 B,
         9% 1 KiB, 1% 64 KiB); one-way latency percentiles up to p99.9.
======== ====================================================================================
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.drivers import AioDriver, Driver, Full, LayerSpec
from bench.messages import STOP, make_message
from bench.runner import Case, Role, RoleContext
from bench.settings import WIDE_CHANNELS, Settings
from bench.stats import latency_summary, median_of_repeats
from bench.unasync import sync_twins

__all__ = ["build_cases", "run_role", "summarize", "size_label", "PRIMARY", "RATIOS"]

#: Per scenario, the figures compared with the reference layer: (metric, higher is
#: better, column title). The first is the scenario's headline figure.
RATIOS: dict[str, list[tuple[str, bool, str]]] = {
    "pingpong": [("p50_us", False, "p50")],
    "oneway": [("msgs_per_s", True, "msgs/s")],
    "mpmc": [("msgs_per_s", True, "msgs/s")],
    "group": [("deliver_us", False, "all delivered"), ("send_us", False, "send call")],
    "wide": [("deliver_us", False, "all delivered"), ("send_us", False, "send call")],
    "idle": [("cpu_pct", False, "CPU %")],
    "mixed": [("p99_9_us", False, "p99.9")],
}
PRIMARY: dict[str, tuple[str, bool, str]] = {name: ratios[0] for name, ratios in RATIOS.items()}

MIXED_SIZES = (100, 1024, 65536)
#: The group sender's busy pause after each round's barrier, so the drainer is asleep in
#: its receive when the group_send is made (see group_sender).
GROUP_SETTLE_NS = 2_000_000


def size_label(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def _now_ns() -> int:
    return time.monotonic_ns()


def _busy_wait_ns(ns: int) -> None:
    """Stay on the CPU for ``ns`` (a sleep would let a VM halt it and chill its caches)."""
    deadline = _now_ns() + ns
    while _now_ns() < deadline:
        pass


async def _send(driver: AioDriver, channel: str, message: dict[str, Any], ctx: RoleContext) -> int:
    """Send, retrying on back-pressure for at most the receive timeout; returns retries."""
    retries = 0
    while True:
        try:
            await driver.send(channel, message)
            return retries
        except Full:
            if retries == 0:
                give_up = time.monotonic() + ctx.recv_timeout
            elif time.monotonic() > give_up:
                raise TimeoutError(
                    f"channel {channel!r} stayed full for {ctx.recv_timeout:.0f} s"
                ) from None
            retries += 1
            await driver.pause(0.0002)


async def _receive(
    driver: AioDriver, channels: list[str], ctx: RoleContext, what: str
) -> dict[str, Any]:
    _, message = await driver.receive(channels, ctx.recv_timeout)
    if message is None:
        raise TimeoutError(f"no {what} on {channels[:3]!r} within {ctx.recv_timeout:.0f} s")
    return message


async def _wait(driver: AioDriver, ctx: RoleContext, name: str = "all") -> None:
    """Wait at a barrier: it blocks the process (and its loop), so settle first."""
    await driver.settle()
    ctx.wait(name)


async def _wait_event(driver: AioDriver, ctx: RoleContext, name: str) -> None:
    """Wait for the parent's event, settled first like :func:`_wait`."""
    await driver.settle()
    ctx.wait_event(name)


# ------------------------------------------------------------------------------ roles


async def pingpong_server(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [a["channel"]]
    await _wait(driver, ctx)
    while True:
        message = await _receive(driver, channels, ctx, "ping")
        if "stop" in message:
            return {}
        await _send(driver, message["reply_channel"], message, ctx)


async def pingpong_client(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    server = a["channel"]
    reply = await driver.new_channel()
    replies = [reply]
    message = make_message(a["size"], reply)
    clock = time.perf_counter_ns
    await _wait(driver, ctx)

    async def round_trip() -> int:
        t0 = clock()
        await _send(driver, server, message, ctx)
        await _receive(driver, replies, ctx, "pong")
        return clock() - t0

    for _ in range(a["warmup"]):
        await round_trip()
    repeats = []
    for _ in range(a["repeats"]):
        samples: list[int] = []
        start = time.monotonic()
        end = start + a["duration"]
        while len(samples) < a["count"] and time.monotonic() < end:
            samples.append(await round_trip())
        elapsed = time.monotonic() - start
        summary = latency_summary(samples, (50, 90, 99))
        summary["rtt_per_s"] = len(samples) / elapsed
        repeats.append(summary)
    await _send(driver, server, STOP, ctx)
    return {"repeats": repeats}


#: ``order`` of an mpmc message is ``repeat * _REP + n``: a consumer can tell a late copy
#: from an earlier repeat (a layer that delivers twice) from this repeat's messages.
_REP = 1_000_000_000


async def mpmc_producer(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channel = a["channel"]
    message = make_message(a["size"])
    await _wait(driver, ctx)
    repeats = []
    for rep in range(a["repeats"] + 1):  # repeat 0 is the warm-up
        warm = rep == 0
        target = a["warmup"] if warm else a["count"]
        base = rep * _REP
        await _wait(driver, ctx)
        end = time.monotonic() + (math.inf if warm else a["duration"])
        t0 = _now_ns()
        sent = retries = 0
        while sent < target and time.monotonic() < end:
            message["order"] = base + sent
            retries += await _send(driver, channel, message, ctx)
            sent += 1
        t_sent = _now_ns()
        await _wait(driver, ctx, "producers")  # every producer's data is queued before any STOP
        if a["index"] == 0:
            for _ in range(a["consumers"]):
                await _send(driver, channel, {"stop": rep}, ctx)
        if not warm:
            repeats.append({"t0": t0, "t_sent": t_sent, "sent": sent, "full_retries": retries})
    return {"repeats": repeats}


async def mpmc_consumer(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [a["channel"]]
    await _wait(driver, ctx)
    repeats = []
    for rep in range(a["repeats"] + 1):
        await _wait(driver, ctx)
        got = stale = 0
        while True:
            message = await _receive(driver, channels, ctx, "message")
            stop = message.get("stop")
            if stop is not None:
                if stop == rep:
                    break
                stale += 1  # a STOP of an earlier repeat, delivered again
            elif message["order"] // _REP == rep:
                got += 1
            else:
                stale += 1
        t_last = _now_ns()
        if rep:
            repeats.append({"got": got, "stale": stale, "t_last": t_last})
    return {"repeats": repeats}


async def group_drainer(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    members, listens = await driver.group_members(a["members"])
    for member in members:
        await driver.group_add(a["group"], member)
    await _wait(driver, ctx)
    rounds = []
    for rnd in range(a["rounds"] + 1):  # round 0 is the warm-up
        await _wait(driver, ctx)
        for i, channels in enumerate(listens):
            await _receive(driver, channels, ctx, f"group message {i + 1} of {len(listens)}")
        if rnd:
            rounds.append({"t_done": _now_ns()})
    return {"repeats": rounds}


async def wide_drainer(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [f"bench.wide.{i}" for i in range(a["channels"])]
    for channel in channels:
        await driver.group_add(a["group"], channel)
    await _wait(driver, ctx)
    rounds = []
    for rnd in range(a["rounds"] + 1):  # round 0 is the warm-up (and fills the caches)
        await _wait(driver, ctx)
        for i in range(len(channels)):
            # Every receive lists all the channels: past 64 the shared-memory core sleeps
            # on its waiter row's bell word, rung by a send to any of them.
            await _receive(driver, channels, ctx, f"wide message {i + 1} of {len(channels)}")
        if rnd:
            rounds.append({"t_done": _now_ns()})
    return {"repeats": rounds}


async def group_sender(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    message = make_message(a["size"])
    await _wait(driver, ctx)
    rounds = []
    for rnd in range(a["rounds"] + 1):
        await _wait(driver, ctx)
        # Members are idle consumers (as in a chat) and the sender is a busy one (a consumer
        # handling a message): let the drainer get into its receive and fall asleep while
        # the sender stays on its CPU. Sending right after the barrier raced the drainer,
        # so a round's call did or did not include waking it; sleeping instead let a VM
        # halt the sender's own CPU and chill its caches before the call.
        _busy_wait_ns(GROUP_SETTLE_NS)
        t0 = _now_ns()
        await driver.send_group(a["group"], message)
        t1 = _now_ns()
        if rnd:
            rounds.append({"t0": t0, "t1": t1})
    return {"repeats": rounds}


async def idle_receiver(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [a["channel"]]
    await _wait(driver, ctx)
    await _send(driver, a["channel"], make_message(100), ctx)  # connections and mappings are up
    await _receive(driver, channels, ctx, "warm-up message")
    await driver.settle()  # no acknowledgement left to run in the window
    ctx.ready()  # the parent samples our CPU time now, and again after the window
    _, message = await driver.receive(channels, a["seconds"] + ctx.recv_timeout)
    t_woken = _now_ns()
    if message is None or "t" not in message:
        raise TimeoutError("the idle receiver was not woken by the waker's message")
    return {"wake_us": (t_woken - message["t"]) / 1e3}


async def idle_waker(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    own = await driver.new_channel()  # connect (and load any script) before the window
    await _send(driver, own, make_message(100), ctx)
    await _receive(driver, [own], ctx, "warm-up message")
    await _wait(driver, ctx)
    # Set by the parent once it has measured the receiver.
    await _wait_event(driver, ctx, "window_over")
    await _send(driver, a["channel"], {"t": _now_ns()}, ctx)
    return {}


def _mixed_size(i: int) -> int:
    if i % 100 == 99:
        return 65536
    if i % 10 == 9:
        return 1024
    return 100


async def mixed_sender(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channel = a["channel"]
    messages = {size: make_message(size) for size in MIXED_SIZES}
    warm = dict(messages[100], warm=1)
    await _wait(driver, ctx)
    for _ in range(a["warmup"]):
        warm["t"] = _now_ns()
        await _send(driver, channel, warm, ctx)
    total = max(1, int(a["seconds"] * a["rate"]))
    period = 1.0 / a["rate"]
    max_lag = 0.0
    start = time.monotonic()
    for i in range(total):
        delay = start + i * period - time.monotonic()
        if delay > 0:
            await driver.pause(delay)
        else:
            max_lag = max(max_lag, -delay)
        message = messages[_mixed_size(i)]
        message["order"] = i
        message["t"] = _now_ns()
        await _send(driver, channel, message, ctx)
    elapsed = time.monotonic() - start
    await _send(driver, channel, STOP, ctx)
    return {"sent": total, "send_rate": total / elapsed, "max_lag_ms": max_lag * 1000.0}


async def mixed_receiver(driver: AioDriver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [a["channel"]]
    await _wait(driver, ctx)
    latencies: list[int] = []
    while True:
        message = await _receive(driver, channels, ctx, "message")
        if "stop" in message:
            break
        if "warm" not in message:
            latencies.append(_now_ns() - message["t"])
    return {"summary": latency_summary(latencies, (50, 90, 99, 99.9))}


async def probe(driver: AioDriver) -> None:
    """Send one message to a new channel and receive it back, then flush (before a layer
    is measured: a layer that fails here is skipped with the reason)."""
    channel = await driver.new_channel()
    await driver.send(channel, {"type": "probe", "text": "ok"})
    got, message = await driver.receive([channel], 5.0)
    if got is None or message is None or message.get("text") != "ok":
        raise RuntimeError(f"probe message not received back on {channel!r} within 5 s")
    await driver.flush()


def run_role(name: str, driver: Driver | AioDriver, *args: Any) -> Any:
    """Run the role (or :func:`probe`) ``name`` with ``driver`` in this process: the
    coroutine on a natively driven Channels 4 layer's loop, else its synchronous twin."""
    twin = _SYNC_ROLES.get(name)
    if twin is None or name.startswith("_"):
        raise ValueError(f"unknown role {name!r}; known: {', '.join(_public(_SYNC_ROLES))}")
    if isinstance(driver, AioDriver):
        return driver.run(globals()[name](driver, *args))
    return twin(driver, *args)


def _public(names: dict[str, Any]) -> list[str]:
    return [name for name in names if not name.startswith("_")]


# ------------------------------------------------------------------ parent-side helpers


def proc_cpu_ns(pid: int) -> int:
    """CPU time (user + system, every thread) of ``pid`` in nanoseconds."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        return total
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _idle_monitor(
    seconds: float,
    redis_pid: int | None,
    case: Case,
    pid: int,
    msg: dict[str, Any],
    events: dict[str, Any],
) -> dict[str, Any]:
    try:
        time.sleep(0.2)  # let the receiver settle into its blocking wait
        t0 = time.monotonic()
        c0 = proc_cpu_ns(pid)
        r0 = proc_cpu_ns(redis_pid) if redis_pid else None
        time.sleep(seconds)
        c1 = proc_cpu_ns(pid)
        r1 = proc_cpu_ns(redis_pid) if redis_pid else None
        window = time.monotonic() - t0
    finally:
        events["window_over"].set()  # the waker now wakes the receiver up
    out = {"cpu_pct": (c1 - c0) / 1e9 / window * 100.0, "window_s": window}
    if r0 is not None and r1 is not None and case.spec.redis_url and _needs_redis(case.layer):
        out["redis_cpu_pct"] = (r1 - r0) / 1e9 / window * 100.0
    return out


def _needs_redis(layer: str) -> bool:
    from bench.drivers import LAYERS

    return LAYERS[layer].needs_redis


# ---------------------------------------------------------------------- case building


def _cpu(cpus: list[int] | None, i: int) -> int | None:
    return None if not cpus else cpus[i % len(cpus)]


def build_cases(
    scenario: str,
    layer: str,
    settings: Settings,
    make_spec: Callable[[int | None], LayerSpec],
    cpus: list[int] | None,
    redis_pid: int | None,
) -> list[Case]:
    """Every case of ``scenario`` for ``layer`` (one per size / member count)."""
    s = settings
    cases: list[Case] = []
    params: dict[str, Any]
    rt = s.recv_timeout
    if scenario == "pingpong":
        for size in s.sizes:
            args = dict(
                channel="bench.pingpong",
                size=size,
                warmup=s.warmup,
                repeats=s.repeats,
                duration=s.duration,
                count=s.count,
            )
            roles = [
                Role("client", "pingpong_client", args, _cpu(cpus, 0)),
                Role("server", "pingpong_server", args, _cpu(cpus, 1)),
            ]
            timeout = 30 + 2 * rt + 2 * s.repeats * s.duration + s.warmup * 0.05
            cases.append(Case(scenario, layer, size_label(size), {"size": size}, make_spec(size), roles, timeout))
    elif scenario in ("oneway", "mpmc"):
        producers, consumers = (1, 1) if scenario == "oneway" else (s.producers, s.consumers)
        for size in s.sizes:
            base = dict(
                channel="bench.mpmc",
                size=size,
                warmup=max(1, s.warmup // producers),
                repeats=s.repeats,
                duration=s.duration,
                count=max(1, s.count // producers),
                consumers=consumers,
            )
            roles = [
                Role(f"producer{i}", "mpmc_producer", dict(base, index=i), _cpu(cpus, i))
                for i in range(producers)
            ] + [
                Role(f"consumer{j}", "mpmc_consumer", base, _cpu(cpus, producers + j))
                for j in range(consumers)
            ]
            timeout = 30 + 2 * rt + (s.repeats + 1) * (3 * s.duration + 10)
            label = size_label(size)
            params = {"size": size, "producers": producers, "consumers": consumers}
            cases.append(
                Case(scenario, layer, label, params, make_spec(size), roles, timeout, {"producers": producers})
            )
    elif scenario == "group":
        for members in s.members:
            for size in s.sizes:
                args = dict(group="bench.group", members=members, size=size, rounds=s.group_rounds)
                roles = [
                    Role("sender", "group_sender", args, _cpu(cpus, 0)),
                    Role("drainer", "group_drainer", args, _cpu(cpus, 1)),
                ]
                timeout = 30 + 2 * rt + (s.group_rounds + 1) * 10 + members * 0.01
                label = f"{size_label(size)} x {members}"
                params = {"size": size, "members": members}
                spec = make_spec(size)
                # Members may share one process queue: it must hold a copy for each.
                spec = dataclasses.replace(spec, capacity=max(spec.capacity, 2 * members))
                cases.append(Case(scenario, layer, label, params, spec, roles, timeout))
    elif scenario == "wide":
        from bench.drivers import LAYERS

        if not LAYERS[layer].receives_many:
            return []  # a Channels 4 receive takes one channel: nothing to measure
        size = s.sizes[0]
        n = WIDE_CHANNELS
        args = dict(group="bench.wide", channels=n, size=size, rounds=s.group_rounds)
        roles = [
            Role("sender", "group_sender", args, _cpu(cpus, 0)),
            Role("drainer", "wide_drainer", args, _cpu(cpus, 1)),
        ]
        timeout = 30 + 2 * rt + (s.group_rounds + 1) * 10 + n * 0.01
        params = {"size": size, "channels": n}
        cases.append(
            Case(scenario, layer, f"{size_label(size)} x {n} ch", params, make_spec(size), roles, timeout)
        )
    elif scenario == "idle":
        args = {"channel": "bench.idle", "seconds": s.idle_seconds}
        roles = [
            Role("receiver", "idle_receiver", args, _cpu(cpus, 0)),
            Role("waker", "idle_waker", args, _cpu(cpus, 1)),
        ]
        case = Case(
            scenario,
            layer,
            "-",
            {"seconds": s.idle_seconds},
            make_spec(None),
            roles,
            30 + 2 * rt + 2 * s.idle_seconds,
            events=("window_over",),
            on_ready=functools.partial(_idle_monitor, s.idle_seconds, redis_pid),
        )
        cases.append(case)
    elif scenario == "mixed":
        args = dict(channel="bench.mixed", seconds=s.mixed_seconds, rate=s.rate, warmup=s.warmup)
        roles = [
            Role("sender", "mixed_sender", args, _cpu(cpus, 0)),
            Role("receiver", "mixed_receiver", args, _cpu(cpus, 1)),
        ]
        params = {"rate": s.rate, "seconds": s.mixed_seconds, "mix": "90% 100 B, 9% 1 KiB, 1% 64 KiB"}
        cases.append(
            Case(scenario, layer, "mixed", params, make_spec(None), roles, 30 + 2 * rt + 2 * s.mixed_seconds)
        )
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    return cases


# ------------------------------------------------------------------------ summaries


def summarize(case: Case, results: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """Metrics of one finished case: the median over repeats, plus each repeat's figures."""
    by_role = {role.name: res for role, res in zip(case.roles, results, strict=True)}
    repeats: list[dict[str, float]]
    if case.scenario == "pingpong":
        repeats = by_role["client"]["repeats"]
    elif case.scenario in ("oneway", "mpmc"):
        repeats = _mpmc_repeats(case, by_role)
    elif case.scenario in ("group", "wide"):
        repeats = [
            {"send_us": (s["t1"] - s["t0"]) / 1e3, "deliver_us": (d["t_done"] - s["t0"]) / 1e3}
            # Both roles run the same rounds; pair what both recorded.
            for s, d in zip(by_role["sender"]["repeats"], by_role["drainer"]["repeats"], strict=False)
        ]
    elif case.scenario == "idle":
        repeats = [dict(extra, wake_us=by_role["receiver"]["wake_us"])]
    elif case.scenario == "mixed":
        summary = dict(by_role["receiver"]["summary"])
        sender = by_role["sender"]
        summary.update(send_rate=sender["send_rate"], max_lag_ms=sender["max_lag_ms"])
        summary["lost"] = sender["sent"] - summary["n"]
        repeats = [summary]
    else:
        raise ValueError(case.scenario)
    return {"metrics": median_of_repeats(repeats), "repeats": repeats}


def _mpmc_repeats(case: Case, by_role: dict[str, Any]) -> list[dict[str, float]]:
    producers = [r["repeats"] for name, r in by_role.items() if name.startswith("producer")]
    consumers = [r["repeats"] for name, r in by_role.items() if name.startswith("consumer")]
    size = case.params["size"]
    out = []
    for rep in range(len(producers[0])):
        prods = [p[rep] for p in producers]
        cons = [c[rep] for c in consumers]
        t0 = min(p["t0"] for p in prods)
        t_last = max(c["t_last"] for c in cons)
        t_sent = max(p["t_sent"] for p in prods)
        sent = sum(p["sent"] for p in prods)
        got = sum(c["got"] for c in cons)
        seconds = max(1e-9, (t_last - t0) / 1e9)
        rate = min(got, sent) / seconds  # a message delivered twice counts once
        out.append(
            {
                "msgs_per_s": rate,
                "mb_per_s": rate * size / 1e6,
                "send_rate": sent / max(1e-9, (t_sent - t0) / 1e9),
                "sent": sent,
                "lost": max(0, sent - got),
                "duplicates": max(0, got - sent) + sum(c["stale"] for c in cons),
                "full_retries": sum(p["full_retries"] for p in prods),
                "seconds": seconds,
            }
        )
    return out


#: The synchronous twin of every ``async def`` above (roles and their helpers), by name;
#: made once at import (the fork server preloads this module, so every child shares them).
_SYNC_ROLES = sync_twins(sys.modules[__name__])
