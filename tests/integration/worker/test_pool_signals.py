"""Supervision for real: SIGKILLed and hung workers, HUP reloads under load, TERM with requests in flight, TTIN/TTOU.

A real ``ipc-server`` and a real pool (``tests/worker_support.py``) on the shared-memory
layer, and the main cases again on the Redis layer. Requests come from httpx over TCP; a
"failed request" is anything but a 200 with the expected body.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.django_site.environment import REPO
from tests.worker_support import READY, LayerUnderTest, Pool, ipc_layer, redis_layer, running_pool

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: Idle workers wake every second (a graceful stop of an idle worker waits for that wake).
FAST_WAKE = {"blocking_timeout": 1}


@pytest.fixture(params=["ipc", "redis"])
def layer(request: pytest.FixtureRequest, prefix: str) -> LayerUnderTest:
    return ipc_layer(prefix) if request.param == "ipc" else redis_layer()


@dataclass
class Load:
    """Clients sending GETs to ``path`` in a loop until stopped; every outcome kept."""

    url: str
    path: str
    clients: int = 4
    results: list[tuple[float, int, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: (start time, seconds) of every request answered
    latencies: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                now = time.monotonic()
                self.results.append((now, response.status_code, response.text))
                self.latencies.append((started, now - started))
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(predicate(text) for _, _, text in list(self.results)):
            assert time.monotonic() < deadline, f"no response matched within {timeout} s: {self.results[-5:]}"
            time.sleep(0.05)

    def count(self) -> int:
        return len(self.results)


def _code_module(tmp_path: Path, value: str) -> tuple[Path, dict[str, str]]:
    """A module on the workers' path whose VALUE the /pool/code/ view returns; its file and the env."""
    folder = tmp_path / "code"
    folder.mkdir(exist_ok=True)
    name = f"pool_code_{secrets.token_hex(4)}"
    path = folder / f"{name}.py"
    path.write_text(f"VALUE = {value!r}\n")
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(folder)]), "IPC_TEST_POOL_MODULE": name,
           "PYTHONDONTWRITEBYTECODE": "1"}
    return path, env


def _get(pool: Pool, path: str) -> Any:
    return httpx.get(pool.url + path, timeout=60)


def test_a_sigkilled_worker_is_replaced_and_no_later_request_fails(layer: LayerUnderTest, tmp_path: Path) -> None:
    with running_pool(layer, tmp_path, workers=2, layer_config=FAST_WAKE) as pool:
        victim, survivor = pool.worker_pids()
        mark = pool.log.mark()
        os.kill(victim, signal.SIGKILL)
        # Requests right away, while the master reaps and respawns: the survivor takes them.
        with ThreadPoolExecutor(4) as executor:
            responses = list(executor.map(lambda _: _get(pool, "/pool/pid/"), range(40)))
        assert [r.status_code for r in responses] == [200] * 40
        assert victim not in {int(r.text) for r in responses}
        pool.log.wait_for(rf"\(pid {victim}\) exited unexpectedly \(killed by SIGKILL\); replacing it", since=mark)
        (replacement,) = pool.ready_pids(since=mark) or [int(pool.log.wait_for(READY, since=mark)[0].group(2))]
        assert sorted(pool.wait_workers(2)) == sorted([survivor, replacement])
        with ThreadPoolExecutor(4) as executor:
            later = list(executor.map(lambda _: _get(pool, "/pool/slow/?s=0.2"), range(12)))
        assert [r.status_code for r in later] == [200] * 12
        assert {int(r.text.rsplit(" ", 1)[1]) for r in later} == {survivor, replacement}
        assert pool.stop() == 0


