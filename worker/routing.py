"""Channel routing: which consumer runs a message (Channels 1.x's ``channels.routing``).

A routing is a list of entries, tried in order; the first that matches wins::

    channel_routing = [
        route("websocket.connect", ws_connect, path=r"^/chat/(?P<room>\\w+)/$"),
        route("websocket.receive", "chat.consumers.ws_message"),   # a dotted path works too
        route_class(ChatConsumer, path=r"^/rooms/"),
        include("chat.routing.chat_routing", path=r"^/chat"),
        route("thumbnails", make_thumbnail),
    ]

and ``CHANNEL_LAYERS[alias]["ROUTING"]`` names it by dotted path.

Theory of operation
-------------------
* ``route(channel, consumer, **filters)``: the message must be on ``channel`` (a name or a
  list of names) and, for each filter, have the key, whose value the filter's regex
  ``match``es (anchored at the start, as ``re.match``; ``str`` values as they are, ``bytes``
  read as latin-1, ints as decimal text; any other type never matches). The regex's named
  groups become the consumer's keyword arguments: ``consumer(message, room="lobby")``.
* ``route_class(cls, **filters)``: the same for a class-based consumer, whose channels are
  ``cls.channel_names()``.
* ``include(routing, **prefixes)``: the entries of another routing, tried only when every
  prefix regex matches; the matched part is stripped from the value the inner entries see
  (``path=r"^/chat"`` then ``route(..., path=r"^/(?P<room>\\w+)/$")`` matches ``/chat/x/``).
  The consumer still gets the original message. Groups of the prefix become kwargs too.
  The stripped values live in an overlay (a ``ChainMap``) over the message's content, so
  matching copies nothing, however large the body.
* Everything is checked when the routing is built, i.e. when the worker starts (and
  ``Router`` is what the worker builds): a dotted path that does not import, a consumer
  that is not callable, a channel name the layer would refuse, a filter that is not a
  valid regex or has positional groups, an entry that is not a route; each raises
  :class:`~worker.exceptions.RoutingError` naming the route (and its place in the list).
* :func:`router_from_settings` builds the worker's router: the user's routing first, then
  the defaults: the site's Django views for ``http.request`` (``worker.http.view_consumer``,
  imported by dotted path when the router is built), the delayed-message consumer for
  ``asgi.delay`` (``worker.delay``), an accept-all ``websocket.connect``
  and no-op ``websocket.receive``/``websocket.disconnect`` consumers (as Channels 1.x
  did: the protocol requires every connect to be answered). A user route on the same
  channel, with or without filters, comes first and wins.
"""

from __future__ import annotations

import re
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ipc_layer import names

from . import DEFAULT_CHANNEL_LAYER
from .exceptions import RoutingError
from .utils import import_by_path, name_that_thing

__all__ = [
    "DEFAULT_HTTP_CONSUMER",
    "DELAY_CONSUMER",
    "Include",
    "Route",
    "RouteClass",
    "Router",
    "connect_consumer",
    "include",
    "null_consumer",
    "route",
    "route_class",
    "router_from_settings",
]

Consumer = Callable[..., Any]
#: (consumer, keyword arguments) for a matched message.
Match = tuple[Consumer, dict[str, Any]]

#: The catch-all ``http.request`` consumer: the site's Django views (issue 13).
DEFAULT_HTTP_CONSUMER = "worker.http.view_consumer"
#: The ``asgi.delay`` consumer: delayed messages held by the workers (worker.delay).
DELAY_CONSUMER = "worker.delay.delay_consumer"


class Routable(Protocol):
    """Anything in a routing list: a ``route``, ``route_class``, ``include`` or a look-alike."""

    def match(self, message: Any) -> Match | None: ...

    def channel_names(self) -> set[str]: ...


