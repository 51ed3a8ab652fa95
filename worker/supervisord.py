"""A supervisord configuration for a site: ``[group:SITE]`` with its ``ipc-server`` and worker programs.

Theory of operation
-------------------
A site on one host is two kinds of processes that share one channel layer:
``ipc-server`` (the protocol server; several of them can share a port with
``--reuse-port``) and the worker pool (``ipc-worker``: one master that forks
``--workers`` workers). :func:`render` writes the supervisord sections that
run them as one group, so ``supervisorctl status|restart|stop SITE:*`` acts
on the whole site::

    [group:SITE]              programs=SITE-server,SITE-worker
    [program:SITE-server]     numprocs=--servers, all on --bind:--port (--reuse-port)
    [program:SITE-worker]     one master; --workers processes under it

Why each setting is what it is (the README's deployment section quotes these):

- The layer: both programs get the *same* layer (``BACKEND`` and ``CONFIG``
  of ``CHANNEL_LAYERS[--layer]``): the server by ``--layer`` and
  ``--layer-config`` JSON, the workers by reading the settings. A layer whose
  options have a prefix (the shared-memory segment, the Redis key prefix) gets
  it written out even when ``CONFIG`` leaves it to the default, so that the
  two programs never depend on their defaults agreeing (the layer's and
  ``ipc-server``'s once differed: two segments that never met).
- Stopping: supervisord sends ``stopsignal`` and waits ``stopwaitsecs``
  before SIGKILL. Both programs stop gracefully on TERM. The server drains
  in-flight requests for its ``--graceful-timeout`` (``stopwaitsecs`` = that
  plus :data:`STOP_MARGIN`). The worker master sends TERM to every worker; a
  busy worker finishes its message within the worker ``--graceful-timeout``
  (the master SIGKILLs it after that), an idle one is inside a blocking
  receive and notices the TERM when that returns, at most the layer's
  ``blocking_timeout`` later; so ``stopwaitsecs`` = graceful timeout +
  blocking_timeout + margin. ``killasgroup`` sends the final SIGKILL to the
  master's whole process group, so a master killed that way leaves no worker
  behind; ``stopasgroup`` stays off: the master orders its workers' stop.
- Reload: ``supervisorctl signal HUP SITE:SITE-worker`` signals the master
  only (supervisord signals the pid, not the group); the master starts new
  workers and retires each old one only once a new one is ready.
- Restart of one server process (it crashed, or ``supervisorctl restart
  SITE:SITE-server_01``): the others keep the port (SO_REUSEPORT), so the
  site keeps accepting connections.
- Environment: ``DJANGO_SETTINGS_MODULE``, ``PYTHONUNBUFFERED=1`` (log lines
  reach the log files as they are written) and any ``--env KEY=VALUE``.
- Logs: one file per process in ``--log-dir`` (stderr folded into stdout:
  the server's access log and its messages stay in order), rotated by
  supervisord.

Quoting: supervisord splits ``command`` with POSIX shell rules and expands
``%(name)s`` in every value, so arguments are :func:`shlex.quote`-d and every
``%`` of ours is doubled. A value that supervisord cannot carry (a newline,
a program name with ``:``) is refused with :class:`ConfigError` naming it.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STOP_MARGIN", "ConfigError", "SiteConfig", "console_command", "render", "server_stopwaitsecs",
           "worker_stopwaitsecs"]

#: Seconds past the graceful windows before supervisord's SIGKILL: interpreter exit, a
#: master's last tick (it wakes at least once a second), a loaded machine.
STOP_MARGIN = 5.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """A value the configuration cannot hold; the message names it."""


@dataclass(frozen=True)
class SiteConfig:
    """What :func:`render` writes; :meth:`check` refuses what supervisord could not run."""

    site: str
    settings_module: str
    directory: str
    layer_backend: str
    layer_config: Mapping[str, Any]
    layer_alias: str = "default"
    blocking_timeout: float = 5.0
    servers: int = 1
    bind: str = "127.0.0.1"
    port: int = 8000
    server_graceful_timeout: float = 30.0
    workers: int = 2
    threads: int = 1
    worker_graceful_timeout: float = 30.0
    log_dir: str = "/var/log"
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    server_args: Sequence[str] = ()
    worker_args: Sequence[str] = ()
    server_command: Sequence[str] = ("ipc-server",)
    worker_command: Sequence[str] = ("ipc-worker",)

    def check(self) -> None:
        if not _NAME.match(self.site):
            raise ConfigError(f"site name {self.site!r}: use letters, digits, '_', '.', '-' "
                              "(supervisord uses ':' between group and program)")
        for name, number, low, high in (("servers", self.servers, 1, 64), ("workers", self.workers, 1, 1024),
                                        ("threads", self.threads, 1, 1024), ("port", self.port, 1, 65535)):
            if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
                raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {number!r}")
        for name, seconds in (("server graceful timeout", self.server_graceful_timeout),
                              ("worker graceful timeout", self.worker_graceful_timeout),
                              ("the layer's blocking_timeout", self.blocking_timeout)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                    or not math.isfinite(seconds) or seconds <= 0:
                raise ConfigError(f"{name} must be a finite number of seconds > 0, got {seconds!r}")
        if not Path(self.directory).is_absolute():
            raise ConfigError(f"directory {self.directory!r} must be an absolute path")
        if not Path(self.log_dir).is_absolute():
            raise ConfigError(f"log directory {self.log_dir!r} must be an absolute path")
        for key in self.env:
            if not _ENV_KEY.match(key):
                raise ConfigError(f"environment variable name {key!r} is not a valid name")
        for key, value in self.env.items():
            if _quote_char(value) is None:
                raise ConfigError(f"environment variable {key}: {value!r} starts or ends with a quote, or "
                                  "holds both kinds, which supervisord's environment= cannot carry")
        if self.user is not None and not _NAME.match(self.user):
            raise ConfigError(f"user {self.user!r} is not a user name")
        every = [self.settings_module, self.directory, self.log_dir, self.bind, self.layer_backend,
                 *self.env.values(), *self.server_args, *self.worker_args, self.layer_alias]
        for value in every:
            if "\n" in value or "\r" in value or "\0" in value:
                raise ConfigError(f"{value!r} holds a line break or NUL, which a supervisord value cannot carry")
        try:
            json.dumps(dict(self.layer_config), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"CHANNEL_LAYERS[{self.layer_alias!r}]['CONFIG'] cannot be passed to ipc-server "
                              f"as --layer-config JSON: {exc}") from None

    @property
    def server_program(self) -> str:
        return f"{self.site}-server"

    @property
    def worker_program(self) -> str:
        return f"{self.site}-worker"


def server_stopwaitsecs(config: SiteConfig) -> int:
    """The server drains for its graceful timeout, then exits."""
    return math.ceil(config.server_graceful_timeout + STOP_MARGIN)


def worker_stopwaitsecs(config: SiteConfig) -> int:
    """A busy worker gets the graceful timeout, an idle one wakes within blocking_timeout."""
    return math.ceil(config.worker_graceful_timeout + config.blocking_timeout + STOP_MARGIN)


def console_command(script: str, module: str) -> list[str]:
    """This interpreter's console script ``script`` if it is installed beside it, else ``python -m module``."""
    beside = Path(sys.executable).parent / script
    return [str(beside)] if beside.exists() else [sys.executable, "-m", module]


