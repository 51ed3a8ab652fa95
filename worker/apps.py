"""The Django app ``worker``: put it in ``INSTALLED_APPS`` for ``manage.py runworker``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["WorkerConfig"]


class WorkerConfig(AppConfig):
    name = "worker"
    verbose_name = "Channel layer workers"
