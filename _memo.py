"""The one bounded-cache rule of the project: plain dicts, emptied when full.

Every memo table on a hot path (validated names, routes, receive plans,
packed name lists, capacities, prepared receivers) is a plain ``dict`` read
with ``table[key]`` (a ``KeyError``/``TypeError`` is the miss), and written
only through :func:`remember`, which empties the table first when it holds
:data:`LIMIT` entries.

Why clear-all and not LRU: a hit then costs exactly one dict lookup, with no
bookkeeping (``functools.lru_cache`` moves the entry on every hit, and a
wrapper in Python costs a call more than the lookup it saves); the tables
hold keys that are cheap to recompute (a name check, a tuple pack), so the
only price of the rule is one burst of misses every ``LIMIT`` distinct keys,
and only when a process really uses more than ``LIMIT`` of them (unique reply
channels do).

Where it lives: a leaf module of its own, standard library only, importing
nothing of the project. The binding (``_ringbuf``) needs it and must not
import ``ipc_layer``; ``ipc_layer`` needs it in modules that must import
without the C core (``names``, ``capacity``: ``import ipc_layer`` works with
``_ringbuf`` absent), so it cannot live in ``_ringbuf`` either, whose
``__init__`` loads the extension. ``server``/``worker`` may use it too.
Tables are per object where the values depend on the object's config (a
layer's routes), module-level where they do not (a name's validity);
clearing one never affects another.
"""
from __future__ import annotations

from typing import TypeVar

__all__ = ["LIMIT", "remember"]

#: Entries a memo table holds before :func:`remember` empties it. Large
#: enough for every live reply channel of a busy protocol server to stay
#: cached; each entry is a few hundred bytes, so a full table is ~1 MiB.
LIMIT = 4096

K = TypeVar("K")
V = TypeVar("V")


def remember(table: dict[K, V], key: K, value: V, limit: int = LIMIT) -> V:
    """Store ``value`` under ``key`` in ``table`` (emptied first if it holds ``limit``); return it.

    Thread-safe enough for a cache under the GIL: two threads racing past
    the bound can leave a few entries more than ``limit``, never a wrong one.
    """
    if len(table) >= limit:
        table.clear()
    table[key] = value
    return value