def test_hup_reloads_changed_code_under_load_with_no_failed_request(layer: LayerUnderTest, tmp_path: Path,
                                                                    report_line: Callable[[str], None]) -> None:
    code, env = _code_module(tmp_path, "old code")
    with running_pool(layer, tmp_path, workers=2, layer_config=FAST_WAKE, extra_env=env) as pool:
        old = set(pool.worker_pids())
        with Load(pool.url, "/pool/code/", clients=4) as load:
            load.wait_for(lambda text: text.startswith("old code"))
            code.write_text("VALUE = 'new code, longer'\n")
            mark = pool.log.mark()
            hup_at = time.monotonic()
            pool.send_signal(signal.SIGHUP)
            pool.log.wait_for(READY, since=mark, count=2)
            for pid in old:
                pool.log.wait_for(rf"\(pid {pid}\) exited \(exit code 0\)", since=mark)
            done_at = time.monotonic()
            settled = load.count()
            deadline = time.monotonic() + 30
            while load.count() < settled + 40:  # more requests, all on the new workers
                assert time.monotonic() < deadline, "the load stalled after the reload"
                time.sleep(0.05)
        assert load.failures == []
        during = [seconds for started, seconds in load.latencies if hup_at <= started <= done_at]
        after = sorted(seconds for started, seconds in load.latencies if started > done_at)
        report_line(f"{layer.name}: HUP to the old workers gone {done_at - hup_at:.2f} s; {len(during)} requests "
                    f"meanwhile, 0 failed, slowest {max(during, default=0) * 1000:.0f} ms (afterwards: median "
                    f"{after[len(after) // 2] * 1000:.1f} ms, slowest {after[-1] * 1000:.0f} ms; 4 clients, 2 workers)")
        bodies = [text for _, _, text in load.results]
        assert any(b.startswith("old code") for b in bodies)
        assert all(b.startswith("new code, longer") for b in bodies[settled:])
        new = set(pool.worker_pids())
        assert len(new) == 2 and not new & old
        # The order in the master's log: each old worker got TERM only after a new one was ready.
        lines = pool.log.lines[mark:]
        ready_at = [i for i, line in enumerate(lines) if re.search(READY, line)]
        retired_at = [i for i, line in enumerate(lines) if "replaced by a reloaded worker, SIGTERM" in line]
        assert len(retired_at) == 2 and retired_at[0] > ready_at[0] and retired_at[1] > ready_at[1]
        assert pool.stop() == 0


def _in_flight(tmp_path: Path, seconds: float, count: int, pool: Pool) -> tuple[list[Future[Any]], ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(count)
    futures = [executor.submit(_get, pool, f"/pool/slow/?s={seconds}&mark={tmp_path / f'started-{n}'}")
               for n in range(count)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("started-*"))) < count:  # each view has begun
        assert time.monotonic() < deadline, "the slow requests did not start"
        time.sleep(0.02)
    return futures, executor


def test_term_lets_in_flight_requests_finish(layer: LayerUnderTest, tmp_path: Path) -> None:
    with running_pool(layer, tmp_path, workers=2, layer_config=FAST_WAKE) as pool:
        futures, executor = _in_flight(tmp_path, 3, 2, pool)
        pool.send_signal(signal.SIGTERM)
        responses = [f.result(timeout=60) for f in futures]
        executor.shutdown()
        assert [(r.status_code, r.text.split(" in ")[0]) for r in responses] == [(200, "slept 3")] * 2
        assert pool.stop() == 0
    assert "SIGKILL" not in pool.log.text()


def test_a_request_longer_than_the_graceful_timeout_is_killed(prefix: str, tmp_path: Path) -> None:
    with running_pool(ipc_layer(prefix), tmp_path, workers=1, layer_config=FAST_WAKE,
                      args=["--graceful-timeout", "1"], server_args=["--http-timeout", "8"]) as pool:
        futures, executor = _in_flight(tmp_path, 60, 1, pool)
        assert pool.stop(timeout=30) == 0
        pool.log.wait_for(r"still running after --graceful-timeout: SIGKILL")
        assert futures[0].result(timeout=60).status_code == 503
        executor.shutdown()


