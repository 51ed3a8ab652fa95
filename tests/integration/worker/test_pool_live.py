"""The worker pool for real: ``ipc-worker``/``runworker`` masters and their workers behind a real ``ipc-server``.

Boot, stop and the errors that stop a pool before it serves. The supervision cases
(SIGKILL, HUP under load, TERM with requests in flight, TTIN/TTOU, idle CPU) are in
``test_pool_signals.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.django_site.environment import REPO
from tests.worker_support import ipc_layer, pool_command, running_pool, site_env

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: Idle workers wake every second (not 5): a graceful stop of an idle worker takes that long.
FAST_WAKE = {"blocking_timeout": 1}


def _run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=str(REPO), env=env, text=True, capture_output=True,
                          timeout=timeout)


@pytest.mark.parametrize("via", ["ipc-worker", "runworker"])
def test_two_workers_serve_and_stop_cleanly(via: str, prefix: str, tmp_path: Path) -> None:
    with running_pool(ipc_layer(prefix), tmp_path, workers=2, via=via, layer_config=FAST_WAKE) as pool:
        assert len(pool.worker_pids()) == 2
        # Four slow requests at once: both workers take some (each runs one at a time).
        with httpx.Client(base_url=pool.url, timeout=60) as client, ThreadPoolExecutor(4) as executor:
            bodies = list(executor.map(lambda _: client.get("/pool/slow/?s=0.5").text, range(4)))
            assert client.get("/").text == "hello from GET /\n"
        served_by = {int(body.rsplit(" ", 1)[1]) for body in bodies}
        assert served_by == set(pool.worker_pids())
        assert pool.stop() == 0
    log = pool.log.text()
    assert log.count("exited (exit code 0)") == 2
    assert "SIGTERM: graceful stop" in log


def test_a_worker_that_cannot_boot_stops_the_master_with_the_cause(prefix: str, tmp_path: Path) -> None:
    env = site_env(ipc_layer(prefix), tmp_path, routing="tests.django_site.no_such_module.routing")
    try:
        done = _run([*pool_command("ipc-worker"), "--workers", "3"], env)
    finally:
        ipc_layer(prefix).cleanup()
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ipc-worker: error: worker ")
    assert "failed to boot: RoutingError:" in last and "tests.django_site.no_such_module" in last
    # No crash loop: each of the three booted once, none was replaced.
    assert done.stderr.count("booting (generation 0)") == 3
    assert "Traceback" in done.stderr  # the worker's own log says where


def test_runworker_reports_a_boot_error_as_a_command_error(prefix: str, tmp_path: Path) -> None:
    env = site_env(ipc_layer(prefix), tmp_path, routing="tests.django_site.no_such_module.routing")
    try:
        done = _run([*pool_command("runworker"), "--workers", "1"], env)
    finally:
        ipc_layer(prefix).cleanup()
    assert done.returncode == 3, done.stderr
    assert "CommandError: worker 1 (pid " in done.stderr and "failed to boot: RoutingError" in done.stderr


def test_a_blocking_timeout_not_shorter_than_the_timeout_is_a_boot_error(prefix: str, tmp_path: Path) -> None:
    env = site_env(ipc_layer(prefix), tmp_path, layer_config={"blocking_timeout": 5})
    try:
        done = _run([*pool_command("ipc-worker"), "--workers", "1", "--timeout", "3"], env)
    finally:
        ipc_layer(prefix).cleanup()
    assert done.returncode == 3, done.stderr
    assert ("failed to boot: BootError: the layer's blocking_timeout (5 s) must be shorter than --timeout (3 s)"
            in done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "backend", "message"),
    [
        (["--layer", "nope"], None,
         "error: --layer nope: settings.CHANNEL_LAYERS has no alias 'nope'; it has ['default']"),
        ([], "ipc_layer.aio.IPCChannelLayer",
         "error: --layer default: BACKEND 'ipc_layer.aio.IPCChannelLayer' is a Channels 4 (async) layer"),
        ([], "ipc_layer.no_such.Layer",
         "error: --layer default: BACKEND 'ipc_layer.no_such.Layer': cannot import module 'ipc_layer.no_such'"),
        (["--only-channels", "a b"], None, "argument --only-channels: channel glob 'a b' has characters"),
    ],
)
def test_a_bad_layer_is_one_line_before_any_worker_starts(argv: list[str], backend: str | None, message: str,
                                                           prefix: str, tmp_path: Path) -> None:
    layer = ipc_layer(prefix)
    if backend is not None:
        layer.backend = backend
    env = site_env(layer, tmp_path)
    done = _run([*pool_command("ipc-worker"), *argv], env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr.strip().splitlines()[-1]
    assert "booting" not in done.stderr and "Traceback" not in done.stderr


def test_no_channel_left_by_the_globs_is_a_boot_error_naming_them(prefix: str, tmp_path: Path) -> None:
    env = site_env(ipc_layer(prefix), tmp_path)
    try:
        done = _run([*pool_command("ipc-worker"), "--workers", "1", "--only-channels", "mail.*"], env)
    finally:
        ipc_layer(prefix).cleanup()
    assert done.returncode == 3, done.stderr
    assert "NoChannelsError: no channel to serve: --only-channels mail.* left none of the routed channels" in (
        done.stderr.strip().splitlines()[-1])


def test_pidfile_is_written_and_removed(prefix: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "pool.pid"
    with running_pool(ipc_layer(prefix), tmp_path, workers=1, args=["--pidfile", str(pidfile)],
                      layer_config=FAST_WAKE) as pool:
        assert pidfile.read_text() == f"{pool.master.pid}\n"
        assert pool.stop(signal.SIGINT) == 0
    assert not pidfile.exists()
