"""Data binding (Channels 1.x's ``channels.binding``): model saves and deletes sent to groups as JSON."""

from __future__ import annotations

from .base import CREATE, DELETE, UPDATE, Binding

__all__ = ["CREATE", "DELETE", "UPDATE", "Binding"]
