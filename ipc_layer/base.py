"""The synchronous ASGI 1 channel-layer contract every layer here implements.

In the spirit of asgiref 1.1.2's ``BaseChannelLayer``: the core API is
abstract, the extension APIs (``groups``, ``flush``, ``statistics``) raise
``NotImplementedError`` until a subclass provides them *and* lists them in
``extensions``, and the shared configuration (expiry, capacities, size limit,
blocking bound) is validated once here so that every layer refuses the same
bad settings with the same errors.

Differences from asgiref, each deliberate:

* ``new_channel()`` accepts only ``name?`` patterns (what asgiref's own
  conformance suite demands); a process gets its ``name!`` channel from
  :meth:`BaseChannelLayer.new_process_channel`, because a ``!`` name must be
  made by the process that will receive on it.
* ``max_message_size`` and ``blocking_timeout`` are part of the shared
  config: ``MessageTooLarge`` and a bounded ``receive(block=True)`` are in the
  contract (issue 4), so their knobs are too.
* ``extensions`` is a tuple, so no instance can mutate the class's list.
* Layers are context managers; :meth:`close` releases process resources
  (mapped segments, connections) without touching shared state.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from . import names, options
from .capacity import ChannelCapacities
from .exceptions import ChannelFull, MessageTooLarge
from .options import CapacityKey
from .serializer import Serializer

__all__ = [
    "CHANNEL_STATISTICS_KEYS",
    "DEFAULT_BLOCKING_TIMEOUT",
    "DEFAULT_EXPIRY",
    "DEFAULT_GROUP_EXPIRY",
    "GLOBAL_STATISTICS_KEYS",
    "BaseChannelLayer",
    "Message",
    "ReceiveResult",
]

Message = dict[str, Any]
ReceiveResult = tuple[str, Message] | tuple[None, None]
_Layer = TypeVar("_Layer", bound="BaseChannelLayer")

# The defaults (and ranges) are declared in ipc_layer.options; these names stay
# for code that imported them from here.
#: Seconds before an undelivered message is dropped (ASGI 1's recommendation).
DEFAULT_EXPIRY = options.EXPIRY.default
#: Seconds a group membership lasts after its last ``group_add``.
DEFAULT_GROUP_EXPIRY = options.GROUP_EXPIRY.default
#: Longest a ``receive(block=True)`` waits before returning ``(None, None)``;
#: asgi_redis's BLPOP used 5 s too. Callers loop, so this only bounds how
#: long a worker takes to notice a stop request.
DEFAULT_BLOCKING_TIMEOUT = options.BLOCKING_TIMEOUT.default

#: Keys of ``global_statistics()``; every value is an int.
GLOBAL_STATISTICS_KEYS = ("messages_count", "channel_full_count")
#: Keys of ``channel_statistics(channel)``; every value is an int and
#: ``messages_max_age`` is in whole seconds.
CHANNEL_STATISTICS_KEYS = ("messages_count", "messages_pending", "messages_max_age", "channel_full_count")


class BaseChannelLayer(abc.ABC):
    """Abstract synchronous ASGI 1 channel layer.

    Takes the options every layer shares (kind ``"base"`` of
    :mod:`ipc_layer.options`, which declares each one's default, range and
    meaning); ``channel_capacity`` is ordered, the first match wins (see
    :mod:`ipc_layer.capacity`). A subclass validates its own kind's options
    once and passes these on.
    """

    #: ASGI 1 requires the exception classes as layer attributes.
    ChannelFull: ClassVar[type[ChannelFull]] = ChannelFull
    MessageTooLarge: ClassVar[type[MessageTooLarge]] = MessageTooLarge

    #: Extensions this layer implements, from "groups", "flush", "statistics",
    #: "twisted", "asyncio". Callers test membership with ``in``.
    extensions: ClassVar[tuple[str, ...]] = ()
    #: The options this class takes, as declared in :mod:`ipc_layer.options`.
    option_kind: ClassVar[str] = "base"

    def __init__(
        self,
        expiry: float = options.EXPIRY.default,
        group_expiry: float = options.GROUP_EXPIRY.default,
        capacity: int = options.CAPACITY.default,
        channel_capacity: Mapping[CapacityKey, int] | None = options.CHANNEL_CAPACITY.default,
        max_message_size: int = options.MAX_MESSAGE_SIZE.default,
        blocking_timeout: float = options.BLOCKING_TIMEOUT.default,
    ) -> None:
        config = options.validate("base", locals(), owner=type(self).__name__)
        self.expiry = config[options.EXPIRY]
        self.group_expiry = config[options.GROUP_EXPIRY]
        self.blocking_timeout = config[options.BLOCKING_TIMEOUT]
        self.capacities = ChannelCapacities(config[options.CAPACITY], config[options.CHANNEL_CAPACITY])
        self.capacity = self.capacities.default
        self.channel_capacity = self.capacities.channel_capacity
        self.max_message_size = config[options.MAX_MESSAGE_SIZE]
        self.serializer = Serializer(self.max_message_size)

    # -- ASGI 1 core API -------------------------------------------------

    @abc.abstractmethod
    def send(self, channel: str, message: Message) -> None:
        """Queue a copy of ``message`` on ``channel``; never blocks.

        :raises TypeError: bad channel name, non-dict message, non-ASGI value.
        :raises ValueError: out-of-range value.
        :raises ChannelFull: the channel's queue holds ``capacity`` messages.
        :raises MessageTooLarge: the encoded message exceeds ``max_message_size``.
        """

    @abc.abstractmethod
    def receive(self, channels: Iterable[str], block: bool = False) -> ReceiveResult:
        """Pop the next message from any of ``channels``.

        Returns ``(channel, message)``, where ``channel`` is the full name the
        message was sent to (``name!x`` for a receive on ``name!``), or
        ``(None, None)`` when nothing is waiting. With ``block=True`` waits up
        to ``blocking_timeout`` seconds first, without polling.
        """

    def receive_many(self, channels: Iterable[str], block: bool = False) -> ReceiveResult:
        """Deprecated alias of :meth:`receive` (Channels 1.1.8's worker calls it)."""
        warnings.warn("receive_many() is deprecated; use receive()", DeprecationWarning, stacklevel=2)
        return self.receive(channels, block)

    @abc.abstractmethod
    def new_channel(self, pattern: str) -> str:
        """Return ``pattern`` (ending in ``?``) plus a suffix no channel uses yet.

        :raises TypeError: ``pattern`` is not a ``name?`` pattern.
        """

    def new_process_channel(self, prefix: str = "process") -> str:
        """Return a new ``"<prefix>.<unique>!"`` channel for this process to receive on.

        Senders address ``"<that name><anything>"``; the owner receives on
        the returned name and gets the full name back with each message.
        """
        return names.new_process_channel_name(prefix)

    # -- Extensions (raise until implemented and listed in extensions) ----

    def _missing(self, extension: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not implement the {extension!r} extension")

    def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (idempotent; refreshes its expiry)."""
        raise self._missing("groups")

    def receive_twisted(self, channels: Iterable[str], reactor: Any = None) -> Any:
        """The ``twisted`` extension: a Deferred firing with ``(channel, message)`` or ``(None, None)``.

        ``reactor``: the one to wake (the global reactor by default).
        """
        raise self._missing("twisted")

    def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; a no-op if it is not a member."""
        raise self._missing("groups")

    def group_channels(self, group: str) -> list[str]:
        """The unexpired members of ``group``; slow by design, not for hot paths."""
        raise self._missing("groups")

    def send_group(self, group: str, message: Message) -> None:
        """Send ``message`` to every member; full members are skipped silently.

        :raises MessageTooLarge: never ``ChannelFull``.
        """
        raise self._missing("groups")

    def flush(self) -> None:
        """Empty every message, group and statistic this layer's state holds."""
        raise self._missing("flush")

    def global_statistics(self) -> dict[str, int]:
        """``{"messages_count", "channel_full_count"}`` since the last flush."""
        raise self._missing("statistics")

    def channel_statistics(self, channel: str) -> dict[str, int]:
        """``{"messages_count", "messages_pending", "messages_max_age",
        "channel_full_count"}`` for the queue ``channel`` sends into."""
        raise self._missing("statistics")

    # -- Helpers and lifecycle ---------------------------------------------

    def get_capacity(self, channel: str) -> int:
        """Capacity of the queue ``channel`` sends into (``name!x`` -> ``name!``)."""
        return self.capacities.get(channel)

    def close(self) -> None:  # noqa: B027 (optional hook: a layer with nothing to release keeps it)
        """Release this instance's process resources; shared state stays."""

    def __enter__(self: _Layer) -> _Layer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(expiry={self.expiry!r}, group_expiry={self.group_expiry!r}, "
            f"capacity={self.capacity!r}, channel_capacity={self.channel_capacity!r})"
        )


options.document(BaseChannelLayer, "base")
