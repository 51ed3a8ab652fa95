"""The Redis server the Redis-layer tests run against, and per-test key prefixes.

- ``IPC_TEST_REDIS_URL`` set (CI: ``.ci/run`` starts redis-server on port
  6390): that server is used; if it does not answer, that is an error, not
  a skip, because CI promised a server.
- Unset: one private ``redis-server --port <free> --save '' --appendonly no``
  is started for the whole test process (``bench.redis_server.RedisServer``:
  loopback only, temporary directory, dies with the test process) and stopped
  at exit.
- Neither possible (no redis-py, no ``redis-server`` binary, or it would not
  start): :class:`unittest.SkipTest` with the reason, which pytest reports as
  a skip.

Every test gets its own key prefix and removes its keys
(``tests.support.unique_key_prefix`` / ``remove_keys``), so tests never see
each other's data even on a shared server.
"""

from __future__ import annotations

import os
import unittest
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.redis_server import RedisServer as RedisServerType

__all__ = ["ENV_VAR", "private_servers", "redis_url", "stop_servers"]

ENV_VAR = "IPC_TEST_REDIS_URL"

_url: str | None = None
_skip_reason: str | None = None
_server: object | None = None


def _ping(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()


def redis_url() -> str:
    """The URL of the test Redis, starting a private server on first use."""
    global _url, _skip_reason, _server
    if _url is not None:
        return _url
    if _skip_reason is not None:
        raise unittest.SkipTest(_skip_reason)
    try:
        import hiredis  # noqa: F401  (the layer's declared parser)
        import redis  # noqa: F401
    except ImportError as exc:
        _skip_reason = f"Redis layer tests need redis-py and hiredis: {exc}"
        raise unittest.SkipTest(_skip_reason) from None
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        try:
            _ping(from_env)
        except Exception as exc:
            raise RuntimeError(f"{ENV_VAR}={from_env!r} is set but that Redis does not answer: {exc}") from exc
        _url = from_env
        return _url
    from bench.redis_server import RedisServer, RedisUnavailable

    try:
        server = RedisServer().start()
    except RedisUnavailable as exc:
        _skip_reason = f"no Redis for the Redis layer tests ({exc}); set {ENV_VAR} or install redis-server"
        raise unittest.SkipTest(_skip_reason) from None
    _server = server  # kept alive; RedisServer.start registered its atexit stop
    _url = server.url
    return _url


def private_servers(count: int, **options: Any) -> list[RedisServerType]:
    """``count`` private ``redis-server`` processes on free loopback ports (``options`` go to
    ``bench.redis_server.RedisServer``: ``extra_args``, ``port``, ``config_file``).

    The caller stops them (:func:`stop_servers`); each also dies with the test
    process. :class:`unittest.SkipTest` when no ``redis-server`` can start.
    """
    try:
        import hiredis  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise unittest.SkipTest(f"Redis layer tests need redis-py and hiredis: {exc}") from None
    from bench.redis_server import RedisServer, RedisUnavailable

    servers: list[RedisServerType] = []
    try:
        for _ in range(count):
            servers.append(RedisServer(**options).start())
    except RedisUnavailable as exc:
        stop_servers(servers)
        raise unittest.SkipTest(f"no redis-server for this test: {exc}") from None
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: list[RedisServerType]) -> None:
    for server in servers:
        server.stop()
