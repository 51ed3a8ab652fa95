"""Small helpers shared by the consumer API's modules."""

from __future__ import annotations

import functools
import importlib
from typing import Any

__all__ = ["import_by_path", "name_that_thing"]


def name_that_thing(thing: Any) -> str:
    """A readable dotted name for a consumer (function, method, class or instance), for logs and errors."""
    if isinstance(thing, functools.partial):
        return f"partial({name_that_thing(thing.func)})"
    self = getattr(thing, "__self__", None)
    if self is not None and getattr(thing, "__name__", None):  # a bound method
        owner = self if isinstance(self, type) else type(self)
        return f"{owner.__module__}.{owner.__qualname__}.{thing.__name__}"
    qualname = getattr(thing, "__qualname__", None)
    if isinstance(thing, type) or (qualname and callable(thing) and hasattr(thing, "__code__")):
        return f"{thing.__module__}.{qualname}"
    cls = type(thing)
    return f"{cls.__module__}.{cls.__qualname__} instance"


def import_by_path(path: str, what: str) -> Any:
    """The object at dotted ``path``; ``ImportError`` naming ``what`` and the path when it is not there."""
    if not isinstance(path, str) or "." not in path.strip("."):
        raise ImportError(f"{what} {path!r} is not a dotted path like 'package.module.name'")
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"{what} {path!r}: cannot import module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}") from None
