"""``Channel`` and ``Group``: what consumers and site code send through (Channels 1.x's API).

``Channel(name).send(content)`` and ``Group(name).send(content)`` made *inside a consumer*
are deferred until the consumer returns (:mod:`worker.message`'s pending store, flushed by
the worker's dispatch), so a consumer that fails half-way sends nothing, and replies leave
in the order they were made. ``immediately=True`` sends at once. Outside a consumer (a view
run by a test client, a management command, a shell) every send is immediate.

The layer is the one of ``alias`` in :data:`worker.asgi.channel_layers` unless one is
passed, looked up on first use: ``thumbnails = Channel("thumbnails")`` at module level
builds no layer at import time.
"""

from __future__ import annotations

from typing import Any

from . import DEFAULT_CHANNEL_LAYER

__all__ = ["Channel", "Group"]


def _text(name: object, kind: str) -> str:
    if isinstance(name, bytes):
        try:
            return name.decode("ascii")
        except UnicodeDecodeError:
            raise TypeError(f"{kind} name {name!r} is not ASCII") from None
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, got {type(name).__name__} {name!r}")
    return name


class _NotADict(TypeError, ValueError):
    """Content that is not a dict (Channels 1.x raised TypeError for channels, ValueError for groups)."""


def _check_content(content: object, target: str) -> None:
    if not isinstance(content, dict):
        raise _NotADict(f"send to {target}: content must be a dict, got {type(content).__name__}")


class _Sender:
    """What ``Channel`` and ``Group`` share: a name and a (lazily found) layer."""

    kind = "channel"

    def __init__(self, name: str | bytes, alias: str = DEFAULT_CHANNEL_LAYER, channel_layer: Any = None) -> None:
        self.name = _text(name, self.kind)
        self._alias = alias
        self._layer = channel_layer

    @property
    def channel_layer(self) -> Any:
        if self._layer is None:
            from .asgi import channel_layers

            self._layer = channel_layers[self._alias]
        return self._layer

    @channel_layer.setter
    def channel_layer(self, layer: Any) -> None:
        self._layer = layer

    def send(self, content: dict[str, Any], immediately: bool = False) -> None:
        """Send ``content``; deferred until the running consumer returns unless ``immediately``."""
        _check_content(content, f"{self.kind} {self.name!r}")
        from .message import pending_message_store

        if immediately or not pending_message_store.active:
            self._send_now(content)
        else:
            pending_message_store.append(self, content)

    def _send_now(self, content: dict[str, Any]) -> None:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Sender) or type(other) is not type(self):
            return NotImplemented
        return self.name == other.name

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name))


class Channel(_Sender):
    """A named channel of the layer: ``Channel("thumbnails").send({"id": 3})``."""

    kind = "channel"

    def _send_now(self, content: dict[str, Any]) -> None:
        self.channel_layer.send(self.name, content)


class Group(_Sender):
    """A broadcast group: members are channel names, each expiring ``group_expiry`` after its add."""

    kind = "group"

    def add(self, channel: Channel | str) -> None:
        """Add ``channel`` (a :class:`Channel` or a name); adding again refreshes its expiry."""
        self.channel_layer.group_add(self.name, channel.name if isinstance(channel, Channel) else channel)

    def discard(self, channel: Channel | str) -> None:
        """Remove ``channel``; a no-op if it is not a member."""
        self.channel_layer.group_discard(self.name, channel.name if isinstance(channel, Channel) else channel)

    def channel_names(self) -> list[str]:
        """The current members' names (the layer's ``group_channels``)."""
        return list(self.channel_layer.group_channels(self.name))

    def _send_now(self, content: dict[str, Any]) -> None:
        # send_group skips full members and never raises ChannelFull (ASGI 1).
        self.channel_layer.send_group(self.name, content)
