"""The raw `_ringbuf` core, measured from Python through the binding.

``python -m bench.core`` prints the figures the core issue asks for, with the
settings that produced them (spin budget, sizes, CPU pinning):

* one-way 100 B records/s, one producer process -> one consumer process,
  with ``receive`` (one record per call) and ``receive_batch``;
* ping-pong round trip, 100 B, between two processes: with a spin budget
  (traffic flowing) and with both peers asleep in the kernel between rounds,
  next to the raw futex ping-pong floor measured by a small C program in the
  same run (``bench/native/futex_pingpong.c``);
* the added latency of event-loop waiting, against the same process
  receiving directly: an FD watch (``Segment.watch``, polled by the loop with
  ``add_reader``), and a helper thread blocked in ``Segment.wait`` (GIL
  released) that wakes the loop;
* fan-out of one 100 B record to 100 member queues: microseconds per call.

These are the floor under every layer figure in ``python -m bench``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["main", "run"]

NATIVE_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native", "futex_pingpong.c")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def _cpus() -> tuple[int | None, int | None]:
    """Two distinct CPUs for the two sides, or no pinning on a 1-CPU box."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def _fork(child: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            child()
        except BaseException:  # noqa: BLE001 - report and exit, never return to the parent's code
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def _join(pid: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"bench child {pid} failed (status {status})")
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise TimeoutError(f"bench child {pid} did not finish within {timeout:.0f} s")


class _Seg:
    """A fresh segment with a unique prefix, removed at exit."""

    def __init__(self) -> None:
        import _ringbuf

        self.rb = _ringbuf
        self.prefix = f"benchcore_{os.getpid()}_{secrets.token_hex(3)}"
        self.seg = _ringbuf.Segment(self.prefix, size=64 << 20)

    def close(self) -> None:
        self.seg.close()
        try:
            self.rb.unlink(self.prefix, force=True)
        except self.rb.SegmentNotFound:
            pass


# -- one-way ----------------------------------------------------------------------


def one_way(count: int, size: int, batch: int, cpus: tuple[int | None, int | None],
            send_batch: int = 1, prepared: bool = False) -> dict[str, Any]:
    """Records/s from one producer process to one consumer process."""
    box = _Seg()
    seg, rb = box.seg, box.rb
    data = b"x" * size
    names = (b"oneway",)
    r, w = os.pipe()

    def consumer() -> None:
        _pin(cpus[1])
        got = 0
        t0 = None
        if batch > 1:
            take = seg.receive_batch
            while got < count:
                recs = take(names, batch, 2.0)
                if not recs:
                    break
                if t0 is None:
                    t0 = time.perf_counter()
                got += len(recs)
        elif prepared:
            take0 = seg.receiver(names, 2.0)  # the binding's prepared receiver
            while got < count:
                if take0() is None:
                    break
                if t0 is None:
                    t0 = time.perf_counter()
                got += 1
        else:
            take1 = seg.receive
            while got < count:
                if take1(names, 2.0) is None:
                    break
                if t0 is None:
                    t0 = time.perf_counter()
                got += 1
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
        os.write(w, json.dumps({"got": got, "elapsed": elapsed}).encode())

    pid = _fork(consumer)
    _pin(cpus[0])
    send = seg.send
    full = 0
    t0 = time.perf_counter()
    i = 0
    if send_batch > 1:
        chunk = [data] * send_batch
        put = seg.send_batch
        while i < count:
            n = put(b"oneway", chunk[: min(send_batch, count - i)], 0, 65536)
            i += n
            full += n == 0
    while i < count:
        try:
            send(b"oneway", data, 0, 65536)
            i += 1
        except rb.QueueFull:
            full += 1
    send_elapsed = time.perf_counter() - t0
    _join(pid, 120)
    res = json.loads(os.read(r, 4096))
    os.close(r)
    os.close(w)
    box.close()
    # The first record starts the consumer's clock, so it counts got - 1.
    rate = (res["got"] - 1) / res["elapsed"] if res["elapsed"] > 0 else 0.0
    sending = f"send_batch({send_batch})" if send_batch > 1 else "send()"
    receiving = f"receive_batch({batch})" if batch > 1 else ("receiver()()" if prepared else "receive()")
    return {
        "scenario": f"one-way {size} B, {sending} -> {receiving}",
        "records": res["got"],
        "consumer_rate": rate,
        "producer_rate": count / send_elapsed,
        "full_retries": full,
    }


