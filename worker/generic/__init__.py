"""Class-based consumers (Channels 1.x's ``channels.generic``): :class:`BaseConsumer` and the WebSocket ones."""

from __future__ import annotations

from .base import BaseConsumer

__all__ = ["BaseConsumer"]
