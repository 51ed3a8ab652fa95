"""The environment a process of the test site needs, and its one-off database setup.

Imports only the standard library: the test process builds the environment of the
worker processes without importing Django or the site's settings itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["IPC_BACKEND", "REDIS_BACKEND", "REPO", "SETTINGS", "migrate", "site_environment"]

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
SETTINGS = "tests.django_site.settings"
IPC_BACKEND = "ipc_layer.IPCChannelLayer"
REDIS_BACKEND = "ipc_layer.redis_layer.RedisChannelLayer"


def site_environment(
    prefix: str,
    state_dir: str | os.PathLike[str],
    *,
    backend: str = IPC_BACKEND,
    redis_url: str | None = None,
    config: Mapping[str, Any] | None = None,
    routing: str | None = None,
    debug: bool = False,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``os.environ`` (or ``base``) plus the variables that point a process at the test site."""
    env = dict(os.environ if base is None else base)
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS
    paths = [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["IPC_TEST_LAYER_BACKEND"] = backend
    env["IPC_TEST_PREFIX"] = prefix
    env["IPC_TEST_STATE_DIR"] = os.fspath(state_dir)
    env["IPC_TEST_DEBUG"] = "1" if debug else "0"
    if redis_url is not None:
        env["IPC_TEST_REDIS_URL"] = redis_url
    else:
        env.pop("IPC_TEST_REDIS_URL", None)
    if config:
        env["IPC_TEST_LAYER_CONFIG"] = json.dumps(dict(config))
    else:
        env.pop("IPC_TEST_LAYER_CONFIG", None)
    if routing is not None:
        env["IPC_TEST_ROUTING"] = routing
    else:
        env.pop("IPC_TEST_ROUTING", None)
    return env


def migrate(env: Mapping[str, str], timeout: float = 120) -> None:
    """Create the site's database tables (``manage.py migrate``) in a subprocess with ``env``."""
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        env=dict(env), cwd=str(REPO), check=True, timeout=timeout,
    )
