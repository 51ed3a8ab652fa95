"""``manage.py runworker``: parse the options of :mod:`worker.config`, start the pool (:mod:`worker.master`)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from worker.config import add_arguments, options_from
from worker.master import MasterError, serve


class Command(BaseCommand):
    help = ("Run the channel-layer worker pool: a master supervising --workers processes that take "
            "messages from the layer and run the site's consumers (signals: TERM/INT graceful stop, "
            "QUIT fast stop, HUP zero-downtime reload, TTIN/TTOU one worker more/fewer).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser, django=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            worker_options = options_from(options)
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from None
        try:
            code = serve(worker_options, settings_module=options.get("settings"))
        except MasterError as exc:
            raise CommandError(str(exc), returncode=exc.code) from None
        if code:
            raise CommandError(f"the master stopped with exit code {code}", returncode=code)
