"""The worker pool's options, declared once: ``manage.py runworker``, ``ipc-worker`` and the README read this table.

Theory of operation
-------------------
:data:`OPTIONS` holds one :class:`Option` per command-line option: its
destination name, flags, default, validator (an ``argparse`` ``type``: it
converts one string and raises ``argparse.ArgumentTypeError`` naming what
is wrong), help text and how the default reads in the docs. Three readers:

- :func:`add_arguments` puts them on an ``argparse`` parser: the management
  command's (Django already supplies ``-v``/``--verbosity`` and
  ``--settings``, so options marked ``django`` are skipped there) and
  ``ipc-worker``'s (:mod:`worker.cli`, which adds ``--settings``);
- :func:`options_from` turns the parsed namespace into a frozen
  :class:`WorkerOptions` and runs the checks that involve two options,
  raising ``ValueError`` naming both;
- :func:`rst_table` renders the README's option table (a test checks that
  the README holds exactly this text, so docs and code cannot drift).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OPTIONS",
    "Option",
    "WorkerOptions",
    "add_arguments",
    "default_workers",
    "options_from",
    "rst_table",
]

#: Ten years: a number of seconds beyond this is a typo, not a setting.
MAX_SECONDS = 10 * 365 * 86400.0


def default_workers() -> int:
    """The number of CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# -- validators: one string in, a value out, or ArgumentTypeError naming the problem ------------


def _int_at_least(low: int, high: int = 1 << 31) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be between {low} and {high}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds > 0")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than ten years of seconds")
    return value


#: Characters of channel names (ASGI 1, incl. the ! and ? markers) plus fnmatch's * ? [ ] and !.
_GLOB_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!?*[]")


