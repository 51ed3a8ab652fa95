"""The Redis servers behind :class:`~ipc_layer.redis_layer.RedisChannelLayer`: one
:class:`Shard` per ``hosts`` entry, each a connection pool that reconnects.

Theory of operation
-------------------
* **Host entries**, as channels_redis takes them (:func:`decode_host`): a URL
  string (``redis://``, ``rediss://`` for TLS, ``unix://``; user and
  password in the URL), a ``(host, port)`` pair, or a dict of redis-py
  connection options, optionally with ``"address"`` (a URL) or with
  ``"sentinels"`` (a list of ``(host, port)``) and ``"master_name"`` (plus
  ``"sentinel_kwargs"``, for a Sentinel that needs a password), in which
  case the primary is asked of the Sentinels on every (re)connect.
* **Placement** (:func:`consistent_hash`): channels_redis' ring, CRC-32 of
  the name masked to 0..4095 and divided into ``len(hosts)`` equal arcs, so
  a site moving from channels_redis places its ``name!`` queues and groups
  on the same shards (the layer hashes every queue and group name this way).
* **Commands** go out as one pipeline on one pooled connection
  (:meth:`Shard.start` writes, :meth:`Pending.finish` reads), so the layer
  can write to several shards and wait on their sockets at once.
* **Reconnecting, and when a command may be repeated.** Checking out a
  connection connects it (redis-py also replaces a pooled socket the server
  closed); a failure *there* means no command reached Redis, so it is retried
  with capped exponential back-off (10 ms doubling to 1 s) until the caller's
  deadline, then :class:`ShardDown` is raised. Replies that say the command
  did not run (``READONLY`` from a demoted primary during a failover,
  ``LOADING`` from a restarting server, ``NOSCRIPT`` after a restart's empty
  script cache) are retried the same way (``NOSCRIPT`` at once, with the
  script's source). A failure *after* the pipeline was written is not
  retried here: Redis may have run it (a send would be duplicated), so
  :class:`CommandLost` tells the caller, who knows what is safe to repeat.
* **Logging an outage**, per shard: the first failed connect is a WARNING
  naming the server, one that lasts past ``outage_error_after`` seconds is an
  ERROR (once per outage), the recovery an INFO with the outage's length. A
  down server costs the caller its back-off sleeps, never a busy loop.
"""

from __future__ import annotations

import binascii
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "CommandLost",
    "Pending",
    "Script",
    "Shard",
    "ShardDown",
    "consistent_hash",
    "decode_host",
]

logger = logging.getLogger("ipc_layer.redis_layer")

#: First and largest pause between two connection attempts to a down server.
BACKOFF_MIN = 0.01
BACKOFF_MAX = 1.0
_CONNECT_TIMEOUT = 5.0

#: redis-py options a host dict may not set: the layer owns retrying and the
#: decoding of replies (its scripts return bytes).
_RESERVED = frozenset({"retry", "retry_on_timeout", "retry_on_error", "decode_responses", "connection_pool"})


def consistent_hash(name: str, ring_size: int) -> int:
    """The shard of ``name`` on a ring of ``ring_size``: channels_redis' own formula."""
    if ring_size == 1:
        return 0
    point = binascii.crc32(name.encode("utf8")) & 0xFFF
    return int(point / (4096 / float(ring_size)))


class ShardDown(redis.ConnectionError):
    """A Redis server could not be reached before the operation's deadline."""


class CommandLost(redis.ConnectionError):
    """The connection failed after a command was written: Redis may or may not have run it."""


class _NotRun(Exception):
    """A reply saying the command did not run (READONLY, LOADING): safe to repeat."""


