"""``ipc-demo`` as a newcomer runs it: first start, the printed URL and user, Ctrl-C, a second start.

The command is started as the console script runs it (``python -m examples.chat.demo``),
in a process group of its own, and stopped the way a terminal's Ctrl-C does (SIGINT to
that group). Checked: the database is migrated and the demo user made on the first start,
the credentials printed log in, the site answers, Ctrl-C stops every process it started
and removes the layer's segment but keeps the data (the second start prints the same user
and the counter kept its value), and a port in use is one clear line.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.django_site.environment import REPO
from tests.support import segment_files
from tests.worker_support import Lines

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

_URL = re.compile(r"open\s+(http://\S+)")
_USER = re.compile(r"log in as\s+(\S+) / (\S+)")
_PIDS = re.compile(r"ipc-server \(pid (\d+)\).*master pid (\d+)\).*master pid (\d+)\)")


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    out: Lines
    url: str
    user: str
    password: str
    pids: list[int]

    def interrupt(self, timeout: float = 120) -> int:
        """Ctrl-C as a terminal sends it (to the foreground process group); the exit status."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)


def start(data: Path, prefix: str, *args: str) -> tuple[subprocess.Popen[str], Lines]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IPC_DEMO_", "DJANGO_SETTINGS_MODULE"))}
    proc = subprocess.Popen([sys.executable, "-m", "examples.chat.demo", "--data", str(data), "--prefix", prefix,
                             *args], cwd=str(REPO), env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, Lines(proc.stdout)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_demo(data: Path, prefix: str) -> Iterator[Demo]:
    proc, out = start(data, prefix, "--port", "0")
    try:
        out.wait_for(r"Ctrl-C stops everything", timeout=150)
        text = out.text()
        url, user, pids = _URL.search(text), _USER.search(text), _PIDS.search(text.replace("\n", " "))
        assert url and user and pids, text
        yield Demo(proc, out, url.group(1), user.group(1), user.group(2), [int(p) for p in pids.groups()])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
        print(f"---- ipc-demo output (exit {proc.returncode}) ----\n{out.text()}")
        for log in sorted((data / "logs").glob("*.log")):
            print(f"---- {log.name} ----\n{log.read_text()[-4000:]}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def test_first_start_ctrl_c_and_second_start(prefix: str, tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    with running_demo(data, prefix) as demo:
        assert (data / "db.sqlite3").exists() and (data / "demo-user.txt").stat().st_mode & 0o777 == 0o600
        assert demo.user == "demo"
        with httpx.Client(base_url=demo.url, timeout=30) as client:
            assert "Live counter" in client.get("/").text
            client.get("/accounts/login/")
            login = client.post("/accounts/login/", data={"username": demo.user, "password": demo.password,
                                                          "csrfmiddlewaretoken": client.cookies["csrftoken"]})
            assert login.status_code == 302, login.text
            assert '<strong id="username">demo</strong>' in client.get("/room/lobby/").text
            stats = client.get("/stats.json").json()
            assert stats["prefix"] == prefix and stats["layer"] == "ipc_layer.layer.IPCChannelLayer"
            clap = client.post("/counter/", headers={"X-CSRFToken": client.cookies["csrftoken"]})
            assert clap.json() == {"value": 1}
        children = [int(p) for pid in demo.pids[1:]
                    for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        assert len(children) == 3  # two web workers and the task worker
        assert segment_files(prefix)
        assert demo.interrupt() == 0
        assert demo.out.wait_for(r"stopped; the data in .* is kept")
        for pid in demo.pids + children:
            assert not alive(pid), f"pid {pid} outlived ipc-demo"
        assert segment_files(prefix) == []
    assert {"db.sqlite3", "secret_key", "demo-user.txt", "logs"} <= {p.name for p in data.iterdir()}
    password = demo.password

    with running_demo(data, prefix) as again:
        assert (again.user, again.password) == ("demo", password)
        assert "preparing the database" in again.out.text()
        with httpx.Client(base_url=again.url, timeout=30) as client:
            assert client.get("/counter/").json() == {"value": 1}
        assert again.interrupt() == 0
    assert segment_files(prefix) == []


def test_a_port_in_use_is_one_clear_line(prefix: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, out = start(tmp_path / "data", prefix, "--port", str(port))
        try:
            assert proc.wait(timeout=60) == 2
        finally:
            out.close()
    text = out.text()
    assert f"ipc-demo: error: cannot listen on 127.0.0.1:{port}: Address already in use" in text, text
    assert "Traceback" not in text
    assert segment_files(prefix) == []


def test_ctrl_c_while_preparing_stops_cleanly(prefix: str, tmp_path: Path) -> None:
    # The first start's migration takes about a second: a Ctrl-C as soon as it begins lands
    # inside it (or, on a fast machine, just after): either way a clean stop, no traceback.
    proc, out = start(tmp_path / "data", prefix, "--port", "0")
    try:
        out.wait_for(r"preparing the database", timeout=60)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
    text = out.text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert re.search(r"stopped( before starting)?; the data in .* is kept", text), text
    assert segment_files(prefix) == []
