"""``manage.py runserver``: ipc-server and worker threads from one command, static files with DEBUG."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import worker
from tests.django_site.environment import REPO
from tests.worker_support import Lines, ipc_layer, site_env

httpx = pytest.importorskip("httpx")
ws_client = pytest.importorskip("websockets.sync.client")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_runserver_serves_views_sockets_and_static_files(prefix: str, tmp_path: Path) -> None:
    layer = ipc_layer(prefix)
    env = site_env(layer, tmp_path, routing="tests.django_site.sockets.routing.channel_routing", debug=True)
    proc = subprocess.Popen([sys.executable, "-m", "django", "runserver", "127.0.0.1:0", "--noreload",
                             "--threads", "2"], cwd=str(REPO), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = Lines(proc.stdout), Lines(proc.stderr)  # type: ignore[arg-type]
    try:
        port = int(err.wait_for(r"Listening on 127\.0\.0\.1:(\d+)", timeout=90)[0].group(1))
        server_pid = int(out.wait_for(r"ipc-server on .* \(pid (\d+)\)", timeout=90)[0].group(1))
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/", timeout=60).text == "hello from GET /\n"
        bridge = Path(worker.__file__).parent / "static" / "worker" / "js" / "websocketbridge.js"
        static = httpx.get(base + "/static/worker/js/websocketbridge.js", timeout=60)
        assert static.status_code == 200 and static.content == bridge.read_bytes()
        assert httpx.get(base + "/static/nope.js", timeout=60).status_code == 404
        with ws_client.connect(f"ws://127.0.0.1:{port}/json/", open_timeout=60) as ws:
            ws.send(json.dumps({"a": 1}))
            assert json.loads(ws.recv(timeout=60))["echo"] == {"a": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not Path(f"/proc/{server_pid}").exists() or _zombie(server_pid)  # its ipc-server went too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()
        print(out.text() + err.text())
        layer.cleanup()


def _zombie(pid: int) -> bool:
    try:
        return re.search(r"\) Z ", Path(f"/proc/{pid}/stat").read_text()) is not None
    except FileNotFoundError:
        return True


def test_runserver_refuses_the_in_memory_layer(tmp_path: Path) -> None:
    env = site_env(ipc_layer("unused"), tmp_path)
    env["IPC_TEST_LAYER_BACKEND"] = "ipc_layer.inmemory.InMemoryChannelLayer"
    done = subprocess.run([sys.executable, "-m", "django", "runserver", "127.0.0.1:0", "--noreload"],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "the in-memory layer, which processes cannot share" in done.stderr
