"""``python -m bench stack --profile DIR``: where the ``ipc`` stack's time goes, process by process.

Theory of operation: with the stack running, ``wrk`` puts it under the same
load as the measured run while one ``py-spy record --nonblocking`` per
process (the server, the worker master, each worker) samples it for
``duration`` seconds; ``/proc/PID/task/*/schedstat`` gives each process's
time on a CPU and its time runnable but waiting for one over the same
window, and wrk's rate the requests in it.

py-spy keeps samples of threads in the running state only (a receive
asleep in the kernel, the reactor in ``epoll_wait`` are not counted), but
"running" includes runnable-and-waiting: on a busy core a worker woken by
the server's send waits for the CPU inside its receive call, and a server
whose send wakes a worker on its own core is preempted inside that send.
Those waits land on the frames that sleep or wake (:data:`WAIT_PRONE`: the
layer's C calls, the reactor's poll), so those samples count as CPU only
for what exceeds the process's measured wait time; the rest of the CPU
time is split by the shares of the other samples. Each sample is charged
to the *innermost* frame that belongs to a known owner
(:data:`CATEGORIES`): a stdlib frame called by Django is Django's time,
``msgpack`` called by the layer is the layer's. The innermost frames of
our own code (``server/``, ``worker/``, ``ipc_layer/``), wait-prone
samples left out, are its hot spots.

The raw profiles (collapsed stacks, one ``frame;frame;... count`` line
each: ``flamegraph.pl`` and speedscope read them) are kept in ``DIR``.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import sched_times
from bench.wrk import fmt_us, parse_wrk

__all__ = ["CATEGORIES", "OWN_CODE", "WAIT_PRONE", "category", "cpu_split", "parse_raw", "profile_stack",
           "render_profile", "split"]

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

#: (path prefix, function name prefix or "") of the innermost frames where a thread sleeps or
#: wakes another: the layer core's C calls (a receive that blocks, a send that wakes a waiter),
#: the reactor's, selectors' and the pool master's polls, lock waits.
WAIT_PRONE: tuple[tuple[str, str], ...] = (
    ("_ringbuf/binding.py", ""),
    ("twisted/internet/epollreactor.py", "EPollReactor.doPoll"),
    ("twisted/internet/pollreactor.py", "PollReactor.doPoll"),
    ("selectors.py", ""),
    ("worker/osapi.py", "OSAPI.wait_readable"),  # the pool master's select on its pipes
    ("threading.py", ""),
)

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


def _wait_prone(frame: str) -> bool:
    path = _frame_file(frame)
    function = frame[:frame.rfind(" (")]
    return any(f"/{prefix}" in path and function.startswith(name) for prefix, name in WAIT_PRONE)


def split(samples: list[tuple[list[str], int]]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(samples per category, wait-prone samples per category, samples per hot spot of our code).

    A hot spot is the innermost own-code frame of a sample charged to our code
    (wait-prone samples left out), one entry per function.
    """
    by_category: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    own = {name for prefix, name in CATEGORIES if prefix.startswith(OWN_CODE)}
    for stack, count in samples:
        cat = category(stack)
        if stack and _wait_prone(stack[-1]):
            waiting[cat] += count
            continue
        by_category[cat] += count
        if cat in own:
            frame = next(f for f in reversed(stack) if _owner(_frame_file(f), OWN_CODE))
            hot[frame.rsplit(":", 1)[0] + ")"] += count
    return by_category, waiting, hot


def cpu_split(by_category: Counter[str], waiting: Counter[str], run: float, wait: float) -> dict[str, float]:
    """Seconds of CPU per category, from the samples and the process's (run, wait) seconds.

    A sample stands for ``(run + wait) / samples`` seconds. Wait-prone
    samples are CPU only beyond ``wait`` (clipped at zero: a lower bound);
    the rest of ``run`` goes by the shares of the other samples.
    """
    active, prone = sum(by_category.values()), sum(waiting.values())
    if active + prone == 0:
        return {}
    unit = (run + wait) / (active + prone)
    prone_cpu = min(run, max(0.0, prone * unit - wait))
    rest = run - prone_cpu
    out: dict[str, float] = {}
    for cat in set(by_category) | set(waiting):
        share = rest * by_category[cat] / active if active else 0.0
        if prone:
            share += prone_cpu * waiting[cat] / prone
        out[cat] = share
    if not active:  # everything was wait-prone: what is not the prone share is unexplained
        out[OTHER] = out.get(OTHER, 0.0) + rest
    return out


