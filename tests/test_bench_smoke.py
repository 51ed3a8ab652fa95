"""Smoke test of the benchmark harness: ``python -m bench --quick`` with tiny counts.

It checks that the outputs exist and parse, never a timing. Layers that cannot be built
here (e.g. the shared-memory layer before it lands) are skipped by the bench itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def _run_bench(out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--scale",
        "0.1",
        "--sizes",
        "100",
        "--members",
        "10",
        "--out",
        str(out),
    ]
    # Own session, so that on a timeout the whole tree (fork server, roles) is killed.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"python -m bench --quick took over {TIMEOUT} s\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def test_bench_quick_writes_table_json_and_plots(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); the bench compares against Redis")
    out = tmp_path / "bench-results"
    result = _run_bench(out)
    assert result.returncode == 0, result.stderr[-3000:]

    table = (out / "results.md").read_text()
    assert "| Layer |" in table
    assert "| Layer |" in result.stdout  # the same table is printed

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    kinds = [record["type"] for record in records]
    assert kinds[:2] == ["machine", "settings"]
    rows = [record for record in records if record["type"] == "result"]
    assert rows, "no result rows"
    assert {row["scenario"] for row in rows} == {"pingpong", "oneway", "mpmc", "group", "idle", "mixed"}
    measured = {row["layer"] for row in rows if not row["error"]}
    assert {"channels_redis", "redis_raw"} <= measured, result.stderr[-3000:]

    assert list(out.glob("*.png")), "no PNG figure written"
