"""Django workers over an ASGI 1 channel layer: the pre-forking pool and the Channels-1.x consumer API.

Porting a Channels 1.x application is an import rename (``channels`` -> ``worker``):
``from worker import Channel, Group``, ``from worker.routing import route, include``,
``worker.sessions``, ``worker.auth``, ``worker.generic``, ``worker.exceptions``, ``worker.test``.

The public names below are imported lazily (PEP 562 ``__getattr__``): the pool's master
process (``worker.arbiter``) imports this package without loading Django or a channel layer.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The ``CHANNEL_LAYERS`` alias used when none is named (Channels 1.x's name).
DEFAULT_CHANNEL_LAYER = "default"

# public name -> the submodule that defines it (imported on first access)
_LAZY = {
    "Channel": "worker.channel",
    "Group": "worker.channel",
    "Message": "worker.message",
    "route": "worker.routing",
    "route_class": "worker.routing",
    "include": "worker.routing",
    "channel_layers": "worker.asgi",
    "get_channel_layer": "worker.asgi",
}

__all__ = ["DEFAULT_CHANNEL_LAYER", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
