"""An ASGI 1 (synchronous) channel layer in POSIX shared memory.

``IPCChannelLayer`` needs the compiled ``_ringbuf`` extension, so it is
imported lazily on first access (PEP 562 module ``__getattr__``): importing
``ipc_layer`` for the exceptions, the in-memory layer or the conformance
suite works without the C core built. It is left out of ``__all__`` for the
same reason, so ``from ipc_layer import *`` never needs the extension.
"""

from __future__ import annotations

from typing import Any

from .base import BaseChannelLayer
from .exceptions import (
    ChannelFull,
    LayoutMismatch,
    LockTimeout,
    MessageTooLarge,
    SegmentError,
    SegmentNotTrusted,
)
from .inmemory import InMemoryChannelLayer

__version__ = "0.1.0"

__all__ = [
    "BaseChannelLayer",
    "ChannelFull",
    "InMemoryChannelLayer",
    "LayoutMismatch",
    "LockTimeout",
    "MessageTooLarge",
    "SegmentError",
    "SegmentNotTrusted",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "IPCChannelLayer":
        from .layer import IPCChannelLayer

        return IPCChannelLayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "IPCChannelLayer"])
