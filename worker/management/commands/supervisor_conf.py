"""``manage.py supervisor_conf``: write the site's supervisord configuration (:mod:`worker.supervisord`).

A management command rather than a console script: what the configuration
must agree with is in the project's settings (``DJANGO_SETTINGS_MODULE``,
``CHANNEL_LAYERS[--layer]``'s BACKEND and CONFIG, which the server is given
verbatim so both programs open the same layer), and ``manage.py`` is where a
Django user looks for the commands that run a site (``runworker`` beside it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ipc_layer import options as layer_options
from ipc_layer.loading import InvalidLayerError, import_backend
from worker.config import default_workers
from worker.supervisord import ConfigError, SiteConfig, console_command, render


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


class Command(BaseCommand):
    help = ("Write a supervisord configuration for this site: [group:SITE] with an ipc-server program "
            "(--servers processes sharing --port) and the worker pool (ipc-worker), both on "
            "CHANNEL_LAYERS[--layer], with stop signals and timeouts for graceful stops. "
            "Reload the workers with 'supervisorctl signal HUP SITE:SITE-worker'.")

    def add_arguments(self, parser: CommandParser) -> None:
        default_site = (os.environ.get("DJANGO_SETTINGS_MODULE") or "site").split(".")[0]
        parser.add_argument("--site", default=default_site,
                            help="the group's name, prefix of the program names (default: the settings "
                                 f"module's top package, here {default_site!r})")
        parser.add_argument("--layer", default="default", metavar="ALIAS",
                            help="the CHANNEL_LAYERS alias both programs use (default: default)")
        parser.add_argument("--servers", type=int, default=1,
                            help="ipc-server processes, all on --bind:--port (SO_REUSEPORT) (default: 1)")
        parser.add_argument("--bind", default="127.0.0.1", help="the servers' address (default: 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="the servers' port (default: 8000)")
        parser.add_argument("--server-graceful-timeout", type=float, default=30.0, metavar="SECONDS",
                            help="ipc-server --graceful-timeout: in-flight requests' time to finish on stop "
                                 "(default: 30)")
        parser.add_argument("--workers", type=int, default=default_workers(),
                            help="worker processes of the pool (default: the CPUs this process may use)")
        parser.add_argument("--threads", type=int, default=1, help="threads per worker (default: 1)")
        parser.add_argument("--worker-graceful-timeout", type=float, default=30.0, metavar="SECONDS",
                            help="runworker --graceful-timeout: a busy worker's time to finish its message "
                                 "(default: 30)")
        parser.add_argument("--directory", default=None,
                            help="the programs' working directory (default: the current one)")
        parser.add_argument("--log-dir", default=None,
                            help="folder of the programs' log files, created if missing "
                                 "(default: ./log under --directory)")
        parser.add_argument("--user", default=None, help="run the programs as this user (supervisord as root)")
        parser.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
                            help="one more environment variable of both programs (repeatable)")
        parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                            help="one more ipc-server argument, e.g. --server-arg=--proxy-headers (repeatable)")
        parser.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                            help="one more ipc-worker argument, e.g. --worker-arg=--max-requests=1000 "
                                 "(repeatable)")
        parser.add_argument("-o", "--output", default="-", metavar="FILE",
                            help="write the configuration to FILE (default: - for stdout)")

    def handle(self, *args: Any, **opts: Any) -> None:
        alias = opts["layer"]
        layers = getattr(settings, "CHANNEL_LAYERS", None)
        if not isinstance(layers, dict) or alias not in layers:
            known = ", ".join(map(repr, layers)) if isinstance(layers, dict) and layers else "none"
            raise CommandError(f"CHANNEL_LAYERS has no alias {alias!r} (--layer); defined: {known}")
        entry = layers[alias]
        backend = entry.get("BACKEND") if isinstance(entry, dict) else None
        if not isinstance(backend, str):
            raise CommandError(f"CHANNEL_LAYERS[{alias!r}] has no BACKEND dotted path")
        config = dict(entry.get("CONFIG") or {})
        try:
            kind = vars(import_backend(backend)).get("option_kind")
        except InvalidLayerError as exc:
            raise CommandError(f"CHANNEL_LAYERS[{alias!r}]: {exc}") from None
        declared = layer_options.options_for(kind) if isinstance(kind, str) and kind in layer_options.KINDS else {}
        # ipc-server's default prefix differs from the layer's own: write it out (module docstring).
        if "prefix" in declared and "prefix" not in config:
            config["prefix"] = declared["prefix"].default
        blocking = config.get("blocking_timeout", layer_options.BLOCKING_TIMEOUT.default)
        directory = os.path.abspath(opts["directory"] or os.getcwd())
        log_dir = os.path.abspath(opts["log_dir"] or os.path.join(directory, "log"))
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE") or opts.get("settings")
        if not settings_module:
            raise CommandError("DJANGO_SETTINGS_MODULE is not set (pass --settings)")
        site = SiteConfig(
            site=opts["site"], settings_module=settings_module, directory=directory,
            layer_backend=backend, layer_config=config, layer_alias=alias, blocking_timeout=blocking,
            servers=opts["servers"], bind=opts["bind"], port=opts["port"],
            server_graceful_timeout=opts["server_graceful_timeout"], workers=opts["workers"],
            threads=opts["threads"], worker_graceful_timeout=opts["worker_graceful_timeout"],
            log_dir=log_dir, user=opts["user"], env=dict(opts["env"]),
            server_args=tuple(opts["server_arg"]), worker_args=tuple(opts["worker_arg"]),
            server_command=tuple(console_command("ipc-server", "server")),
            worker_command=tuple(console_command("ipc-worker", "worker.cli")),
        )
        try:
            text = render(site)
        except ConfigError as exc:
            raise CommandError(str(exc), returncode=2) from None
        try:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"cannot create the log directory {log_dir}: {exc}") from None
        if opts["output"] == "-":
            self.stdout.write(text, ending="")
            return
        try:
            Path(opts["output"]).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {opts['output']}: {exc}") from None
        self.stderr.write(f"wrote {opts['output']}: [group:{site.site}] with {site.server_program} "
                          f"(x{site.servers}) and {site.worker_program}")