# -- ping-pong --------------------------------------------------------------------


def ping_pong(rounds: int, size: int, spin_us: int, gap_us: int,
              cpus: tuple[int | None, int | None]) -> dict[str, Any]:
    """Round trips between two processes; ``gap_us`` lets the peer fall asleep."""
    box = _Seg()
    seg = box.seg
    data = b"p" * size
    ping, pong = (b"ping",), (b"pong",)

    def echo() -> None:
        _pin(cpus[1])
        recv, send = seg.receive, seg.send
        for _ in range(rounds + 50):
            got = recv(ping, 5.0, spin_us)
            if got is None:
                return
            send(b"pong", got[1])

    pid = _fork(echo)
    _pin(cpus[0])
    recv, send = seg.receive, seg.send
    rtts = []
    gap = gap_us / 1e6
    for i in range(rounds + 50):
        t0 = time.perf_counter_ns()
        send(b"ping", data)
        if recv(pong, 5.0, spin_us) is None:
            raise TimeoutError("ping-pong peer stopped answering")
        if i >= 50:  # warm-up
            rtts.append((time.perf_counter_ns() - t0) / 1000)
        if gap:
            time.sleep(gap)
    _join(pid, 60)
    box.close()
    return _latency_row(f"ping-pong {size} B, spin {spin_us} us, gap {gap_us} us", rtts)


def _latency_row(name: str, rtts: list[float]) -> dict[str, Any]:
    return {
        "scenario": name,
        "rounds": len(rtts),
        "p50_us": _pct(rtts, 0.50),
        "p90_us": _pct(rtts, 0.90),
        "p99_us": _pct(rtts, 0.99),
        "max_us": max(rtts) if rtts else float("nan"),
    }


