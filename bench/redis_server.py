"""A private ``redis-server`` for one bench run: free loopback port, no persistence.

It runs in a temporary directory with ``--save ''`` and ``--appendonly no``, in its own
session (so a Ctrl-C aimed at the bench does not kill it mid-case), with a parent-death
signal so that it dies even if the bench is SIGKILLed, and it is stopped by
:meth:`RedisServer.stop` (called from a ``finally`` and from ``atexit``).
"""

from __future__ import annotations

import atexit
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

__all__ = ["RedisServer", "RedisUnavailable", "redis_server_version"]

_PR_SET_PDEATHSIG = 1


class RedisUnavailable(RuntimeError):
    """No ``redis-server`` binary, or it did not come up; the message says which."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def redis_server_version(binary: str = "redis-server") -> str | None:
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip() or None


class RedisServer:
    """``with RedisServer() as server: server.url`` -> ``redis://127.0.0.1:<port>/0``."""

    def __init__(self, binary: str = "redis-server", start_timeout: float = 15.0,
                 extra_args: Sequence[str] = (), port: int = 0, config_file: str | None = None):
        """``extra_args`` go after the defaults (``--requirepass x``, ``--sentinel``...);
        ``port`` 0 picks a free one (and keeps it across :meth:`restart`); ``config_file``
        comes first on the command line (a Sentinel needs a writable one)."""
        self.binary = binary
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        self.config_file = config_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmpdir: str | None = None
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> RedisServer:
        path = shutil.which(self.binary)
        if path is None:
            raise RedisUnavailable(
                f"{self.binary} not found on PATH (apt-get install redis-server, or pass --redis-url)"
            )
        if self.tmpdir is None:
            self.tmpdir = tempfile.mkdtemp(prefix="bench-redis-")
            atexit.register(self.stop)
        fixed = self.port != 0
        last_error = ""
        for _ in range(1 if fixed else 3):  # a free port may be taken between probe and bind: retry
            if not fixed:
                self.port = _free_port()
            self.proc = subprocess.Popen(
                [
                    path,
                    *([self.config_file] if self.config_file else []),
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self.tmpdir,
                    "--daemonize", "no",
                    "--protected-mode", "yes",
                    "--loglevel", "warning",
                    "--logfile", "redis.log",
                    *self.extra_args,
                ],
                cwd=self.tmpdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            if self._wait_ready():
                return self
            last_error = self._output()
            self._kill()
        raise RedisUnavailable(f"redis-server did not start: {last_error.strip()[-500:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    # -NOAUTH: up, with requirepass (tests of the password options).
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _output(self) -> str:
        try:
            with open(f"{self.tmpdir}/redis.log", errors="replace") as fh:
                return fh.read()
        except (OSError, TypeError):
            return ""

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: redis shuts down (no save: --save '')
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown), keeping its port and directory."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5.0)

    def restart(self) -> RedisServer:
        """Start the server again on the same port (after :meth:`kill`)."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        """Stop the server and remove its directory (idempotent)."""
        self._kill()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