def _value(text: str) -> str:
    """A supervisord value: its ``%(name)s`` expansion must leave our text as it is."""
    return text.replace("%", "%%")


def _command(argv: Sequence[str]) -> str:
    return _value(shlex.join(argv))


def _quote_char(value: str) -> str | None:
    """The quote supervisord's ``environment`` parser can put around ``value``, or None.

    It splits with a non-POSIX :mod:`shlex` (no escapes: a quoted value ends at the next
    same quote) and then strips quote characters from both ends of the value.
    """
    if value and (value[0] in "\"'" or value[-1] in "\"'"):
        return None
    if '"' not in value:
        return '"'
    return "'" if "'" not in value else None


def _environment(env: Mapping[str, str]) -> str:
    quoted = []
    for key, value in env.items():
        quote = _quote_char(value) or '"'  # check() refused the values without one
        quoted.append(f"{key}={quote}{value}{quote}")
    return _value(",".join(quoted))


def _number(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _program(name: str, config: SiteConfig, command: Sequence[str], env: Mapping[str, str], *,
             numprocs: int, priority: int, stopwaitsecs: int, log: str) -> list[str]:
    lines = [f"[program:{name}]", f"command={_command(command)}"]
    if numprocs > 1:
        lines += ["process_name=%(program_name)s_%(process_num)02d", f"numprocs={numprocs}"]
    lines += [
        f"directory={_value(config.directory)}",
        f"environment={_environment(env)}",
    ]
    if config.user is not None:
        lines.append(f"user={config.user}")
    lines += [
        f"priority={priority}",
        "autostart=true",
        "autorestart=true",
        # A process that dies within its first 2 s counts as a failed start (startretries
        # of them in a row and supervisord gives up: FATAL, shown by status) instead of
        # being respawned forever.
        "startsecs=2",
        "startretries=5",
        "stopsignal=TERM",
        f"stopwaitsecs={stopwaitsecs}",
        "stopasgroup=false",
        "killasgroup=true",
        f"stdout_logfile={_value(config.log_dir.rstrip('/'))}/{log}",
        "stdout_logfile_maxbytes=50MB",
        "stdout_logfile_backups=10",
        "redirect_stderr=true",
    ]
    return lines


def render(config: SiteConfig) -> str:
    """The configuration text; :class:`ConfigError` if ``config`` cannot be run."""
    config.check()
    env = {"DJANGO_SETTINGS_MODULE": config.settings_module, "PYTHONUNBUFFERED": "1", **config.env}
    layer_json = json.dumps(dict(config.layer_config), sort_keys=True, separators=(",", ":"))
    server = [*config.server_command, "--bind", config.bind, "--port", str(config.port), "--reuse-port",
              "--layer", config.layer_backend, "--layer-config", layer_json,
              "--graceful-timeout", _number(config.server_graceful_timeout), *config.server_args]
    worker = [*config.worker_command, "--settings", config.settings_module, "--layer", config.layer_alias,
              "--workers", str(config.workers), "--threads", str(config.threads),
              "--graceful-timeout", _number(config.worker_graceful_timeout), *config.worker_args]
    site, srv, wrk = config.site, config.server_program, config.worker_program
    server_log = f"{srv}_%(process_num)02d.log" if config.servers > 1 else f"{srv}.log"
    head = [
        f"; supervisord configuration of the site {site!r} (written by manage.py supervisor_conf).",
        f"; Layer: CHANNEL_LAYERS[{config.layer_alias!r}] = {config.layer_backend} {layer_json}",
        f";   supervisorctl status {site}:*",
        f";   supervisorctl restart {site}:*                 (everything: a short outage)",
        f";   supervisorctl signal HUP {site}:{wrk}   (reload the workers' code, no downtime)",
        f";   supervisorctl restart {site}:{srv}{'_00' if config.servers > 1 else ''}   "
        "(one server; the others keep the port)",
        "",
        f"[group:{site}]",
        f"programs={srv},{wrk}",
        "",
    ]
    body = _program(srv, config, server, env, numprocs=config.servers, priority=20,
                    stopwaitsecs=server_stopwaitsecs(config), log=server_log)
    body += [""] + _program(wrk, config, worker, env, numprocs=1, priority=10,
                            stopwaitsecs=worker_stopwaitsecs(config), log=f"{wrk}.log")
    return "\n".join(head + body) + "\n"
