"""Settings of the bench's hello-world project (see :mod:`bench.stack_site`).

``IPC_BENCH_PREFIX`` (environment): the shared-memory segment prefix of the
run, so a bench run never meets another run's (or a site's) queues.
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "bench-only-not-secret"  # a benchmark's throw-away project
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.stack_site.urls"
WSGI_APPLICATION = "bench.stack_site.wsgi.application"
ASGI_APPLICATION = "bench.stack_site.asgi.application"

# worker: the app that brings `manage.py runworker` (the pre-forking worker pool).
INSTALLED_APPS = ["worker"]

# What `startproject` enables, minus what needs a database (sessions, auth, messages):
# every stack runs the same request path through Django.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

DATABASES: dict[str, Any] = {}
USE_TZ = True
USE_I18N = False

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "ipc_layer.IPCChannelLayer",
        "CONFIG": {"prefix": os.environ.get("IPC_BENCH_PREFIX", "bench_stack")},
    },
}

# Warnings and errors only, to stderr (the bench keeps each process's log): no access log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
