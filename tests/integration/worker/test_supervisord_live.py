"""The site under a real ``supervisord`` with the configuration ``manage.py supervisor_conf`` writes.

One supervisord per test module, in the foreground (``-n``) with its own config dir, UNIX
control socket, pidfile and logs in a temporary folder; the site is the test Django site
(``tests/django_site``, the chat routing: every ``/chat/`` socket is in group "chat") on this
test's segment prefix and a port of its own, two ``ipc-server`` processes sharing it
(``--reuse-port``) and a pool of two workers. What a deployment relies on:

- HTTP and WebSocket traffic through the group;
- a SIGKILLed worker is replaced by the master, a SIGKILLed server process by supervisord,
  and the site answers throughout (the other server keeps the port);
- ``supervisorctl signal HUP SITE:SITE-worker`` while ``IPC_TEST_SUPERVISOR_CLIENTS`` (50)
  WebSocket clients get a broadcast every 50 ms and an HTTP load runs: no socket dropped,
  no message lost, no request failed; the longest gap between two messages at any client
  and the slowest request during the reload are printed (terminal summary);
- ``supervisorctl stop`` stops both programs within their stopwaitsecs (graceful, no SIGKILL).

Every process (supervisord's session: it puts each program in a process group of its own,
but they stay in its session) is killed and the segment removed even when a step fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from tests.django_site.environment import REPO, site_environment
from tests.support import remove_segment
from tests.worker_support import READY

pytest.importorskip("supervisor", reason="the supervisor package (the tests extra) is not installed")

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

SITE = "chatsite"
SERVER, WORKER = f"{SITE}-server", f"{SITE}-worker"
WORKERS = 2
CLIENTS = int(os.environ.get("IPC_TEST_SUPERVISOR_CLIENTS", "50"))
#: The broadcast's period during the reload (s).
PERIOD = 0.05


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid`` (supervisord and all it started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            pids.append(int(entry))
    return pids


def _children(pid: int) -> list[int]:
    try:
        return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except FileNotFoundError:
        return []


def _wait(what: str, check: Callable[[], object], timeout: float = 60.0, log: Callable[[], str] = lambda: "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{log()}")
        time.sleep(0.1)


@dataclass
class Supervised:
    dir: Path
    conf: Path
    port: int
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ctl(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=120)
        # supervisorctl's exit status: 0, or 3 when a status line is not RUNNING.
        if check and done.returncode not in (0, 3):
            raise AssertionError(f"supervisorctl {' '.join(args)}: exit {done.returncode}\n"
                                 f"{done.stdout}{done.stderr}\n{self.logs()}")
        return done.stdout

    def status(self) -> dict[str, tuple[str, int | None]]:
        """name -> (state, pid) from ``supervisorctl status``."""
        found = {}
        for line in self.ctl("status", check=False).splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = re.search(r"pid (\d+)", line)
                found[parts[0]] = (parts[1], int(pid.group(1)) if pid else None)
        return found

    def pid(self, name: str) -> int | None:
        state, pid = self.status().get(name, ("", None))
        return pid if state == "RUNNING" else None

    def worker_log(self) -> str:
        path = self.dir / "log" / f"{WORKER}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        out = []
        for path in sorted(self.dir.glob("log/*.log")) + [self.dir / "supervisord.log"]:
            if path.exists():
                out.append(f"---- {path.name} ----\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(out)

    def all_running(self) -> bool:
        states = self.status()
        names = [f"{SITE}:{SERVER}_00", f"{SITE}:{SERVER}_01", f"{SITE}:{WORKER}"]
        return all(states.get(name, ("",))[0] == "RUNNING" for name in names)


def _supervisord_conf(tmp: Path, include: Path) -> str:
    return "\n".join([
        "[unix_http_server]", f"file={tmp}/supervisor.sock", "chmod=0700", "",
        "[supervisord]", f"logfile={tmp}/supervisord.log", f"pidfile={tmp}/supervisord.pid",
        f"childlogdir={tmp}", "nodaemon=true", "loglevel=info", "",
        "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "", "[supervisorctl]", f"serverurl=unix://{tmp}/supervisor.sock", "",
        "[include]", f"files={include}", "",
    ])


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    from tests.support import unique_prefix

    prefix = unique_prefix()
    tmp = tmp_path_factory.mktemp("supervisord")
    port = _free_port()
    env = site_environment(prefix, tmp / "state", routing="tests.django_site.chat.chat_routing")
    # What the programs need besides DJANGO_SETTINGS_MODULE (written by the command itself).
    passed = {key: env[key] for key in env if key.startswith("IPC_TEST_") or key == "PYTHONPATH"}
    site_conf = tmp / "site.conf"
    generate = [sys.executable, "-m", "django", "supervisor_conf", "--site", SITE, "--servers", "2",
                "--port", str(port), "--workers", str(WORKERS), "--server-graceful-timeout", "5",
                "--worker-graceful-timeout", "5", "--directory", str(REPO), "--log-dir", str(tmp / "log"),
                "-o", str(site_conf), *(f"--env={key}={value}" for key, value in passed.items())]
    subprocess.run(generate, env=env, cwd=str(REPO), check=True, timeout=120)
    conf = tmp / "supervisord.conf"
    conf.write_text(_supervisord_conf(tmp, site_conf))
    # A bare environment: the programs get what the generated configuration gives them, no more.
    bare = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf), "-n"],
                            cwd=str(tmp), env=bare, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = Supervised(tmp, conf, port, proc, env)
    try:
        _wait("supervisord's control socket", lambda: (tmp / "supervisor.sock").exists(), log=state.logs)
        _wait("every program RUNNING", state.all_running, timeout=90, log=state.logs)
        _wait(f"{WORKERS} workers ready", lambda: len(re.findall(READY, state.worker_log())) >= WORKERS,
              timeout=90, log=state.logs)
        yield state
    finally:
        try:
            if proc.poll() is None:
                subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "shutdown"],
                               capture_output=True, timeout=120)
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for pid in _session_pids(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            print(state.logs())
            remove_segment(prefix)


def _get(url: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.get(url)


async def _chat_round(url: str) -> str:
    async with websockets.connect(url.replace("http", "ws") + "/chat/", open_timeout=30) as ws:
        await ws.send("hello")
        return str(await asyncio.wait_for(ws.recv(), 30))


def test_http_and_websocket_through_the_group(supervised: Supervised) -> None:
    response = _get(supervised.url + "/")
    assert response.status_code == 200, response.text
    assert asyncio.run(_chat_round(supervised.url)) == "hello"


def test_a_killed_worker_is_replaced_by_the_master(supervised: Supervised) -> None:
    master = supervised.pid(f"{SITE}:{WORKER}")
    assert master is not None
    workers = _wait("the master's workers", lambda: len(_children(master)) == WORKERS and _children(master))
    assert isinstance(workers, list)
    ready = len(re.findall(READY, supervised.worker_log()))
    os.kill(workers[0], signal.SIGKILL)
    _wait("a replacement worker", lambda: len(_children(master)) == WORKERS and workers[0] not in _children(master),
          log=supervised.logs)
    _wait("the replacement ready", lambda: len(re.findall(READY, supervised.worker_log())) > ready,
          log=supervised.logs)
    assert supervised.pid(f"{SITE}:{WORKER}") == master  # supervisord saw nothing: the master handled it
    assert _get(supervised.url + "/").status_code == 200
    assert asyncio.run(_chat_round(supervised.url)) == "hello"


def test_a_killed_server_is_restarted_by_supervisord_and_the_port_stays_open(supervised: Supervised) -> None:
    name = f"{SITE}:{SERVER}_00"
    old = supervised.pid(name)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    # The other server holds the port meanwhile: every request in the gap is answered.
    answered = 0
    deadline = time.monotonic() + 60
    while not (supervised.pid(name) not in (None, old)):
        assert _get(supervised.url + "/").status_code == 200
        answered += 1
        assert time.monotonic() < deadline, f"{name} not restarted\n{supervised.logs()}"
    new = supervised.pid(name)
    assert new is not None and new != old
    assert answered >= 1
    server_log = supervised.dir / "log" / f"{SERVER}_00.log"
    _wait("the restarted server listening", lambda: server_log.read_text(errors="replace").count("Listening on") >= 2,
          log=supervised.logs)
    for _ in range(10):
        assert _get(supervised.url + "/").status_code == 200
    assert asyncio.run(_chat_round(supervised.url)) == "hello"


async def _reload_under_load(supervised: Supervised, report: Callable[[str], None]) -> None:
    ws_url = supervised.url.replace("http", "ws") + "/chat/"
    clients = [await websockets.connect(ws_url, open_timeout=60, ping_interval=None) for _ in range(CLIENTS)]
    sender = await websockets.connect(ws_url, open_timeout=60, ping_interval=None)
    received: list[list[float]] = [[] for _ in clients]
    counts: list[list[int]] = [[] for _ in clients]
    closed: list[str] = []

    async def listen(index: int, ws: websockets.ClientConnection) -> None:
        try:
            async for text in ws:
                received[index].append(time.monotonic())
                counts[index].append(int(text))
        except websockets.ConnectionClosed as exc:
            closed.append(f"client {index}: {exc!r}")

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(clients)]

    async def drain_sender() -> None:  # the sender is in the room too: read its copies
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in sender:
                pass

    listeners.append(asyncio.create_task(drain_sender()))
    sent = 0
    stop = asyncio.Event()

    async def broadcast() -> None:
        nonlocal sent
        while not stop.is_set():
            await sender.send(str(sent))
            sent += 1
            await asyncio.sleep(PERIOD)

    latencies: list[tuple[float, float]] = []  # (start, seconds)
    failures: list[str] = []

    async def http_load() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    response = await client.get(supervised.url + "/")
                    if response.status_code != 200:
                        failures.append(f"status {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                latencies.append((start, time.monotonic() - start))

    master = supervised.pid(f"{SITE}:{WORKER}")
    assert master is not None
    old_workers = set(_children(master))
    tasks = [asyncio.create_task(broadcast()), *(asyncio.create_task(http_load()) for _ in range(4))]
    await asyncio.sleep(2)  # steady state first
    ready_before = len(re.findall(READY, supervised.worker_log()))
    reload_start = time.monotonic()
    await asyncio.to_thread(supervised.ctl, "signal", "HUP", f"{SITE}:{WORKER}")

    def reloaded() -> bool:
        now = set(_children(master))
        return (len(re.findall(READY, supervised.worker_log())) >= ready_before + WORKERS
                and len(now) == WORKERS and not now & old_workers)

    while not reloaded():
        assert time.monotonic() - reload_start < 120, f"the reload did not finish\n{supervised.logs()}"
        await asyncio.sleep(0.1)
    reload_end = time.monotonic()
    await asyncio.sleep(2)  # and steady state after
    stop.set()
    await asyncio.gather(*tasks)
    # Every message sent is delivered before the check: the last one, to every client.
    deadline = time.monotonic() + 30
    while any(len(c) < sent for c in counts) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for ws in [*clients, sender]:
        await ws.close()
    await asyncio.gather(*listeners)
    assert supervised.pid(f"{SITE}:{WORKER}") == master  # a HUP is not a restart

    window = [(s, d) for s, d in latencies if reload_start - 1 <= s <= reload_end]
    gaps = [b - a for times in received for a, b in zip(times, times[1:], strict=False)]
    worst_gap, slowest = max(gaps), max(d for _, d in window)
    line = (f"HUP reload under supervisord: {reload_end - reload_start:.2f} s; {CLIENTS} WebSocket clients, "
            f"{sent} broadcasts every {PERIOD * 1000:.0f} ms, longest gap at a client {worst_gap * 1000:.0f} ms; "
            f"{len(latencies)} HTTP requests ({len(window)} during the reload), {len(failures)} failed, "
            f"slowest during the reload {slowest * 1000:.0f} ms")
    print(line)
    report(line)
    assert not closed, closed[:5]
    assert not failures, failures[:5]
    lost = {i: sent - len(c) for i, c in enumerate(counts) if sorted(c) != list(range(sent))}
    assert not lost, f"clients missing messages (client: how many): {dict(list(lost.items())[:5])}"


def test_hup_reload_drops_no_socket_and_fails_no_request(supervised: Supervised,
                                                         report_line: Callable[[str], None]) -> None:
    asyncio.run(_reload_under_load(supervised, report_line))


def test_stop_is_graceful_within_stopwaitsecs(supervised: Supervised) -> None:
    """``supervisorctl stop SITE:*``: both programs exit on their TERM (no SIGKILL from supervisord)."""
    start = time.monotonic()
    out = supervised.ctl("stop", f"{SITE}:*")
    took = time.monotonic() - start
    assert "ERROR" not in out, out
    states = supervised.status()
    assert all(state == "STOPPED" for name, (state, _) in states.items() if name.startswith(f"{SITE}:")), states
    log = (supervised.dir / "supervisord.log").read_text()
    assert "with SIGKILL" not in log, log[-3000:]  # supervisord never had to kill after stopwaitsecs
    for name in (f"{SERVER}_00", f"{SERVER}_01", WORKER):
        assert f"stopped: {name} (exit status 0)" in log, log[-3000:]
    master_children = [pid for pid in _session_pids(supervised.proc.pid) if pid != supervised.proc.pid]
    assert master_children == [], f"left running after stop: {master_children}"
    assert took < 60