def test_a_hung_worker_is_aborted_with_its_stack_and_replaced(prefix: str, tmp_path: Path) -> None:
    with running_pool(ipc_layer(prefix), tmp_path, workers=1, layer_config=FAST_WAKE, args=["--timeout", "3"],
                      server_args=["--http-timeout", "10"]) as pool:
        (hung,) = pool.worker_pids()
        mark = pool.log.mark()
        futures, executor = _in_flight(tmp_path, 600, 1, pool)
        pool.log.wait_for(rf"\(pid {hung}\) silent for [\d.]+ s \(--timeout 3\): SIGABRT", since=mark)
        # faulthandler's dump shows where it hung.
        pool.log.wait_for(r'File ".*pool_views\.py", line \d+ in slow', since=mark)
        (replacement,) = [int(m.group(2)) for m in pool.log.wait_for(READY, since=mark)]
        assert _get(pool, "/pool/pid/").text == str(replacement)
        assert futures[0].result(timeout=60).status_code == 503
        executor.shutdown()
        assert pool.stop() == 0
    assert f"(pid {hung}) exited (killed by SIGABRT)" in pool.log.text()


def test_ttin_adds_a_worker_and_ttou_removes_one(prefix: str, tmp_path: Path) -> None:
    with running_pool(ipc_layer(prefix), tmp_path, workers=1, layer_config=FAST_WAKE) as pool:
        (first,) = pool.worker_pids()
        mark = pool.log.mark()
        pool.send_signal(signal.SIGTTIN)
        pool.log.wait_for(READY, since=mark)
        assert first in pool.wait_workers(2)
        pool.send_signal(signal.SIGTTOU)
        pool.log.wait_for(r"one worker fewer, SIGTERM", since=mark)
        (left,) = pool.wait_workers(1)
        assert _get(pool, "/pool/pid/").text == str(left)
        assert pool.stop() == 0


def test_max_requests_replaces_workers_without_failing_a_request(prefix: str, tmp_path: Path) -> None:
    with running_pool(ipc_layer(prefix), tmp_path, workers=1, layer_config=FAST_WAKE,
                      args=["--max-requests", "5"]) as pool:
        pids = [int(_get(pool, "/pool/pid/").text) for _ in range(16)]
        assert len(pids) == 16
        assert [len(set(pids[i:i + 5])) for i in (0, 5, 10)] == [1, 1, 1]  # five each, then a new worker
        assert len(set(pids)) == 4
        assert pool.log.text().count("retiring after its --max-requests") == 3
        assert pool.stop() == 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_workers_use_no_cpu(prefix: str, tmp_path: Path, report_line: Callable[[str], None]) -> None:
    # The default blocking_timeout (5 s): an idle worker wakes once per 5 s, the master once a second.
    with running_pool(ipc_layer(prefix), tmp_path, workers=2) as pool:
        assert _get(pool, "/pool/pid/").status_code == 200
        time.sleep(1.0)  # let boot and the first request settle
        pids = [pool.master.pid, *pool.worker_pids()]
        before = {pid: _cpu_seconds(pid) for pid in pids}
        started = time.monotonic()
        time.sleep(5.0)
        elapsed = time.monotonic() - started
        used = {pid: _cpu_seconds(pid) - before[pid] for pid in pids}
        report_line(f"idle pool (master + 2 workers): {sum(used.values()):.3f} s CPU in {elapsed:.1f} s "
                    f"({100 * sum(used.values()) / elapsed:.2f}% of a core)")
        # A polling loop (Channels 1.x workers slept 10 ms) would burn far more than 1% of a core.
        for pid, seconds in used.items():
            assert seconds <= 0.05 * elapsed / 5, f"pid {pid} used {seconds:.3f} s CPU while idle"
        assert pool.stop() == 0


