"""``RedisChannelLayer``: the synchronous ASGI 1 contract on Redis, one server or several.

For sites that outgrow one host: the same API as the shared-memory layer
(:class:`~ipc_layer.base.BaseChannelLayer`), so a protocol server or worker
switches by dotted path, with redis-py (+ hiredis) as the only dependency.
The servers, their connections, reconnecting and placement are
:mod:`ipc_layer.redis_shards`; this module is what is stored and how.

Theory of operation
-------------------
Keys (``P`` is the prefix, always ending in ``:``; channel and group names
cannot contain ``:``, so the families below never collide)::

    P q:<queue>     list of entries "<deadline ms>:<local part>:<body>"
    P s:<queue>     hash {messages, full}: per-queue counters (TTL 1 h)
    P stats         hash {messages, full}: global counters
    P g:<group>     sorted set: member channel -> join time (ms)
    P gc:<group>    hash: member channel -> its capacity, fixed at join time
    P d:<id>        hash {d: payload, r: references left}: a group payload stored once
    P seq           counter of payload ids

* A queue is keyed by the *non-local* name (``name!x`` -> ``name!``), so
  capacity, statistics and receiving work on ``name!``; the local part rides
  in the entry, and ``receive`` returns ``name!`` + local part. An entry's
  body is the msgpack payload, or ``@<id>``, a reference to ``P d:<id>``
  (``@`` never starts a msgpack map, which every message is).
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
  members and their capacities, groups them by queue and, per queue, makes
  the same capacity checks as ``send`` (one ``LLEN``, one multi-value
  ``RPUSH``, counters once), counting (never raising for) full members. A
  payload of ``SHARE_MIN`` bytes or more delivered twice or more is stored
  once as ``P d:<id>`` with its reference count; the entries carry ``@<id>``.
  The count drops as receivers take the entries, and the key goes with the
  last one; entries that expire unread leave it to its TTL (``expiry`` + 1 s,
  the same moment, since it was written with them).
* **Receiving in batches, only where that is safe.** A ``name!`` queue is
  read by the one process that owns it, and a ``name?x`` channel by its one
  reader, so a receive that finds one entry there takes up to
  ``BATCH_ITEMS`` (``BATCH_BYTES``) more in the same script and keeps them in
  this instance's buffer, served first by later receives (the deadline is
  kept, translated to this host's monotonic clock). A group send to the 100
  connections of a protocol server is then one round trip to receive, not
  100 (channels_redis buffers per process the same way). Normal channels,
  shared by competing workers, are never batched.
* **Blocking receive** cannot run in Lua (scripts may not block), so it
  pipelines ``BLPOP <keys> <remaining>`` with ``TIME`` and the batch script:
  Redis runs a client's commands in order, so ``TIME`` tells whether the
  popped entry had expired, and the batch pops what else is waiting on the
  batchable queues. An expired entry is dropped and the wait resumes with
  what is left of ``blocking_timeout``. Nothing polls. A popped ``@<id>``
  entry takes its payload from the batch's reply when the batch fetched the
  same payload (the reference decrement it owes goes out ahead of the next
  pipeline), else with one more round trip.
* **Sharding** (``hosts`` with several entries): every queue (``name!``,
  ``name?x`` and normal channels alike) and every group lives on the shard
  :func:`~ipc_layer.redis_shards.consistent_hash` picks for its name
  (channels_redis' ring), so one channel keeps its FIFO order and its exact,
  atomic capacity, and the channels of a site spread over the shards. (One
  channel's traffic stays on one server; channels_redis spreads a normal
  channel's sends round robin, at the price of its capacity being per server
  and of its receive visiting one server per ``brpop_timeout``.) A receive
  over channels on several shards writes one ``BLPOP`` pipeline per shard,
  each with the ``CLIENT ID`` of its connection, waits for the first socket
  to become readable (``select``), then ends the other waits at once with
  ``CLIENT UNBLOCK`` (on another connection of that shard); an entry one of
  them popped in the meantime is pushed back to the head of its queue
  (``LPUSH``: its order is kept). No shard is polled, and the wait costs one
  ``BLPOP`` per shard. ``send_group`` reads the members on the group's shard
  and fans out with one script per shard holding member queues, written to
  all of them before any reply is read, so the shards work in parallel;
  each shard's part is atomic, the whole is not.
* **Changing the host list** moves names: with ``n`` shards a name lives on
  shard ``(crc32(name) & 0xFFF) * n // 4096``, so a different count (or
  order) sends new messages for a queue, and group operations, to another
  server than the one holding what was already there: messages waiting on
  the old shard are not delivered (they expire) and memberships made before
  the change are not seen (they must be added again; Channels re-adds on
  each connection). The ring is split into equal arcs, so a new count
  moves a large part of the names (half of them from 3 shards to 4).
  Change the list with every process stopped (and
  the queues drained), or accept that loss; every process must list the same
  hosts in the same order.
* **Delivery is at most once**: a command is repeated only when Redis
  cannot have run it (see :mod:`ipc_layer.redis_shards`); a receiver that
  dies after its pop loses what it popped (its batch, for batched queues).
* **Outages**: a blocking receive keeps reconnecting (capped back-off)
  until its ``blocking_timeout`` ends and then returns ``(None, None)``, so a
  worker or a protocol server's reader loop rides out a Redis restart; the
  other operations reconnect for ``retry_timeout`` seconds and then raise
  :class:`~ipc_layer.redis_shards.ShardDown` (a ``redis.ConnectionError``).
  An outage past ``outage_error_after`` is logged as an ERROR, once.
* One connection pool per shard and instance. redis-py pools notice a
  ``fork()`` (pid check on every checkout) and open fresh sockets in the
  child without touching the parent's.

No Redis Cluster: the scripts touch keys computed inside Lua. Redis >= 6.0
is required (fractional ``BLPOP`` timeouts, ``CLIENT UNBLOCK``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import select
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import redis

from . import names, options
from .base import BaseChannelLayer, Message, ReceiveResult
from .exceptions import ChannelFull
from .options import CapacityKey
from .redis_shards import CommandLost, Pending, Script, Shard, ShardDown, _NotRun, consistent_hash, decode_host

__all__ = [
    "BATCH_BYTES",
    "BATCH_ITEMS",
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "MIN_REDIS_VERSION",
    "SHARE_MIN",
    "CommandLost",
    "RedisChannelLayer",
    "ShardDown",
]

logger = logging.getLogger(__name__)

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = options.REDIS_PREFIX.default
#: Fractional BLPOP timeouts arrived in Redis 6.0 (and CLIENT UNBLOCK in 5.0).
MIN_REDIS_VERSION = (6, 0)

#: Per-queue counters outlive the queue's last activity by this long
#: (asgi_redis kept channel statistics for an hour too), so unique reply
#: channels do not leave counters behind for ever.
STATS_TTL = 3600.0
#: Added to ``blocking_timeout`` for the socket read timeout: a BLPOP must be
#: able to wait its whole bound, but a dead server must still be noticed.
_SOCKET_SLACK = 5.0
_CONNECT_TIMEOUT = 5.0
#: How long a receive over several shards tries to reach each before leaving it out.
_PROBE = 0.05
#: A group payload this large (bytes), delivered twice or more, is stored once.
SHARE_MIN = 512
#: Most entries, and bytes, one receive takes from batchable queues.
BATCH_ITEMS = 1024
BATCH_BYTES = 8 << 20

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

# The body of an entry starts after its second ':'; '@' (64) there marks a
# reference to a shared payload (P d:<id>). Entries that expired in the list
# never decrement their payload's count: the payload's TTL ends with them.
_LUA_BODY = r"""
local function body_at(entry)
  local first = string.find(entry, ':', 1, true)
  return string.find(entry, ':', first + 1, true) + 1