@dataclass(frozen=True)
class Script:
    """A Lua script, sent by its SHA-1 and by its source when the server lacks it."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        import hashlib

        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


#: One command of a pipeline: a plain command ``("TIME",)``, or a script call
#: ``(script, keys, args)``.
Command = tuple[Any, ...]


def _pack(command: Command) -> tuple[Any, ...]:
    if command and isinstance(command[0], Script):
        script, keys, args = command
        return ("EVALSHA", script.sha, len(keys), *keys, *args)
    return command


def _is_noscript(reply: object) -> bool:
    # redis-py strips the "NOSCRIPT" code from the text of its NoScriptError.
    return isinstance(reply, redis.exceptions.NoScriptError) or (
        isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT"))


def _is_not_run(error: redis.ResponseError) -> bool:
    text = str(error)
    return text.startswith(("READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS")) or isinstance(
        error, (redis.exceptions.ReadOnlyError, redis.exceptions.BusyLoadingError)
    )


def decode_host(entry: object, what: str, defaults: Mapping[str, Any]) -> tuple[redis.ConnectionPool, str]:
    """A connection pool and a printable location for one ``hosts`` entry.

    ``what`` names the entry in errors (``"hosts[1]"``); ``defaults`` are the
    layer's socket options, which the entry may override.
    """
    base = {**defaults, "retry": Retry(NoBackoff(), 0)}
    if isinstance(entry, str):
        return _from_url(entry, what, base)
    if isinstance(entry, (tuple, list)):
        if len(entry) != 2 or not isinstance(entry[0], str) or isinstance(entry[1], bool) \
                or not isinstance(entry[1], int):
            raise TypeError(f"{what} must be a (host str, port int) pair, got {entry!r}")
        pool = redis.ConnectionPool(host=entry[0], port=entry[1], **base)
        return pool, f"{entry[0]}:{entry[1]}"
    if isinstance(entry, Mapping):
        options = dict(entry)
        for key in options:
            if not isinstance(key, str):
                raise TypeError(f"{what} has a non-str key {key!r}")
        reserved = sorted(_RESERVED & set(options))
        if reserved:
            raise ValueError(f"{what} sets {reserved}, which the layer manages itself (it retries only "
                             "what is safe to repeat, and reads replies as bytes)")
        if "sentinels" in options or "master_name" in options:
            return _sentinel_pool(options, what, base)
        address = options.pop("address", None)
        if address is not None:
            if not isinstance(address, str):
                raise TypeError(f"{what}['address'] must be a redis:// URL str, got {address!r}")
            return _from_url(address, what, {**base, **options})
        try:
            pool = redis.ConnectionPool(**{**base, **options})
        except TypeError as exc:
            raise TypeError(f"{what}: {exc}") from None
        kwargs = pool.connection_kwargs
        location = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        return pool, str(location)
    raise TypeError(
        f"{what} must be a redis:// URL, a (host, port) pair or a dict of connection options, "
        f"not {type(entry).__name__}: {entry!r}"
    )


def _from_url(url: str, what: str, options: Mapping[str, Any]) -> tuple[redis.ConnectionPool, str]:
    try:
        pool = redis.ConnectionPool.from_url(url, **options)
    except ValueError as exc:
        raise ValueError(f"{what}: {url!r} is not a Redis URL: {exc}") from None
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return pool, f"unix:{kwargs['path']}"
    scheme = "rediss" if url.startswith("rediss:") else "redis"
    return pool, f"{scheme}://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _sentinel_pool(options: dict[str, Any], what: str, base: Mapping[str, Any]) -> tuple[redis.ConnectionPool, str]:
    sentinels = options.pop("sentinels", None)
    master_name = options.pop("master_name", None)
    sentinel_kwargs = options.pop("sentinel_kwargs", None)
    if not isinstance(master_name, str) or not master_name:
        raise TypeError(f"{what}['master_name'] must name the Sentinel-monitored primary, got {master_name!r}")
    if isinstance(sentinels, (str, bytes)) or not isinstance(sentinels, Sequence) or not sentinels:
        raise TypeError(f"{what}['sentinels'] must be a non-empty list of (host, port) pairs, got {sentinels!r}")
    pairs = []
    for index, pair in enumerate(sentinels):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], str) \
                or isinstance(pair[1], bool) or not isinstance(pair[1], int):
            raise TypeError(f"{what}['sentinels'][{index}] must be a (host str, port int) pair, got {pair!r}")
        pairs.append((pair[0], pair[1]))
    if sentinel_kwargs is not None and not isinstance(sentinel_kwargs, Mapping):
        raise TypeError(f"{what}['sentinel_kwargs'] must be a dict, got {sentinel_kwargs!r}")
    sentinel_options = {"socket_timeout": _CONNECT_TIMEOUT, "socket_connect_timeout": _CONNECT_TIMEOUT,
                        **(sentinel_kwargs or {})}
    sentinel = redis.sentinel.Sentinel(pairs, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    pool = redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
        master_name, sentinel, **{**base, **options})
    shown = ",".join(f"{host}:{port}" for host, port in pairs)
    return pool, f"sentinel://{shown}/{master_name}"


class Pending:
    """A pipeline written to one connection whose replies are not read yet."""

    def __init__(self, shard: Shard, connection: Any, commands: Sequence[Command]) -> None:
        self.shard = shard
        self.connection = connection
        self.commands = commands
        #: The connection's CLIENT ID, when started ``with_id``.
        self.client_id: Any = None

    def fileno(self) -> int:
        sock = self.connection._sock
        return int(sock.fileno()) if sock is not None else -1

    def ready(self) -> bool:
        """Whether a reply is already buffered (select() would not see it)."""
        try:
            return bool(self.connection._parser.can_read(0))
        except Exception:
            return True  # let finish() surface the error

    def finish(self) -> list[Any]:
        """Read every reply (error replies are returned as exceptions), release the connection.

        :raises CommandLost: the connection failed while replies were due.
        :raises _NotRun: a reply said the pipeline's commands did not run.
        """
        connection, results = self.connection, []
        try:
            for _ in self.commands:
                try:
                    reply = connection.read_response()
                except redis.ResponseError as exc:
                    reply = exc
                results.append(reply)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            connection.disconnect()
            self.shard.pool.release(connection)
            raise CommandLost(f"Redis at {self.shard.location} dropped the connection mid-command: {exc}") \
                from exc
        self.shard.pool.release(connection)
        not_run = [reply for reply in results if isinstance(reply, redis.ResponseError) and _is_not_run(reply)]
        if not_run:
            raise _NotRun(str(not_run[0]))
        return results

    def abandon(self) -> None:
        """Drop the connection without reading (its replies are unknowable now)."""
        self.connection.disconnect()
        self.shard.pool.release(self.connection)


class Shard:
    """One Redis server (or Sentinel-managed primary) of the layer."""

    def __init__(self, index: int, pool: redis.ConnectionPool, location: str, *,
                 outage_error_after: float, check: Any = None) -> None:
        self.index = index
        self.pool = pool
        self.location = location
        self.outage_error_after = outage_error_after
        #: ``check(shard, connection)`` runs on the first connection (server checks).
        self._check = check
        self._checked = False
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._error_logged = False
        #: Commands this process owes the server (the layer's reference-count
        #: releases); sent ahead of the next pipeline, their replies dropped.
        self.owed: list[Command] = []

    # -- connections ------------------------------------------------------------

    def _connect(self, deadline: float) -> Any:
        """A connected connection, retrying with back-off until ``deadline`` (monotonic)."""
        pause = BACKOFF_MIN
        while True:
            try:
                connection = self.pool.get_connection()
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
                # A wrong password or user is not an outage: waiting will not fix it.
                raise redis.AuthenticationError(f"Redis at {self.location} refused the credentials: {exc}") \
                    from exc
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._failed(exc)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ShardDown(f"Redis at {self.location} is unreachable: {exc}") from exc
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, BACKOFF_MAX)
                continue
            self._up()
            if not self._checked and self._check is not None:
                try:
                    self._check(self, connection)
                except BaseException:
                    self.pool.release(connection)
                    raise
                self._checked = True
            return connection

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                self._error_logged = False
                logger.warning("Redis at %s is unreachable (%s); reconnecting with back-off up to %.1f s",
                               self.location, exc, BACKOFF_MAX)
            elif not self._error_logged and now - self._down_since >= self.outage_error_after:
                self._error_logged = True
                logger.error("Redis at %s has been unreachable for %.1f s (%s); still retrying",
                             self.location, now - self._down_since, exc)

    def _up(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                logger.info("Redis at %s is reachable again after %.1f s", self.location,
                            time.monotonic() - self._down_since)
                self._down_since = None

    @property
    def down_for(self) -> float:
        """Seconds since the current outage began (0 when up)."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def owe(self, command: Command) -> None:
        """Queue ``command`` to go out ahead of this shard's next pipeline."""
        with self._lock:
            self.owed.append(command)

    # -- pipelines ---------------------------------------------------------------

    def start(self, commands: Sequence[Command], deadline: float, *, with_owed: bool = True,
              with_id: bool = False) -> Pending:
        """Write ``commands`` on one connection (after any owed commands, unless ``with_owed`` is false).

        ``with_id``: first learn the connection's ``CLIENT ID`` (once per socket,
        one round trip), kept as ``pending.client_id``, so that another
        connection can ``CLIENT UNBLOCK`` this one's BLPOP.

        :raises ShardDown: no connection before ``deadline``.
        :raises CommandLost: the write itself failed.
        """
        connection = self._connect(deadline)
        client_id = None
        if with_id:
            if getattr(connection, "_ipc_socket", None) is not connection._sock:
                try:
                    connection.send_command("CLIENT", "ID")
                    connection._ipc_client_id = connection.read_response()
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    connection.disconnect()
                    self.pool.release(connection)
                    raise CommandLost(f"Redis at {self.location} dropped the connection: {exc}") from exc
                connection._ipc_socket = connection._sock
            client_id = connection._ipc_client_id
        owed: list[Command] = []
        if self.owed and with_owed:
            with self._lock:
                owed, self.owed = self.owed, []
        full = [*owed, *commands]
        try:
            connection.send_packed_command(connection.pack_commands([_pack(c) for c in full]))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            connection.disconnect()
            self.pool.release(connection)
            raise CommandLost(f"Redis at {self.location} dropped the connection while sending: {exc}") from exc
        pending = _Owed(self, connection, full, len(owed)) if owed else Pending(self, connection, full)
        pending.client_id = client_id
        return pending

    def execute(self, commands: Sequence[Command], deadline: float) -> list[Any]:
        """Run ``commands`` and return their replies; NOSCRIPT replies are re-run with the source.

        Replies saying nothing ran (READONLY, LOADING) are retried until
        ``deadline``, never a pipeline after :class:`CommandLost`.
        """
        pause = BACKOFF_MIN
        while True:
            try:
                results = self.start(commands, deadline).finish()
            except _NotRun as exc:
                self._failed(exc)
                self.pool.disconnect()  # a failover: the next connect asks the Sentinels again
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ShardDown(f"Redis at {self.location} refuses commands: {exc}") from None
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, BACKOFF_MAX)
                continue
            return self.rerun_noscript(commands, results, deadline)

    def rerun_noscript(self, commands: Sequence[Command], results: list[Any], deadline: float) -> list[Any]:
        """Re-run, with EVAL and the source, each script the server did not have."""
        for index, (command, reply) in enumerate(zip(commands, results, strict=True)):
            if _is_noscript(reply):
                script, keys, args = command
                results[index] = self.start([("EVAL", script.source, len(keys), *keys, *args)],
                                            deadline).finish()[0]
        return results


class _Owed(Pending):
    """A pipeline led by the owed-release script, whose reply the caller never sees."""

    def __init__(self, shard: Shard, connection: Any, commands: Sequence[Command], owed: int) -> None:
        super().__init__(shard, connection, commands)
        self._owed = owed

    def finish(self) -> list[Any]:
        results = super().finish()
        for command, reply in zip(self.commands[: self._owed], results, strict=False):
            # NOSCRIPT after a restart: owe it again, with the source this time.
            if _is_noscript(reply) and isinstance(command[0], Script):
                script, keys, args = command
                self.shard.owe(("EVAL", script.source, len(keys), *keys, *args))
        return results[self._owed :]
