"""Smoke test of ``python -m bench stack``: a quick run of every row, its report parsed, no timing asserted.

Also: Ctrl-C in the middle of a run leaves no process and no segment
behind, and the profile's per-request split is computed from py-spy's
collapsed stacks as documented (pure functions, fed by hand).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.stack import STACKS
from bench.stack_profile import OTHER, category, cpu_split, parse_raw, split
from bench.stack_report import goal_lines

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)")


def _bench(args: list[str], marker: str) -> subprocess.Popen[str]:
    # The marker in the environment is inherited by every process the bench starts:
    # afterwards, no live process may carry it.
    env = dict(os.environ, BENCH_STACK_TEST_MARKER=marker)
    return subprocess.Popen([sys.executable, "-m", "bench", "stack", *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _marked(marker: str) -> list[int]:
    needle = f"BENCH_STACK_TEST_MARKER={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _kill_marked(marker: str) -> None:
    for pid in _marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _finish(proc: subprocess.Popen[str], marker: str, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_marked(marker)
        out, err = proc.communicate()
        pytest.fail(f"python -m bench stack took over {timeout} s\n{err[-3000:]}")


def _no_leftovers(marker: str) -> None:
    """No process of the run is alive (those found are killed, so a failure leaks nothing)."""
    left = _marked(marker)
    _kill_marked(marker)
    assert not left, f"processes left running: {left}"


def _row(table: str, stack: str) -> list[str]:
    line = next((x for x in table.splitlines() if x.startswith(f"| {stack}: ")), None)
    assert line is not None, f"no {stack} row in:\n{table}"
    return [cell.strip() for cell in line.strip("|").split("|")]


def _us(cell: str) -> float:
    match = re.fullmatch(r"([\d,]+) us", cell)
    assert match, cell
    return float(match.group(1).replace(",", ""))


@needs_wrk
@pytest.mark.timeout(300)
def test_quick_run_of_every_row_reports_real_figures(tmp_path: Path, prefix: str) -> None:
    out = tmp_path / "stack.md"
    marker = f"smoke-{os.getpid()}-{time.monotonic_ns()}"
    proc = _bench(["--quick", "--workers", "2", "--prefix", prefix, "--out", str(out)], marker)
    _, err = _finish(proc, marker, 280)
    assert proc.returncode == 0, err[-3000:]
    table = out.read_text()
    for stack in STACKS:
        cells = _row(table, stack)
        processes, rps, p50, p99, cpu, errors = (cells[1], cells[2], cells[5], cells[6], cells[10], cells[12])
        assert int(processes) >= 1
        assert float(rps.replace(",", "")) > 0, cells
        assert 0 < _us(p50) <= _us(p99), cells
        assert _us(cpu) > 0, cells
        assert errors == "0", cells
    assert int(_row(table, "ipc")[1]) >= 3  # the server, the worker master, its workers
    assert "req/s >= 3x Daphne 4's: " in table and "not measured" not in table
    assert (tmp_path / "stack.png").stat().st_size > 0
    _no_leftovers(marker)
    assert not glob.glob(f"/dev/shm/rbuf.{prefix}*")


@needs_wrk
@pytest.mark.timeout(180)
def test_ctrl_c_stops_every_process_and_removes_the_segment(prefix: str) -> None:
    marker = f"int-{os.getpid()}-{time.monotonic_ns()}"
    proc = _bench(["--stacks", "ipc", "--duration", "30", "--workers", "2", "--prefix", prefix], marker)
    try:
        deadline = time.monotonic() + 90
        # The bench itself + the server + the worker master + 2 workers, and the segment made.
        while (len(_marked(marker)) < 5 or not glob.glob(f"/dev/shm/rbuf.{prefix}*")) \
                and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert len(_marked(marker)) >= 5
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends (the stacks are in sessions of their own)
        out, err = _finish(proc, marker, 60)
    except BaseException:
        proc.kill()
        _kill_marked(marker)
        raise
    assert proc.returncode == 130, err[-3000:]
    assert "Interrupted: partial results" in out
    _no_leftovers(marker)
    assert not glob.glob(f"/dev/shm/rbuf.{prefix}*")


def test_unknown_stack_is_refused_by_name() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "stack", "--stacks", "ipc,nginx"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown stack(s) nginx" in proc.stderr


RAW = """\
loop (worker/loop.py:50);consume (worker/http.py:80);get (django/base.py:1);sub (re/__init__.py:185) 6
loop (worker/loop.py:50);consume (worker/http.py:90);send (ipc_layer/layer.py:300);packb (msgpack/__init__.py:35) 3
loop (worker/loop.py:50);consume (worker/http.py:95);items (collections/abc.py:10) 2
loop (worker/loop.py:50) 1
run (twisted/internet/base.py:1300);dataReceived (server/http.py:40) 4
run (twisted/internet/base.py:1300);doRead (twisted/internet/tcp.py:250) 5
<module> (<frozen runpy>:198) 7
loop (worker/loop.py:50);receive (ipc_layer/layer.py:280);receive_once (_ringbuf/binding.py:577) 20
run (twisted/internet/base.py:1300);EPollReactor.doPoll (twisted/internet/epollreactor.py:227) 10
"""


def test_profile_split_charges_the_innermost_known_frame() -> None:
    samples = parse_raw(RAW)
    assert len(samples) == 9 and samples[0][1] == 6
    assert category(samples[0][0]) == "Django handler"  # re below Django is Django's time
    assert category(samples[1][0]) == "layer send/receive"
    assert category(samples[2][0]) == "consumer translation"  # the stdlib below our consumer
    assert category(samples[6][0]) == OTHER
    by_category, waiting, hot = split(samples)
    assert by_category == {"Django handler": 6, "layer send/receive": 3, "consumer translation": 2,
                           "worker loop": 1, "server translation": 4, "Twisted": 5, OTHER: 7}
    # The blocking receive and the reactor's poll are wait-prone: counted apart, never hot spots.
    assert waiting == {"layer send/receive": 20, "Twisted": 10}
    assert "receive_once (_ringbuf/binding.py)" not in hot
    assert hot["send (ipc_layer/layer.py)"] == 3
    assert hot["consume (worker/http.py)"] == 2
    assert "get (django/base.py)" not in hot  # not our code


def test_cpu_split_counts_wait_prone_samples_only_beyond_the_wait() -> None:
    from collections import Counter

    active = Counter({"Django handler": 30, "layer send/receive": 10})
    prone = Counter({"layer send/receive": 60})
    # 100 samples for 1.0 s on a CPU + 1.0 s waiting: 20 ms each. The 60 prone ones are 1.2 s,
    # of which 1.0 s was waiting: 0.2 s of CPU; the other 0.8 s goes 3:1 by the active samples.
    split_s = cpu_split(active, prone, run=1.0, wait=1.0)
    assert split_s["Django handler"] == pytest.approx(0.6)
    assert split_s["layer send/receive"] == pytest.approx(0.2 + 0.2)
    assert sum(split_s.values()) == pytest.approx(1.0)
    # More waiting than prone samples: they are no CPU at all; nothing is ever negative.
    assert cpu_split(active, prone, run=1.0, wait=5.0)["layer send/receive"] == pytest.approx(0.25)
    assert cpu_split(Counter(), Counter(), run=1.0, wait=0.0) == {}


def test_goal_lines_compare_in_the_same_run() -> None:
    rows = [{"stack": "ipc", "rps": 4000.0, "p99": 0.010, "cpu_per_request": 4e-4},
            {"stack": "gunicorn", "rps": 8000.0, "p99": 0.004, "cpu_per_request": 2e-4},
            {"stack": "daphne", "rps": 1000.0, "p99": 0.050, "cpu_per_request": 1.6e-3}]
    assert goal_lines(rows) == ["- req/s >= 3x Daphne 4's: 4.00x -> met",
                                "- p99 under load <= 2x gunicorn's: 2.50x -> NOT met",
                                "- on the way to gunicorn's req/s: 0.50x",
                                "- CPU per request: 2.00x gunicorn's, 0.25x daphne's"]
    assert goal_lines(rows[1:])[0] == "- req/s >= 3x Daphne 4's: not measured (needs the ipc and daphne rows)"