def raw_futex(rounds: int, cpus: tuple[int | None, int | None]) -> dict[str, Any] | None:
    """Compile and run the C futex ping-pong: the sleeping-wake floor."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "futex_pingpong")
        subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", NATIVE_SRC, "-o", exe], check=True)
        out = subprocess.run(
            [exe, str(rounds), str(cpus[0] if cpus[0] is not None else -1),
             str(cpus[1] if cpus[1] is not None else -1)],
            check=True, capture_output=True, text=True, timeout=120,
        ).stdout
    rtts = [int(x) / 1000 for x in out.split()]
    return _latency_row("raw futex ping-pong (C, both asleep)", rtts)


# -- event-loop waiting -----------------------------------------------------------


def loop_wait(rounds: int, size: int, gap_us: int, cpus: tuple[int | None, int | None]) -> dict[str, Any]:
    """Ping-pong whose echo side is an asyncio loop woken by a waiting thread.

    The thread blocks in ``Segment.wait`` (GIL released, no polling), then
    ``call_soon_threadsafe`` wakes the loop, which takes the record with a
    non-blocking receive: a cancelled wait can never lose a record.
    """
    box = _Seg()
    seg = box.seg
    data = b"p" * size
    ping, pong = (b"ping",), (b"pong",)

    def echo() -> None:
        _pin(cpus[1])

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            stop = threading.Event()
            wakeups: asyncio.Queue[None] = asyncio.Queue()

            def waiter() -> None:
                while not stop.is_set():
                    if seg.wait(ping, 0.5):
                        loop.call_soon_threadsafe(wakeups.put_nowait, None)
                        # One wake-up per record: wait for the loop to take it.
                        taken.wait()
                        taken.clear()

            taken = threading.Event()
            t = threading.Thread(target=waiter, daemon=True)
            t.start()
            done = 0
            while done < rounds + 50:
                try:
                    await asyncio.wait_for(wakeups.get(), 5.0)
                except asyncio.TimeoutError:
                    break
                got = seg.receive(ping, 0)
                taken.set()
                if got is not None:
                    seg.send(b"pong", got[1])
                    done += 1
            stop.set()
            taken.set()
            t.join(2)

        asyncio.run(serve())

    pid = _fork(echo)
    _pin(cpus[0])
    rtts = []
    for i in range(rounds + 50):
        t0 = time.perf_counter_ns()
        seg.send(b"ping", data)
        if seg.receive(pong, 5.0) is None:
            raise TimeoutError("event-loop peer stopped answering")
        if i >= 50:
            rtts.append((time.perf_counter_ns() - t0) / 1000)
        time.sleep(gap_us / 1e6)
    _join(pid, 60)
    box.close()
    return _latency_row(f"ping-pong {size} B, peer = asyncio loop + wait thread, gap {gap_us} us", rtts)


def loop_watch(rounds: int, size: int, gap_us: int, cpus: tuple[int | None, int | None]) -> dict[str, Any]:
    """Ping-pong whose echo side is an asyncio loop woken through an FD watch.

    The echo side's loop polls ``Segment.watch``'s FIFO with ``add_reader``:
    ``arm()`` under the segment lock, and the pinger's ``send`` disarms the row
    and writes one byte after unlocking (the mode the Channels 4 backend uses by
    default).  No helper thread: one kernel wake-up per round trip leg.
    """
    box = _Seg()
    seg = box.seg
    data = b"p" * size
    ping, pong = (b"ping",), (b"pong",)
    ready_r, ready_w = os.pipe()

    def echo() -> None:
        _pin(cpus[1])
        watch = seg.watch(ping)

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            finished = loop.create_future()
            done = 0

            def take() -> None:
                nonlocal done
                # Take everything, then arm; arm() says True when a record came
                # meanwhile (the row stays disarmed): take again.
                while True:
                    got = seg.receive(ping, 0)
                    if got is not None:
                        seg.send(b"pong", got[1])
                        done += 1
                        continue
                    if done >= rounds + 50:
                        if not finished.done():
                            finished.set_result(None)
                        return
                    if not watch.arm():
                        return

            def readable() -> None:
                watch.drain()
                take()

            loop.add_reader(watch.fileno(), readable)
            take()  # arms the watch
            os.write(ready_w, b"r")
            try:
                await asyncio.wait_for(finished, 120)
            finally:
                loop.remove_reader(watch.fileno())

        try:
            asyncio.run(serve())
        finally:
            watch.close()

    pid = _fork(echo)
    _pin(cpus[0])
    rtts = []
    try:
        os.read(ready_r, 1)
        for i in range(rounds + 50):
            t0 = time.perf_counter_ns()
            seg.send(b"ping", data)
            if seg.receive(pong, 5.0) is None:
                raise TimeoutError("FD-watching peer stopped answering")
            if i >= 50:
                rtts.append((time.perf_counter_ns() - t0) / 1000)
            time.sleep(gap_us / 1e6)
        _join(pid, 60)
    finally:
        for fd in (ready_r, ready_w):
            os.close(fd)
        box.close()
    return _latency_row(f"ping-pong {size} B, peer = asyncio loop + FD watch, gap {gap_us} us", rtts)


# -- fan-out ------------------------------------------------------------------------


def fanout(members: int, size: int, calls: int) -> dict[str, Any]:
    """Microseconds per ``fanout`` call delivering to ``members`` queues."""
    box = _Seg()
    seg = box.seg
    data = b"g" * size
    names = [f"member.{i}".encode() for i in range(members)]
    for n in names:
        seg.set_add(b"group", n)
    per_call = []
    drain = [(n,) for n in names]
    for i in range(calls + 10):
        t0 = time.perf_counter_ns()
        sent, skipped = seg.fanout(b"group", data, 0, 1000)
        dt = (time.perf_counter_ns() - t0) / 1000
        if sent != members or skipped:
            raise RuntimeError(f"fanout delivered {sent}, skipped {skipped} of {members}")
        if i >= 10:
            per_call.append(dt)
        if i % 50 == 49:  # keep queues short; not timed
            for d in drain:
                while seg.receive_batch(d, 256):
                    pass
    box.close()
    row = _latency_row(f"fanout {size} B to {members} members (one C call)", per_call)
    row["mean_us"] = statistics.fmean(per_call)
    return row


# -- driver -------------------------------------------------------------------------


def run(quick: bool = False) -> list[dict[str, Any]]:
    scale = 0.1 if quick else 1.0
    cpus = _cpus()
    n_oneway = int(1_000_000 * scale)
    n_rounds = int(20_000 * scale)
    n_sleep = int(2_000 * scale)
    rows: list[dict[str, Any]] = []
    rows.append(one_way(n_oneway, 100, 1, cpus))
    rows.append(one_way(n_oneway, 100, 1, cpus, prepared=True))
    rows.append(one_way(n_oneway, 100, 256, cpus))
    rows.append(one_way(n_oneway, 100, 256, cpus, send_batch=64))
    rows.append(ping_pong(n_rounds, 100, 200, 0, cpus))
    raw = raw_futex(n_sleep, cpus)
    if raw:
        rows.append(raw)
    rows.append(ping_pong(n_sleep, 100, 0, 200, cpus))
    rows.append(loop_wait(n_sleep, 100, 200, cpus))
    rows.append(loop_watch(n_sleep, 100, 200, cpus))
    rows.append(fanout(100, 100, int(2_000 * scale) or 50))
    for row in rows:
        row["pinning"] = f"producer/pinger cpu {cpus[0]}, consumer/echo cpu {cpus[1]}"
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"
    return str(v)


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | figures |", "|---|---|"]
    for row in rows:
        figs = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("scenario", "pinning"))
        lines.append(f"| {row['scenario']} | {figs} |")
    by = {r["scenario"]: r for r in rows}
    raw = next((r for r in rows if r["scenario"].startswith("raw futex")), None)
    sleep = next((r for r in rows if "spin 0 us, gap" in r["scenario"]), None)
    spin = next((r for r in rows if "spin 200 us, gap 0" in r["scenario"]), None)
    loop = next((r for r in rows if "wait thread" in r["scenario"]), None)
    watchrow = next((r for r in rows if "FD watch" in r["scenario"]), None)
    lines.append("")
    one = [r for r in rows if r["scenario"].startswith("one-way")]
    for r in one:
        lines.append(f"- {r['scenario']}: {r['consumer_rate']:,.0f} records/s (target >= 1,000,000/s)")
    if spin:
        lines.append(f"- round trip with traffic flowing (spin 200 us): p50 {spin['p50_us']:.1f} us (target <= 5 us)")
    if raw and sleep:
        lines.append(
            f"- round trip, peers asleep: p50 {sleep['p50_us']:.1f} us = {sleep['p50_us'] / raw['p50_us']:.2f}x "
            f"the raw futex ping-pong ({raw['p50_us']:.1f} us) (target <= 1.5x)")
    if loop and sleep:
        lines.append(
            f"- event-loop wake (thread in Segment.wait -> call_soon_threadsafe): p50 {loop['p50_us']:.1f} us, "
            f"+{loop['p50_us'] - sleep['p50_us']:.1f} us over a direct blocking receive")
    if watchrow and sleep:
        lines.append(
            f"- event-loop wake (FD watch: Segment.watch + add_reader): p50 {watchrow['p50_us']:.1f} us, "
            f"+{watchrow['p50_us'] - sleep['p50_us']:.1f} us over a direct blocking receive")
    fan = next((r for r in rows if r["scenario"].startswith("fanout")), None)
    if fan:
        lines.append(
            f"- fan-out to 100 members: p50 {fan['p50_us']:.1f} us per call, "
            f"mean {fan['mean_us']:.1f} us (target <= 20 us)"
        )
    del by
    if rows:
        lines.append(
            f"- settings: {rows[0]['pinning']}; 100 B records; segment 64 MiB; Python {sys.version.split()[0]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.core",
        description="Measure the raw _ringbuf core through its Python binding "
                    "(the limit under every layer figure).")
    parser.add_argument("--quick", action="store_true", help="a tenth of the default counts (seconds)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON lines to FILE")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    print(report(rows))
    if args.json:
        with open(args.json, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
