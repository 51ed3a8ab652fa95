"""``python -m bench stack``: the whole stack against the Django stacks users run today, in one run.

Every row serves the same hello-world Django view (:mod:`bench.stack_site`,
DEBUG off, no database) with ``--workers N`` processes where the stack has
workers:

============  ==========================================================================
``ipc``       this project: ``ipc-server`` + ``runworker --workers N`` on the shared-memory
              layer (the run's own segment prefix, removed afterwards)
``gunicorn``  gunicorn, N sync workers, Django's WSGI handler
``daphne``    Daphne 4 (one process), Django's ASGI handler
``uvicorn``   uvicorn with N worker processes, Django's ASGI handler
============  ==========================================================================

Theory of operation: the stacks run one after the other (``--repeats R``
runs the whole sequence R times and reports each figure's median), each
started in process groups of its own (:mod:`bench.procs`) and first asked
``GET /`` until it answers 200. ``wrk`` then runs a one-second warm-up, a
run with one connection (the round trip of one request at a time: p50/p99
"1 conn") and a run with ``--connections`` connections (req/s and p50/p99
under load). Around the loaded run the CPU time (``utime + stime``) of
every process of the stack is read from ``/proc``: CPU per request is its
sum divided by the requests wrk completed. By default every process of
the stacks is pinned to the first CPU and wrk to the last, so each stack
gets the same one core; ``--no-pin`` lets the scheduler place them all.
Every process is stopped and the segment removed whatever happens,
Ctrl-C and SIGTERM included.

The goals (issue 13) are ratios in the same run: the ``ipc`` stack's
req/s at least 3x Daphne 4's, and its p99 under load at most 2x
gunicorn's. ``--profile DIR`` afterwards profiles each process of the
``ipc`` stack under the same load (:mod:`bench.stack_profile`).
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
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import (
    cpu_seconds,
    free_port,
    remove_segment,
    session_members,
    spawn,
    split_cpus,
    stop,
    terminate_as_exit,
    wait_http_ok,
)
from bench.server_apps import BODY
from bench.wrk import run_wrk

__all__ = ["STACKS", "RunningStack", "build_parser", "main", "measure", "running_stack"]

STACKS = ("ipc", "gunicorn", "daphne", "uvicorn")
SETTINGS_MODULE = "bench.stack_site.settings"

_DESCRIPTIONS = {
    "ipc": "ipc-server + runworker --workers {n} (shared-memory layer)",
    "gunicorn": "gunicorn, {n} sync workers (WSGI)",
    "daphne": "Daphne 4, one process (Django ASGI)",
    "uvicorn": "uvicorn --workers {n} (Django ASGI)",
}


@dataclass
class RunningStack:
    """A started stack: its port, the processes we started and their log files (by pid)."""

    name: str
    port: int
    procs: list[subprocess.Popen[bytes]]
    logs: dict[int, Path] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """Every live process of the stack: the ones we started and all they forked (their sessions)."""
        return session_members(proc.pid for proc in self.procs)


def commands(name: str, port: int, workers: int, prefix: str) -> list[list[str]]:
    """The command lines that start stack ``name`` on ``port`` (one list per process we start)."""
    py = sys.executable
    if name == "ipc":
        return [[py, "-m", "server", "-p", str(port), "-v", "0", "--prefix", prefix],
                [py, "-m", "django", "runworker", "--settings", SETTINGS_MODULE, "--workers", str(workers)]]
    if name == "gunicorn":
        return [[py, "-m", "gunicorn", "-w", str(workers), "-k", "sync", "-b", f"127.0.0.1:{port}",
                 "--log-level", "warning", "bench.stack_site.wsgi:application"]]
    if name == "daphne":
        return [[py, "-m", "daphne", "-p", str(port), "-b", "127.0.0.1", "-v", "0",
                 "bench.stack_site.asgi:application"]]
    if name == "uvicorn":
        return [[py, "-m", "uvicorn", "--port", str(port), "--host", "127.0.0.1", "--workers", str(workers),
                 "--log-level", "warning", "--no-access-log", "bench.stack_site.asgi:application"]]
    raise ValueError(f"unknown stack {name!r}; choose from {', '.join(STACKS)}")


@contextlib.contextmanager
def running_stack(name: str, workers: int, prefix: str, cpus: set[int], log_dir: Path) -> Iterator[RunningStack]:
    """Stack ``name`` started, serving ``GET /``; stopped (and its segment removed) on the way out."""
    port = free_port()
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "IPC_BENCH_PREFIX": prefix}
    procs: list[subprocess.Popen[bytes]] = []
    logs: dict[int, Path] = {}
    try:
        for i, args in enumerate(commands(name, port, workers, prefix)):
            log = log_dir / f"{name}-{i}.log"
            proc = spawn(args, cpus, env=env, log=log)
            procs.append(proc)
            logs[proc.pid] = log
        body = wait_http_ok(port, procs, logs)
        if body != BODY:
            raise RuntimeError(f"{name}: GET / answered {body[:200]!r}, not the hello-world view's {BODY!r}")
        yield RunningStack(name, port, procs, logs)
    finally:
        stop(procs)
        if name == "ipc":
            remove_segment(prefix)


def measure(stack: RunningStack, duration: float, connections: int, load_cpus: set[int]) -> dict[str, Any]:
    """One measurement of a running stack: warm-up, one connection, then the loaded run with CPU time."""
    run_wrk(stack.port, 4, 1, load_cpus)  # warm-up: imports, lazy middleware, connection pools
    single = run_wrk(stack.port, 1, duration, load_cpus)
    pids = stack.pids()
    before = cpu_seconds(pids)
    started = time.monotonic()
    loaded = run_wrk(stack.port, connections, duration, load_cpus)
    wall = time.monotonic() - started
    pids = stack.pids()
    after = cpu_seconds(pids)
    # A process forked during the run (a replaced worker) counts from zero.
    cpu = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    if loaded["requests"] <= 0:
        raise RuntimeError(f"{stack.name}: wrk completed no request under load")
    return {"rps": loaded["rps"], "p50": loaded["p50"], "p99": loaded["p99"],
            "p50_1": single["p50"], "p99_1": single["p99"], "requests": loaded["requests"],
            "errors": loaded["errors"] + single["errors"], "cpu_s": cpu,
            "cpu_per_request": cpu / loaded["requests"], "cores": cpu / wall, "processes": len(pids)}


_FIGURES = ("rps", "p50", "p99", "p50_1", "p99_1", "cpu_per_request", "cores")


def median_row(name: str, samples: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """One row per stack: the median of each figure over the repeats; errors and requests summed."""
    row: dict[str, Any] = {"stack": name, "what": _DESCRIPTIONS[name].format(n=workers), "repeats": len(samples)}
    for key in _FIGURES:
        row[key] = statistics.median(s[key] for s in samples)
    row["errors"] = sum(s["errors"] for s in samples)
    row["requests"] = sum(s["requests"] for s in samples)
    row["processes"] = max(s["processes"] for s in samples)
    return row


def build_parser() -> argparse.ArgumentParser:
    cores = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(prog="python -m bench stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", default=",".join(STACKS),
                        help=f"comma-separated stacks to run (default all: {','.join(STACKS)})")
    parser.add_argument("--workers", type=int, default=cores,
                        help=f"worker processes of runworker, gunicorn and uvicorn (default: the usable CPUs, {cores})")
    parser.add_argument("--duration", type=int, default=5, help="whole seconds of each wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections under load (default 32)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the stacks' sequence this many times; each figure is the median (default 1)")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 8 connections, one repeat (a smoke run)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the scheduler place the stacks and wrk (default: the stacks on the first CPU, "
                             "wrk on the last)")
    parser.add_argument("--prefix", default=None,
                        help="shared-memory segment prefix of the ipc stack (default bench_stack_<pid>)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the markdown report to this file, its plot next to it (.png)")
    parser.add_argument("--no-plot", action="store_true", help="no PNG plot with --out")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="then profile each process of the ipc stack under load with py-spy; "
                             "raw profiles and the split go to DIR")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    unknown = [s for s in stacks if s not in STACKS]
    if unknown or not stacks:
        parser.error(f"unknown stack(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(STACKS)}")
    for name in ("workers", "duration", "connections", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    if args.profile is not None and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    if args.quick:
        args.duration, args.connections, args.repeats = 1, 8, 1
    return stacks


def main(argv: list[str] | None = None) -> int:
    from bench.stack_report import render, settings_record, write_plot

    parser = build_parser()
    args = parser.parse_args(argv)
    stacks = _check_args(parser, args)
    load_before = os.getloadavg()
    prefix = args.prefix or f"bench_stack_{os.getpid()}"
    stack_cpus, load_cpus = split_cpus()
    if args.no_pin:
        stack_cpus = load_cpus = set(os.sched_getaffinity(0))
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in stacks}
    failures: dict[str, str] = {}
    profile: dict[str, Any] | None = None
    interrupted = False
    with terminate_as_exit(), tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        log_dir = Path(tmp)
        try:
            for repeat in range(args.repeats):
                for name in stacks:
                    if name in failures:
                        continue
                    print(f"== {name} ({repeat + 1}/{args.repeats})", file=sys.stderr, flush=True)
                    try:
                        with running_stack(name, args.workers, prefix, stack_cpus, log_dir) as stack:
                            sample = measure(stack, args.duration, args.connections, load_cpus)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        failures[name] = str(exc)
                        print(f"{name} failed: {exc}", file=sys.stderr, flush=True)
                        continue
                    print(json.dumps({"stack": name, **sample}), file=sys.stderr, flush=True)
                    samples[name].append(sample)
            if args.profile is not None and "ipc" not in failures:
                from bench.stack_profile import profile_stack

                print("== profiling the ipc stack", file=sys.stderr, flush=True)
                with running_stack("ipc", args.workers, prefix, stack_cpus, log_dir) as stack:
                    profile = profile_stack(stack, args.duration, args.connections, load_cpus, args.profile)
        except KeyboardInterrupt:
            interrupted = True
            print("interrupted: stopping the stack and writing partial results", file=sys.stderr, flush=True)
        finally:
            remove_segment(prefix)  # also when interrupted between a start and its own cleanup
    rows = [median_row(name, samples[name], args.workers) for name in stacks if samples[name]]
    settings = settings_record(args, stack_cpus, load_cpus, load_before)
    plot = None
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out is not None and not args.no_plot and rows:
        plot = write_plot(rows, args.out.with_suffix(".png"))
    text = render(rows, failures, settings, profile, plot.name if plot else None, interrupted)
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    if interrupted:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
