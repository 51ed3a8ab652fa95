"""Settings of the test site; the channel layer and the state directory come from the environment.

See :mod:`tests.django_site` for the variables. A bad value stops the import with an
``ImproperlyConfigured`` naming the variable, as Django does for its own settings.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_IPC = "ipc_layer.IPCChannelLayer"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _layer_config(backend: str, prefix: str) -> dict[str, Any]:
    # The in-memory layer (unit tests in one process) has no prefix: its state is the instance.
    config: dict[str, Any] = {} if "inmemory" in backend.lower() else {"prefix": prefix}
    if backend == _IPC or backend.startswith("ipc_layer.layer."):
        # Test-sized segment (the 64 MiB default is for sites); every process of a test
        # passes the same size, so whichever creates the segment creates the same one.
        config["segment_size"] = 32 << 20
    url = os.environ.get("IPC_TEST_REDIS_URL")
    if "redis" in backend.lower() and url:
        config["url"] = url
    extra = os.environ.get("IPC_TEST_LAYER_CONFIG")
    if extra:
        try:
            more = json.loads(extra)
        except ValueError as exc:
            raise ImproperlyConfigured(f"IPC_TEST_LAYER_CONFIG is not JSON: {exc}: {extra!r:.200}") from None
        if not isinstance(more, dict):
            raise ImproperlyConfigured(f"IPC_TEST_LAYER_CONFIG must be a JSON object, got {extra!r:.200}")
        config.update(more)
    return config


_BACKEND = _env("IPC_TEST_LAYER_BACKEND", _IPC)
_PREFIX = _env("IPC_TEST_PREFIX", "django_site")
_STATE_DIR = _env("IPC_TEST_STATE_DIR", os.path.join(tempfile.gettempdir(), f"django_site-{_PREFIX.strip(':')}"))
os.makedirs(os.path.join(_STATE_DIR, "sessions"), exist_ok=True)
_ROUTING = _env("IPC_TEST_ROUTING", "tests.django_site.routing.channel_routing")

DEBUG = _env("IPC_TEST_DEBUG", "0") == "1"
SECRET_KEY = "tests.django_site: not a secret, never deployed"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.django_site.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "worker",
    "tests.django_site",
    "tests.django_site.sockets",
    # after "worker": worker's runserver (server + worker threads) wins over staticfiles' own
    "django.contrib.staticfiles",
]
STATIC_URL = "/static/"

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

TEMPLATES: list[dict[str, Any]] = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_STATE_DIR, "db.sqlite3"),
    }
}

# File sessions: shared by every worker process of a test without a migrate step.
SESSION_ENGINE = "django.contrib.sessions.backends.file"
SESSION_FILE_PATH = os.path.join(_STATE_DIR, "sessions")

# Uploads above this go to a temporary file (the 10 MiB upload test takes that path).
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 32 << 20

CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": _BACKEND, "CONFIG": _layer_config(_BACKEND, _PREFIX)},
}
if _ROUTING:
    CHANNEL_LAYERS["default"]["ROUTING"] = _ROUTING

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {"django": {"level": "INFO", "propagate": True}},
}