def _roles(stack: Any) -> dict[int, str]:
    names = _ROLES.get(stack.name, ())
    leaders = {proc.pid: (names[i] if i < len(names) else f"process {i}") for i, proc in enumerate(stack.procs)}
    return {pid: leaders.get(pid, "worker") for pid in stack.pids()}


def profile_stack(stack: Any, duration: float, connections: int, load_cpus: set[int], out_dir: Path,
                  rate: int = 250) -> dict[str, Any]:
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
        before = sched_times(roles)
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
        after = sched_times(roles)
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
        by_category, waiting, hot = split(samples)
        run0, wait0 = before.get(pid, (0.0, 0.0))
        run1, wait1 = after.get(pid, (run0, wait0))
        run, wait = run1 - run0, wait1 - wait0
        split_s = cpu_split(by_category, waiting, run, wait)
        processes.append({"role": role, "pid": pid, "cpu_per_request": run / requests,
                          "wait_per_request": wait / requests,
                          "samples": sum(by_category.values()) + sum(waiting.values()),
                          "wait_prone_samples": sum(waiting.values()),
                          "categories": {cat: cpu / requests for cat, cpu in split_s.items()},
                          "hot": hot.most_common(12), "hot_samples": sum(by_category.values()),
                          "raw": raw.name})
    return {"rps": load["rps"], "window": window, "requests": requests, "rate": rate, "dir": str(out_dir),
            "errors": load["errors"], "processes": processes}


def render_profile(profile: dict[str, Any]) -> list[str]:
    """Markdown: the per-request CPU split (process x category) and each role's hot spots in our code."""
    procs = profile["processes"]
    lines = ["## Where the time goes (py-spy, the ipc stack under the same load)", "",
             f"{profile['window']:.1f} s of py-spy `--nonblocking` at {profile['rate']} Hz on every process "
             f"while wrk ran at {profile['rps']:,.0f} req/s ({profile['errors']:.0f} errors). CPU per request: "
             "time on a CPU (schedstat) over the same window / requests, split by the samples' innermost "
             "known frame; samples in the calls that sleep or wake (the layer's C calls, the reactor's "
             "poll) count only beyond the process's time waiting for a CPU (its last column). "
             f"Raw profiles: `{profile['dir']}`.", ""]
    head = ["process", "CPU / request", *ORDER, "waiting for a CPU / request"]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    totals: Counter[str] = Counter()
    total_cpu = total_wait = 0.0
    for proc in procs:
        cells = [f"{proc['role']} ({proc['pid']})", fmt_us(proc["cpu_per_request"])]
        for cat in ORDER:
            share = proc["categories"].get(cat, 0.0)
            totals[cat] += share
            cells.append(fmt_us(share) if share else "-")
        cells.append(fmt_us(proc["wait_per_request"]))
        total_cpu += proc["cpu_per_request"]
        total_wait += proc["wait_per_request"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| **all processes** | " + fmt_us(total_cpu) + " | "
                 + " | ".join(fmt_us(totals[cat]) if totals[cat] else "-" for cat in ORDER)
                 + f" | {fmt_us(total_wait)} |")
    seen: set[str] = set()
    for proc in procs:
        if proc["role"] in seen or not proc["hot"]:
            continue  # one worker's hot spots stand for all
        seen.add(proc["role"])
        samples = proc["hot_samples"] or 1
        lines += ["", f"Hot spots in our code, {proc['role']} ({proc['pid']}): innermost frame of "
                  "`server/`, `worker/`, `ipc_layer/`, `_ringbuf/` (stdlib below it included), share of the "
                  "process's samples outside the sleeping/waking calls:", ""]
        lines += [f"- {count / samples:5.1%} `{frame}`" for frame, count in proc["hot"]]
    return lines