def test_reload_option_restarts_workers_when_a_file_changes(prefix: str, tmp_path: Path) -> None:
    code, env = _code_module(tmp_path, "before")
    with running_pool(ipc_layer(prefix), tmp_path, workers=1, layer_config=FAST_WAKE, extra_env=env,
                      args=["--reload"]) as pool:
        assert _get(pool, "/pool/code/").text.startswith("before")
        mark = pool.log.mark()
        code.write_text("VALUE = 'after the edit'\n")
        pool.log.wait_for(r"a watched file changed: reloading the workers", since=mark)
        pool.log.wait_for(READY, since=mark)
        pool.log.wait_for(r"exited \(exit code 0\)", since=mark)
        assert _get(pool, "/pool/code/").text.startswith("after the edit")
        assert pool.stop() == 0


def test_a_reload_to_code_that_does_not_boot_keeps_the_old_workers(prefix: str, tmp_path: Path) -> None:
    code, env = _code_module(tmp_path, "good code")
    with running_pool(ipc_layer(prefix), tmp_path, workers=2, layer_config=FAST_WAKE, extra_env=env) as pool:
        old = set(pool.worker_pids())
        with Load(pool.url, "/pool/code/", clients=2) as load:
            load.wait_for(lambda text: text.startswith("good code"))
            code.write_text("VALUE = (\n")  # a deploy with a syntax error
            mark = pool.log.mark()
            pool.send_signal(signal.SIGHUP)
            pool.log.wait_for(r"failed to boot: SyntaxError: .*; reload aborted, the workers of the previous "
                              r"code keep running", since=mark)
            pool.log.wait_for(r"booting \(generation 1\)", since=mark, count=2)
            count = load.count()
            deadline = time.monotonic() + 30
            while load.count() < count + 20:
                assert time.monotonic() < deadline, "the load stalled after the aborted reload"
                time.sleep(0.05)
        assert load.failures == []
        assert all(text.startswith("good code") for _, _, text in load.results)
        assert pool.master.poll() is None
        pool.wait_workers(2)
        assert set(pool.worker_pids()) == old
        # Fixed: the next HUP goes through.
        code.write_text("VALUE = 'fixed code'\n")
        mark = pool.log.mark()
        pool.send_signal(signal.SIGHUP)
        pool.log.wait_for(READY, since=mark, count=2)
        for pid in old:
            pool.log.wait_for(rf"\(pid {pid}\) exited \(exit code 0\)", since=mark)
        assert _get(pool, "/pool/code/").text.startswith("fixed code")
        assert pool.stop() == 0


def test_threads_serve_requests_at_once_in_one_worker(prefix: str, tmp_path: Path) -> None:
    with running_pool(ipc_layer(prefix), tmp_path, workers=1, layer_config=FAST_WAKE,
                      args=["--threads", "3", "--timeout", "5"]) as pool:
        (pid,) = pool.worker_pids()
        futures, executor = _in_flight(tmp_path, 1, 3, pool)  # three views running at once
        responses = [f.result(timeout=60) for f in futures]
        executor.shutdown()
        assert {r.text for r in responses} == {f"slept 1 in {pid}"}
        time.sleep(7)  # idle past --timeout: every thread's wake-ups keep the worker alive
        assert pool.worker_pids() == [pid]
        assert "SIGABRT" not in pool.log.text()
        assert pool.stop() == 0


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever adopted it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_workers_leave_when_their_master_is_sigkilled(prefix: str, tmp_path: Path) -> None:
    with running_pool(ipc_layer(prefix), tmp_path, workers=2, layer_config=FAST_WAKE) as pool:
        workers = pool.worker_pids()
        pool.master.kill()
        pool.master.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in workers):  # each notices at its next wake (blocking_timeout 1 s)
            assert time.monotonic() < deadline, f"orphaned workers still running: {workers}\n{pool.log.text()}"
            time.sleep(0.1)
        assert len(pool.log.wait_for(r"the master \(pid \d+\) is gone; exiting", count=2)) == 2
