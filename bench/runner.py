"""Child processes for one case: start, pin, synchronise, collect, and always bound.

Every role of a case runs in its own process from the ``forkserver`` context (a clean
server process that never built a layer forks the children, so no layer, socket or
mapping is ever inherited across ``fork``). The parent never touches a layer: it only
starts children, waits for their reports on a queue, and kills whatever outlives the
case's deadline. A timeout or a crash becomes an error row, never a hang.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.drivers import LayerSpec, Unavailable, make_driver

__all__ = ["Case", "CaseResult", "Role", "RoleContext", "run_case", "run_probe", "available_cpus"]

#: Imported once by the fork server so that each child starts in milliseconds. A module
#: missing here is skipped silently by multiprocessing (its layer is reported later).
_PRELOAD = [
    "bench.runner",
    "bench.scenarios",
    "bench.drivers",
    "msgpack",
    "redis",
    "channels_redis.core",
]

_ctx: Any = None


def _context() -> Any:
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload(_PRELOAD)
    return _ctx


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@dataclass
class Role:
    name: str
    func: str  # the name of a role function in bench.scenarios (see its run_role)
    args: dict[str, Any]
    cpu: int | None = None


@dataclass
class Case:
    scenario: str
    layer: str
    label: str  # e.g. "100 B" or "1 KiB x 100"
    params: dict[str, Any]
    spec: LayerSpec
    roles: list[Role]
    timeout: float
    barriers: dict[str, int] = field(default_factory=dict)
    #: Names of events the parent may set and roles may wait for.
    events: tuple[str, ...] = ()
    #: Called in the parent when a role reports "ready":
    #: (case, pid, message, events) -> metrics merged into the case's extra figures.
    on_ready: Callable[[Case, int, dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None


@dataclass
class CaseResult:
    ok: bool
    results: list[dict[str, Any]]
    extra: dict[str, Any]
    error: str | None
    elapsed: float


class RoleContext:
    """What a role function gets besides its driver and arguments."""

    def __init__(
        self, idx: int, barriers: dict[str, Any], reports: Any, recv_timeout: float, sync_timeout: float
    ):
        self.idx = idx
        self._barriers = barriers
        self._reports = reports
        self.recv_timeout = recv_timeout
        self._sync_timeout = sync_timeout

    def wait(self, name: str = "all") -> None:
        """Wait at the named barrier (bounded; a broken barrier raises)."""
        self._barriers[name].wait(self._sync_timeout)

    def wait_event(self, name: str) -> None:
        """Wait until the parent sets the named event (bounded)."""
        if not self._barriers[name].wait(self._sync_timeout):
            raise TimeoutError(f"event {name!r} not set within {self._sync_timeout:.0f} s")

    def ready(self, **data: Any) -> None:
        """Tell the parent this role is ready (runs the case's ``on_ready`` hook)."""
        self._reports.put({"idx": self.idx, "kind": "ready", "pid": os.getpid(), **data})


def _child(
    func: str,
    spec: LayerSpec,
    args: dict[str, Any],
    barriers: dict[str, Any],
    reports: Any,
    cpu: int | None,
    idx: int,
    recv_timeout: float,
    sync_timeout: float,
) -> None:
    # Ctrl-C is the parent's business: it terminates us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        from bench.scenarios import run_role

        driver = make_driver(spec)
        try:
            ctx = RoleContext(idx, barriers, reports, recv_timeout, sync_timeout)
            data = run_role(func, driver, args, ctx)
        finally:
            driver.close()
        reports.put({"idx": idx, "kind": "result", "data": data})
    except BaseException as exc:  # report everything, including SystemExit from a role
        reports.put(
            {
                "idx": idx,
                "kind": "error",
                "unavailable": isinstance(exc, (Unavailable, ImportError)),
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        )


def _stop(procs: list[Any]) -> None:
    procs = [proc for proc in procs if proc.pid is not None]  # started ones only
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    end = time.monotonic() + 2.0
    for proc in procs:
        proc.join(max(0.0, end - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


def run_case(case: Case, recv_timeout: float) -> CaseResult:
    """Run every role of ``case`` in its own process; never longer than ``case.timeout``."""
    ctx = _context()
    start = time.monotonic()
    deadline = start + case.timeout
    barriers = {"all": len(case.roles), **case.barriers}
    barrier_objs = {name: ctx.Barrier(parties) for name, parties in barriers.items()}
    events = {name: ctx.Event() for name in case.events}
    barrier_objs.update(events)
    reports = ctx.Queue()
    procs = [
        ctx.Process(
            target=_child,
            name=f"bench-{case.scenario}-{case.layer}-{role.name}",
            args=(
                role.func,
                case.spec,
                role.args,
                barrier_objs,
                reports,
                role.cpu,
                idx,
                recv_timeout,
                case.timeout,
            ),
            daemon=True,
        )
        for idx, role in enumerate(case.roles)
    ]
    results: dict[int, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    error: str | None = None
    finished = False
    try:
        for proc in procs:
            proc.start()
        while len(results) < len(procs) and error is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [case.roles[i].name for i in range(len(procs)) if i not in results]
                error = f"timeout after {case.timeout:.0f} s (no result from {', '.join(missing)})"
                break
            try:
                msg = reports.get(timeout=min(0.5, remaining))
            except queue.Empty:
                error = _dead_without_result(case, procs, results, reports)
                continue
            error = _take(case, msg, results, extra, events)
        finished = error is None
    finally:
        # A clean finish lets the children exit on their own; anything else (an error,
        # a timeout, Ctrl-C) terminates them at once.
        if finished:
            _join(procs, deadline)
        else:
            _stop(procs)
        reports.close()
    ordered = [results[i] for i in sorted(results)]
    return CaseResult(error is None, ordered, extra, error, time.monotonic() - start)


def _take(
    case: Case,
    msg: dict[str, Any],
    results: dict[int, dict[str, Any]],
    extra: dict[str, Any],
    events: dict[str, Any],
) -> str | None:
    idx = msg["idx"]
    if msg["kind"] == "ready":
        if case.on_ready is not None:
            try:
                extra.update(case.on_ready(case, msg["pid"], msg, events))
            except Exception as exc:
                return f"measuring {case.roles[idx].name}: {type(exc).__name__}: {exc}"
        return None
    if msg["kind"] == "error":
        return f"{case.roles[idx].name}: {msg['error']}"
    results[idx] = msg["data"]
    return None


def _dead_without_result(
    case: Case, procs: list[Any], results: dict[int, dict[str, Any]], reports: Any
) -> str | None:
    for idx, proc in enumerate(procs):
        if idx not in results and proc.exitcode is not None:
            # Its last report may still be in the pipe: give it a moment before judging.
            try:
                msg = reports.get(timeout=0.3)
            except queue.Empty:
                return f"{case.roles[idx].name} died (exit code {proc.exitcode}) without a result"
            if msg["kind"] == "error":
                return f"{case.roles[msg['idx']].name}: {msg['error']}"
            if msg["kind"] == "result":
                results[msg["idx"]] = msg["data"]
            return None
    return None


def _join(procs: list[Any], deadline: float) -> None:
    procs = [proc for proc in procs if proc.pid is not None]
    for proc in procs:
        proc.join(max(0.1, min(5.0, deadline - time.monotonic())))
    _stop(procs)


# ------------------------------------------------------------ one-off calls in a child


def _probe_child(spec: LayerSpec, reports: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _probe(spec)
        reports.put({"ok": True})
    except BaseException as exc:
        reports.put(
            {
                "ok": False,
                "unavailable": isinstance(exc, (Unavailable, ImportError)),
                "error": str(exc) if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}",
            }
        )


def _probe(spec: LayerSpec) -> None:
    from bench.scenarios import run_role

    driver = make_driver(spec)
    try:
        run_role("probe", driver)  # driven as the cases will drive the layer
    finally:
        try:
            driver.close()
        finally:
            driver.destroy()


def run_probe(spec: LayerSpec, timeout: float) -> dict[str, Any]:
    """Build ``spec``'s layer in a child, send and receive one message, clean up.

    Returns ``{"ok": bool, "error": str, "unavailable": bool}`` ("unavailable" when the
    layer cannot be imported or has nothing to connect to)."""
    ctx = _context()
    reports = ctx.Queue()
    proc = ctx.Process(target=_probe_child, args=(spec, reports), daemon=True)
    try:
        proc.start()
        try:
            result: dict[str, Any] = reports.get(timeout=timeout)
        except queue.Empty:
            result = {"ok": False, "unavailable": False, "error": f"probe timed out after {timeout:.0f} s"}
    finally:
        proc.join(2.0)
        _stop([proc])
        reports.close()
    return result
