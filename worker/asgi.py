"""The process's channel layers by ``CHANNEL_LAYERS`` alias (Channels 1.x's ``channels.asgi``).

Theory of operation
-------------------
``channel_layers[alias]`` builds the layer of ``settings.CHANNEL_LAYERS[alias]`` on first
use, with ``ipc_layer.loading.layer_from_settings`` (``BACKEND`` + ``CONFIG``; the other keys
of the entry, ``ROUTING`` and ``TEST_CONFIG``, are ours), and hands the same object to every
later caller in the process: the worker loop receives on it, and ``Channel("x").send`` /
``Group("g").send`` in user code send through it. ``set(alias, layer)`` swaps a layer in
(the test tools put an in-memory layer there, the worker loop may register the layer it
built) and returns the old one.

A fork empties the table in the child (``os.register_at_fork``): a layer holds mappings,
sockets and threads of the process that made it, so a forked worker builds its own on first
use instead of sharing its parent's. The parent's objects are dropped, never closed, in the
child: closing them there could touch state the parent still uses.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from ipc_layer.loading import layer_from_settings

from . import DEFAULT_CHANNEL_LAYER
from .exceptions import InvalidChannelLayerError

__all__ = ["ChannelLayerManager", "InvalidChannelLayerError", "channel_layers", "get_channel_layer",
           "layer_settings"]


def layer_settings(alias: str) -> Mapping[str, Any]:
    """The ``CHANNEL_LAYERS[alias]`` entry of Django's settings, checked to be a mapping."""
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if not isinstance(layers, Mapping) or not layers:
        raise InvalidChannelLayerError(
            "settings.CHANNEL_LAYERS is not set: it must map aliases to "
            '{"BACKEND": ..., "CONFIG": {...}, "ROUTING": "project.routing.channel_routing"}'
        )
    if alias not in layers:
        raise InvalidChannelLayerError(
            f"settings.CHANNEL_LAYERS has no alias {alias!r}; it has {sorted(layers)!r}"
        )
    entry = layers[alias]
    if not isinstance(entry, Mapping):
        raise InvalidChannelLayerError(
            f"settings.CHANNEL_LAYERS[{alias!r}] must be a mapping, got {type(entry).__name__}"
        )
    return entry


class ChannelLayerManager:
    """The layers of this process, built on first use from settings and shared by alias."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.backends: dict[str, Any] = {}

    def make_backend(self, alias: str) -> Any:
        """A new layer from ``CHANNEL_LAYERS[alias]`` (``BACKEND`` and ``CONFIG``)."""
        entry = layer_settings(alias)
        return layer_from_settings({key: entry[key] for key in ("BACKEND", "CONFIG") if key in entry})

    def make_test_backend(self, alias: str) -> Any:
        """A new layer from ``CHANNEL_LAYERS[alias]["TEST_CONFIG"]`` (Channels 1.x's name)."""
        entry = layer_settings(alias)
        if "TEST_CONFIG" not in entry:
            raise InvalidChannelLayerError(f"settings.CHANNEL_LAYERS[{alias!r}] has no TEST_CONFIG")
        return layer_from_settings({"BACKEND": entry.get("BACKEND"), "CONFIG": entry["TEST_CONFIG"]})

    def __getitem__(self, alias: str) -> Any:
        layer = self.backends.get(alias)
        if layer is not None:
            return layer
        with self._lock:
            layer = self.backends.get(alias)
            if layer is None:
                layer = self.backends[alias] = self.make_backend(alias)
            return layer

    def __contains__(self, alias: object) -> bool:
        from django.conf import settings

        return alias in (getattr(settings, "CHANNEL_LAYERS", None) or {})

    def set(self, alias: str, layer: Any) -> Any:
        """Make ``layer`` the process's layer for ``alias`` (None forgets it); returns the old one."""
        with self._lock:
            old = self.backends.pop(alias, None)
            if layer is not None:
                self.backends[alias] = layer
            return old

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it at the fork
        self.backends = {}


#: The process-wide table.
channel_layers = ChannelLayerManager()
os.register_at_fork(after_in_child=channel_layers._forget_after_fork)


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> Any:
    """The channel layer of ``alias`` for this process (built from settings on first use)."""
    return channel_layers[alias]
