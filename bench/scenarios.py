"""The scenarios: what each process does (role functions), and how a case is summarised.

Role functions run in child processes as ``role(driver, args, ctx)`` and return plain
data (numbers, lists, dicts); the parent turns those into one result row per case with
:func:`summarize`. Timestamps that cross processes are ``CLOCK_MONOTONIC`` nanoseconds,
which every process on the host shares.

======== ====================================================================================
pingpong one client sends, one server echoes to the client's reply channel; round-trip
         percentiles per repeat (time bounded and count bounded).
oneway   one producer process -> one consumer process, as fast as they go; msgs/s at the
         consumer (from the producer's first send to the consumer's last receive).
mpmc     N producers -> M consumers on one channel (default 2 -> 2), msgs/s in total.
group    one drainer process owns n member channels in a group; the sender's
         ``send_group``/``group_send`` call time, and the time until the drainer has
         received every member's copy.
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
import time
from collections.abc import Callable
from typing import Any

from bench.drivers import Driver, Full, LayerSpec
from bench.messages import STOP, make_message
from bench.runner import Case, Role, RoleContext
from bench.settings import Settings
from bench.stats import latency_summary, median_of_repeats

__all__ = ["build_cases", "summarize", "size_label", "PRIMARY", "RATIOS"]

#: Per scenario, the figures compared with the reference layer: (metric, higher is
#: better, column title). The first is the scenario's headline figure.
RATIOS: dict[str, list[tuple[str, bool, str]]] = {
    "pingpong": [("p50_us", False, "p50")],
    "oneway": [("msgs_per_s", True, "msgs/s")],
    "mpmc": [("msgs_per_s", True, "msgs/s")],
    "group": [("deliver_us", False, "all delivered"), ("send_us", False, "send call")],
    "idle": [("cpu_pct", False, "CPU %")],
    "mixed": [("p99_9_us", False, "p99.9")],
}
PRIMARY: dict[str, tuple[str, bool, str]] = {name: ratios[0] for name, ratios in RATIOS.items()}

MIXED_SIZES = (100, 1024, 65536)


def size_label(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def _now_ns() -> int:
    return time.monotonic_ns()


def _send(driver: Driver, channel: str, message: dict[str, Any], ctx: RoleContext) -> int:
    """Send, retrying on back-pressure for at most the receive timeout; returns retries."""
    retries = 0
    while True:
        try:
            driver.send(channel, message)
            return retries
        except Full:
            if retries == 0:
                give_up = time.monotonic() + ctx.recv_timeout
            elif time.monotonic() > give_up:
                raise TimeoutError(
                    f"channel {channel!r} stayed full for {ctx.recv_timeout:.0f} s"
                ) from None
            retries += 1
            time.sleep(0.0002)


def _receive(driver: Driver, channels: list[str], ctx: RoleContext, what: str) -> dict[str, Any]:
    _, message = driver.receive(channels, ctx.recv_timeout)
    if message is None:
        raise TimeoutError(f"no {what} on {channels[:3]!r} within {ctx.recv_timeout:.0f} s")
    return message


# ------------------------------------------------------------------------------ roles


def pingpong_server(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [a["channel"]]
    ctx.wait()
    while True:
        message = _receive(driver, channels, ctx, "ping")
        if "stop" in message:
            return {}
        _send(driver, message["reply_channel"], message, ctx)


def pingpong_client(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    server = a["channel"]
    reply = driver.new_channel()
    replies = [reply]
    message = make_message(a["size"], reply)
    clock = time.perf_counter_ns
    ctx.wait()

    def round_trip() -> int:
        t0 = clock()
        _send(driver, server, message, ctx)
        _receive(driver, replies, ctx, "pong")
        return clock() - t0

    for _ in range(a["warmup"]):
        round_trip()
    repeats = []
    for _ in range(a["repeats"]):
        samples: list[int] = []
        start = time.monotonic()
        end = start + a["duration"]
        while len(samples) < a["count"] and time.monotonic() < end:
            samples.append(round_trip())
        elapsed = time.monotonic() - start
        summary = latency_summary(samples, (50, 90, 99))
        summary["rtt_per_s"] = len(samples) / elapsed
        repeats.append(summary)
    _send(driver, server, STOP, ctx)
    return {"repeats": repeats}


#: ``order`` of an mpmc message is ``repeat * _REP + n``: a consumer can tell a late copy
#: from an earlier repeat (a layer that delivers twice) from this repeat's messages.
_REP = 1_000_000_000


def mpmc_producer(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channel = a["channel"]
    message = make_message(a["size"])
    ctx.wait()
    repeats = []
    for rep in range(a["repeats"] + 1):  # repeat 0 is the warm-up
        warm = rep == 0
        target = a["warmup"] if warm else a["count"]
        base = rep * _REP
        ctx.wait()
        end = time.monotonic() + (math.inf if warm else a["duration"])
        t0 = _now_ns()
        sent = retries = 0
        while sent < target and time.monotonic() < end:
            message["order"] = base + sent
            retries += _send(driver, channel, message, ctx)
            sent += 1
        t_sent = _now_ns()
        ctx.wait("producers")  # every producer's data is queued before any STOP
        if a["index"] == 0:
            for _ in range(a["consumers"]):
                _send(driver, channel, {"stop": rep}, ctx)
        if not warm:
            repeats.append({"t0": t0, "t_sent": t_sent, "sent": sent, "full_retries": retries})
    return {"repeats": repeats}


def mpmc_consumer(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [a["channel"]]
    ctx.wait()
    repeats = []
    for rep in range(a["repeats"] + 1):
        ctx.wait()
        got = stale = 0
        while True:
            message = _receive(driver, channels, ctx, "message")
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


def group_drainer(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    members, listens = driver.group_members(a["members"])
    for member in members:
        driver.group_add(a["group"], member)
    ctx.wait()
    rounds = []
    for rnd in range(a["rounds"] + 1):  # round 0 is the warm-up
        ctx.wait()
        for i, channels in enumerate(listens):
            _receive(driver, channels, ctx, f"group message {i + 1} of {len(listens)}")
        if rnd:
            rounds.append({"t_done": _now_ns()})
    return {"repeats": rounds}


def group_sender(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    message = make_message(a["size"])
    ctx.wait()
    rounds = []
    for rnd in range(a["rounds"] + 1):
        ctx.wait()
        t0 = _now_ns()
        driver.send_group(a["group"], message)
        t1 = _now_ns()
        if rnd:
            rounds.append({"t0": t0, "t1": t1})
    return {"repeats": rounds}


def idle_receiver(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [a["channel"]]
    ctx.wait()
    _send(driver, a["channel"], make_message(100), ctx)  # connections and mappings are up
    _receive(driver, channels, ctx, "warm-up message")
    ctx.ready()  # the parent samples our CPU time now, and again after the window
    _, message = driver.receive(channels, a["seconds"] + ctx.recv_timeout)
    t_woken = _now_ns()
    if message is None or "t" not in message:
        raise TimeoutError("the idle receiver was not woken by the waker's message")
    return {"wake_us": (t_woken - message["t"]) / 1e3}


def idle_waker(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    own = driver.new_channel()  # connect (and load any script) before the window
    _send(driver, own, make_message(100), ctx)
    _receive(driver, [own], ctx, "warm-up message")
    ctx.wait()
    ctx.wait_event("window_over")  # set by the parent once it has measured the receiver
    _send(driver, a["channel"], {"t": _now_ns()}, ctx)
    return {}


def _mixed_size(i: int) -> int:
    if i % 100 == 99:
        return 65536
    if i % 10 == 9:
        return 1024
    return 100


def mixed_sender(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channel = a["channel"]
    messages = {size: make_message(size) for size in MIXED_SIZES}
    warm = dict(messages[100], warm=1)
    ctx.wait()
    for _ in range(a["warmup"]):
        warm["t"] = _now_ns()
        _send(driver, channel, warm, ctx)
    total = max(1, int(a["seconds"] * a["rate"]))
    period = 1.0 / a["rate"]
    max_lag = 0.0
    start = time.monotonic()
    for i in range(total):
        delay = start + i * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        message = messages[_mixed_size(i)]
        message["order"] = i
        message["t"] = _now_ns()
        _send(driver, channel, message, ctx)
    elapsed = time.monotonic() - start
    _send(driver, channel, STOP, ctx)
    return {"sent": total, "send_rate": total / elapsed, "max_lag_ms": max_lag * 1000.0}


def mixed_receiver(driver: Driver, a: dict[str, Any], ctx: RoleContext) -> dict[str, Any]:
    channels = [a["channel"]]
    ctx.wait()
    latencies: list[int] = []
    while True:
        message = _receive(driver, channels, ctx, "message")
        if "stop" in message:
            break
        if "warm" not in message:
            latencies.append(_now_ns() - message["t"])
    return {"summary": latency_summary(latencies, (50, 90, 99, 99.9))}


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
    by_role = {role.name: res for role, res in zip(case.roles, results)}
    repeats: list[dict[str, float]]
    if case.scenario == "pingpong":
        repeats = by_role["client"]["repeats"]
    elif case.scenario in ("oneway", "mpmc"):
        repeats = _mpmc_repeats(case, by_role)
    elif case.scenario == "group":
        repeats = [
            {"send_us": (s["t1"] - s["t0"]) / 1e3, "deliver_us": (d["t_done"] - s["t0"]) / 1e3}
            for s, d in zip(by_role["sender"]["repeats"], by_role["drainer"]["repeats"])
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
