"""``python -m bench server``: the protocol server against the servers users run today, in one run.

Stacks, each serving the same tiny application (:mod:`bench.server_apps`):

==============  ==================================================================
``ipc``         ``ipc-server`` + one ASGI 1 worker on the shared-memory layer (replies
                reach the reactor through the layer's ``twisted_stream`` extension: one
                standing FD watch, drained at each wake-up)
``ipc_batch``   the same with the worker under ``SCHED_BATCH`` (no wake-up preemption:
                on a shared core a woken worker lets the server finish its reactor turn,
                and then takes every request that came meanwhile)
``ipc_twisted`` the same with ``--reader twisted`` (ASGI 1's ``receive_twisted``: a
                Deferred and an FD-watch wait per reply)
``ipc_thread``  the same with ``--reader thread`` (a thread blocked in ``receive``)
``ipc_redis``   the same on the Redis layer (when a Redis server is available)
``direct``      ``ipc-server``'s HTTP code with the application called in-process:
                the ``ipc`` stack minus the layer hop (what the hop costs)
``daphne``      Daphne 4 with the ASGI 3 form of the application
``uvicorn``     uvicorn with the ASGI 3 form of the application
==============  ==================================================================

Measured with ``wrk`` (Debian's package) on loopback: requests per second
with ``--connections`` connections, and p50/p99 latency with one connection
(the round trip of one request at a time); WebSocket echo round trips
(p50/p99) with a client written for the bench. The load generator is
pinned to the last CPU and each stack's processes to the first, so every
stack gets the same one core. The table gives ratios against Daphne 4,
and the CPU time the stack's processes spent per request under load
(``/proc``: every process of the stack, user + system).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import cpu_seconds, free_port, remove_segment, spawn, split_cpus, stop, wait_port
from bench.wrk import fmt_us, run_wrk

__all__ = ["main"]

STACKS = ("ipc", "ipc_batch", "ipc_twisted", "ipc_thread", "ipc_redis", "direct", "daphne", "uvicorn")
#: The reader of each ipc stack (``ipc-server --reader``).
_READERS = {"ipc": "auto", "ipc_batch": "auto", "ipc_twisted": "twisted", "ipc_thread": "thread", "ipc_redis": "auto"}


@dataclass
class Stack:
    name: str
    port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    websocket: bool = True


@contextlib.contextmanager
def _stack(name: str, cpus: set[int], redis_url: str | None, worker_spin_us: int = 0) -> Iterator[Stack]:
    port = free_port()
    py = sys.executable
    prefix = f"bench_srv_{os.getpid()}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if name in _READERS:
            config: dict[str, Any]
            if name != "ipc_redis":
                layer, config = "ipc_layer.IPCChannelLayer", {"prefix": prefix}
            else:
                layer = "ipc_layer.redis_layer.RedisChannelLayer"
                config = {"hosts": [redis_url], "prefix": f"{prefix}:"}
            worker_config = dict(config, spin_us=worker_spin_us) if worker_spin_us and name != "ipc_redis" else config
            sched = ["--sched", "batch"] if name == "ipc_batch" else []
            procs.append(spawn([py, "-m", "bench.server_apps", "worker", "--layer", layer,
                                 "--config", json.dumps(worker_config), *sched], cpus))
            procs.append(spawn([py, "-m", "server", "-p", str(port), "-v", "0", "--layer", layer,
                                 "--layer-config", json.dumps(config), "--reader", _READERS[name]], cpus))
        elif name == "direct":
            procs.append(spawn([py, "-m", "bench.server_apps", "direct", "--port", str(port)], cpus))
        elif name == "daphne":
            procs.append(spawn([py, "-m", "daphne", "-p", str(port), "-b", "127.0.0.1", "-v", "0",
                                 "bench.server_apps:asgi3_app"], cpus))
        elif name == "uvicorn":
            procs.append(spawn([py, "-m", "uvicorn", "--port", str(port), "--host", "127.0.0.1",
                                 "--log-level", "warning", "--no-access-log", "bench.server_apps:asgi3_app"], cpus))
        else:
            raise ValueError(f"unknown stack {name!r}")
        wait_port(port, procs)
        yield Stack(name, port, procs, websocket=name != "direct")
    finally:
        stop(procs)
        if name in _READERS and name != "ipc_redis":
            remove_segment(prefix)


def ws_round_trips(port: int, count: int) -> dict[str, float]:
    """p50/p99 of ``count`` echo round trips of a 16-byte text message over one WebSocket."""
    from websockets.sync.client import connect

    samples = []
    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30, compression=None) as ws:
        for _ in range(min(50, count)):  # warm-up
            ws.send("x" * 16)
            ws.recv(timeout=30)
        for _ in range(count):
            t0 = time.perf_counter()
            ws.send("x" * 16)
            ws.recv(timeout=30)
            samples.append(time.perf_counter() - t0)
    samples.sort()
    return {"ws_p50": statistics.median(samples), "ws_p99": samples[int(0.99 * (len(samples) - 1))]}


def report(rows: list[dict[str, Any]], reference: str = "daphne") -> str:
    ref = next((row for row in rows if row["stack"] == reference), None)
    lines = ["| stack | req/s | vs daphne | CPU/req (load) | p50 (1 conn) | p99 (1 conn) | p99 (load) | errors | "
             "WS echo p50 | WS p99 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratio = f"{row['rps'] / ref['rps']:.2f}x" if ref else "-"
        ws50 = fmt_us(row["ws_p50"]) if "ws_p50" in row else "-"
        ws99 = fmt_us(row["ws_p99"]) if "ws_p99" in row else "-"
        cpu = fmt_us(row["cpu_per_request"]) if "cpu_per_request" in row else "-"
        lines.append(f"| {row['stack']} | {row['rps']:,.0f} | {ratio} | {cpu} | {fmt_us(row['p50'])} | "
                     f"{fmt_us(row['p99'])} | {fmt_us(row['load_p99'])} | {row['errors']:.0f} | {ws50} | {ws99} |")
    direct = next((row for row in rows if row["stack"] == "direct"), None)
    hops = [(row["stack"], row["p50"] - direct["p50"]) for row in rows
            if direct and row["stack"] in ("ipc", "ipc_batch", "ipc_twisted")]
    if hops:
        lines.append("")
        lines.append("Layer hop (p50 - direct p50, one connection): "
                     + ", ".join(f"{name} {fmt_us(hop)}" for name, hop in hops) + ".")
    return "\n".join(lines)


def send_costs(redis_url: str | None, count: int = 5000) -> list[dict[str, Any]]:
    """What a send from the reactor costs: building and sending one message, per layer (in-process).

    The server calls these on the reactor thread for every request and
    every WebSocket frame; they must be short and never block.
    """
    from ipc_layer.loading import load_layer
    from server.http_messages import request_message
    from server.ws_messages import receive_message

    headers = [[b"host", b"127.0.0.1:8000"], [b"user-agent", b"wrk"], [b"accept", b"*/*"],
               [b"cookie", b"sessionid=0123456789abcdef"]]
    layers: list[tuple[str, str, dict[str, Any]]] = [
        ("ipc", "ipc_layer.IPCChannelLayer", {"prefix": f"bench_send_{os.getpid()}",
                                                     "channel_capacity": {"bench.*": count + 10}})]
    if redis_url:
        layers.append(("ipc_redis", "ipc_layer.redis_layer.RedisChannelLayer",
                       {"hosts": [redis_url], "prefix": f"bench_send_{os.getpid()}:",
                        "channel_capacity": {"bench.*": count + 10}}))
    rows = []
    for name, path, config in layers:
        layer = load_layer(path, config)
        try:
            t0 = time.perf_counter()
            for i in range(count):
                message = request_message(reply_channel="server.abc!x1", http_version="1.1", method=b"GET",
                                          target=b"/path?q=1", headers=headers, client=["127.0.0.1", 5000 + i],
                                          server=["127.0.0.1", 8000])
                layer.send("bench.http.request", message)
            http_us = (time.perf_counter() - t0) / count * 1e6
            t0 = time.perf_counter()
            for i in range(count):
                layer.send("bench.websocket.receive", receive_message("server.abc!x1", "/ws", i, "hello, world"))
            ws_us = (time.perf_counter() - t0) / count * 1e6
            rows.append({"layer": name, "http_request_send_us": http_us, "websocket_receive_send_us": ws_us})
        finally:
            layer.flush()
            layer.close()
            if name == "ipc":
                remove_segment(config["prefix"])
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", default=",".join(STACKS),
                        help=f"comma-separated stacks to run (default all: {','.join(STACKS)})")
    parser.add_argument("--duration", type=int, default=5, help="whole seconds of each wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections for req/s (default 32)")
    parser.add_argument("--ws-round-trips", type=int, default=2000, help="WebSocket echo round trips (default 2000)")
    parser.add_argument("--redis-url", default=os.environ.get("IPC_TEST_REDIS_URL"),
                        help="Redis for the ipc_redis stack (default $IPC_TEST_REDIS_URL; skipped without)")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 300 round trips")
    parser.add_argument("--worker-spin-us", type=int, default=0,
                        help="the shared-memory worker's spin budget before it sleeps (latency mode; default 0)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place the stacks and wrk (default: stacks on the first CPU, "
                             "wrk on the last)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    unknown = [s for s in stacks if s not in STACKS]
    if unknown:
        print(f"python -m bench server: error: unknown stack(s) {', '.join(unknown)}; choose from "
              f"{', '.join(STACKS)}", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("python -m bench server: error: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    if args.quick:
        args.duration, args.ws_round_trips = 2, 300
    server_cpus, load_cpus = split_cpus()
    if args.no_pin:
        server_cpus = load_cpus = set(os.sched_getaffinity(0))
    rows: list[dict[str, Any]] = []
    for name in stacks:
        if name == "ipc_redis" and not args.redis_url:
            print("skipping ipc_redis: no --redis-url / IPC_TEST_REDIS_URL", file=sys.stderr)
            continue
        print(f"== {name}", file=sys.stderr)
        with _stack(name, server_cpus, args.redis_url, args.worker_spin_us) as stack:
            run_wrk(stack.port, 4, 1, load_cpus)  # warm-up
            single = run_wrk(stack.port, 1, args.duration, load_cpus)
            pids = [proc.pid for proc in stack.procs]
            cpu_before = sum(cpu_seconds(pids).values())
            loaded = run_wrk(stack.port, args.connections, args.duration, load_cpus)
            cpu_used = sum(cpu_seconds(pids).values()) - cpu_before
            row: dict[str, Any] = {"stack": name, "rps": loaded["rps"], "p50": single["p50"],
                                   "p99": single["p99"], "load_p99": loaded["p99"],
                                   "errors": loaded["errors"] + single["errors"],
                                   "cpu_per_request": cpu_used / max(1.0, loaded["requests"])}
            if stack.websocket:
                row.update(ws_round_trips(stack.port, args.ws_round_trips))
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    table = report(rows)
    costs = send_costs(args.redis_url)
    table += "\n\nA send from the reactor (build the message + layer.send, in-process, mean of 5,000):\n\n"
    table += "| layer | http.request | websocket.receive |\n|---|---:|---:|\n"
    for cost in costs:
        table += (f"| {cost['layer']} | {cost['http_request_send_us']:.1f} us | "
                  f"{cost['websocket_receive_send_us']:.1f} us |\n")
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
