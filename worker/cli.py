"""``ipc-worker``: ``manage.py runworker`` without a ``manage.py`` (``--settings`` names the project).

::

    ipc-worker --settings mysite.settings --workers 4
    ipc-worker --settings mysite.settings --layer redis --only-channels 'http.*' --threads 8

Every mistake is one line on stderr naming it (exit status 2, as argparse's;
3 when the workers could not boot), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .config import add_arguments, options_from
from .master import MasterError, serve

__all__ = ["build_parser", "main"]

PROG = "ipc-worker"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the channel-layer worker pool of a Django project (as manage.py runworker). "
                    "Signals: TERM/INT graceful stop, QUIT fast stop, HUP zero-downtime reload, "
                    "TTIN/TTOU one worker more/fewer.",
    )
    parser.add_argument("--settings", metavar="MODULE",
                        help="the project's settings module (default: $DJANGO_SETTINGS_MODULE)")
    parser.add_argument("--pythonpath", metavar="DIR", action="append", default=[],
                        help="a folder to put first on sys.path (repeatable), as manage.py's --pythonpath")
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    for folder in reversed(args.pythonpath):
        sys.path.insert(0, os.path.abspath(folder))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the project beside us, as manage.py finds it
    settings_module = args.settings or os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings_module:
        parser.error("no settings: pass --settings MODULE or set DJANGO_SETTINGS_MODULE")
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    try:
        import django

        django.setup()
    except Exception as exc:
        print(f"{PROG}: error: cannot load the settings {settings_module!r}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    try:
        return serve(options, settings_module=settings_module)
    except MasterError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
