"""The variables the site's processes read, and their defaults (standard library only).

The launcher (:mod:`examples.chat.demo`) and the tests build the environment of the
processes they start from these names; :mod:`examples.chat.settings` reads them.

=========================  ===============================================================
variable                   meaning (default)
=========================  ===============================================================
``IPC_DEMO_DATA``          folder of the SQLite database and the secret key
                           (``$XDG_DATA_HOME/ipc-demo``, else ``~/.local/share/ipc-demo``)
``IPC_DEMO_LAYER_BACKEND`` dotted path of the layer class (``ipc_layer.IPCChannelLayer``)
``IPC_DEMO_LAYER_CONFIG``  the layer's CONFIG as a JSON object (``{"prefix": "ipc-demo"}``)
``IPC_DEMO_ALLOWED_HOSTS`` comma-separated ``ALLOWED_HOSTS`` (``localhost,127.0.0.1,[::1]``)
``IPC_DEMO_DEBUG``         ``1``: Django's ``DEBUG`` (off)
=========================  ===============================================================
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_ALLOWED_HOSTS", "DEFAULT_BACKEND", "DEFAULT_PREFIX", "SETTINGS", "default_data_dir"]

SETTINGS = "examples.chat.settings"
DEFAULT_BACKEND = "ipc_layer.IPCChannelLayer"
DEFAULT_PREFIX = "ipc-demo"
DEFAULT_ALLOWED_HOSTS = "localhost,127.0.0.1,[::1]"


def default_data_dir() -> Path:
    """Where the site keeps its database when ``IPC_DEMO_DATA`` is not set (XDG's data home)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ipc-demo"
