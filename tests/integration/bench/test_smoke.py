"""Smoke test of the benchmark harness: ``python -m bench --quick`` with tiny counts.

It checks that the outputs exist and parse, never a timing. Layers that cannot be built
here (e.g. the shared-memory layer before it lands) are skipped by the bench itself.
The Channels 4 backend (``ipc_aio``) runs under both drivings (``--aio-driving``): the
default run drives it natively, a second, smaller one per call.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 120


def _run_bench(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
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
        *extra,
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


@pytest.mark.parametrize("wakeup", ["fd", "thread"])
def test_aio_wakeup_reaches_the_layer(prefix: str, wakeup: str) -> None:
    from bench.cli import build_parser, settings_from_args
    from bench.drivers import LayerSpec, make_driver

    settings = settings_from_args(build_parser().parse_args(["--aio-wakeup", wakeup]))
    assert settings.aio_wakeup == wakeup
    driver = make_driver(LayerSpec(layer="ipc_aio", prefix=prefix, segment_size=8 << 20, aio_wakeup=wakeup))
    try:
        assert driver.layer.wakeup == wakeup  # type: ignore[union-attr]
    finally:
        driver.close()


def test_aio_wakeup_default_is_the_layers_own(prefix: str) -> None:
    from bench.drivers import LayerSpec, make_driver

    driver = make_driver(LayerSpec(layer="ipc_aio", prefix=prefix, segment_size=8 << 20))
    try:
        assert driver.layer.wakeup == "fd"  # type: ignore[union-attr]
    finally:
        driver.close()


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _check_aio_driving(out: Path, driving: str, phrase: str) -> None:
    """The report names the driving; ipc_aio ran every case under it, exactly once each."""
    assert phrase in (out / "results.md").read_text()
    records = _records(out)
    assert records[1]["aio_driving"] == driving
    rows = [r for r in records if r["type"] == "result" and r["layer"] == "ipc_aio"]
    assert rows, "no ipc_aio rows"
    for row in rows:
        assert row["driving"] == driving
        assert not row["error"], row["error"]
        for rep in row["repeats"]:  # shared memory delivers at most once, stale-free
            assert not rep.get("lost") and not rep.get("duplicates"), (row["scenario"], rep)


def test_bench_quick_writes_table_json_and_plots(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); the bench compares against Redis")
    out = tmp_path / "bench-results"
    result = _run_bench(out)
    assert result.returncode == 0, result.stderr[-3000:]

    table = (out / "results.md").read_text()
    assert "| Layer |" in table
    assert "| Layer |" in result.stdout  # the same table is printed

    records = _records(out)
    kinds = [record["type"] for record in records]
    assert kinds[:2] == ["machine", "settings"]
    rows = [record for record in records if record["type"] == "result"]
    assert rows, "no result rows"
    assert {row["scenario"] for row in rows} == {"pingpong", "oneway", "mpmc", "group", "wide", "idle", "mixed"}
    # One receive over 100 channels fed by a group send: the ASGI 1 and raw layers only
    # (a Channels 4 receive takes one channel), compared with ipc_redis.
    wide = {row["layer"]: row for row in rows if row["scenario"] == "wide"}
    assert {"ipc", "ipc_redis", "redis_raw", "ringbuf_raw"} <= set(wide), sorted(wide)
    assert not {"ipc_aio", "channels_redis"} & set(wide)
    assert not wide["ipc"]["error"] and wide["ipc"]["params"]["channels"] == 100
    assert wide["ipc"]["metrics"]["deliver_us"] > 0 and wide["ipc"]["x_vs_ipc_redis"] is not None
    assert "## wide:" in table and "x vs ipc_redis (all delivered)" in table
    measured = {row["layer"] for row in rows if not row["error"]}
    assert {"channels_redis", "redis_raw", "ipc_aio"} <= measured, result.stderr[-3000:]
    _check_aio_driving(out, "native", "native asyncio driving (`--aio-driving native`)")
    sync_rows = [row for row in rows if row["layer"] == "redis_raw"]
    assert {row["driving"] for row in sync_rows} == {"sync"}

    assert list(out.glob("*.png")), "no PNG figure written"


def test_bench_quick_per_call_aio_driving(tmp_path: Path) -> None:
    """The old driving, kept for comparison: ``run_until_complete`` per operation; and the
    other wake-up mode of ipc_aio (``--aio-wakeup thread``), which the report states."""
    out = tmp_path / "bench-results"
    result = _run_bench(
        out, "--layers", "ipc_aio", "--only", "pingpong,mpmc,group", "--aio-driving", "per-call", "--no-plots",
        "--aio-wakeup", "thread",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _check_aio_driving(out, "per-call", "per-call driving (`--aio-driving per-call`)")
    assert _records(out)[1]["aio_wakeup"] == "thread"
    assert "ipc_aio wake-up: thread (`--aio-wakeup thread`)." in (out / "results.md").read_text()
    scenarios = {r["scenario"] for r in _records(out) if r["type"] == "result"}
    assert scenarios == {"pingpong", "mpmc", "group"}
