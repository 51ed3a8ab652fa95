"""From parsed options to a running pool: what ``runworker`` and ``ipc-worker`` both call.

:func:`serve` checks what can be checked in the master before any worker
starts (the ``--layer`` alias exists, its ``BACKEND`` imports and is a
synchronous layer, the pidfile is free), then runs the
:class:`~worker.arbiter.Arbiter` with a :class:`WorkerCommand` that starts
``python -m worker.child`` with the same interpreter, interpreter flags,
``sys.path`` and settings module. Every mistake is a :class:`MasterError`
whose message names it, printed by the caller as one line.

``--reload`` adds :class:`FileWatcher`: it imports the URLconf and the
routing in the master (so the views' files are known, as Django's
``runserver`` does), then compares the modification times of every Python
file the master has imported, plus ``.py`` files under the project's
source folders, once per master tick (a development aid; it polls, once a
second). A change reloads the workers as HUP does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .arbiter import Arbiter
from .child import ChildSpec
from .config import WorkerOptions

__all__ = ["FileWatcher", "MasterError", "Pidfile", "WorkerCommand", "check_layer", "serve"]

logger = logging.getLogger("worker.master")


class MasterError(Exception):
    """What stops the pool (a bad setting or option, a boot error); the message names it.

    ``code`` is the exit status: 2 for a mistake in the options or settings, as argparse
    uses, :data:`~worker.arbiter.BOOT_ERROR` when the workers could not boot.
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def check_layer(alias: str) -> None:
    """The alias exists in ``CHANNEL_LAYERS`` and its BACKEND is a synchronous layer class."""
    from ipc_layer.loading import InvalidLayerError, import_backend

    from .asgi import layer_settings

    try:
        entry = layer_settings(alias)
        backend = entry.get("BACKEND")
        if backend is None:
            raise MasterError(f"settings.CHANNEL_LAYERS[{alias!r}] has no BACKEND")
        import_backend(backend)
    except (InvalidLayerError, ValueError, LookupError) as exc:
        raise MasterError(f"--layer {alias}: {exc}") from None


class WorkerCommand:
    """``sys.executable [flags] -m worker.child ...`` for each worker (see :mod:`worker.child`)."""

    def __init__(self, spec: ChildSpec, env: dict[str, str] | None = None) -> None:
        self.spec = spec
        self._json = spec.to_json()
        self._env = dict(os.environ if env is None else env)

    def argv(self, *, number: int, heartbeat_fd: int, notify_fd: int, master_pid: int) -> list[str]:
        # The interpreter's own flags (-X dev, -bb, -W ...) carry over, as multiprocessing does.
        flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
        return [sys.executable, *flags, "-m", "worker.child", "--heartbeat-fd", str(heartbeat_fd),
                "--notify-fd", str(notify_fd), "--master-pid", str(master_pid), "--number", str(number),
                self._json]

    def env(self) -> dict[str, str]:
        return self._env


class Pidfile:
    """The master's pid in a file: refused if it names a live process, removed at exit if still ours."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def create(self, pid: int) -> None:
        try:
            old = int(self.path.read_text().strip() or "0")
        except FileNotFoundError:
            old = 0
        except (OSError, ValueError):
            old = 0  # unreadable or not a pid: a stale file, replaced
        if old and old != pid and _alive(old):
            raise MasterError(f"--pidfile {self.path}: it names pid {old}, which is running")
        tmp = self.path.with_name(f".{self.path.name}.{pid}.tmp")
        try:
            tmp.write_text(f"{pid}\n")
            os.replace(tmp, self.path)  # never a half-written pidfile
        except OSError as exc:
            raise MasterError(f"--pidfile {self.path}: cannot write it: {exc}") from None

    def remove(self, pid: int) -> None:
        try:
            if int(self.path.read_text().strip()) == pid:
                self.path.unlink()
        except (OSError, ValueError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileWatcher:
    """``changed()`` is True once per change of a watched Python file (modification time or size)."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self._seen = self._snapshot()

    def _files(self) -> Iterator[Path]:
        from django.utils.autoreload import iter_all_python_module_files

        yield from iter_all_python_module_files()
        for root in self.roots:
            for folder, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules")]
                for name in files:
                    if name.endswith(".py"):
                        yield Path(folder, name)

    def _snapshot(self) -> dict[Path, tuple[float, int]]:
        seen = {}
        for path in self._files():
            try:
                stat = path.stat()
            except OSError:
                continue
            seen[path] = (stat.st_mtime, stat.st_size)
        return seen

    def changed(self) -> bool:
        now = self._snapshot()
        if now == self._seen:
            return False
        changed = sorted(str(p) for p in set(now) ^ set(self._seen) | {p for p in now if now[p] != self._seen.get(p)})
        logger.info("changed: %s", ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else ""))
        self._seen = now
        return True


def _project_roots(settings_module: str | None) -> list[Path]:
    """The source folder holding the settings module's top package (the project)."""
    if not settings_module:
        return []
    top = sys.modules.get(settings_module.split(".")[0])
    path = getattr(top, "__file__", None)
    return [Path(path).resolve().parent] if path else []


def _import_site_code(alias: str) -> None:
    """Import the URLconf and the routing in the master, so --reload watches their files too."""
    from django.conf import settings
    from django.urls import get_resolver

    try:
        if getattr(settings, "ROOT_URLCONF", None):
            get_resolver().url_patterns  # noqa: B018
        from .routing import router_from_settings

        router_from_settings(alias)
    except Exception as exc:  # the workers will report it as their boot error
        logger.warning("--reload: the site's code does not import in the master: %s", exc)


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.getLogger("worker").setLevel(level)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, stream=sys.stderr,
                            format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")


def serve(options: WorkerOptions, *, settings_module: str | None = None, env: dict[str, str] | None = None,
          arbiter_factory: Any = Arbiter) -> int:
    """Run the pool until it stops; its exit code (0, or BOOT_ERROR after a boot error)."""
    configure_logging(options.verbosity)
    check_layer(options.layer)
    settings_module = settings_module or os.environ.get("DJANGO_SETTINGS_MODULE")
    spec = ChildSpec(
        settings=settings_module, path=tuple(p for p in sys.path if p), layer=options.layer,
        only_channels=options.only_channels, exclude_channels=options.exclude_channels,
        threads=options.threads, timeout=options.timeout, max_requests=options.max_requests,
        max_requests_jitter=options.max_requests_jitter, verbosity=options.verbosity,
    )
    watcher = None
    if options.reload:
        _import_site_code(options.layer)
        watcher = FileWatcher(_project_roots(settings_module)).changed
    arbiter = arbiter_factory(WorkerCommand(spec, env), workers=options.workers, timeout=options.timeout,
                              graceful_timeout=options.graceful_timeout, watcher=watcher)
    pidfile = Pidfile(options.pidfile) if options.pidfile else None
    pid = os.getpid()
    if pidfile is not None:
        pidfile.create(pid)
    try:
        code: int = arbiter.run()
    finally:
        if pidfile is not None:
            pidfile.remove(pid)
    if arbiter.halt_reason:
        raise MasterError(arbiter.halt_reason, code)
    return code
