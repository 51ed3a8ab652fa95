"""``manage.py runserver``: the whole stack in one command for development.

Starts ``ipc-server`` on the address (a child process: the protocol server and the
workers never share a process in this project) and runs worker threads in this process
on the same layer, with Django's autoreloader (a code change restarts both); with
``DEBUG`` and ``django.contrib.staticfiles`` installed, ``STATIC_URL`` is served by the
workers (:mod:`worker.staticfiles`). Put ``"worker"`` *before*
``"django.contrib.staticfiles"`` in ``INSTALLED_APPS`` so this command wins over
staticfiles' own ``runserver``. The layer must be one processes share (the shared-memory
or the Redis layer, not the in-memory one). Not for production: use ``ipc-server`` and
``runworker`` there.
"""

from __future__ import annotations

import atexit
import json
import re
import signal
import subprocess
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

_ADDRPORT = re.compile(r"^(?:(?P<host>[^:\[\]]+|\[[0-9a-fA-F:]+\]):)?(?P<port>\d+)$")


class Command(BaseCommand):
    help = "Development server: ipc-server on ADDRPORT plus worker threads in this process, reloading on changes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000",
                            help="[host:]port (default 127.0.0.1:8000)")
        parser.add_argument("--layer", default="default", help="the CHANNEL_LAYERS alias (default: default)")
        parser.add_argument("--threads", type=int, default=2, help="worker threads in this process (default 2)")
        parser.add_argument("--noreload", action="store_false", dest="use_reloader", help="do not reload on changes")
        parser.add_argument("--noworker", action="store_false", dest="run_worker",
                            help="only the protocol server (run workers with runworker yourself)")
        parser.add_argument("--nostatic", action="store_false", dest="serve_static",
                            help="do not serve STATIC_URL even with DEBUG")

    def handle(self, *args: Any, **options: Any) -> None:
        found = _ADDRPORT.match(options["addrport"])
        if found is None:
            raise CommandError(f"{options['addrport']!r} is not [host:]port")
        if options["threads"] < 1:
            raise CommandError(f"--threads must be >= 1, got {options['threads']}")
        options["host"] = (found.group("host") or "127.0.0.1").strip("[]")
        options["port"] = found.group("port")
        if options["use_reloader"]:
            from django.utils import autoreload

            autoreload.run_with_reloader(self.inner_run, **options)
        else:
            self.inner_run(**options)

    def inner_run(self, **options: Any) -> None:
        from django.conf import settings

        from ...asgi import channel_layers, layer_settings
        from ...dispatch import consume
        from ...heartbeat import Progress
        from ...loop import WorkerLoop
        from ...message import Message
        from ...routing import router_from_settings

        alias = options["layer"]
        entry = layer_settings(alias)
        backend, config = entry.get("BACKEND"), dict(entry.get("CONFIG") or {})
        if "inmemory" in str(backend).lower():
            raise CommandError(
                f"CHANNEL_LAYERS[{alias!r}] is the in-memory layer, which processes cannot share: runserver's "
                "protocol server is a process of its own; use ipc_layer.IPCChannelLayer"
            )
        server = subprocess.Popen([sys.executable, "-m", "server", "-b", options["host"], "-p", options["port"],
                                   "--layer", str(backend), "--layer-config", json.dumps(config)])
        atexit.register(_stop, server)
        if not options["run_worker"]:
            server.wait()
            return
        router = router_from_settings(alias)
        if options["serve_static"] and settings.DEBUG and _installed("django.contrib.staticfiles"):
            from ...staticfiles import static_route

            router.root.routing.insert(0, static_route())
            router.channels = router.root.channel_names()
        layer = channel_layers[alias]
        loop = WorkerLoop(layer, router, sorted(router.channels), message_class=Message, consume=consume,
                          progress=Progress(lambda stamp: None), threads=options["threads"])
        self.stdout.write(f"runserver: ipc-server on {options['host']}:{options['port']} (pid {server.pid}), "
                          f"{options['threads']} worker thread(s) on {', '.join(sorted(router.channels))}")
        if threading.current_thread() is threading.main_thread():  # --noreload: TERM stops cleanly
            signal.signal(signal.SIGTERM, lambda signum, frame: loop.stop())
        try:
            loop.run()
        finally:
            _stop(server)


def _installed(app: str) -> bool:
    from django.apps import apps

    return bool(apps.is_installed(app))


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
