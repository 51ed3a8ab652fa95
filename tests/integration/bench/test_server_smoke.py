"""Smoke test of ``python -m bench server``: tiny runs of the ipc and direct stacks, outputs parsed, no timing."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.server import report, run_wrk

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)")
def test_bench_server_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "server.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "server", "--stacks", "ipc,ipc_batch,ipc_twisted,direct", "--duration", "1",
         "--ws-round-trips", "20", "--connections", "4", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    assert "| direct |" in table and "Layer hop" in table
    for stack in ("ipc", "ipc_batch", "ipc_twisted"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {stack} |"))
        assert "| 0 |" in row, row  # no errors
        assert f"{stack} " in table.split("Layer hop", 1)[1]


def test_bench_server_refuses_unknown_stacks() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "server", "--stacks", "nginx"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown stack(s) nginx" in proc.stderr


def test_report_formats_ratios() -> None:
    rows = [{"stack": "ipc", "rps": 3000.0, "p50": 3e-4, "p99": 1e-3, "load_p99": 2e-3, "errors": 0.0,
             "ws_p50": 2e-4, "ws_p99": 4e-4, "cpu_per_request": 1.5e-4},
            {"stack": "ipc_batch", "rps": 4500.0, "p50": 3.5e-4, "p99": 1e-3, "load_p99": 2e-3, "errors": 0.0},
            {"stack": "direct", "rps": 4000.0, "p50": 2e-4, "p99": 1e-3, "load_p99": 2e-3, "errors": 0.0},
            {"stack": "daphne", "rps": 1000.0, "p50": 1e-3, "p99": 2e-3, "load_p99": 5e-3, "errors": 0.0}]
    table = report(rows)
    assert "| ipc | 3,000 | 3.00x | 150 us |" in table
    assert "| ipc_batch | 4,500 | 4.50x | - |" in table
    assert "Layer hop (p50 - direct p50, one connection): ipc 100 us, ipc_batch 150 us." in table
    assert callable(run_wrk)


def test_the_batch_worker_runs_under_sched_batch() -> None:
    code = ("import os; from bench.server_apps import set_sched; set_sched('batch'); "
            "print(os.sched_getscheduler(0) == os.SCHED_BATCH)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "True", proc.stderr
    with pytest.raises(ValueError, match="'batch' or 'other'"):
        from bench.server_apps import set_sched

        set_sched("fifo")
