"""Prefixes and cleanup for every test: the one place tests get a name of their own.

Every test works under its own prefix, so tests never see each other's segments, FIFOs or
Redis keys, even in concurrent runs on one machine and one Redis:

- :func:`unique_prefix`: ``t<pid>_<n>_<hex>``, a segment prefix (``/dev/shm/rbuf.<prefix>``
  and its ``~w~``/``~init~`` files); ``tests/conftest.py``'s ``prefix`` fixture hands one to
  each test and its end-of-session check fails the run on any file of this pattern that the
  run's process left behind;
- :func:`unique_key_prefix`: the same name plus ``:``, for Redis keys;
- :func:`remove_segment` / :func:`segment_files`: unlink a prefix's segment (through the core,
  even while attached) and every file left under it;
- :func:`remove_keys` / :func:`count_keys`: delete / count a Redis key prefix's keys.

Only the standard library is imported at module level (``_ringbuf`` and redis-py lazily), so
any sub-tree of the tests runs while another part of the project is unfinished.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import secrets
from typing import Any

__all__ = [
    "PREFIX_PATTERN",
    "SHM_DIR",
    "TEST_SEGMENT_SIZE",
    "count_keys",
    "make_layer",
    "remove_keys",
    "remove_segment",
    "segment_files",
    "segment_path",
    "unique_key_prefix",
    "unique_prefix",
]

SHM_DIR = "/dev/shm"
#: Small segments: tests never need the 64 MiB default.
TEST_SEGMENT_SIZE = 16 << 20
#: What :func:`unique_prefix` makes (group 1: the pid of the process that made it).
PREFIX_PATTERN = re.compile(r"t(\d+)_\d+_[0-9a-f]{6}")

_counter = itertools.count(1)


def unique_prefix() -> str:
    """A prefix no other test, process or concurrent run uses."""
    return f"t{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"


def unique_key_prefix() -> str:
    """A Redis key prefix no other test (or concurrent test run) uses."""
    return unique_prefix() + ":"


def segment_path(prefix: str) -> str:
    """The segment file of ``prefix``."""
    return os.path.join(SHM_DIR, f"rbuf.{prefix}")


def segment_files(prefix: str) -> list[str]:
    """Every file under ``prefix``: the segment, its FD watches' FIFOs, creation temps."""
    return sorted(glob.glob(os.path.join(SHM_DIR, f"rbuf.{glob.escape(prefix)}*")))


def remove_segment(prefix: str) -> None:
    """Unlink the segment of ``prefix`` through the core (even while attached), then any file left."""
    try:
        import _ringbuf

        _ringbuf.unlink(prefix, force=True)
    except Exception:  # SegmentNotFound (already gone), core not built, a mangled file: the glob cleans
        pass
    for path in segment_files(prefix):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def make_layer(prefix: str, **config: Any) -> Any:
    """An ``IPCChannelLayer`` on ``prefix`` with a test-sized segment."""
    from ipc_layer import IPCChannelLayer

    config.setdefault("segment_size", TEST_SEGMENT_SIZE)
    return IPCChannelLayer(prefix=prefix, **config)


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10)


def count_keys(url: str, prefix: str) -> int:
    """Keys under ``prefix`` on the Redis at ``url``."""
    client = _client(url)
    try:
        return sum(1 for _ in client.scan_iter(match=prefix + "*", count=1000))
    finally:
        client.close()


def remove_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (test prefixes hold no glob characters)."""
    client = _client(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for first in range(0, len(keys), 500):
            client.unlink(*keys[first : first + 500])
    finally:
        client.close()
