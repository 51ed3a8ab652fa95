"""Channel capacities: one default plus per-name-glob overrides, compiled once.

``channel_capacity={"http.request": 200, "daphne.response*": 10}`` is the
ASGI 1 ``CHANNEL_LAYERS`` config shape. Keys are ``fnmatch`` globs (or
pre-compiled regexes, kept for asgi_redis/asgi_ipc config compatibility,
matched with ``.match`` as asgiref did); the first key that matches wins, so
the mapping's insertion order is the priority order.

Capacity belongs to the queue, and a process-specific channel ``name!x``
queues into ``name!``; :meth:`ChannelCapacities.get` therefore looks up the
non-local name, so ``get("name!x") == get("name!")`` always.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping

from _memo import remember

from . import options
from .names import non_local_name
from .options import CapacityKey, validate_capacity

__all__ = ["DEFAULT_CAPACITY", "CapacityKey", "ChannelCapacities", "validate_capacity"]

#: ASGI 1's recommended default (asgi_ipc's code said 10, its README 100);
#: declared in :mod:`ipc_layer.options` with its range (1..2**32-1).
DEFAULT_CAPACITY = options.CAPACITY.default


class ChannelCapacities:
    """The capacity of every channel, from a default and ordered glob rules.

    :param default: capacity of channels no rule matches.
    :param channel_capacity: ordered mapping of glob (or compiled regex) to
        capacity; the first matching rule wins.
    """

    __slots__ = ("_default", "_known", "_rules", "_source")

    def __init__(
        self,
        default: int = DEFAULT_CAPACITY,
        channel_capacity: Mapping[CapacityKey, int] | None = None,
    ) -> None:
        self._default = options.CAPACITY.validate(default)
        # Keys and values checked by the one declaration (ranges included).
        source = options.CHANNEL_CAPACITY.validate(channel_capacity) or {}
        rules: list[tuple[re.Pattern[str], int]] = []
        for key, value in source.items():
            # translate() anchors at both ends, so "http.request" is an
            # exact name and "daphne.response*" a prefix.
            pattern = key if isinstance(key, re.Pattern) else re.compile(fnmatch.translate(key))
            rules.append((pattern, value))
        self._rules = tuple(rules)
        self._source = source
        # channel -> capacity, per instance (it never mixes configs), bounded
        # by _memo.remember; keyed by the full name, so a hit skips the
        # non-local split too.
        self._known: dict[str, int] = {}

    @property
    def default(self) -> int:
        """Capacity of channels that no rule matches."""
        return self._default

    @property
    def channel_capacity(self) -> dict[CapacityKey, int]:
        """A copy of the rules as given (glob or regex -> capacity)."""
        return dict(self._source)

    def get(self, channel: str) -> int:
        """Capacity of the queue ``channel`` sends into (``name!x`` -> ``name!``)."""
        try:
            return self._known[channel]
        except KeyError:
            return remember(self._known, channel, self._lookup(non_local_name(channel)))

    def _lookup(self, queue: str) -> int:
        for pattern, value in self._rules:
            if pattern.match(queue):
                return value
        return self._default

    def __repr__(self) -> str:
        return f"ChannelCapacities(default={self._default!r}, channel_capacity={self._source!r})"
