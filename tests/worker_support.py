"""A live site for the worker tests: a real ``ipc-server`` and a real worker pool on the test's own layer.

::

    from tests.worker_support import ipc_layer, running_pool

    def test_something(prefix, tmp_path):
        with running_pool(ipc_layer(prefix), tmp_path, workers=2) as pool:
            httpx.get(pool.url + "/")
            pool.send_signal(signal.SIGHUP)
            pool.log.wait_for(r"worker \\d+ \\(pid \\d+\\) ready", since=mark)

- :func:`ipc_layer` / :func:`redis_layer` describe the layer (backend, CONFIG, cleanup):
  the shared-memory layer on the test's prefix, or the Redis layer on ``IPC_TEST_REDIS_URL``
  (or a private redis-server; skipped if there is none) with a unique key prefix.
- :func:`running_pool` starts ``ipc-server -p 0`` (its port read from its log) and the pool
  (``python -m worker.cli``, the ``ipc-worker`` console script, or ``python -m django
  runworker``: ``via=``) on the test site ``tests.django_site`` with that layer, waits until
  the server listens and ``workers`` workers said ready, yields a :class:`Pool`, then stops
  both (SIGTERM, SIGKILL past a bound) and removes the layer's data. The logs of both are
  printed at teardown (pytest shows them when the test failed).

Only the standard library and the tests' own helpers are imported at module level.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.django_site.environment import IPC_BACKEND, REDIS_BACKEND, REPO, site_environment
from tests.support import remove_keys, remove_segment, unique_key_prefix

__all__ = ["READY", "LayerUnderTest", "Lines", "Pool", "ipc_layer", "redis_layer", "running_pool"]

#: What the master logs when a worker is ready (group 1: its number, 2: its pid).
READY = r"worker (\d+) \(pid (\d+)\) ready"
_LISTENING = r"Listening on 127\.0\.0\.1:(\d+)"
#: The layer's segment size the test site's settings give every process (tests.django_site.settings).
SITE_SEGMENT_SIZE = 32 << 20


class Lines:
    """A child's stream, read by a thread (the test never blocks on a pipe); every line kept."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._queue: queue.Queue[str] = queue.Queue()
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self._queue.put(line)

    def _drain(self, timeout: float = 0.0) -> None:
        try:
            self.lines.append(self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait())
            while True:
                self.lines.append(self._queue.get_nowait())
        except queue.Empty:
            pass

    def mark(self) -> int:
        """The number of lines so far (``since=`` of a later :meth:`wait_for`)."""
        self._drain()
        return len(self.lines)

    def matches(self, pattern: str, since: int = 0) -> list[re.Match[str]]:
        self._drain()
        found = (re.search(pattern, line) for line in self.lines[since:])
        return [m for m in found if m]

    def wait_for(self, pattern: str, timeout: float = 60.0, since: int = 0, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` lines after line ``since`` that match ``pattern`` (AssertionError at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matches(pattern, since)
            if len(found) >= count:
                return found[:count]
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{len(found)} of {count} line(s) matching {pattern!r} within {timeout} s; saw:\n{self.text()}"
                )
            self._drain(timeout=0.1)

    def text(self) -> str:
        self._drain()
        return "".join(self.lines)

    def close(self) -> None:
        """After the child exited: the pump has seen EOF; close our end."""
        self._thread.join(timeout=5)
        self._drain()
        self.stream.close()


@dataclass
class LayerUnderTest:
    """A layer for one test: its BACKEND, the server's CONFIG, the site's settings env, a cleanup."""

    name: str
    backend: str
    config: dict[str, Any]
    prefix: str
    redis_url: str | None = None
    cleanup: Callable[[], None] = lambda: None


def ipc_layer(prefix: str) -> LayerUnderTest:
    """The shared-memory layer on ``prefix`` (the ``prefix`` fixture's)."""
    return LayerUnderTest("ipc", IPC_BACKEND, {"prefix": prefix, "segment_size": SITE_SEGMENT_SIZE}, prefix,
                          cleanup=lambda: remove_segment(prefix))


def redis_layer() -> LayerUnderTest:
    """The Redis layer on the test Redis, with a key prefix of its own (``pytest.skip`` without Redis)."""
    import unittest

    import pytest

    from tests.redis_support import redis_url

    try:
        url = redis_url()
    except unittest.SkipTest as exc:
        pytest.skip(str(exc))
    prefix = unique_key_prefix()
    return LayerUnderTest("redis", REDIS_BACKEND, {"url": url, "prefix": prefix}, prefix, redis_url=url,
                          cleanup=lambda: remove_keys(url, prefix))


@dataclass
class Pool:
    """A running site: ``url`` of the server; the master's process and log (its workers log there too)."""

    url: str
    port: int
    master: subprocess.Popen[str]
    server: subprocess.Popen[str]
    log: Lines
    server_log: Lines
    env: dict[str, str]
    extra: list[Lines] = field(default_factory=list)

    def send_signal(self, sig: int) -> None:
        self.master.send_signal(sig)

    def worker_pids(self) -> list[int]:
        """The master's live child processes (its workers), from /proc."""
        path = Path(f"/proc/{self.master.pid}/task/{self.master.pid}/children")
        try:
            return sorted(int(p) for p in path.read_text().split())
        except FileNotFoundError:
            return []

    def ready_pids(self, since: int = 0) -> list[int]:
        """Pids of the workers the master logged as ready after line ``since``."""
        return [int(m.group(2)) for m in self.log.matches(READY, since)]

    def wait_workers(self, count: int, timeout: float = 60.0) -> list[int]:
        """Wait until the master has exactly ``count`` live children; their pids."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if len(pids) == count:
                return pids
            if time.monotonic() >= deadline:
                raise AssertionError(f"{len(pids)} workers, not {count}, after {timeout} s; log:\n{self.log.text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Stop the master (``sig``) and wait for it; its exit status."""
        if self.master.poll() is None:
            self.master.send_signal(sig)
        try:
            return self.master.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.master.kill()
            self.master.wait()
            raise AssertionError(f"the master did not stop within {timeout} s of {signal.Signals(sig).name}; "
                                 f"log:\n{self.log.text()}") from None


def _spawn(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *argv], cwd=str(REPO), env=dict(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def pool_command(via: str) -> list[str]:
    """How to start the pool: the console script's module, or the management command."""
    if via == "ipc-worker":
        return ["-m", "worker.cli"]
    if via == "runworker":
        return ["-m", "django", "runworker"]
    raise ValueError(f"via must be 'ipc-worker' or 'runworker', got {via!r}")


def site_env(layer: LayerUnderTest, state_dir: str | os.PathLike[str], *, layer_config: Mapping[str, Any] | None = None,
             routing: str | None = None, debug: bool = False, extra_env: Mapping[str, str] | None = None
             ) -> dict[str, str]:
    """The environment of the test site on ``layer`` (``layer_config``: more CONFIG keys)."""
    env = site_environment(layer.prefix, state_dir, backend=layer.backend, redis_url=layer.redis_url,
                           config=layer_config, routing=routing, debug=debug)
    env.update(extra_env or {})
    return env


@contextlib.contextmanager
def running_pool(
    layer: LayerUnderTest,
    state_dir: str | os.PathLike[str],
    *,
    workers: int = 2,
    args: Sequence[str] = (),
    via: str = "ipc-worker",
    layer_config: Mapping[str, Any] | None = None,
    routing: str | None = None,
    debug: bool = False,
    extra_env: Mapping[str, str] | None = None,
    server_args: Sequence[str] = ("--http-timeout", "60"),
    wait_ready: bool = True,
    ready_timeout: float = 90.0,
) -> Iterator[Pool]:
    """``ipc-server`` + the worker pool on ``layer``; see the module docstring."""
    env = site_env(layer, state_dir, layer_config=layer_config, routing=routing, debug=debug, extra_env=extra_env)
    server_config = {**layer.config, **(layer_config or {})}
    server = _spawn(["-m", "server", "-p", "0", "--layer", layer.backend, "--layer-config",
                     json.dumps(server_config), *server_args], env)
    server_log, server_out = Lines(server.stderr), Lines(server.stdout)  # type: ignore[arg-type]
    master = _spawn([*pool_command(via), "--workers", str(workers), *args], env)
    log, out = Lines(master.stderr), Lines(master.stdout)  # type: ignore[arg-type]
    try:
        port = int(server_log.wait_for(_LISTENING, timeout=ready_timeout)[0].group(1))
        pool = Pool(f"http://127.0.0.1:{port}", port, master, server, log, server_log, env, [out, server_out])
        if wait_ready:
            log.wait_for(READY, timeout=ready_timeout, count=workers)
        yield pool
    finally:
        try:
            for proc in (master, server):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (master, server):
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)  # its workers too (its own session)
                    proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(master.pid, signal.SIGKILL)  # a worker the master left behind
        finally:
            for lines in (log, out, server_log, server_out):
                lines.close()
            print(f"---- worker pool log (exit {master.returncode}) ----\n{log.text()}{out.text()}"
                  f"---- ipc-server log (exit {server.returncode}) ----\n{server_log.text()}")
            layer.cleanup()
