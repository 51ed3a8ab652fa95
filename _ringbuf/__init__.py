"""Shared-memory named queues, sets and fan-out for processes on one host.

The C core (``_ringbuf._native``, built by cffi from ``src/*.c``) knows
bytes, names, counts and deadlines; this package re-exports the thin
binding's public names only.
"""
from .binding import *  # noqa: F401,F403
from .binding import __all__  # noqa: F401
