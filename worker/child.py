"""``python -m worker.child``: one worker process, a fresh interpreter the master spawned.

Theory of operation
-------------------
The master (:mod:`worker.arbiter`) starts every worker as a new program, not
a fork of itself, so each one imports the project's settings, models,
views and routing fresh from disk: that is what makes a HUP reload load
new code. Its command line carries a JSON :class:`ChildSpec` (settings
module, ``sys.path``, layer alias, channel globs, threads, timeouts,
max-requests) and three numbers: the inherited descriptors of its
heartbeat page and of the master's notice pipe, and the master's pid.

Boot, in order, each step a progress point on the heartbeat:

1. signals: TERM/INT = graceful stop (finish the current message), QUIT =
   leave now, ABRT = faulthandler prints every thread's stack, then the
   process dies (how the master's heartbeat kill shows where a worker hung);
   HUP/TTIN/TTOU are the master's business and ignored here;
2. ``django.setup()`` with the spec's settings; the URLconf is imported
   (a view that does not import is a boot error, found now rather than on
   the first request);
3. the layer of ``CHANNEL_LAYERS[alias]`` (``BACKEND``/``CONFIG`` through
   ``ipc_layer.loading``), registered as the process's layer for that alias
   (``Channel(...).send`` in consumers uses the same one); its
   ``blocking_timeout`` must be shorter than ``--timeout``, or an idle
   worker would look hung;
4. the router (``worker.routing.router_from_settings``) and the channels
   kept by ``--only-channels``/``--exclude-channels`` (none = an error).

Any failure there is a boot error: the traceback goes to the log, the cause
(``Type: message``) to the master as a ``booterror`` notice, and the process
exits with :data:`worker.arbiter.BOOT_ERROR`, so the master stops with that
cause instead of respawning into a crash loop. Then the loop runs
(:mod:`worker.loop`); it says ``ready`` to the master when it is about to
take its first message.
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .arbiter import BOOT_ERROR
from .heartbeat import HeartbeatWriter, Progress

__all__ = ["ChildSpec", "main"]

logger = logging.getLogger("worker.child")

#: A notice must fit one atomic pipe write (PIPE_BUF is at least 512; Linux: 4096).
MAX_NOTICE = 3500


@dataclass(frozen=True)
class ChildSpec:
    """What every worker of a master is started with (JSON on its command line)."""

    settings: str | None
    path: tuple[str, ...]
    layer: str
    only_channels: tuple[str, ...] = ()
    exclude_channels: tuple[str, ...] = ()
    threads: int = 1
    timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    verbosity: int = 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        data = json.loads(text)
        for key in ("path", "only_channels", "exclude_channels"):
            data[key] = tuple(data[key])
        return cls(**data)


class BootError(Exception):
    """A check of the boot failed; the message is the cause the master prints."""


class _Notifier:
    """Writes ``<pid> <event> <text>`` lines to the master's notice pipe, never blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, event: str, text: str = "") -> None:
        line = f"{os.getpid()} {event} {' '.join(text.split())}".rstrip()
        data = line.encode("utf-8", "replace")[:MAX_NOTICE] + b"\n"
        try:
            os.write(self.fd, data)
        except (BlockingIOError, BrokenPipeError, InterruptedError) as exc:  # the master is gone or stuck
            logger.warning("cannot tell the master %r: %s", event, exc)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.child",
                                     description="one worker process (started by runworker's master)")
    parser.add_argument("--heartbeat-fd", type=int, required=True)
    parser.add_argument("--notify-fd", type=int, required=True)
    parser.add_argument("--master-pid", type=int, required=True)
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("spec", type=ChildSpec.from_json)
    return parser.parse_args(argv)


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.getLogger("worker").setLevel(level)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, stream=sys.stderr,
                            format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")


def boot(spec: ChildSpec, progress: Progress, notify: _Notifier, master_pid: int) -> Any:
    """Django, the layer, the router and the channels: the :class:`~worker.loop.WorkerLoop` to run."""
    for entry in reversed(spec.path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if spec.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = spec.settings
    import django
    from django.conf import settings

    django.setup()
    _configure_logging(spec.verbosity)  # after Django's LOGGING, which may reset levels
    progress.point()
    if getattr(settings, "ROOT_URLCONF", None):
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018  (imports the URLconf and its views now)
    progress.point()

    from .asgi import channel_layers
    from .dispatch import consume
    from .loop import WorkerLoop, served_channels
    from .message import Message
    from .routing import router_from_settings

    layer = channel_layers.make_backend(spec.layer)
    channel_layers.set(spec.layer, layer)
    blocking = getattr(layer, "blocking_timeout", None)
    if isinstance(blocking, (int, float)) and blocking >= spec.timeout:
        raise BootError(
            f"the layer's blocking_timeout ({blocking:g} s) must be shorter than --timeout ({spec.timeout:g} s): "
            "an idle worker wakes once per blocking_timeout to show it is alive"
        )
    progress.point()
    router = router_from_settings(spec.layer)
    channels = served_channels(router.channels, spec.only_channels, spec.exclude_channels)
    return WorkerLoop(layer, router, channels, message_class=Message, consume=consume, progress=progress, notify=notify,
                      threads=spec.threads, max_requests=spec.max_requests,
                      max_requests_jitter=spec.max_requests_jitter, master_pid=master_pid)


def _cause(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    spec: ChildSpec = args.spec
    notify = _Notifier(args.notify_fd)
    heartbeat = HeartbeatWriter(args.heartbeat_fd)
    progress = Progress(heartbeat.write)
    progress.point()
    faulthandler.enable(all_threads=True)  # SIGABRT (the master's heartbeat kill): print the stacks
    loop: Any = None

    def graceful(signum: int, frame: FrameType | None) -> None:
        if loop is not None:
            loop.stop()
        else:  # still booting: nothing is in flight
            raise SystemExit(0)

    def fast(signum: int, frame: FrameType | None) -> None:
        try:
            sys.stderr.flush()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    signal.signal(signal.SIGQUIT, fast)
    for ignored in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(ignored, signal.SIG_IGN)
    _configure_logging(spec.verbosity)
    try:
        loop = boot(spec, progress, notify, args.master_pid)
    except Exception as exc:
        logger.error("worker %d (pid %d) failed to boot", args.number, os.getpid(), exc_info=True)
        notify("booterror", _cause(exc))
        return BOOT_ERROR
    try:
        loop.run()
    finally:
        heartbeat.close()
    logger.info("worker %d (pid %d) exiting after %d message(s)", args.number, os.getpid(), loop.handled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
