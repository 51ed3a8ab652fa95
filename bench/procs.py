"""The processes of the HTTP benches (``bench server``, ``bench stack``): start, wait, measure, stop.

Theory of operation: a bench run starts each stack's processes with
:func:`spawn`, each in a session (process group) of its own and pinned to
the stack's CPUs. A stack that forks (gunicorn, uvicorn, ``runworker``)
keeps its workers in that group, so :func:`stop` reaches every process the
stack made, including ones its master failed to stop: SIGTERM to each
process we started (the graceful path every server has), a bounded wait,
then SIGKILL to each whole group. Because the children are not in the
terminal's process group, Ctrl-C reaches only the bench, whose ``finally``
blocks stop them (:func:`terminate_as_exit` makes SIGTERM unwind the same
way), so they never die half-way through their own shutdown.

:func:`session_members` and :func:`cpu_seconds` read ``/proc``: a stack's
CPU time is the sum of ``utime + stime`` of every live process in its
sessions (all threads included), read before and after a measured run.

Bench code never touches ``_ringbuf``: a stack's segment is removed with
``ipc-layer rm`` (:func:`remove_segment`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ROOT",
    "cpu_seconds",
    "free_port",
    "remove_segment",
    "sched_times",
    "session_members",
    "spawn",
    "split_cpus",
    "stop",
    "terminate_as_exit",
        "wait_http_ok",
    "wait_port",
]

ROOT = Path(__file__).resolve().parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split_cpus() -> tuple[set[int], set[int]]:
    """(the stacks' CPUs, the load generator's): the first usable CPU and the last."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[0]}, {cpus[-1]}


def spawn(args: list[str], cpus: set[int], env: Mapping[str, str] | None = None,
          log: Path | None = None) -> subprocess.Popen[bytes]:
    """``args`` from the repository root, pinned to ``cpus``, in a session of its own.

    Its stdout and stderr go to the file ``log`` when given (a chatty
    process never blocks on a full pipe), else stdout is dropped and
    stderr piped.
    """
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_env.update(env or {})
    out: Any = subprocess.DEVNULL
    err: Any = subprocess.PIPE
    if log is not None:
        out = err = open(log, "ab")  # noqa: SIM115  # the child holds it; our copy is closed below
    try:
        return subprocess.Popen(args, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    finally:
        if log is not None:
            out.close()


def _tail(proc: subprocess.Popen[bytes], log: Path | None) -> str:
    if log is not None:
        with contextlib.suppress(OSError):
            return log.read_bytes()[-3000:].decode(errors="replace")
        return ""
    if proc.stderr is None:
        return ""
    # Not a blocking read: a forked child of the dead process may still hold the pipe open.
    os.set_blocking(proc.stderr.fileno(), False)
    with contextlib.suppress(OSError, TypeError):
        return (proc.stderr.read() or b"")[-3000:].decode(errors="replace")
    return ""


def _check_alive(procs: Iterable[subprocess.Popen[bytes]], logs: Mapping[int, Path] | None = None) -> None:
    for proc in procs:
        if proc.poll() is not None:
            tail = _tail(proc, (logs or {}).get(proc.pid))
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before serving:\n{tail}")


def wait_port(port: int, procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """Until something accepts on ``port``; a process of ``procs`` that exits meanwhile is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(procs)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def wait_http_ok(port: int, procs: list[subprocess.Popen[bytes]], logs: Mapping[int, Path] | None = None,
                 path: str = "/", timeout: float = 60.0) -> bytes:
    """Until ``GET path`` answers 200 (a server may listen before its workers serve); returns the body.

    ``logs`` maps a process's pid to its log file (shown when it exits early).
    """
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while time.monotonic() < deadline:
        _check_alive(procs, logs)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise RuntimeError(f"GET http://127.0.0.1:{port}{path} did not answer 200 within {timeout} s ({last})")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM each of ``procs``, wait up to ``timeout`` s, then SIGKILL each one's whole process group."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for proc in procs:
        # The group outlives its leader when a forked worker ignored the master's stop
        # (or the master was killed before it could pass it on): nothing may be left.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.stderr is not None:
            proc.stderr.close()


def remove_segment(prefix: str) -> None:
    """Remove a shared-memory stack's segment with ``ipc-layer rm`` (bench code never touches _ringbuf)."""
    with contextlib.suppress(Exception):
        subprocess.run([sys.executable, "-m", "ipc_layer.cli", "rm", "--prefix", prefix, "--force"], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=30)


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` (Redis, children, segments) runs."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may hold spaces or ')'.
    return text[text.rindex(")") + 2:].split()


def session_members(sessions: Iterable[int]) -> list[int]:
    """Every live process in the sessions led by ``sessions`` (what :func:`spawn` started and all it forked)."""
    wanted = set(sessions)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            # After the name: state, ppid, pgrp, session.
            # A zombie still holds its CPU times until its parent reaps it: counted too.
            if fields is not None and int(fields[3]) in wanted:
                found.append(int(entry))
    return sorted(found)


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """``utime + stime`` in seconds of each live process of ``pids`` (all its threads)."""
    out: dict[int, float] = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # After the name: state is field 3, so utime (14) and stime (15) are [11], [12].
            out[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return out


def sched_times(pids: Iterable[int]) -> dict[int, tuple[float, float]]:
    """(seconds on a CPU, seconds runnable but waiting for one) of each live process, all its threads.

    From ``/proc/PID/task/*/schedstat`` (nanoseconds): what a sampling
    profiler cannot tell apart, since both are the "running" state.
    """
    out: dict[int, tuple[float, float]] = {}
    for pid in pids:
        run = wait = 0
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    fields = fh.read().split()
            except OSError:
                continue  # a thread that just ended
            run += int(fields[0])
            wait += int(fields[1])
        out[pid] = (run / 1e9, wait / 1e9)
    return out
