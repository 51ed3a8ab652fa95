"""``RedisChannelLayer``: the synchronous ASGI 1 contract on one Redis server.

For sites that outgrow one host: the same API as the shared-memory layer
(:class:`~ipc_layer.base.BaseChannelLayer`), so a protocol server or worker
switches by dotted path, with redis-py (+ hiredis) as the only dependency.

Theory of operation
-------------------
Keys (``P`` is the prefix, always ending in ``:``; channel and group names
cannot contain ``:``, so the families below never collide)::

    P q:<queue>     list of entries "<deadline ms>:<local part>:<payload>"
    P s:<queue>     hash {messages, full}: per-queue counters (TTL 1 h)
    P stats         hash {messages, full}: global counters
    P g:<group>     sorted set: member channel -> join time (ms)
    P gc:<group>    hash: member channel -> its capacity, fixed at join time

* A queue is keyed by the *non-local* name (``name!x`` -> ``name!``), so
  capacity, statistics and receiving work on ``name!``; the local part rides
  in the entry, and ``receive`` returns ``name!`` + local part.
* **Time is Redis' clock** (``TIME`` inside the scripts, and pipelined after
  ``BLPOP``), so hosts whose clocks disagree still agree on what expired.
* **send** is one Lua script: capacity check and ``RPUSH`` are atomic, so a
  queue never holds more than its capacity (asgi_redis checked and pushed in
  two steps; channels_redis "can leak slightly over").
* **Expiry**: each entry carries its deadline; every pop inside Lua drops
  expired heads, so an expired message is never delivered. Queue keys get a
  TTL of ``expiry`` that only ever grows, so an abandoned channel's list
  disappears once its newest message has expired.
* **Groups**: ``ZADD`` scored by join time; every read first removes members
  older than ``group_expiry`` (``ZREMRANGEBYSCORE``); the keys carry a
  ``group_expiry`` TTL. ``send_group`` is *one* script that prunes, reads the
  members and their capacities and pushes to each one with the same check as
  ``send``, counting (never raising for) full members.
* **Blocking receive** cannot run in Lua (scripts may not block), so it
  pipelines ``BLPOP <keys> <remaining>`` with ``TIME``: Redis runs a
  client's commands in order, so ``TIME`` executes right after the pop and
  tells whether the popped entry had expired. An expired entry is dropped,
  a non-blocking Lua pop then clears any other expired heads at once, and
  the wait resumes with what is left of ``blocking_timeout``. Nothing polls.
* **Fairness**: the non-blocking pop takes the oldest head among the
  channels; ``BLPOP``'s key order rotates on every call, so a busy channel
  cannot starve a quiet one.
* **Delivery is at most once**: commands are never retried (a send retried
  after a lost reply would duplicate the message), and a receiver that dies
  after its pop loses only that message.
* One connection pool per layer instance. redis-py pools notice a ``fork()``
  (pid check on every checkout) and open fresh sockets in the child without
  touching the parent's.

One Redis server (or a replicated primary): the scripts touch keys computed
inside Lua, which Redis Cluster forbids, and sharding over several servers
is not offered. Redis >= 6.0 is required (fractional ``BLPOP`` timeouts).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import names, options
from .base import BaseChannelLayer, Message, ReceiveResult
from .exceptions import ChannelFull
from .options import CapacityKey

__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "MIN_REDIS_VERSION", "RedisChannelLayer"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = options.REDIS_PREFIX.default
#: Fractional BLPOP timeouts arrived in Redis 6.0.
MIN_REDIS_VERSION = (6, 0)

#: Per-queue counters outlive the queue's last activity by this long
#: (asgi_redis kept channel statistics for an hour too), so unique reply
#: channels do not leave counters behind for ever.
STATS_TTL = 3600.0
#: Added to ``blocking_timeout`` for the socket read timeout: a BLPOP must be
#: able to wait its whole bound, but a dead server must still be noticed.
_SOCKET_SLACK = 5.0
_CONNECT_TIMEOUT = 5.0

# -- Lua ----------------------------------------------------------------------
#
# Scripts run atomically: no other client's command runs between two
# redis.call()s of one script, which is what makes check-then-push safe.
# Entries are "<deadline ms>:<local part>:<payload>"; names cannot contain
# ':', so the first two colons always delimit the header.

_LUA_COMMON = r"""
-- Redis' own clock, in ms: every host then agrees on what has expired.
-- (Effects replication, the default since Redis 5, makes TIME then a write legal.)
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Only the header is parsed; string.find stops at the first ':', so a
-- 1 MB payload is not scanned.
local function deadline_of(entry)
  return tonumber(string.sub(entry, 1, string.find(entry, ':', 1, true) - 1))
