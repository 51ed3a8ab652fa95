"""Settings of the chat example; the layer, the data folder and the hosts come from the environment.

See :mod:`examples.chat.environment` for the variables. A bad value stops the import with an
``ImproperlyConfigured`` naming the variable. The secret key is made on first use and kept
in the data folder (mode 0600), so sessions survive a restart.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .environment import DEFAULT_ALLOWED_HOSTS, DEFAULT_BACKEND, DEFAULT_PREFIX, default_data_dir

HERE = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("IPC_DEMO_DATA") or default_data_dir())
try:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ImproperlyConfigured(f"IPC_DEMO_DATA: cannot create the data folder {str(DATA_DIR)!r}: {exc}") from None


def _secret_key(path: Path) -> str:
    """The key in ``path``, made there first if absent.

    Written to a file of its own, then linked into place: the name appears with its content
    whole, and of two processes starting at once the second link fails and reads the first's.
    """
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_urlsafe(50) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    key = path.read_text(encoding="ascii").strip()
    if not key:
        raise ImproperlyConfigured(f"the secret key file {str(path)!r} is empty: remove it to make a new one")
    return key


def _layer_config() -> dict[str, Any]:
    text = os.environ.get("IPC_DEMO_LAYER_CONFIG")
    if not text:
        return {"prefix": DEFAULT_PREFIX}
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ImproperlyConfigured(f"IPC_DEMO_LAYER_CONFIG is not JSON: {exc}: {text!r:.200}") from None
    if not isinstance(config, dict):
        raise ImproperlyConfigured(f"IPC_DEMO_LAYER_CONFIG must be a JSON object, got {text!r:.200}")
    return config


SECRET_KEY = _secret_key(DATA_DIR / "secret_key")
DEBUG = os.environ.get("IPC_DEMO_DEBUG", "0") == "1"
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("IPC_DEMO_ALLOWED_HOSTS", DEFAULT_ALLOWED_HOSTS).split(",")
                 if h.strip()]
ROOT_URLCONF = "examples.chat.urls"
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "worker",
    "examples.chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "examples.chat.context.worker_pid",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / "db.sqlite3"),
        # Several worker processes write (chat messages, sessions, tasks): wait for the
        # lock rather than fail with "database is locked".
        "OPTIONS": {"timeout": 20},
    }
}

# Sessions in the database: the site's (login) and the sockets' channel sessions alike,
# shared by every worker process.
SESSION_ENGINE = "django.contrib.sessions.backends.db"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# Static files are served by the workers themselves (examples.chat.urls): a demo has no
# web server in front of ipc-server.
STATIC_URL = "/static/"
STATIC_ROOT_DIR = HERE / "static"

CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": os.environ.get("IPC_DEMO_LAYER_BACKEND") or DEFAULT_BACKEND,
        "CONFIG": _layer_config(),
        "ROUTING": "examples.chat.routing.channel_routing",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
}
