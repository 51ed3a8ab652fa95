"""``python -m bench stack --profile DIR``: where the ``ipc`` stack's time goes, process by process.

Theory of operation: with the stack running, ``wrk`` puts it under the same
load as the measured run while one ``py-spy record --nonblocking`` per
process (the server, the worker master, each worker) samples it for
``duration`` seconds; ``/proc`` gives each process's CPU time over the same
window, and wrk's rate the requests in it. py-spy keeps only samples of
threads that are running (a receive asleep in the kernel, the reactor in
``epoll_wait`` are not counted), so the samples split the process's CPU
time. Each sample is charged to the *innermost* frame that belongs to a
known owner (:data:`CATEGORIES`): a stdlib frame called by Django is
Django's time, ``msgpack`` called by the layer is the layer's. A process's
CPU per request times the share of each category is the per-request CPU
split; the innermost frames of our own code (``server/``, ``worker/``,
``ipc_layer/``) are its hot spots.

The raw profiles (collapsed stacks, one ``frame;frame;... count`` line
each: ``flamegraph.pl`` and speedscope read them) are kept in ``DIR``.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import cpu_seconds
from bench.wrk import fmt_us, parse_wrk

__all__ = ["CATEGORIES", "OWN_CODE", "category", "parse_raw", "profile_stack", "render_profile", "split"]

#: (path prefix of a frame's file, category): the first prefix that matches a frame decides.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("django/", "Django handler"),
    ("bench/stack_site/", "Django handler"),  # the view itself
    ("worker/http", "consumer translation"),
    ("worker/", "worker loop"),
    ("ipc_layer/", "layer send/receive"),
    ("_ringbuf/", "layer send/receive"),
    ("msgpack/", "layer send/receive"),
    ("server/", "server translation"),
    ("twisted/", "Twisted"),
    ("autobahn/", "Twisted"),
    ("txaio/", "Twisted"),
    ("zope/", "Twisted"),
)
OTHER = "other (stdlib, interpreter)"
ORDER = ("Django handler", "consumer translation", "worker loop", "layer send/receive", "server translation",
         "Twisted", OTHER)
#: Our own code: where the hot spots we can fix live.
OWN_CODE = ("server/", "worker/", "ipc_layer/", "_ringbuf/")

#: Names of the processes we start, by stack and position; forked children are "worker".
_ROLES = {"ipc": ("server", "worker master")}


def _frame_file(frame: str) -> str:
    """``'func (path/file.py:12)'`` -> ``'/path/file.py'`` (a leading slash so prefixes match whole names)."""
    inside = frame[frame.rfind("(") + 1:].rstrip(")")
    path = inside.rsplit(":", 1)[0]
    return path if path.startswith("/") else "/" + path


def _owner(path: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if f"/{prefix}" in path:
            return prefix
    return None


def category(stack: list[str]) -> str:
    """The category of one sampled stack (root first): that of its innermost frame with an owner."""
    prefixes = tuple(prefix for prefix, _ in CATEGORIES)
    names = dict(CATEGORIES)
    for frame in reversed(stack):
        owner = _owner(_frame_file(frame), prefixes)
        if owner is not None:
            return names[owner]
    return OTHER


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy's ``--format raw`` (collapsed stacks) as (frames root first, samples) pairs."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def split(samples: list[tuple[list[str], int]]) -> tuple[Counter[str], Counter[str]]:
    """(samples per category, samples per innermost own-code frame of stacks charged to our code)."""
    by_category: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    own = {name for prefix, name in CATEGORIES if prefix.startswith(OWN_CODE)}
    for stack, count in samples:
        cat = category(stack)
        by_category[cat] += count
        if cat in own:
            frame = next(f for f in reversed(stack) if _owner(_frame_file(f), OWN_CODE))
            hot[frame.rsplit(":", 1)[0] + ")"] += count  # one entry per function, not per line
    return by_category, hot


def _roles(stack: Any) -> dict[int, str]:
    names = _ROLES.get(stack.name, ())
    leaders = {proc.pid: (names[i] if i < len(names) else f"process {i}") for i, proc in enumerate(stack.procs)}
    return {pid: leaders.get(pid, "worker") for pid in stack.pids()}


def profile_stack(stack: Any, duration: float, connections: int, load_cpus: set[int], out_dir: Path,
                  rate: int = 200) -> dict[str, Any]:
    """Profile every process of the running ``stack`` (a :class:`bench.stack.RunningStack`) under load."""
    import os

    out_dir.mkdir(parents=True, exist_ok=True)
    roles = _roles(stack)
    ramp = 1.0
    wrk = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{round(duration + 2 * ramp + 1)}s", "--latency",
         f"http://127.0.0.1:{stack.port}/"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, load_cpus))
    spies: dict[int, subprocess.Popen[bytes]] = {}
    try:
        time.sleep(ramp)
        before = cpu_seconds(roles)
        started = time.monotonic()
        for pid, role in roles.items():
            raw = out_dir / f"{role.replace(' ', '-')}-{pid}.txt"
            spies[pid] = subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--duration", str(round(duration)), "--rate", str(rate),
                 "--nonblocking", "--format", "raw", "-o", str(raw)],
                # Beside wrk, off the stack's CPUs (when pinned): the sampler is not the stack's cost.
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=lambda: os.sched_setaffinity(0, load_cpus))
        for spy in spies.values():
            spy.wait(timeout=duration + 60)
        window = time.monotonic() - started
        after = cpu_seconds(roles)
        stdout, _ = wrk.communicate(timeout=duration + 60)
    finally:
        procs: list[subprocess.Popen[Any]] = [*spies.values(), wrk]
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    load = parse_wrk(stdout)
    requests = load["rps"] * window
    processes = []
    for pid, role in roles.items():
        raw = out_dir / f"{role.replace(' ', '-')}-{pid}.txt"
        samples = parse_raw(raw.read_text()) if raw.exists() else []
        by_category, hot = split(samples)
        cpu = after.get(pid, 0.0) - before.get(pid, 0.0)
        processes.append({"role": role, "pid": pid, "cpu_s": cpu, "cpu_per_request": cpu / requests,
                          "samples": sum(by_category.values()), "categories": dict(by_category),
                          "hot": hot.most_common(12), "raw": raw.name})
    return {"rps": load["rps"], "window": window, "requests": requests, "rate": rate, "dir": str(out_dir),
            "errors": load["errors"], "processes": processes}


def render_profile(profile: dict[str, Any]) -> list[str]:
    """Markdown: the per-request CPU split (process x category) and each role's hot spots in our code."""
    procs = profile["processes"]
    lines = ["## Where the time goes (py-spy, the ipc stack under the same load)", "",
             f"{profile['window']:.1f} s of py-spy `--nonblocking` at {profile['rate']} Hz on every process "
             f"while wrk ran at {profile['rps']:,.0f} req/s ({profile['errors']:.0f} errors); CPU per request "
             "from /proc over the same window, split by the share of samples whose innermost known frame "
             f"is in each part. Raw profiles: `{profile['dir']}`.", ""]
    head = ["process", "CPU / request", *ORDER]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    totals: Counter[str] = Counter()
    total_cpu = 0.0
    for proc in procs:
        samples = proc["samples"] or 1
        cells = [f"{proc['role']} ({proc['pid']})", fmt_us(proc["cpu_per_request"])]
        for cat in ORDER:
            share = proc["categories"].get(cat, 0) / samples * proc["cpu_per_request"]
            totals[cat] += share
            cells.append(fmt_us(share) if share else "-")
        total_cpu += proc["cpu_per_request"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| **all processes** | " + fmt_us(total_cpu) + " | "
                 + " | ".join(fmt_us(totals[cat]) if totals[cat] else "-" for cat in ORDER) + " |")
    seen: set[str] = set()
    for proc in procs:
        if proc["role"] in seen or not proc["hot"]:
            continue  # one worker's hot spots stand for all
        seen.add(proc["role"])
        samples = proc["samples"] or 1
        lines += ["", f"Hot spots in our code, {proc['role']} ({proc['pid']}): innermost frame of "
                  "`server/`, `worker/`, `ipc_layer/` (stdlib below it included), share of the process's samples:", ""]
        lines += [f"- {count / samples:5.1%} `{frame}`" for frame, count in proc["hot"]]
    return lines
