"""``BaseConsumer``: a class-based consumer that picks its method by the message's channel.

A class is a consumer: ``route_class(MyConsumer, path=...)`` routes the channels of its
``method_mapping`` to it, and each message makes a new instance (``MyConsumer(message,
**kwargs)``), which calls the mapped method: no state survives between messages on the
instance (use ``channel_session`` for that: ``channel_session = True`` on the class, or
``channel_session_user = True`` for ``message.user`` too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..message import Message
from ..routing import RouteClass, route_class

__all__ = ["BaseConsumer"]


class BaseConsumer:
    """Dispatches ``message.channel.name`` through ``method_mapping`` to a method of a fresh instance."""

    #: channel name -> method name
    method_mapping: ClassVar[Mapping[str, str]] = {}
    #: wrap the handler in ``channel_session`` / ``channel_session_user``
    channel_session: bool = False
    channel_session_user: bool = False

    def __init__(self, message: Message, **kwargs: Any) -> None:
        self.message = message
        self.kwargs = kwargs
        self.dispatch(message, **kwargs)

    @classmethod
    def channel_names(cls) -> set[str]:
        """The channels this consumer takes (what ``route_class`` routes to it)."""
        return set(cls.method_mapping)

    @classmethod
    def as_route(cls, attrs: Mapping[str, Any] | None = None, **kwargs: Any) -> RouteClass:
        """``route_class`` of this class (or of a subclass with ``attrs`` set), with filters ``kwargs``."""
        target: type[BaseConsumer] = cls
        if attrs:
            if not isinstance(attrs, Mapping):
                raise TypeError(f"{cls.__name__}.as_route(attrs=...) must be a dict, got {type(attrs).__name__}")
            target = type(cls.__name__, (cls,), dict(attrs))
        return route_class(target, **kwargs)

    def get_handler(self, message: Message, **kwargs: Any) -> Any:
        """The bound method for the message's channel, wrapped in the session decorators asked for."""
        name = self.method_mapping.get(message.channel.name)
        if name is None:
            raise ValueError(
                f"{type(self).__name__} got a message on {message.channel.name!r}, which its method_mapping "
                f"does not map (it maps {sorted(self.method_mapping)!r}): check the routing"
            )
        handler = getattr(self, name)
        if self.channel_session_user:
            from ..auth import channel_session_user

            return channel_session_user(handler)
        if self.channel_session:
            from ..sessions import channel_session

            return channel_session(handler)
        return handler

    def dispatch(self, message: Message, **kwargs: Any) -> Any:
        """Run the handler of ``message`` with the route's keyword arguments."""
        return self.get_handler(message, **kwargs)(message, **kwargs)