end

-- Drop expired entries at the head. All processes of a site share one
-- expiry, so deadlines grow along the list and expired entries are a prefix;
-- with mixed expiries a straggler is still caught when it reaches the head.
-- Returns how many entries are left.
local function purge(key, now)
  while true do
    local head = redis.call('LINDEX', key, 0)
    if not head then return 0 end
    if deadline_of(head) > now then return redis.call('LLEN', key) end
    redis.call('LPOP', key)
  end
end

local function count(stats, global, field, stats_ttl)
  redis.call('HINCRBY', stats, field, 1)
  redis.call('PEXPIRE', stats, stats_ttl)
  redis.call('HINCRBY', global, field, 1)
end

-- The capacity check and the push, atomically (this is the whole point of
-- doing it in Lua: asgi_redis/channels_redis could overshoot).
local function push(key, stats, global, local_part, payload, capacity, now, expiry, stats_ttl)
  local n = redis.call('LLEN', key)
  -- Expired entries only matter when the queue looks full: below capacity
  -- there is room whatever they are, and receive drops them anyway. This
  -- spares reading the head on almost every send.
  if n >= capacity then n = purge(key, now) end
  if n >= capacity then
    count(stats, global, 'full', stats_ttl)
    return false
  end
  redis.call('RPUSH', key, string.format('%d:', now + expiry) .. local_part .. ':' .. payload)
  -- The newest entry expires last, so the list is garbage after 'expiry':
  -- an abandoned channel vanishes. Only ever extended, so a sender with a
  -- shorter expiry cannot cut short another's longer-lived message.
  if redis.call('PTTL', key) < expiry then redis.call('PEXPIRE', key, expiry) end
  count(stats, global, 'messages', stats_ttl)
  return true
end

