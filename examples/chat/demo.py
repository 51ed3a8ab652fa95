"""``ipc-demo``: the chat example, every process of it, from one command (the README's first).

::

    ipc-demo                          # http://127.0.0.1:8000/, data in ~/.local/share/ipc-demo
    ipc-demo --port 8080 --workers 4 --data ./demo-data
    ipc-demo --port 0                 # any free port (the URL printed says which)

Theory of operation
-------------------
1. The database is migrated (``migrate``, in this process) and, on the first start, a
   user ``demo`` is made with a random password, kept in ``<data>/demo-user.txt`` (0600)
   and printed on every start. The data folder also holds the SQLite database, the secret
   key and the processes' logs (``<data>/logs/``); nothing in it is ever removed.
2. Three commands start, each in its own session (a Ctrl-C in the terminal reaches this
   process only, which stops the others in order): ``ipc-server`` on ``--host:--port``, a
   pool of ``--workers`` web workers (``ipc-worker --exclude-channels tasks``) and a pool of
   one task worker (``ipc-worker --only-channels tasks``), all on the shared-memory layer
   with the prefix ``--prefix`` and the layer's defaults. Their output goes to their log
   files (and to the terminal too with ``--verbose``), read by one thread per process.
3. Once the server listens and every worker said ready, the URL and the demo user's
   credentials are printed. A process that exits meanwhile stops everything: its log's
   last lines are printed and the exit status is 1.
4. Ctrl-C (SIGINT) or SIGTERM: the server first (it stops listening and closes the
   sockets with 1001), then both pools (each worker finishes its message), each given
   :data:`STOP_TIMEOUT` seconds before SIGKILL; a second Ctrl-C kills at once. Then the
   layer's shared-memory segment is removed (``ipc-layer rm``): it holds only messages in
   flight, and a stopped site has none worth keeping.

Every mistake (a port in use, a data folder that cannot be written) is one line on
stderr naming it, exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .environment import DEFAULT_ALLOWED_HOSTS, DEFAULT_PREFIX, SETTINGS, default_data_dir

__all__ = ["Child", "DemoError", "build_parser", "main"]

PROG = "ipc-demo"
#: The demo user's name; its password is made on the first start.
DEMO_USER = "demo"
#: How long each process may take to stop gracefully before SIGKILL.
STOP_TIMEOUT = 40.0
#: How long the processes may take to be ready.
START_TIMEOUT = 120.0
_LISTENING = re.compile(r"Listening on (\S+):(\d+) ")
_READY = re.compile(r"worker \d+ \(pid \d+\) ready")


class DemoError(Exception):
    """A mistake that stops the demo; the message names it (exit status ``code``)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Child:
    """One started command: its process, its log file, the patterns seen in its output."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path, echo: bool) -> None:
        self.name = name
        self.log_path = log_path
        self.echo = echo
        self.ready_count = 0
        self.address: tuple[str, int] | None = None
        self.tail: list[str] = []
        self.changed = threading.Condition()
        self._log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed in close())
        self._log.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} {PROG} starts: {' '.join(argv)}\n")
        # Own session: the terminal's Ctrl-C goes to the demo only, which stops us in order.
        self.proc = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace",
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), name=f"log-{name}",
                                        daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._log.write(line)
            if self.echo:
                sys.stderr.write(f"[{self.name}] {line}")
            with self.changed:
                self.tail = [*self.tail[-19:], line]
                m = _LISTENING.search(line)
                if m and self.address is None:
                    self.address = (m.group(1), int(m.group(2)))
                if _READY.search(line):
                    self.ready_count += 1
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the process and whatever it started (its own session's process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self._reader.join(timeout=5)
        self._log.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the chat example (examples/chat): ipc-server, web workers and a task worker on the "
                    "shared-memory layer. Ctrl-C stops everything; the data folder is kept.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="web worker processes (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"folder of the database, secret key and logs (default: {default_data_dir()})")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help="the shared-memory layer's segment prefix (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="show the processes' logs in the terminal too")
    return parser


def _check_port(host: str, port: int) -> None:
    """Fail early, with a clear message, if ``host:port`` cannot be listened on."""
    if not 0 <= port <= 65535:
        raise DemoError(f"--port {port}: must be 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DemoError(f"--host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise DemoError(f"cannot listen on {host}:{port}: {exc.strerror} "
                            "(another ipc-demo or server running? pass --port N, or --port 0 for any)") from None


def _environment(data: Path, prefix: str, host: str) -> dict[str, str]:
    import json

    env = dict(os.environ)
    hosts = DEFAULT_ALLOWED_HOSTS.split(",")
    env.update({
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "IPC_DEMO_DATA": str(data),
        "IPC_DEMO_LAYER_BACKEND": "ipc_layer.IPCChannelLayer",
        "IPC_DEMO_LAYER_CONFIG": json.dumps({"prefix": prefix}),
        # Bound to every address: the visitor's Host can be anything this machine is called.
        "IPC_DEMO_ALLOWED_HOSTS": "*" if host in ("0.0.0.0", "::") else ",".join(dict.fromkeys([*hosts, host])),
    })
    return env


def _prepare(data: Path, env: dict[str, str]) -> tuple[str, str]:
    """Migrate, make the demo user on the first start; (user, password)."""
    os.environ.update({k: env[k] for k in env if k.startswith(("IPC_DEMO_", "DJANGO_SETTINGS_MODULE"))})
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    from django.contrib.auth import get_user_model

    credentials = data / "demo-user.txt"
    users = get_user_model().objects
    if not users.filter(username=DEMO_USER).exists():
        password = secrets.token_urlsafe(9)
        users.create_user(DEMO_USER, password=password)
        fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{DEMO_USER} {password}\n")
        return DEMO_USER, password
    try:
        user, password = credentials.read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        return DEMO_USER, f"(not known: {credentials} is missing; `python -m django changepassword demo` sets one)"
    return user, password


def _wait_ready(children: list[Child], web_workers: int, stop: threading.Event) -> tuple[str, int]:
    server, web, tasks = children
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        for child in children:
            if child.proc.poll() is not None:
                raise DemoError(f"{child.name} exited with status {child.proc.returncode} while starting; "
                                f"its last lines ({child.log_path}):\n" + "".join(child.tail), code=1)
        if server.address is not None and web.ready_count >= web_workers and tasks.ready_count >= 1:
            return server.address
        if stop.is_set():
            raise KeyboardInterrupt
        if time.monotonic() > deadline:
            raise DemoError(f"not ready after {START_TIMEOUT:.0f} s; see the logs in {server.log_path.parent}", code=1)
        with server.changed:
            server.changed.wait(timeout=0.2)


def _stop(children: list[Child], interrupts: list[int]) -> None:
    """The server first (no new work), then the pools; SIGKILL past STOP_TIMEOUT or a second Ctrl-C."""
    for group in (children[:1], children[1:]):
        for child in group:
            child.signal(signal.SIGTERM)
        for child in group:
            deadline = time.monotonic() + STOP_TIMEOUT
            stopped_at = len(interrupts)
            while child.proc.poll() is None:
                if time.monotonic() > deadline or len(interrupts) > stopped_at:
                    print(f"{PROG}: killing {child.name} (pid {child.proc.pid})", file=sys.stderr)
                    child.kill_group()
                    child.proc.wait()
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=0.2)
            child.kill_group()  # a worker its master left behind
    for child in children:
        child.close()


def _remove_segment(prefix: str) -> None:
    from ipc_layer import cli

    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        status = cli.main(["rm", "--prefix", prefix])
    if status:
        print(f"{PROG}: the shared-memory segment {prefix!r} was kept (see above)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise DemoError(f"--workers {args.workers}: at least 1")
    data = (args.data or default_data_dir()).expanduser().resolve()
    try:
        (data / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create the data folder {str(data)!r}: {exc.strerror}") from None
    _check_port(args.host, args.port)
    env = _environment(data, args.prefix, args.host)
    interrupts: list[int] = []
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        interrupts.append(signum)
        stop.set()

    # From here a Ctrl-C is a request to stop, handled in order (never a traceback from
    # the middle of a migration).
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"{PROG}: preparing the database in {data} ...", flush=True)
    user, password = _prepare(data, env)
    if stop.is_set():
        print(f"{PROG}: stopped before starting; the data in {data} is kept", flush=True)
        return 0
    py = sys.executable
    worker = [py, "-m", "worker.cli", "--settings", SETTINGS]
    commands = [
        ("ipc-server", [py, "-m", "server", "-b", args.host, "-p", str(args.port), "--prefix", args.prefix,
                        "--http-timeout", "120"]),
        ("web workers", [*worker, "--workers", str(args.workers), "--exclude-channels", "tasks"]),
        ("task worker", [*worker, "--workers", "1", "--only-channels", "tasks"]),
    ]
    children: list[Child] = []
    status = 0
    try:
        for name, argv in commands:
            log = data / "logs" / (name.split()[0].replace("ipc-", "") + ".log")
            children.append(Child(name, argv, env, log, args.verbose))
        host, port = _wait_ready(children, args.workers, stop)
        shown = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::"):
            shown = "127.0.0.1"
        print(f"""
{PROG}: the chat example is running

    open        http://{shown}:{port}/
    log in as   {user} / {password}
    data        {data} (database, secret key, logs: kept)
    processes   ipc-server (pid {children[0].proc.pid}), {args.workers} web worker(s) (master pid \
{children[1].proc.pid}), 1 task worker (master pid {children[2].proc.pid}),
                on the shared-memory layer, prefix {args.prefix!r}

Ctrl-C stops everything.
""", flush=True)
        while not stop.is_set():
            for child in children:
                if child.proc.poll() is not None:
                    print(f"{PROG}: {child.name} exited with status {child.proc.returncode}; stopping. "
                          f"Its last lines ({child.log_path}):\n" + "".join(child.tail), file=sys.stderr)
                    status = 1
                    stop.set()
            stop.wait(timeout=0.5)
    except KeyboardInterrupt:
        pass
    except DemoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        status = exc.code
    finally:
        print(f"{PROG}: stopping ...", flush=True)
        _stop(children, interrupts)
        if children:
            _remove_segment(args.prefix)
    print(f"{PROG}: stopped; the data in {data} is kept", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except DemoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
