"""Build a channel layer from its dotted path and config, as the protocol server and workers do.

A process of the site never names a layer class in code: it is configured
the way Channels 1 configured ``CHANNEL_LAYERS`` entries, so the same server
and workers run on shared memory on one host and on Redis across hosts::

    layer = layer_from_settings({
        "BACKEND": "ipc_layer.layer.IPCChannelLayer",       # or ipc_layer.IPCChannelLayer
        "CONFIG": {"prefix": "mysite", "capacity": 100},
    })
    layer = layer_from_settings({
        "BACKEND": "ipc_layer.redis_layer.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://10.0.0.5:6379/0"], "prefix": "mysite:"},
    })

or ``load_layer("ipc_layer.IPCChannelLayer", {"prefix": "mysite"})``.

Every mistake raises :class:`InvalidLayerError` (a ``ValueError``) naming
the culprit: a malformed path, a module that does not import, a missing
attribute, a class that lacks the synchronous contract (``send``,
``receive``, ``new_channel``, ``extensions``; Channels 4 backends are
coroutine-based and belong in Django's ``CHANNEL_LAYERS`` instead), an
unknown or bad ``CONFIG`` key. Errors raised by a layer while it starts
(a segment that cannot be created, an unreachable Redis) pass through
unchanged: they are not configuration mistakes.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from . import options

__all__ = ["InvalidLayerError", "load_layer", "layer_from_settings"]

#: What a synchronous (ASGI 1) layer must have: the server and workers call these.
REQUIRED = ("send", "receive", "new_channel")


class InvalidLayerError(ValueError):
    """A layer's ``BACKEND`` path or ``CONFIG`` is wrong; the message names the culprit."""


def import_backend(path: object) -> type:
    """The class at dotted ``path`` (``"package.module.ClassName"``), checked for the sync contract."""
    if not isinstance(path, str) or "." not in path.strip(".") or path != path.strip():
        raise InvalidLayerError(
            f"BACKEND must be a dotted path like 'ipc_layer.IPCChannelLayer', got {path!r}"
        )
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidLayerError(f"BACKEND {path!r}: cannot import module {module_name!r}: {exc}") from exc
    try:
        backend = getattr(module, attr)
    except AttributeError:
        raise InvalidLayerError(f"BACKEND {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not inspect.isclass(backend):
        raise InvalidLayerError(f"BACKEND {path!r} is a {type(backend).__name__}, not a channel layer class")
    missing = [name for name in REQUIRED if not callable(getattr(backend, name, None))]
    if missing or not hasattr(backend, "extensions"):
        raise InvalidLayerError(
            f"BACKEND {path!r} is not a synchronous (ASGI 1) channel layer: it lacks "
            f"{', '.join(missing) or 'extensions'}"
        )
    if any(inspect.iscoroutinefunction(getattr(backend, name)) for name in REQUIRED):
        raise InvalidLayerError(
            f"BACKEND {path!r} is a Channels 4 (async) layer; the protocol server and workers "
            "need a synchronous one (e.g. ipc_layer.IPCChannelLayer), and a Channels 4 backend "
            "goes in Django's CHANNEL_LAYERS setting"
        )
    return backend


def load_layer(path: str, config: Mapping[str, Any] | None = None) -> Any:
    """An instance of the layer class at ``path``, made with ``config`` as keyword arguments."""
    backend = import_backend(path)
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise InvalidLayerError(f"CONFIG of {path!r} must be a mapping, got {type(config).__name__}")
    bad_keys = [key for key in config if not isinstance(key, str) or not key.isidentifier()]
    if bad_keys:
        raise InvalidLayerError(f"CONFIG of {path!r} has keys that are not option names: {bad_keys!r}")
    _check_keys(backend, path, config)
    return backend(**config)


def layer_from_settings(settings: Mapping[str, Any]) -> Any:
    """A layer from one ``{"BACKEND": path, "CONFIG": {...}}`` entry (``CONFIG`` optional)."""
    if not isinstance(settings, Mapping):
        raise InvalidLayerError(
            f"layer settings must be a mapping with BACKEND (and CONFIG), got {type(settings).__name__}"
        )
    unknown = sorted(set(settings) - {"BACKEND", "CONFIG"})
    if unknown:
        raise InvalidLayerError(f"layer settings have unknown keys {unknown!r}; expected BACKEND and CONFIG")
    if "BACKEND" not in settings:
        raise InvalidLayerError("layer settings have no BACKEND (the layer class's dotted path)")
    return load_layer(settings["BACKEND"], settings.get("CONFIG"))


def _accepted(backend: type) -> set[str] | None:
    """The option names ``backend`` takes; None when it takes any (``**kwargs``) or cannot say.

    This package's layers declare theirs (``option_kind``, see
    :mod:`ipc_layer.options`); a class that does not declare it on itself (a
    third-party layer, or a subclass that may add parameters) is read from
    its signature.
    """
    kind = vars(backend).get("option_kind")
    if isinstance(kind, str) and kind in options.KINDS:
        return set(options.accepted(kind))
    try:
        signature = inspect.signature(backend)
    except (TypeError, ValueError):  # pragma: no cover - a C class without a signature
        return None
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_keys(backend: type, path: str, config: Mapping[str, Any]) -> None:
    """Name every CONFIG key the layer does not take (Python would name only the first)."""
    accepted = _accepted(backend)
    if accepted is None:
        return
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise InvalidLayerError(
            f"CONFIG of {path!r} has unknown option(s) {unknown!r}; it accepts {sorted(accepted)!r}"
        )