-- Remove members whose last group_add is group_expiry old (inclusive, as
-- the in-memory layer's "deadline <= now"), and their capacities.
local function prune(group, caps, now, group_expiry)
  local cutoff = now - group_expiry
  local gone = redis.call('ZRANGEBYSCORE', group, '-inf', cutoff)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', group, '-inf', cutoff)
    -- unpack() is bounded by the Lua C stack (~8000): go in chunks.
    for first = 1, #gone, 1000 do
      redis.call('HDEL', caps, unpack(gone, first, math.min(first + 999, #gone)))
    end
  end
end
"""

# KEYS: queue, queue stats, global stats.
# ARGV: local part, payload, capacity, expiry ms, stats ttl ms.
# Returns 1 if queued, 0 if the queue is full.
_LUA_SEND = _LUA_COMMON + r"""
local ok = push(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], tonumber(ARGV[3]), now_ms(),
                tonumber(ARGV[4]), tonumber(ARGV[5]))
if ok then return 1 end
return 0
"""

# KEYS: the queues to receive from. Returns {1-based index, entry} or nil.
_LUA_RECEIVE = _LUA_COMMON + r"""
local now = now_ms()
if #KEYS == 1 then
  -- One queue: pop until a live entry, no need to compare heads.
  while true do
    local entry = redis.call('LPOP', KEYS[1])
    if not entry then return false end
    if deadline_of(entry) > now then return {1, entry} end
  end
end
-- Several queues: the oldest live head wins, so no channel starves and the
-- choice is deterministic (same rule as the in-memory layer).
local best, best_deadline = nil, nil
for i = 1, #KEYS do
  while true do
    local head = redis.call('LINDEX', KEYS[i], 0)
    if not head then break end
    local deadline = deadline_of(head)
    if deadline > now then
      if best == nil or deadline < best_deadline then best, best_deadline = i, deadline end
      break
    end
    redis.call('LPOP', KEYS[i])
  end
end
if best == nil then return false end
return {best, redis.call('LPOP', KEYS[best])}
"""

# KEYS: group, group capacities. ARGV: channel, capacity, group expiry ms.
_LUA_GROUP_ADD = _LUA_COMMON + r"""
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
-- Every member joined at or before now, so both keys are garbage once this
-- newest join has expired; only extended, as for queues.
local ttl = tonumber(ARGV[3])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"""

# KEYS: group, group capacities. ARGV: channel.
_LUA_GROUP_DISCARD = r"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: group, group capacities. ARGV: group expiry ms. Returns the live members.
_LUA_GROUP_CHANNELS = _LUA_COMMON + r"""
prune(KEYS[1], KEYS[2], now_ms(), tonumber(ARGV[1]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: group, group capacities, global stats.
# ARGV: key prefix, payload, expiry ms, group expiry ms, default capacity, stats ttl ms.
# Returns {delivered, skipped}. One script for the whole fan-out: one round
# trip whatever the group size (channels_redis#62/#83: a Python loop of sends
# dropped messages at a few hundred members), and every member gets the same
# atomic capacity check as send().
_LUA_SEND_GROUP = _LUA_COMMON + r"""
local prefix, payload = ARGV[1], ARGV[2]
local expiry, default_capacity = tonumber(ARGV[3]), tonumber(ARGV[5])
local stats_ttl = tonumber(ARGV[6])
local now = now_ms()
prune(KEYS[1], KEYS[2], now, tonumber(ARGV[4]))
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local delivered, skipped = 0, 0
for first = 1, #members, 1000 do
  local last = math.min(first + 999, #members)
  local caps = redis.call('HMGET', KEYS[2], unpack(members, first, last))
  for i = first, last do
    local member = members[i]
    -- 'name!x' queues into 'name!' with local part 'x'.
    local queue, local_part = member, ''
    local bang = string.find(member, '!', 1, true)
    if bang then
      queue = string.sub(member, 1, bang)
      local_part = string.sub(member, bang + 1)
    end
    -- A member added without a capacity (cannot happen through this
    -- module, but keys may be edited by hand) gets the sender's default.
    local capacity = tonumber(caps[i - first + 1]) or default_capacity
    if push(prefix .. 'q:' .. queue, prefix .. 's:' .. queue, KEYS[3], local_part, payload,
            capacity, now, expiry, stats_ttl) then
      delivered = delivered + 1
    else
      skipped = skipped + 1
    end
  end
end
return {delivered, skipped}
"""

# KEYS: queue, queue stats. ARGV: expiry ms.
# Returns {messages, pending, max age ms, full}.
_LUA_CHANNEL_STATS = _LUA_COMMON + r"""
local now = now_ms()
local pending = purge(KEYS[1], now)
local age = 0
if pending > 0 then
  -- Entries store the deadline only; the age follows from this layer's expiry.
  age = math.max(0, now - (deadline_of(redis.call('LINDEX', KEYS[1], 0)) - tonumber(ARGV[1])))
end
local counts = redis.call('HMGET', KEYS[2], 'messages', 'full')
return {tonumber(counts[1]) or 0, pending, age, tonumber(counts[2]) or 0}
"""


def _ms(seconds: float) -> int:
    """Whole milliseconds, at least 1 (0 would mean 'no expiry' to PEXPIRE)."""
    return max(1, math.ceil(seconds * 1000))


def _key_prefix(prefix: str) -> str:
    """The validated ``prefix`` ending in ':', so that flush() of "asgi" cannot match "asgi2:..." keys."""
    return prefix if prefix.endswith(":") else prefix + ":"


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH glob specials so the prefix matches itself only."""
    return "".join("\\" + char if char in "*?[]\\^" else char for char in text)


def _make_pool(
    url: str | None, hosts: Sequence[Any] | None, blocking_timeout: float
) -> redis.ConnectionPool:
    """One pool from ``url`` or a one-entry ``hosts`` list (channels_redis' shapes)."""
    defaults: dict[str, Any] = {
        "socket_timeout": blocking_timeout + _SOCKET_SLACK,
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        # Never retry: a send retried after a lost reply would queue the
        # message twice, and ASGI delivery is at most once.
        "retry": Retry(NoBackoff(), 0),
    }
    if url is not None and hosts is not None:
        raise TypeError("RedisChannelLayer takes url or hosts, not both")
    if hosts is not None:
        if isinstance(hosts, (str, bytes)) or not isinstance(hosts, Sequence):
            raise TypeError(
                f"hosts must be a list of one Redis address, not {type(hosts).__name__}: {hosts!r}"
            )
        if len(hosts) != 1:
            raise ValueError(
                f"hosts names {len(hosts)} Redis servers; RedisChannelLayer uses exactly one "
                "(sharding over several servers is not supported: its scripts need every key "
                "on one server)"
            )
        host = hosts[0]
        if isinstance(host, str):
            url = host
        elif isinstance(host, (tuple, list)) and len(host) == 2:
            pool = redis.ConnectionPool(host=host[0], port=int(host[1]), **defaults)
            return _checked(pool, blocking_timeout)
        elif isinstance(host, Mapping):
            options = dict(host)
            address = options.pop("address", None)
            if isinstance(address, str):
                pool = redis.ConnectionPool.from_url(address, **{**defaults, **options})
            elif address is None:
                pool = redis.ConnectionPool(**{**defaults, **options})
            else:
                raise TypeError(f"hosts[0]['address'] must be a redis:// URL str, got {address!r}")
            return _checked(pool, blocking_timeout)
        else:
            raise TypeError(
                f"hosts[0] must be a redis:// URL, a (host, port) pair or a dict of connection "
                f"options, not {type(host).__name__}: {host!r}"
            )
    if url is None:
        url = DEFAULT_URL
    if not isinstance(url, str):
        raise TypeError(f"url must be a redis:// URL str, not {type(url).__name__}: {url!r}")
    # Options in the URL's query string (?socket_timeout=...) override the defaults.
    return _checked(redis.ConnectionPool.from_url(url, **defaults), blocking_timeout)


def _checked(pool: redis.ConnectionPool, blocking_timeout: float) -> redis.ConnectionPool:
    timeout = pool.connection_kwargs.get("socket_timeout")
    if timeout is not None and timeout <= blocking_timeout:
        raise ValueError(
            f"socket_timeout={timeout!r} must exceed blocking_timeout={blocking_timeout!r}: a "
            "blocking receive waits that long for Redis to answer"
        )
    return pool


def _split_entry(entry: bytes) -> tuple[int, str, bytes]:
    """``b"<deadline>:<local>:<payload>"`` -> (deadline ms, local part, payload)."""
    first = entry.index(b":")
    second = entry.index(b":", first + 1)
    return int(entry[:first]), entry[first + 1 : second].decode("ascii"), entry[second + 1 :]


class RedisChannelLayer(BaseChannelLayer):
    """ASGI 1 channel layer on one Redis server (redis-py + hiredis).

    ``url`` may be ``redis://``, ``rediss://`` or ``unix://``; ``hosts`` is
    channels_redis' shape instead: a list of one URL, ``(host, port)`` pair
    or dict of redis-py connection options (an ``"address"`` key may hold
    the URL). Layers with the same ``prefix`` on the same server share
    everything, and ``flush`` removes only their keys.

    A group member's capacity is resolved from ``channel_capacity`` when it
    joins (``group_add``), as in the shared-memory layer; every process of a
    site is expected to use the same settings.
    """

    extensions = ("groups", "flush", "statistics", "twisted")
    #: The options this class takes, as declared in :mod:`ipc_layer.options`.
    option_kind: ClassVar[str] = "redis"

    def __init__(
        self,
        url: str | None = options.URL.default,
        *,
        hosts: Sequence[Any] | None = options.HOSTS.default,
        prefix: str = options.REDIS_PREFIX.default,
        expiry: float = options.EXPIRY.default,
        group_expiry: float = options.GROUP_EXPIRY.default,
        capacity: int = options.CAPACITY.default,
        channel_capacity: Mapping[CapacityKey, int] | None = options.CHANNEL_CAPACITY.default,
        max_message_size: int = options.MAX_MESSAGE_SIZE.default,
        blocking_timeout: float = options.BLOCKING_TIMEOUT.default,
    ) -> None:
        # First statement: locals() holds exactly the parameters.
        config = options.validate("redis", locals(), owner=type(self).__name__)
        super().__init__(**config.subset("base"))
        self.prefix = config[options.REDIS_PREFIX]
        self._prefix = _key_prefix(self.prefix)
        self._pool = _make_pool(config[options.URL], config[options.HOSTS], self.blocking_timeout)
        # Creating the client connects nothing; the first command does.
        self._redis = redis.Redis(connection_pool=self._pool)
        self._expiry_ms = _ms(self.expiry)
        self._group_expiry_ms = _ms(self.group_expiry)
        self._stats_ttl_ms = _ms(max(STATS_TTL, self.expiry))
        self._stats_key = self._prefix + "stats"
        # register_script only hashes the source; EVALSHA falls back to
        # loading it on NOSCRIPT (new server, SCRIPT FLUSH).
        self._send_script = self._redis.register_script(_LUA_SEND)
        self._receive_script = self._redis.register_script(_LUA_RECEIVE)
        self._group_add_script = self._redis.register_script(_LUA_GROUP_ADD)
        self._group_discard_script = self._redis.register_script(_LUA_GROUP_DISCARD)
        self._group_channels_script = self._redis.register_script(_LUA_GROUP_CHANNELS)
        self._send_group_script = self._redis.register_script(_LUA_SEND_GROUP)
        self._channel_stats_script = self._redis.register_script(_LUA_CHANNEL_STATS)
        # Rotates BLPOP's key order; itertools.count is atomic under the GIL.
        self._rotation = itertools.count()
        self._server_checked = False

    # -- keys ----------------------------------------------------------------

    def _queue_key(self, queue: str) -> str:
        return f"{self._prefix}q:{queue}"

    def _queue_stats_key(self, queue: str) -> str:
        return f"{self._prefix}s:{queue}"

    def _group_keys(self, group: str) -> list[str]:
        return [f"{self._prefix}g:{group}", f"{self._prefix}gc:{group}"]

    def _client(self) -> redis.Redis:
        if not self._server_checked:
            self._check_server()
        return self._redis

    def _check_server(self) -> None:
        """Refuse, once per instance, servers the scripts cannot work on."""
        info = self._redis.info("server")
        version_text = str(info.get("redis_version", "0"))
        version = tuple(int(part) for part in version_text.split(".")[:2] if part.isdigit())
        if version < MIN_REDIS_VERSION:
            raise RuntimeError(
                f"Redis {version_text} at {self._location()} is too old for RedisChannelLayer; "
                f"it needs {'.'.join(map(str, MIN_REDIS_VERSION))} or later (fractional BLPOP timeouts)"
            )
        if info.get("redis_mode") == "cluster":
            raise RuntimeError(
                f"Redis at {self._location()} runs in cluster mode; RedisChannelLayer needs a "
                "standalone server (its scripts address keys computed at run time)"
            )
        self._server_checked = True

    def _location(self) -> str:
        kwargs = self._pool.connection_kwargs
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    # -- core API --------------------------------------------------------------

    def send(self, channel: str, message: Message) -> None:
        names.validate_channel(channel)
        payload = self.serializer.encode(message, channel)
        queue, local_part = names.split_process_channel(channel)
        capacity = self.capacities.get(queue)
        client = self._client()
        queued = self._send_script(
            keys=[self._queue_key(queue), self._queue_stats_key(queue), self._stats_key],
            args=[local_part, payload, capacity, self._expiry_ms, self._stats_ttl_ms],
            client=client,
        )
        if not queued:
            raise ChannelFull(
                f"channel {channel!r} is full: {capacity} unexpired messages are waiting in {queue!r}"
            )

    def receive(self, channels: Iterable[str], block: bool = False) -> ReceiveResult:
        wanted = names.validate_receive_channels(channels)
        client = self._client()
        keys = [self._queue_key(queue) for queue in wanted]
        if not block:
            return self._pop(client, wanted, keys)
        deadline = time.monotonic() + self.blocking_timeout
        by_key = {key.encode("ascii"): queue for key, queue in zip(keys, wanted, strict=True)}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, None
            start = next(self._rotation) % len(keys)
            order = keys[start:] + keys[:start]
            # Redis reads a timeout below 1 ms as 0, which means "for ever":
            # round up to whole milliseconds instead.
            timeout = math.ceil(remaining * 1000) / 1000
            pipe = client.pipeline(transaction=False)
            pipe.blpop(order, timeout=timeout)
            # Runs right after the pop (a client's commands run in order), so
            # it is Redis' time at the moment of delivery.
            pipe.time()
            popped, (seconds, micros) = pipe.execute()
            if popped is None:
                return None, None
            key, entry = popped
            expires, local_part, payload = _split_entry(entry)
            if expires > seconds * 1000 + micros // 1000:
                queue = by_key[key]
                return queue + local_part, self.serializer.decode(payload)
            logger.debug("receive: dropped a message on %r that expired before it was popped", by_key[key])
            # More expired entries may follow it: one Lua pop clears every
            # expired head at once instead of one BLPOP round trip each.
            result = self._pop(client, wanted, keys)
            if result[0] is not None:
                return result

    def _pop(self, client: redis.Redis, wanted: list[str], keys: list[str]) -> ReceiveResult:
        found = self._receive_script(keys=keys, client=client)
        if found is None:
            return None, None
        index, entry = found
        _, local_part, payload = _split_entry(entry)
        return wanted[int(index) - 1] + local_part, self.serializer.decode(payload)

    def receive_twisted(self, channels: Iterable[str], reactor: Any = None) -> Any:
        """The ASGI 1 ``twisted`` extension: a Deferred firing with ``(channel, message)``
        or ``(None, None)`` after ``blocking_timeout``; a blocking receive in a reactor
        pool thread (:func:`ipc_layer.twisted_ext.receive_in_thread`), never a poll.
        """
        from .twisted_ext import receive_in_thread

        return receive_in_thread(self, channels, reactor)

    def new_channel(self, pattern: str) -> str:
        names.validate_new_channel_pattern(pattern)
        client = self._client()
        while True:
            name = pattern + names.random_suffix()
            # ~71 random bits make a clash practically impossible, but a name
            # whose queue exists is in use, so check as the contract says.
            if not client.exists(self._queue_key(name)):
                return name

    # -- groups ------------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        names.validate_group(group)
        names.validate_channel(channel)
        self._group_add_script(
            keys=self._group_keys(group),
            args=[channel, self.capacities.get(channel), self._group_expiry_ms],
            client=self._client(),
        )

    def group_discard(self, group: str, channel: str) -> None:
        names.validate_group(group)
        names.validate_channel(channel)
        self._group_discard_script(keys=self._group_keys(group), args=[channel], client=self._client())

    def group_channels(self, group: str) -> list[str]:
        names.validate_group(group)
        members = self._group_channels_script(
            keys=self._group_keys(group), args=[self._group_expiry_ms], client=self._client()
        )
        return [member.decode("ascii") for member in members]

    def send_group(self, group: str, message: Message) -> None:
        names.validate_group(group)
        payload = self.serializer.encode(message, group, kind="group")
        delivered, skipped = self._send_group_script(
            keys=[*self._group_keys(group), self._stats_key],
            args=[self._prefix, payload, self._expiry_ms, self._group_expiry_ms, self.capacity,
                  self._stats_ttl_ms],
            client=self._client(),
        )
        if skipped:
            # DEBUG, not WARNING: skipping full members is the contract, and a
            # busy site would otherwise log on every broadcast.
            logger.debug("send_group(%r): delivered to %d, skipped %d full", group, delivered, skipped)

    # -- flush and statistics ------------------------------------------------------

    def flush(self) -> None:
        """Delete every key under this layer's prefix (SCAN + UNLINK, never FLUSHDB)."""
        client = self._client()
        batch: list[bytes] = []
        # SCAN never blocks the server for long, unlike KEYS (asgi_redis and
        # channels_redis ran KEYS prefix* inside Lua); UNLINK frees the memory
        # off the main thread.
        for key in client.scan_iter(match=_glob_escape(self._prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)

    def global_statistics(self) -> dict[str, int]:
        messages, full = self._client().hmget(self._stats_key, ["messages", "full"])
        return {"messages_count": int(messages or 0), "channel_full_count": int(full or 0)}

    def channel_statistics(self, channel: str) -> dict[str, int]:
        names.validate_channel(channel)
        queue = names.non_local_name(channel)
        messages, pending, age_ms, full = self._channel_stats_script(
            keys=[self._queue_key(queue), self._queue_stats_key(queue)],
            args=[self._expiry_ms],
            client=self._client(),
        )
        return {
            "messages_count": int(messages),
            "messages_pending": int(pending),
            "messages_max_age": int(age_ms) // 1000,
            "channel_full_count": int(full),
        }

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Close this instance's connections; the data stays in Redis."""
        self._pool.disconnect()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(location={self._location()!r}, prefix={self.prefix!r}, "
            f"expiry={self.expiry!r}, group_expiry={self.group_expiry!r}, capacity={self.capacity!r}, "
            f"channel_capacity={self.channel_capacity!r})"
        )


options.document(RedisChannelLayer, "redis")
