"""The chat example (``examples/chat``) running for a test: ``ipc-server``, web workers, a task worker.

::

    from tests.chat_support import running_chat_site
    from tests.worker_support import ipc_layer

    with running_chat_site(ipc_layer(prefix), tmp_path) as site:
        client = site.login("alice")          # an httpx.Client with alice's session cookie
        ws = site.websocket("/ws/room/lobby/", client)

The site is the one ``ipc-demo`` runs, started the way it starts it: the database migrated
and users made first (``manage.py migrate``, ``createsuperuser``), then ``ipc-server`` and
a pool of web workers (``--exclude-channels tasks``) through
:func:`tests.worker_support.running_pool`, and a pool of one worker for ``tasks``
(``--only-channels tasks``) next to it. Every user's password is :data:`PASSWORD`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.django_site.environment import REPO
from tests.worker_support import READY, LayerUnderTest, Lines, Pool, running_pool, site_env

__all__ = ["PASSWORD", "ChatSite", "chat_env", "running_chat_site"]

PASSWORD = "correct horse battery staple"
SETTINGS = "examples.chat.settings"


def chat_env(layer: LayerUnderTest, data_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The variables of ``examples.chat.environment`` for ``layer``, over the test site's environment."""
    return {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "IPC_DEMO_DATA": os.fspath(data_dir),
        "IPC_DEMO_LAYER_BACKEND": layer.backend,
        "IPC_DEMO_LAYER_CONFIG": json.dumps(layer.config),
        "IPC_DEMO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }


def _manage(env: dict[str, str], *argv: str, extra: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "django", *argv], env={**env, **(extra or {})}, cwd=str(REPO),
                   check=True, timeout=120, capture_output=True, text=True)


@dataclass
class ChatSite:
    """The running chat site: the web pool (with the server), the task pool, the users made."""

    pool: Pool
    tasks: subprocess.Popen[str]
    tasks_log: Lines
    users: Sequence[str]
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def url(self) -> str:
        return self.pool.url

    @property
    def ws_url(self) -> str:
        return self.pool.url.replace("http://", "ws://", 1)

    def client(self, **kwargs: Any) -> Any:
        import httpx

        return self.stack.enter_context(httpx.Client(base_url=self.url, timeout=30, **kwargs))

    def login(self, username: str) -> Any:
        """A client logged in as ``username`` through the login form (CSRF token and all)."""
        client = self.client()
        page = client.get("/accounts/login/")
        assert page.status_code == 200, page.text
        response = client.post("/accounts/login/", data={
            "username": username, "password": PASSWORD, "next": "/",
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        })
        assert response.status_code == 302 and response.headers["location"] == "/", response.text
        assert "sessionid" in client.cookies
        return client

    def post_json(self, client: Any, path: str, data: dict[str, Any]) -> Any:
        """A JSON POST as the site's pages make it (``X-CSRFToken`` from the cookie)."""
        if "csrftoken" not in client.cookies:
            client.get("/")
        return client.post(path, json=data, headers={"X-CSRFToken": client.cookies["csrftoken"]})

    def websocket(self, path: str, client: Any = None, origin: str | None = None, **kwargs: Any) -> Any:
        """A WebSocket to ``path`` sending ``client``'s cookies and this site's ``Origin``, as a page does."""
        from websockets.sync.client import connect

        headers = {"Origin": origin if origin is not None else self.url}
        if client is not None:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        # connect() as a context manager (websockets 17 warns otherwise), closed at teardown.
        return self.stack.enter_context(connect(self.ws_url + path, additional_headers=headers, open_timeout=30,
                                                **kwargs))


@contextlib.contextmanager
def running_chat_site(layer: LayerUnderTest, data_dir: Path, *, web_workers: int = 2,
                      users: Sequence[str] = ("alice", "bob")) -> Iterator[ChatSite]:
    """The chat example on ``layer`` with its data in ``data_dir``; see the module docstring."""
    extra = chat_env(layer, data_dir)
    env = site_env(layer, data_dir, extra_env=extra)
    _manage(env, "migrate", "--noinput", "-v", "0")
    for name in users:
        _manage(env, "createsuperuser", "--noinput", "--username", name, "--email", f"{name}@example.org",
                extra={"DJANGO_SUPERUSER_PASSWORD": PASSWORD})
    with running_pool(layer, data_dir, workers=web_workers, args=("--exclude-channels", "tasks"),
                      extra_env=extra, server_args=("--http-timeout", "120")) as pool:
        # Inside the pool's block: the task worker stops before the layer's data is removed.
        tasks = subprocess.Popen([sys.executable, "-m", "worker.cli", "--workers", "1", "--only-channels", "tasks"],
                                 cwd=str(REPO), env=env, text=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True)
        tasks_log = Lines(tasks.stderr)  # type: ignore[arg-type]
        site = ChatSite(pool, tasks, tasks_log, users)
        try:
            tasks_log.wait_for(READY, timeout=90)
            yield site
        finally:
            with contextlib.suppress(Exception):
                site.stack.close()
            if tasks.poll() is None:
                tasks.send_signal(signal.SIGTERM)
            try:
                tasks.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(tasks.pid, signal.SIGKILL)
                tasks.wait()
            tasks_log.close()
            print(f"---- task worker log (exit {tasks.returncode}) ----\n{tasks_log.text()}")
