"""``wrk`` (Debian's package) as the HTTP load generator of ``bench server`` and ``bench stack``.

:func:`run_wrk` runs it pinned to the load generator's CPUs and parses its
``--latency`` report: requests/s, p50 and p99, the request count and the
errors (non-2xx/3xx answers plus connect/read/write/timeout socket errors).
A report it cannot read is an error naming the output, never a zero.
"""

from __future__ import annotations

import os
import re
import subprocess

__all__ = ["fmt_us", "parse_wrk", "run_wrk", "wrk_seconds"]

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def wrk_seconds(text: str) -> float:
    """A wrk duration (``812.00us``, ``1.20ms``, ``2.00s``) in seconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """requests/s, p50 and p99 (seconds), requests and errors from wrk's ``--latency`` report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = int(errors.group(1)) if errors else 0
    if socket_errors:
        bad += sum(int(g) for g in socket_errors.groups())
    return {"rps": float(rps.group(1)), "p50": wrk_seconds(p50.group(1)), "p99": wrk_seconds(p99.group(1)),
            "requests": float(total.group(1)), "errors": float(bad)}


def run_wrk(port: int, connections: int, duration: float, cpus: set[int], path: str = "/") -> dict[str, float]:
    """One wrk run (one thread, ``connections`` connections, whole seconds) against ``path``."""
    out = subprocess.run(
        # wrk takes whole seconds
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=duration + 60,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    ).stdout
    return parse_wrk(out)


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us"