def _glob(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("an empty channel glob matches nothing")
    bad = sorted(set(text) - _GLOB_CHARS)
    if bad:
        raise argparse.ArgumentTypeError(
            f"channel glob {text!r} has characters no channel name holds: {''.join(bad)!r}"
        )
    return text


def _alias(text: str) -> str:
    if not text or text != text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a CHANNEL_LAYERS alias")
    return text


def _path(text: str) -> str:
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file path")
    return text


def _verbosity(text: str) -> int:
    if text not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError(f"{text!r} is not one of 0, 1, 2, 3")
    return int(text)


@dataclass(frozen=True)
class Option:
    """One command-line option: everything argparse and the README need to know."""

    dest: str
    flags: tuple[str, ...]
    #: The value when the option is not given; a callable is called then (``--workers``: cores).
    default: Any
    #: argparse ``type``: converts and validates one string (None: a flag without a value).
    parse: Callable[[str], Any] | None
    help: str
    #: How the default reads in ``--help`` and the README.
    default_doc: str
    metavar: str | None = None
    #: A list of values (``--only-channels a b``; repeatable).
    many: bool = False
    #: Django's BaseCommand already defines it (skipped on the management command's parser).
    django: bool = False

    def resolved_default(self) -> Any:
        return self.default() if callable(self.default) else self.default


OPTIONS: tuple[Option, ...] = (
    Option("workers", ("--workers",), default_workers, _int_at_least(1, 1024),
           "worker processes to run", "the number of CPUs this process may use", "N"),
    Option("threads", ("--threads",), 1, _int_at_least(1, 1024),
           "threads per worker, each with its own blocking receive", "1", "T"),
    Option("layer", ("--layer",), "default", _alias,
           "the CHANNEL_LAYERS alias whose layer (BACKEND, CONFIG) and ROUTING the workers use",
           "default", "ALIAS"),
    Option("only_channels", ("--only-channels",), (), _glob,
           "serve only the routed channels matching one of these globs (fnmatch; repeatable)",
           "every routed channel", "GLOB", many=True),
    Option("exclude_channels", ("--exclude-channels",), (), _glob,
           "do not serve the routed channels matching one of these globs (applied after --only-channels)",
           "none", "GLOB", many=True),
    Option("timeout", ("--timeout",), 30.0, _seconds,
           "a worker silent this long (hung in a consumer, or a thread of it) gets SIGABRT, then SIGKILL, "
           "and is replaced; must exceed the layer's blocking_timeout", "30", "S"),
    Option("graceful_timeout", ("--graceful-timeout",), 30.0, _seconds,
           "on TERM/INT/QUIT and on retiring a worker, how long it may take to finish its message "
           "before SIGKILL", "30", "S"),
    Option("max_requests", ("--max-requests",), 0, _int_at_least(0),
           "a worker exits cleanly after this many messages and is replaced (0 = never)", "0", "N"),
    Option("max_requests_jitter", ("--max-requests-jitter",), 0, _int_at_least(0),
           "add a random 0..N to each worker's --max-requests, so they do not all restart at once",
           "0", "N"),
    Option("pidfile", ("--pidfile",), None, _path,
           "write the master's pid to this file (removed at exit)", "none", "FILE"),
    Option("reload", ("--reload",), False, None,
           "development: restart the workers (as HUP does) when a Python file of the project changes",
           "off"),
    Option("verbosity", ("-v", "--verbosity"), 1, _verbosity,
           "0 = warnings only, 1 = info, 2 and 3 = debug", "1", "{0,1,2,3}", django=True),
)

_BY_DEST: Mapping[str, Option] = {option.dest: option for option in OPTIONS}


def add_arguments(parser: argparse.ArgumentParser, *, django: bool = False) -> None:
    """Every option of :data:`OPTIONS` on ``parser`` (without Django's own when ``django``)."""
    for option in OPTIONS:
        if django and option.django:
            continue
        text = f"{option.help} (default: {option.default_doc})"
        if option.parse is None:
            parser.add_argument(*option.flags, dest=option.dest, action="store_true", help=text)
        elif option.many:
            parser.add_argument(*option.flags, dest=option.dest, type=option.parse, nargs="+",
                                action="extend", metavar=option.metavar, help=text)
        else:
            parser.add_argument(*option.flags, dest=option.dest, type=option.parse,
                                metavar=option.metavar, help=text)
    # None = not given: WorkerOptions fills the table's default (so a callable default,
    # --workers' CPU count, is read when the options are built, not when the parser is).
    parser.set_defaults(**{option.dest: None for option in OPTIONS if not (django and option.django)})


@dataclass(frozen=True)
class WorkerOptions:
    """The parsed options, each checked; what :mod:`worker.master` runs with."""

    workers: int = field(default_factory=default_workers)
    threads: int = 1
    layer: str = "default"
    only_channels: tuple[str, ...] = ()
    exclude_channels: tuple[str, ...] = ()
    timeout: float = 30.0
    graceful_timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    pidfile: str | None = None
    reload: bool = False
    verbosity: int = 1

    def __post_init__(self) -> None:
        # Values that came through argparse are valid already; these checks are for
        # code that builds WorkerOptions itself (tests, embedding), and cross-option rules.
        for option in OPTIONS:
            value = getattr(self, option.dest)
            if option.parse is None:
                if not isinstance(value, bool):
                    raise ValueError(f"{option.flags[-1]} must be True or False, got {value!r}")
                continue
            values: Iterable[Any] = value if option.many else (value,)
            if option.many and not isinstance(value, tuple):
                raise ValueError(f"{option.flags[-1]} must be a tuple of strings, got {value!r}")
            for item in values:
                if item is None and option.default is None:
                    continue
                if isinstance(item, bool):
                    raise ValueError(f"{option.flags[-1]} must not be a bool, got {item!r}")
                try:
                    parsed = option.parse(str(item))
                except argparse.ArgumentTypeError as exc:
                    raise ValueError(f"{option.flags[-1]}: {exc}") from None
                if parsed != item:
                    raise ValueError(f"{option.flags[-1]}: {item!r} is not a {type(parsed).__name__}")
        if self.max_requests_jitter and not self.max_requests:
            raise ValueError("--max-requests-jitter needs --max-requests (the jitter is added to it)")


def options_from(namespace: argparse.Namespace | Mapping[str, Any]) -> WorkerOptions:
    """:class:`WorkerOptions` from parsed arguments; an option left at None takes its default."""
    given = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = given.get(option.dest)
        if value is None:
            value = option.resolved_default()
        if option.many:
            value = tuple(value)
        if option.dest in ("timeout", "graceful_timeout") and isinstance(value, int):
            value = float(value)
        values[option.dest] = value
    return WorkerOptions(**values)


def rst_table(options: Sequence[Option] = OPTIONS) -> str:
    """The README's reStructuredText list-table of every option with its default."""
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 20 50",
        "",
        "   * - option",
        "     - default",
        "     - meaning",
    ]
    for option in options:
        flag = ", ".join(option.flags)
        if option.metavar:
            flag += f" {option.metavar}" + (" ..." if option.many else "")
        lines += [f"   * - ``{flag}``", f"     - {option.default_doc}", f"     - {option.help}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m worker.config: the README's table
    print(rst_table(), end="")