end

-- Fan one payload out to members (with their capacities, false: unknown),
-- grouped by queue: per queue one LLEN, the capacity check of send() for
-- each member in turn, one RPUSH of all admitted entries, counters once.
local function fanout(prefix, global, members, caps, payload, expiry, default_capacity,
                      stats_ttl, share_min, now)
  local queues, order = {}, {}
  for i = 1, #members do
    local member = members[i]
    -- 'name!x' queues into 'name!' with local part 'x'.
    local queue, local_part = member, ''
    local bang = string.find(member, '!', 1, true)
    if bang then
      queue = string.sub(member, 1, bang)
      local_part = string.sub(member, bang + 1)
    end
    local q = queues[queue]
    if q == nil then
      q = {locals = {}, caps = {}, admitted = {}}
      queues[queue] = q
      order[#order + 1] = queue
    end
    q.locals[#q.locals + 1] = local_part
    -- A member added without a capacity (keys edited by hand) gets the default.
    q.caps[#q.caps + 1] = tonumber(caps[i]) or default_capacity
  end
  local delivered, skipped = 0, 0
  for _, queue in ipairs(order) do
    local q = queues[queue]
    local key = prefix .. 'q:' .. queue
    local n, purged = redis.call('LLEN', key), false
    for j = 1, #q.locals do
      if n >= q.caps[j] and not purged then
        n = purge(key, now) + #q.admitted
        purged = true
      end
      if n < q.caps[j] then
        q.admitted[#q.admitted + 1] = q.locals[j]
        n = n + 1
      end
    end
    q.skipped = #q.locals - #q.admitted
    delivered = delivered + #q.admitted
    skipped = skipped + q.skipped
  end
  local body = payload
  if delivered >= 2 and #payload >= share_min then
    local id = redis.call('INCR', prefix .. 'seq')
    local key = prefix .. 'd:' .. id
    redis.call('HSET', key, 'd', payload, 'r', delivered)
    redis.call('PEXPIRE', key, expiry + 1000)
    body = '@' .. id
  end
  local head = string.format('%d:', now + expiry)
  for _, queue in ipairs(order) do
    local q = queues[queue]
    local key, stats = prefix .. 'q:' .. queue, prefix .. 's:' .. queue
    local k = #q.admitted
    if k > 0 then
      local entries = {}
      for j = 1, k do entries[j] = head .. q.admitted[j] .. ':' .. body end
      -- unpack() is bounded by the Lua C stack (~8000): go in chunks.
      for first = 1, k, 1000 do
        redis.call('RPUSH', key, unpack(entries, first, math.min(first + 999, k)))
      end
      if redis.call('PTTL', key) < expiry then redis.call('PEXPIRE', key, expiry) end
      redis.call('HINCRBY', stats, 'messages', k)
    end
    if q.skipped > 0 then redis.call('HINCRBY', stats, 'full', q.skipped) end
    redis.call('PEXPIRE', stats, stats_ttl)
  end
  if delivered > 0 then redis.call('HINCRBY', global, 'messages', delivered) end
  if skipped > 0 then redis.call('HINCRBY', global, 'full', skipped) end
  return {delivered, skipped}
end

local function members_and_caps(group, caps_key)
  local members = redis.call('ZRANGE', group, 0, -1)
  local caps = {}
  for first = 1, #members, 1000 do
    local part = redis.call('HMGET', caps_key, unpack(members, first, math.min(first + 999, #members)))
    for i = 1, #part do caps[first + i - 1] = part[i] end
  end
  return members, caps
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

# KEYS: the queues to receive from (on this server).
# ARGV: prefix, mode, max items, max bytes, flags.
# mode 'head': pop the oldest live head among KEYS (no channel starves, and
# the choice is deterministic: the in-memory layer's rule), then the batch;
# mode 'batch' (after a BLPOP): the batch only. The batch: more live entries
# from the keys whose flag (flags[i]) is '1', the batchable queues.
# Returns {now ms, {key index, entry, ...}, {payload id, payload, ...}}.
_LUA_TAKE = _LUA_COMMON + _LUA_BODY + r"""
local prefix, mode = ARGV[1], ARGV[2]
local max_items, max_bytes, flags = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local items, payloads, fetched, owed = {}, {}, {}, {}
local bytes = 0
-- Whether the entry can be delivered: a reference needs its payload (gone
-- only if it expired or was flushed); each payload is returned once.
local function resolve(entry)
  local at = body_at(entry)
  if string.byte(entry, at) ~= 64 then
    bytes = bytes + #entry - at + 1
    return true
  end
  local id = string.sub(entry, at + 1)
  if fetched[id] == nil then
    local data = redis.call('HGET', prefix .. 'd:' .. id, 'd')
    if not data then return false end
    fetched[id] = true
    owed[id] = 0
    payloads[#payloads + 1] = id
    payloads[#payloads + 1] = data
    bytes = bytes + #data
  end
  owed[id] = owed[id] + 1
  return true
end
if mode == 'head' then
  while true do
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
    if best == nil then break end
    local entry = redis.call('LPOP', KEYS[best])
    if resolve(entry) then
      items[1], items[2] = best, entry
      break
    end
  end
end
if mode == 'batch' or #items > 0 then
  for i = 1, #KEYS do
    if string.byte(flags, i) == 49 then
      while #items < 2 * max_items and bytes < max_bytes do
        local entry = redis.call('LPOP', KEYS[i])
        if not entry then break end
        if deadline_of(entry) > now and resolve(entry) then
          items[#items + 1] = i
          items[#items + 1] = entry
        end
      end
    end
  end
end
-- One decrement per payload, not per entry.
for id, n in pairs(owed) do
  local key = prefix .. 'd:' .. id
  if redis.call('HINCRBY', key, 'r', -n) <= 0 then redis.call('UNLINK', key) end
end
return {now, items, payloads}
"""

# ARGV: prefix, payload id. A BLPOP-popped reference: its payload (or false
# when it is gone), one reference fewer.
_LUA_FETCH = r"""
local key = ARGV[1] .. 'd:' .. ARGV[2]
local data = redis.call('HGET', key, 'd')
if not data then return false end
if redis.call('HINCRBY', key, 'r', -1) <= 0 then redis.call('UNLINK', key) end
return data
"""

# ARGV: prefix, payload ids. The decrements a receiver owes for references
# whose payload it already had (never creates a key).
_LUA_RELEASE = r"""
for i = 2, #ARGV do
  local key = ARGV[1] .. 'd:' .. ARGV[i]
  if redis.call('EXISTS', key) == 1 and redis.call('HINCRBY', key, 'r', -1) <= 0 then
    redis.call('UNLINK', key)
  end
end
return 1
"""

# KEYS: queue. ARGV: entry. Puts back, at the head, an entry a BLPOP popped
# on a shard whose wait was being ended (it was the head: order is kept).
_LUA_REQUEUE = r"""
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
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

# KEYS: group, group capacities. ARGV: group expiry ms.
# Returns {members, capacities} (the sharded send_group's first step).
_LUA_GROUP_MEMBERS = _LUA_COMMON + _LUA_BODY + r"""
prune(KEYS[1], KEYS[2], now_ms(), tonumber(ARGV[1]))
local members, caps = members_and_caps(KEYS[1], KEYS[2])
return {members, caps}
"""

# KEYS: group, group capacities, global stats.
# ARGV: key prefix, payload, expiry ms, group expiry ms, default capacity,
# stats ttl ms, share min. Returns {delivered, skipped}. One script for the
# whole fan-out: one round trip whatever the group size (channels_redis#62/#83:
# a Python loop of sends dropped messages at a few hundred members).
_LUA_SEND_GROUP = _LUA_COMMON + _LUA_BODY + r"""
local now = now_ms()
prune(KEYS[1], KEYS[2], now, tonumber(ARGV[4]))
local members, caps = members_and_caps(KEYS[1], KEYS[2])
return fanout(ARGV[1], KEYS[3], members, caps, ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5]),
              tonumber(ARGV[6]), tonumber(ARGV[7]), now)
"""

# KEYS: global stats. ARGV: key prefix, payload, expiry ms, default capacity,
# stats ttl ms, share min, then member, capacity pairs (this shard's members).
_LUA_FANOUT = _LUA_COMMON + _LUA_BODY + r"""
local members, caps = {}, {}
for i = 7, #ARGV, 2 do
  members[#members + 1] = ARGV[i]
  caps[#caps + 1] = ARGV[i + 1]
end
return fanout(ARGV[1], KEYS[1], members, caps, ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
              tonumber(ARGV[5]), tonumber(ARGV[6]), now_ms())
"""

# KEYS: queues. Returns the deadline of the oldest live head among them, or
# false; pops only expired heads (a receive over several shards looks first).
_LUA_PEEK = _LUA_COMMON + r"""
local now = now_ms()
local best = false
for i = 1, #KEYS do
  while true do
    local head = redis.call('LINDEX', KEYS[i], 0)
    if not head then break end
    local deadline = deadline_of(head)
    if deadline > now then
      if best == false or deadline < best then best = deadline end
      break
    end
    redis.call('LPOP', KEYS[i])
  end
end
return best
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

SEND_SCRIPT = Script("send", _LUA_SEND)
TAKE_SCRIPT = Script("take", _LUA_TAKE)
FETCH_SCRIPT = Script("fetch", _LUA_FETCH)
RELEASE_SCRIPT = Script("release", _LUA_RELEASE)
REQUEUE_SCRIPT = Script("requeue", _LUA_REQUEUE)
GROUP_ADD_SCRIPT = Script("group_add", _LUA_GROUP_ADD)
GROUP_DISCARD_SCRIPT = Script("group_discard", _LUA_GROUP_DISCARD)
GROUP_CHANNELS_SCRIPT = Script("group_channels", _LUA_GROUP_CHANNELS)
GROUP_MEMBERS_SCRIPT = Script("group_members", _LUA_GROUP_MEMBERS)
SEND_GROUP_SCRIPT = Script("send_group", _LUA_SEND_GROUP)
FANOUT_SCRIPT = Script("fanout", _LUA_FANOUT)
CHANNEL_STATS_SCRIPT = Script("channel_stats", _LUA_CHANNEL_STATS)
PEEK_SCRIPT = Script("peek", _LUA_PEEK)


def _ms(seconds: float) -> int:
    """Whole milliseconds, at least 1 (0 would mean 'no expiry' to PEXPIRE)."""
    return max(1, math.ceil(seconds * 1000))


def _key_prefix(prefix: str) -> str:
    """The validated ``prefix`` ending in ':', so that flush() of "asgi" cannot match "asgi2:..." keys."""
    return prefix if prefix.endswith(":") else prefix + ":"


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH glob specials so the prefix matches itself only."""
    return "".join("\\" + char if char in "*?[]\\^" else char for char in text)


def _split_entry(entry: bytes) -> tuple[int, str, bytes]:
    """``b"<deadline>:<local>:<body>"`` -> (deadline ms, local part, body)."""
    first = entry.index(b":")
    second = entry.index(b":", first + 1)
    return int(entry[:first]), entry[first + 1 : second].decode("ascii"), entry[second + 1 :]


def _pinned(queue: str) -> bool:
    """Whether a queue has one reader, so it lives on one shard and may be batched."""
    return "!" in queue or "?" in queue


def _check_server(shard: Shard, connection: Any) -> None:
    """Refuse, once per shard, servers the scripts cannot work on."""
    connection.send_command("INFO", "server")
    text = connection.read_response()
    info = dict(
        line.split(":", 1) for line in bytes(text).decode("utf-8", "replace").splitlines() if ":" in line
    )
    version_text = info.get("redis_version", "0").strip()
    version = tuple(int(part) for part in version_text.split(".")[:2] if part.isdigit())
    if version < MIN_REDIS_VERSION:
        raise RuntimeError(
            f"Redis {version_text} at {shard.location} is too old for RedisChannelLayer; "
            f"it needs {'.'.join(map(str, MIN_REDIS_VERSION))} or later (fractional BLPOP timeouts)"
        )
    if info.get("redis_mode", "").strip() == "cluster":
        raise RuntimeError(
            f"Redis at {shard.location} runs in cluster mode; RedisChannelLayer needs a "
            "standalone server (its scripts address keys computed at run time)"
        )



#: A delivery: (queue, local part, payload, deadline ms, Redis now ms).
_Delivery = tuple[str, str, bytes, int, int]


class RedisChannelLayer(BaseChannelLayer):
    """ASGI 1 channel layer on Redis: one server, or shards (redis-py + hiredis).

    ``url`` may be ``redis://``, ``rediss://`` (TLS) or ``unix://``, with a
    user and password in it; ``hosts`` is channels_redis' shape instead: a
    list of URLs, ``(host, port)`` pairs or dicts of redis-py connection
    options (an ``"address"`` key may hold the URL; ``"sentinels"`` and
    ``"master_name"`` name a Sentinel-managed primary). Several entries shard
    the layer (see the module docstring for placement and for what changing
    the list does). Layers with the same ``prefix`` on the same servers share
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
        retry_timeout: float = options.RETRY_TIMEOUT.default,
        outage_error_after: float = options.OUTAGE_ERROR_AFTER.default,
    ) -> None:
        # First statement: locals() holds exactly the parameters.
        config = options.validate("redis", locals(), owner=type(self).__name__)
        super().__init__(**config.subset("base"))
        self.prefix = config[options.REDIS_PREFIX]
        self._prefix = _key_prefix(self.prefix)
        self.retry_timeout = config[options.RETRY_TIMEOUT]
        self.outage_error_after = config[options.OUTAGE_ERROR_AFTER]
        # Creating the pools connects nothing; the first command does.
        self._shards = self._make_shards(config[options.URL], config[options.HOSTS])
        self._expiry_ms = _ms(self.expiry)
        self._group_expiry_ms = _ms(self.group_expiry)
        self._stats_ttl_ms = _ms(max(STATS_TTL, self.expiry))
        self._stats_key = self._prefix + "stats"
        # Rotates which shard a receive looks at first and BLPOP's key order;
        # itertools.count is atomic under the GIL.
        self._rotation = itertools.count()
        # Batched deliveries of pinned queues: queue -> (local deadline, channel, payload).
        self._buffer: dict[str, collections.deque[tuple[float, str, bytes]]] = {}
        self._buffer_lock = threading.Lock()
        #: Set by close(): a receive blocked in Redis then returns instead of reconnecting.
        self._closed = False

    def _make_shards(self, url: str | None, hosts: Sequence[Any] | None) -> list[Shard]:
        defaults: dict[str, Any] = {
            "socket_timeout": self.blocking_timeout + _SOCKET_SLACK,
            "socket_connect_timeout": _CONNECT_TIMEOUT,
        }
        if url is not None and hosts is not None:
            raise TypeError("RedisChannelLayer takes url or hosts, not both")
        if hosts is None:
            entries: list[tuple[object, str]] = [(DEFAULT_URL if url is None else url, "url")]
        else:
            if not hosts:
                raise ValueError("hosts is empty; list at least one Redis server")
            entries = [(entry, f"hosts[{index}]") for index, entry in enumerate(hosts)]
        shards = []
        for index, (entry, what) in enumerate(entries):
            pool, location = decode_host(entry, what, defaults)
            timeout = pool.connection_kwargs.get("socket_timeout")
            if timeout is not None and timeout <= self.blocking_timeout:
                raise ValueError(
                    f"{what}: socket_timeout={timeout!r} must exceed blocking_timeout={self.blocking_timeout!r}: "
                    "a blocking receive waits that long for Redis to answer"
                )
            shards.append(Shard(index, pool, location, outage_error_after=self.outage_error_after,
                                check=_check_server))
        seen = collections.Counter(shard.location for shard in shards)
        twice = sorted(location for location, count in seen.items() if count > 1)
        if twice and not all(location.startswith("sentinel:") for location in twice):
            raise ValueError(f"hosts lists {twice} more than once; each shard must be its own server")
        return shards

    # -- keys and placement ---------------------------------------------------

    def _queue_key(self, queue: str) -> str:
        return f"{self._prefix}q:{queue}"

    def _queue_stats_key(self, queue: str) -> str:
        return f"{self._prefix}s:{queue}"

    def _group_keys(self, group: str) -> list[str]:
        return [f"{self._prefix}g:{group}", f"{self._prefix}gc:{group}"]

    def _shard_of(self, name: str) -> Shard:
        """The shard a queue or a group lives on."""
        return self._shards[consistent_hash(name, len(self._shards))]

    def _plan(self, wanted: list[str]) -> list[tuple[Shard, list[str]]]:
        """The queues to look at, by shard; the first shard rotates between calls."""
        count = len(self._shards)
        by_shard: dict[int, list[str]] = {}
        for queue in wanted:
            by_shard.setdefault(consistent_hash(queue, count), []).append(queue)
        start = next(self._rotation)
        order = sorted(by_shard, key=lambda index: (index - start) % count)
        return [(self._shards[index], by_shard[index]) for index in order]

    def _deadline(self) -> float:
        return time.monotonic() + self.retry_timeout

    def _run(self, shard: Shard, *commands: Any) -> list[Any]:
        results = shard.execute(commands, self._deadline())
        for reply in results:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return results

    def _script(self, shard: Shard, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return self._run(shard, (script, keys, args))[0]

    # -- core API --------------------------------------------------------------

    def send(self, channel: str, message: Message) -> None:
        names.validate_channel(channel)
        payload = self.serializer.encode(message, channel)
        queue, local_part = names.split_process_channel(channel)
        capacity = self.capacities.get(queue)
        queued = self._script(
            self._shard_of(queue), SEND_SCRIPT,
            [self._queue_key(queue), self._queue_stats_key(queue), self._stats_key],
            [local_part, payload, capacity, self._expiry_ms, self._stats_ttl_ms],
        )
        if not queued:
            raise ChannelFull(
                f"channel {channel!r} is full: {capacity} unexpired messages are waiting in {queue!r}"
            )

    def receive(self, channels: Iterable[str], block: bool = False) -> ReceiveResult:
        wanted = names.validate_receive_channels(channels)
        buffered = self._from_buffer(wanted)
        if buffered is not None:
            return buffered
        plan = self._plan(wanted)
        if not block:
            for shard, queues in plan:
                reply = self._script(shard, TAKE_SCRIPT, [self._queue_key(q) for q in queues],
                                     self._take_args("head", queues))
                found = self._deliver(self._from_take(shard, queues, reply))
                if found[0] is not None:
                    return found
            return None, None
        return self._wait(plan)

    def _take_args(self, mode: str, queues: list[str]) -> list[Any]:
        flags = "".join("1" if _pinned(queue) else "0" for queue in queues)
        return [self._prefix, mode, BATCH_ITEMS, BATCH_BYTES, flags]

    def _from_take(self, shard: Shard, queues: list[str], reply: Any,
                   payloads: dict[bytes, bytes] | None = None) -> list[_Delivery]:
        """Deliveries from a take script's reply (its payloads added to ``payloads``)."""
        now, items, shared = reply
        found = payloads if payloads is not None else {}
        for index in range(0, len(shared), 2):
            found[shared[index]] = shared[index + 1]
        deliveries = []
        for index in range(0, len(items), 2):
            deadline, local_part, body = _split_entry(items[index + 1])
            if body[:1] == b"@":
                body = found[body[1:]]
            deliveries.append((queues[int(items[index]) - 1], local_part, body, deadline, int(now)))
        return deliveries

    def _deliver(self, deliveries: list[_Delivery]) -> ReceiveResult:
        """Return the first delivery and buffer the rest (all of pinned queues)."""
        if not deliveries:
            return None, None
        queue, local_part, payload, _, _ = deliveries[0]
        if len(deliveries) > 1:
            received = time.monotonic()
            with self._buffer_lock:
                for other, other_local, other_payload, deadline, now in deliveries[1:]:
                    self._buffer.setdefault(other, collections.deque()).append(
                        (received + (deadline - now) / 1000, other + other_local, other_payload))
        return queue + local_part, self.serializer.decode(payload)

    def _from_buffer(self, wanted: list[str]) -> ReceiveResult | None:
        if not self._buffer:
            return None
        now = time.monotonic()
        with self._buffer_lock:
            best: collections.deque[tuple[float, str, bytes]] | None = None
            for queue in wanted:
                waiting = self._buffer.get(queue)
                if not waiting:
                    continue
                while waiting and waiting[0][0] <= now:
                    waiting.popleft()  # expired while buffered: never delivered
                if not waiting:
                    del self._buffer[queue]
                elif best is None or waiting[0][0] < best[0][0]:
                    best = waiting
            if best is None:
                return None
            _, channel, payload = best.popleft()
            if not best:
                self._buffer = {queue: left for queue, left in self._buffer.items() if left}
        return channel, self.serializer.decode(payload)

    # -- blocking receive ----------------------------------------------------------

    def _wait_commands(self, queues: list[str], timeout: float) -> list[Any]:
        keys = [self._queue_key(queue) for queue in queues]
        start = next(self._rotation) % len(keys)
        commands: list[Any] = []
        # Redis reads a timeout below 1 ms as 0, which means "for ever":
        # round up to whole milliseconds instead.
        commands.append(("BLPOP", *keys[start:], *keys[:start], math.ceil(timeout * 1000) / 1000))
        # Runs right after the pop (a client's commands run in order), so it
        # is Redis' time at the moment of delivery.
        commands.append(("TIME",))
        if any(_pinned(queue) for queue in queues):
            commands.append((TAKE_SCRIPT, keys, self._take_args("batch", queues)))
        return commands

    def _wait(self, plan: list[tuple[Shard, list[str]]]) -> ReceiveResult:
        deadline = time.monotonic() + self.blocking_timeout
        pause = 0.01
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return None, None
            try:
                if len(plan) == 1:
                    shard, queues = plan[0]
                    commands = self._wait_commands(queues, remaining)
                    pending = shard.start(commands, deadline)
                    replies = shard.rerun_noscript(commands, pending.finish(), deadline)
                    deliveries = self._settle(shard, queues, replies)
                else:
                    deliveries = self._wait_many(plan, remaining, deadline)
            except ShardDown:
                # Logged by the shard. A single shard was retried until the
                # deadline; over several, every one was down: back off, retry.
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 1.0)
                continue
            except (CommandLost, _NotRun) as exc:
                # What a lost BLPOP had popped is gone (at most once); wait again.
                logger.debug("receive: %s; waiting again", exc)
                for shard, _ in plan:
                    if isinstance(exc, _NotRun):
                        shard.pool.disconnect()
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 1.0)
                continue
            found = self._deliver(deliveries)
            if found[0] is not None:
                return found

    def _settle(self, shard: Shard, queues: list[str], replies: list[Any],
                deliveries: list[_Delivery] | None = None) -> list[_Delivery]:
        """Deliveries from a ``[BLPOP, TIME, take?]`` reply; an expired pop is dropped."""
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        popped, (seconds, micros) = replies[0], replies[1]
        payloads: dict[bytes, bytes] = {}
        batch = self._from_take(shard, queues, replies[2], payloads) if len(replies) > 2 else []
        out = [] if deliveries is None else deliveries
        if popped is not None:
            key, entry = popped
            queue = key.decode("ascii")[len(self._prefix) + 2 :]
            expires, local_part, body = _split_entry(entry)
            now = int(seconds) * 1000 + int(micros) // 1000  # raw replies: bytes
            if expires <= now:
                logger.debug("receive: dropped a message on %r that expired before it was popped", queue)
            else:
                payload: bytes | None = body
                if body[:1] == b"@":
                    payload_id = body[1:]
                    if payload_id in payloads:
                        payload = payloads[payload_id]
                        # EVAL with the source (~0.2 kB): an owed command's
                        # reply is never seen, so it cannot fall back on NOSCRIPT.
                        shard.owe(("EVAL", RELEASE_SCRIPT.source, 0, self._prefix, payload_id))
                    else:
                        payload = self._script(shard, FETCH_SCRIPT, [], [self._prefix, payload_id])
                if payload is not None:
                    out.append((queue, local_part, payload, expires, now))
        out.extend(batch)
        return out

    def _wait_many(self, plan: list[tuple[Shard, list[str]]], remaining: float, deadline: float) -> list[_Delivery]:
        """Receive over several shards: take the oldest waiting head if there is one,
        else one BLPOP per shard, the first answer wins, the others are unblocked."""
        # 1. Look (no pop) at every shard at once: popping on each would take a
        # message from each, and all but one would have to be pushed back.
        # A down shard is left out (its outage is logged) rather than holding up
        # the others for the whole wait; ShardDown only when all are down.
        looks = []
        for shard, queues in plan:
            peek: list[Any] = [(PEEK_SCRIPT, [self._queue_key(q) for q in queues], [])]
            try:
                looks.append((shard, queues, peek, shard.start(peek, min(deadline, time.monotonic() + _PROBE))))
            except (ShardDown, CommandLost):
                continue
        if not looks:
            raise ShardDown(f"no Redis of {self.locations} is reachable")
        plan = [(shard, queues) for shard, queues, _, _ in looks]
        best: tuple[int, Shard, list[str]] | None = None
        for shard, queues, peek, pending in looks:
            try:
                head = shard.rerun_noscript(peek, pending.finish(), deadline)[0]
            except (CommandLost, _NotRun):
                continue
            if isinstance(head, int) and (best is None or head < best[0]):
                best = (head, shard, queues)
        if best is not None:
            _, shard, queues = best
            reply = self._script(shard, TAKE_SCRIPT, [self._queue_key(q) for q in queues],
                                 self._take_args("head", queues))
            return self._from_take(shard, queues, reply)  # empty if another receiver was first: wait again
        # 2. Nothing waits: one BLPOP per shard.
        started: list[tuple[Shard, list[str], Pending, list[Any], Any]] = []
        try:
            for shard, queues in plan:
                commands = self._wait_commands(queues, remaining)
                # Owed commands wait: the replies must be the BLPOP pipeline's.
                pending = shard.start(commands, deadline, with_owed=False, with_id=True)
                started.append((shard, queues, pending, commands, pending.client_id))
            waiting = [pending for _, _, pending, _, _ in started]
            ready = [pending for pending in waiting if pending.ready()]
            if not ready:
                ready, _, _ = select.select(waiting, [], [], remaining + _SOCKET_SLACK)
            # Ends the other waits now, as a timeout would (their BLPOPs answer nil);
            # all written first, then all read.
            unblocks = [(shard, shard.start([("CLIENT", "UNBLOCK", client_id)], deadline))
                        for shard, _, pending, _, client_id in started if pending not in ready]
            for _, unblock in unblocks:
                unblock.finish()
        except BaseException:
            for _, _, pending, _, _ in started:
                pending.abandon()
            raise
        deliveries: list[_Delivery] = []
        winner = ready[0] if ready else None
        for shard, queues, pending, commands, _ in started:
            try:
                replies = shard.rerun_noscript(commands, pending.finish(), deadline)
            except (CommandLost, _NotRun) as exc:
                logger.debug("receive: lost the wait on %s: %s", shard.location, exc)
                continue
            if pending is winner:
                self._settle(shard, queues, replies, deliveries)
                continue
            popped = replies[0]
            if popped is not None:
                # Popped by a second shard answering at once, or between the
                # first answer and the unblock: put it back, at the head.
                key, entry = popped
                self._run(shard, (REQUEUE_SCRIPT, [key], [entry]))
            if len(replies) > 2:
                deliveries.extend(self._from_take(shard, queues, replies[2]))
        return deliveries

    def receive_twisted(self, channels: Iterable[str], reactor: Any = None) -> Any:
        """The ASGI 1 ``twisted`` extension: a Deferred firing with ``(channel, message)``
        or ``(None, None)`` after ``blocking_timeout``; a blocking receive in a reactor
        pool thread (:func:`ipc_layer.twisted_ext.receive_in_thread`), never a poll.
        """
        from .twisted_ext import receive_in_thread

        return receive_in_thread(self, channels, reactor)

    def new_channel(self, pattern: str) -> str:
        names.validate_new_channel_pattern(pattern)
        while True:
            name = pattern + names.random_suffix()
            # ~71 random bits make a clash practically impossible, but a name
            # whose queue exists is in use, so check as the contract says.
            if not self._run(self._shard_of(name), ("EXISTS", self._queue_key(name)))[0]:
                return name

    # -- groups ------------------------------------------------------------------

    def group_add(self, group: str, channel: str) -> None:
        names.validate_group(group)
        names.validate_channel(channel)
        self._script(self._shard_of(group), GROUP_ADD_SCRIPT, self._group_keys(group),
                     [channel, self.capacities.get(channel), self._group_expiry_ms])

    def group_discard(self, group: str, channel: str) -> None:
        names.validate_group(group)
        names.validate_channel(channel)
        self._script(self._shard_of(group), GROUP_DISCARD_SCRIPT, self._group_keys(group), [channel])

    def group_channels(self, group: str) -> list[str]:
        names.validate_group(group)
        members = self._script(self._shard_of(group), GROUP_CHANNELS_SCRIPT, self._group_keys(group),
                               [self._group_expiry_ms])
        return [member.decode("ascii") for member in members]

    def send_group(self, group: str, message: Message) -> None:
        names.validate_group(group)
        payload = self.serializer.encode(message, group, kind="group")
        common = [self._expiry_ms, self.capacity, self._stats_ttl_ms, SHARE_MIN]
        if len(self._shards) == 1:
            delivered, skipped = self._script(
                self._shards[0], SEND_GROUP_SCRIPT, [*self._group_keys(group), self._stats_key],
                [self._prefix, payload, self._expiry_ms, self._group_expiry_ms, self.capacity,
                 self._stats_ttl_ms, SHARE_MIN],
            )
        else:
            members, caps = self._script(self._shard_of(group), GROUP_MEMBERS_SCRIPT, self._group_keys(group),
                                         [self._group_expiry_ms])
            by_shard: dict[int, list[Any]] = {}
            for member, cap in zip(members, caps, strict=True):
                queue = names.non_local_name(member.decode("ascii"))
                by_shard.setdefault(consistent_hash(queue, len(self._shards)), []).extend(
                    [member, b"" if cap is None else cap])
            # All written first, then all read: the shards work in parallel.
            started: list[tuple[Shard, Any, Pending]] = []
            delivered = skipped = 0
            try:
                for index, pairs in by_shard.items():
                    shard = self._shards[index]
                    command = (FANOUT_SCRIPT, [self._stats_key], [self._prefix, payload, *common, *pairs])
                    started.append((shard, command, shard.start([command], self._deadline())))
                while started:
                    shard, command, pending = started.pop(0)
                    reply = shard.rerun_noscript([command], pending.finish(), self._deadline())[0]
                    if isinstance(reply, redis.ResponseError):
                        raise reply
                    delivered, skipped = delivered + reply[0], skipped + reply[1]
            finally:
                for _, _, unread in started:  # a shard failed: the others' replies are not read
                    unread.abandon()
        if skipped:
            # DEBUG, not WARNING: skipping full members is the contract, and a
            # busy site would otherwise log on every broadcast.
            logger.debug("send_group(%r): delivered to %d, skipped %d full", group, delivered, skipped)

    # -- flush and statistics ------------------------------------------------------

    def flush(self) -> None:
        """Delete every key under this layer's prefix on every shard (SCAN + UNLINK, never FLUSHDB)."""
        with self._buffer_lock:
            self._buffer.clear()
        pattern = _glob_escape(self._prefix) + "*"
        for shard in self._shards:
            with shard._lock:
                shard.owed.clear()
            # SCAN never blocks the server for long, unlike KEYS (asgi_redis and
            # channels_redis ran KEYS prefix* inside Lua); UNLINK frees the
            # memory off the main thread.
            cursor: Any = 0
            while True:
                cursor, keys = self._run(shard, ("SCAN", cursor, "MATCH", pattern, "COUNT", 1000))[0]
                if keys:
                    self._run(shard, ("UNLINK", *keys))
                if int(cursor) == 0:
                    break

    def global_statistics(self) -> dict[str, int]:
        messages = full = 0
        for shard in self._shards:
            counts = self._run(shard, ("HMGET", self._stats_key, "messages", "full"))[0]
            messages += int(counts[0] or 0)
            full += int(counts[1] or 0)
        return {"messages_count": messages, "channel_full_count": full}

    def channel_statistics(self, channel: str) -> dict[str, int]:
        names.validate_channel(channel)
        queue = names.non_local_name(channel)
        shards = [self._shard_of(queue)]
        totals = {"messages_count": 0, "messages_pending": 0, "messages_max_age": 0, "channel_full_count": 0}
        for shard in shards:
            messages, pending, age_ms, full = self._script(
                shard, CHANNEL_STATS_SCRIPT, [self._queue_key(queue), self._queue_stats_key(queue)],
                [self._expiry_ms])
            totals["messages_count"] += int(messages)
            totals["messages_pending"] += int(pending)
            totals["messages_max_age"] = max(totals["messages_max_age"], int(age_ms) // 1000)
            totals["channel_full_count"] += int(full)
        return totals

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Send what this instance owes, close its connections; the data stays in Redis.

        A receive blocked in Redis in another thread returns ``(None, None)``
        (its socket is closed under it, and it does not reconnect).
        """
        self._closed = True
        for shard in self._shards:
            # Twice: a server without the script answers NOSCRIPT, and the
            # command is owed again, with its source.
            for _ in range(2):
                if not shard.owed:
                    break
                try:
                    shard.start([], time.monotonic()).finish()
                except redis.RedisError as exc:  # the payload keys' TTLs clean up instead
                    logger.debug("close: could not release payloads on %s: %s", shard.location, exc)
                    break
            shard.pool.disconnect()

    @property
    def locations(self) -> list[str]:
        """Where the shards are, in ``hosts`` order."""
        return [shard.location for shard in self._shards]

    def __repr__(self) -> str:
        where = self.locations[0] if len(self._shards) == 1 else self.locations
        return (
            f"{type(self).__name__}(location={where!r}, prefix={self.prefix!r}, "
            f"expiry={self.expiry!r}, group_expiry={self.group_expiry!r}, capacity={self.capacity!r}, "
            f"channel_capacity={self.channel_capacity!r})"
        )


options.document(RedisChannelLayer, "redis")
