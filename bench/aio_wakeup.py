"""Wake-up latency of ``ipc_layer.aio`` (FD watches and the helper thread), against a direct blocking receive.

``python -m bench.aio_wakeup [--rounds N] [--gap-us US] [--spin-us US] [--wakeup fd|thread|both]``

One pinger process (the sync ``ipc_layer.IPCChannelLayer``, blocking
receive) ping-pongs 100 B messages with an echo process, in three variants
of the echo side:

* ``sync``: the sync layer's blocking receive (a futex sleep in the C core);
* ``aio direct [fd]``: an asyncio loop awaiting ``ipc_layer.aio.IPCChannelLayer.receive``
  on an ordinary channel, woken through its FD watch (the sender pokes a
  FIFO the loop polls -> the coroutine takes the record);
* ``aio direct [thread]``: the same with ``wakeup="thread"`` (helper thread in
  ``Segment.wait`` -> ``call_soon_threadsafe`` -> the coroutine takes the record);
* ``aio routed [...]``: the same on a ``new_channel()`` name, i.e. through the
  process queue and the local routing.

The pinger sleeps ``--gap-us`` between rounds, so the echo side is asleep
when each ping arrives. ``aio - sync`` at the median is what the
event-loop hand-off adds to one wake-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from typing import Any

__all__ = ["main", "measure"]

WARMUP = 50


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def _cpus() -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def _echo(prefix: str, variant: str, rounds: int, spin_us: int, cpu: int | None,
          ready_w: int) -> None:
    _pin(cpu)
    if variant == "sync":
        from ipc_layer import IPCChannelLayer

        layer = IPCChannelLayer(prefix=prefix, spin_us=spin_us)
        os.write(ready_w, b"ping.direct\n")
        for _ in range(rounds + WARMUP):
            channel, message = layer.receive(["ping.direct"], block=True)
            if channel is None:
                raise TimeoutError("no ping")
            layer.send(message["reply"], message)
        return

    from ipc_layer.aio import IPCChannelLayer as AioLayer

    wakeup = "thread" if variant.endswith("[thread]") else "fd"

    async def serve() -> None:
        layer = AioLayer(prefix=prefix, spin_us=spin_us, wakeup=wakeup)
        channel = await layer.new_channel() if variant.startswith("aio routed") else "ping.direct"
        os.write(ready_w, channel.encode() + b"\n")
        for _ in range(rounds + WARMUP):
            message = await layer.receive(channel)
            await layer.send(message["reply"], message)

    asyncio.run(serve())


def measure(variant: str, rounds: int, gap_us: int, spin_us: int) -> dict[str, Any]:
    """Round trips (us) between a sync pinger and an echo process of ``variant``."""
    import _ringbuf
    from ipc_layer import IPCChannelLayer

    prefix = f"aiowake_{os.getpid()}_{secrets.token_hex(3)}"
    pinger_cpu, echo_cpu = _cpus()
    layer = IPCChannelLayer(prefix=prefix, blocking_timeout=5)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the echo child
        code = 0
        try:
            _echo(prefix, variant, rounds, spin_us, echo_cpu, ready_w)
        except BaseException:  # noqa: BLE001 - report, never return into the parent's code
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    try:
        _pin(pinger_cpu)
        with os.fdopen(ready_r) as ready:
            target = ready.readline().strip()
        reply = layer.new_process_channel("pong") + "x"
        message = {"type": "ping", "reply": reply, "body": b"x" * 60}
        listen = [reply[: reply.index("!") + 1]]
        rtts: list[float] = []
        for i in range(rounds + WARMUP):
            t0 = time.perf_counter_ns()
            layer.send(target, message)
            if layer.receive(listen, block=True)[0] is None:
                raise TimeoutError(f"{variant}: no pong")
            if i >= WARMUP:
                rtts.append((time.perf_counter_ns() - t0) / 1000)
            if gap_us:
                time.sleep(gap_us / 1e6)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(f"{variant}: echo process failed")
    finally:
        os.close(ready_w)
        layer.close()
        _ringbuf.unlink(prefix, force=True)
    rtts.sort()
    return {
        "variant": variant,
        "p50_us": statistics.median(rtts),
        "p90_us": rtts[int(0.9 * len(rtts))],
        "p99_us": rtts[int(0.99 * len(rtts))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aio_wakeup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="measured round trips per variant (default 2000)")
    parser.add_argument("--gap-us", type=int, default=200,
                        help="pause between rounds, so the echo side sleeps (default 200)")
    parser.add_argument("--spin-us", type=int, default=0, help="spin budget of the echo side (default 0)")
    parser.add_argument("--wakeup", choices=("fd", "thread", "both"), default="both",
                        help="wake-up mode(s) of the aio echo side (default both)")
    args = parser.parse_args(argv)
    modes = ("fd", "thread") if args.wakeup == "both" else (args.wakeup,)
    variants = ["sync"] + [f"aio {kind} [{mode}]" for kind in ("direct", "routed") for mode in modes]
    rows = [measure(v, args.rounds, args.gap_us, args.spin_us) for v in variants]
    base = rows[0]["p50_us"]
    print(f"| echo side (gap {args.gap_us} us, spin {args.spin_us} us) | p50 us | p90 us | p99 us | "
          "p50 added per wake-up |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['p50_us']:.1f} | {row['p90_us']:.1f} | {row['p99_us']:.1f} | "
              f"{row['p50_us'] - base:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