def _text_of(value: Any) -> str | None:
    """The text a filter regex sees for a message value, or None when it cannot match."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _compile_filters(filters: Mapping[str, Any], owner: str) -> dict[str, re.Pattern[str]]:
    compiled = {}
    for key, pattern in filters.items():
        if isinstance(pattern, re.Pattern):
            regex = pattern
        elif isinstance(pattern, (str, bytes)):
            source = pattern.decode("ascii", "replace") if isinstance(pattern, bytes) else pattern
            try:
                regex = re.compile(source)
            except re.error as exc:
                raise RoutingError(f"{owner}: filter {key}={source!r} is not a valid regex: {exc}") from None
        else:
            raise RoutingError(
                f"{owner}: filter {key}={pattern!r} must be a regex (str or compiled), got {type(pattern).__name__}"
            )
        if not isinstance(regex.pattern, str):
            raise RoutingError(f"{owner}: filter {key}: compile the regex from a str, not bytes")
        if regex.groups != len(regex.groupindex):
            raise RoutingError(
                f"{owner}: filter {key}={regex.pattern!r} has positional groups; only named groups "
                "(?P<name>...) are allowed (they become the consumer's keyword arguments); "
                "use (?:...) for grouping"
            )
        bad = [g for g in regex.groupindex if not g.isidentifier()]
        if bad:  # pragma: no cover - re already requires identifiers
            raise RoutingError(f"{owner}: filter {key}: group names {bad!r} are not identifiers")
        compiled[key] = regex
    return compiled


def _describe_filters(filters: Mapping[str, re.Pattern[str]]) -> str:
    return "" if not filters else " (" + ", ".join(f"{k}={v.pattern!r}" for k, v in filters.items()) + ")"


def _apply(filters: Mapping[str, re.Pattern[str]], values: Mapping[str, Any],
           kwargs: dict[str, Any], stripped: dict[str, str] | None) -> bool:
    """Match every filter against ``values``; fill ``kwargs`` (and ``stripped`` remainders)."""
    for key, regex in filters.items():
        if key not in values:
            return False
        text = _text_of(values[key])
        if text is None:
            return False
        found = regex.match(text)
        if found is None:
            return False
        kwargs.update(found.groupdict())
        if stripped is not None:
            stripped[key] = text[found.end():]
    return True


class Route:
    """Messages on ``channels`` whose keys match ``filters`` go to ``consumer``."""

    def __init__(self, channels: str | bytes | Iterable[str | bytes], consumer: Consumer | str, **filters: Any) -> None:
        self.consumer = self._resolve_consumer(consumer, channels)
        self.channels = self._check_channels(channels)
        self.filters = _compile_filters(filters, f"route {self}")

    def _owner(self, channels: Any) -> str:
        return f"route({channels!r}, {getattr(self, 'consumer', '?')!r})"

    def _resolve_consumer(self, consumer: Consumer | str, channels: Any) -> Consumer:
        if isinstance(consumer, str):
            try:
                consumer = import_by_path(consumer, "consumer")
            except ImportError as exc:
                raise RoutingError(f"route({channels!r}, {consumer!r}): {exc}") from exc
        if not callable(consumer):
            raise RoutingError(
                f"route({channels!r}, ...): the consumer {consumer!r} is a {type(consumer).__name__}, not callable"
            )
        return consumer

    def _check_channels(self, channels: Any) -> list[str]:
        owner = f"route({channels!r}, {name_that_thing(self.consumer)})"
        if isinstance(channels, (str, bytes)):
            channels = [channels]
        try:
            listed = list(channels)
        except TypeError:
            raise RoutingError(f"{owner}: channels must be a name or a list of names") from None
        if not listed:
            raise RoutingError(f"{owner}: no channel names")
        result = []
        for channel in listed:
            if isinstance(channel, bytes):
                channel = channel.decode("ascii", "replace")
            try:
                result.append(names.validate_receive_channel(channel))
            except TypeError as exc:
                raise RoutingError(f"{owner}: {exc}") from None
        return result

    def match(self, message: Any) -> Match | None:
        """``(consumer, kwargs)`` if ``message`` is for this route, else None."""
        return self._match(message.channel.name, message.content)

    def _match(self, channel: str, values: Mapping[str, Any]) -> Match | None:
        if channel not in self.channels:
            return None
        kwargs: dict[str, Any] = {}
        if not _apply(self.filters, values, kwargs, None):
            return None
        return self.consumer, kwargs

    def channel_names(self) -> set[str]:
        return set(self.channels)

    def __str__(self) -> str:
        channels = "/".join(getattr(self, "channels", None) or ["?"])
        filters = _describe_filters(getattr(self, "filters", {}))
        return f"{channels}{filters} -> {name_that_thing(self.consumer)}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"


class RouteClass(Route):
    """A route to a class-based consumer: its channels are ``consumer.channel_names()``."""

    def __init__(self, consumer: Consumer | str, **filters: Any) -> None:
        resolved = self._resolve_consumer(consumer, "<route_class>")
        channel_names = getattr(resolved, "channel_names", None)
        if not callable(channel_names):
            raise RoutingError(
                f"route_class({name_that_thing(resolved)}): the class has no channel_names() method "
                "(derive it from worker.generic.BaseConsumer, or use route())"
            )
        super().__init__(channel_names(), resolved, **filters)


def _entries(routing: Any, where: str) -> list[Routable]:
    """The entries of ``routing`` (a list, a dotted path to one, or a {channel: consumer} dict), checked."""
    if isinstance(routing, str):
        path = routing
        try:
            routing = import_by_path(path, "channel routing")
        except ImportError as exc:
            raise RoutingError(str(exc)) from exc
        where = path
    if isinstance(routing, Mapping):
        return [Route(channel, consumer) for channel, consumer in routing.items()]
    if not isinstance(routing, Sequence) or isinstance(routing, (str, bytes)):
        raise RoutingError(
            f"channel routing {where} must be a list of route()/route_class()/include(), got {type(routing).__name__}"
        )
    entries = []
    for index, entry in enumerate(routing):
        if isinstance(entry, (list, tuple)):
            raise RoutingError(
                f"entry #{index} of channel routing {where} is a {type(entry).__name__}; "
                "wrap a nested routing list in include()"
            )
        if not (callable(getattr(entry, "match", None)) and callable(getattr(entry, "channel_names", None))):
            raise RoutingError(
                f"entry #{index} of channel routing {where} is {entry!r}, not a route(), route_class() or include()"
            )
        entries.append(entry)
    return entries


class _Overlaid:
    """What a foreign routable entry (a user's own ``match``) sees inside an ``include``."""

    def __init__(self, message_channel: Any, values: Mapping[str, Any]) -> None:
        self.channel = message_channel
        self.content = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    def __contains__(self, key: object) -> bool:
        return key in self.content

    def get(self, key: str, default: Any = None) -> Any:
        return self.content.get(key, default)


class Include:
    """Another routing's entries, behind prefix filters whose matched part is stripped."""

    def __init__(self, routing: Any, **prefixes: Any) -> None:
        self.source = routing if isinstance(routing, str) else "(list)"
        self.prefixes = _compile_filters(prefixes, f"include({self.source!r})")
        self.routing = _entries(routing, repr(routing) if isinstance(routing, str) else "(included list)")

    def match(self, message: Any) -> Match | None:
        return self._match_in(message.channel, message.content)

    def _match_in(self, channel: Any, values: Mapping[str, Any]) -> Match | None:
        kwargs: dict[str, Any] = {}
        stripped: dict[str, str] = {}
        if not _apply(self.prefixes, values, kwargs, stripped):
            return None
        inner: Mapping[str, Any] = ChainMap(stripped, values) if stripped else values  # type: ignore[arg-type]
        for entry in self.routing:
            if isinstance(entry, Route):
                found = entry._match(channel.name, inner)
            elif isinstance(entry, Include):
                found = entry._match_in(channel, inner)
            else:
                found = entry.match(_Overlaid(channel, inner))
            if found is not None:
                consumer, inner_kwargs = found
                return consumer, {**kwargs, **inner_kwargs}
        return None

    def channel_names(self) -> set[str]:
        result: set[str] = set()
        for entry in self.routing:
            result.update(entry.channel_names())
        return result

    def __str__(self) -> str:
        return f"include({self.source}){_describe_filters(self.prefixes)}"


class Router:
    """The worker's routing table: ``.channels`` to receive on, ``.match(message)`` to dispatch."""

    def __init__(self, routing: Any) -> None:
        self.root = Include(routing if routing is not None else [])
        self.channels: set[str] = self.root.channel_names()

    def add_route(self, entry: Routable) -> None:
        """Append one entry after every other (the defaults go there)."""
        self.root.routing.append(entry)
        self.channels = self.root.channel_names()

    def match(self, message: Any) -> Match | None:
        """``(consumer, kwargs)`` of the first matching entry, or None."""
        return self.root.match(message)

    def check_default(self, http_consumer: Consumer | str | None = None) -> None:
        """Append the defaults: Django views for ``http.request``, accept-all WebSocket consumers."""
        self.add_route(Route("http.request", http_consumer or DEFAULT_HTTP_CONSUMER))
        self.add_route(Route("asgi.delay", DELAY_CONSUMER))
        self.add_route(Route("websocket.connect", connect_consumer))
        self.add_route(Route("websocket.receive", null_consumer))
        self.add_route(Route("websocket.disconnect", null_consumer))

    def describe(self) -> list[str]:
        """One line per top-level entry, for the worker's start-up log."""
        return [str(entry) for entry in self.root.routing]


def router_from_settings(alias: str = DEFAULT_CHANNEL_LAYER, http_consumer: Consumer | str | None = None) -> Router:
    """The router of ``CHANNEL_LAYERS[alias]``: its ``ROUTING`` (optional), then the defaults."""
    from .asgi import layer_settings

    entry = layer_settings(alias)
    routing = entry.get("ROUTING")
    if routing is not None and not isinstance(routing, (str, list, tuple, dict)):
        raise RoutingError(
            f"CHANNEL_LAYERS[{alias!r}]['ROUTING'] must be a dotted path to a routing list, "
            f"got {type(routing).__name__}"
        )
    router = Router(routing)
    router.check_default(http_consumer)
    return router


def null_consumer(message: Any, **kwargs: Any) -> None:
    """The no-op consumer (the default for ``websocket.receive`` and ``websocket.disconnect``)."""


def connect_consumer(message: Any, **kwargs: Any) -> None:
    """The default ``websocket.connect`` consumer: accept every connection."""
    message.reply_channel.send({"accept": True})


# Lower-case names, as in urls.py (and Channels 1.x).
route = Route
route_class = RouteClass
include = Include
