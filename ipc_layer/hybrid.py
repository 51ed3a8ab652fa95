"""``HybridChannelLayer``: each host's own traffic in shared memory, the rest through Redis.

A site on several machines runs a protocol server and workers on each. Most
of its messages never need to leave the machine they start on: a request
goes from the server to a worker of the same host and the response comes
back. This layer keeps those in the host's shared-memory segment
(:class:`~ipc_layer.layer.IPCChannelLayer`) and sends through Redis
(:class:`~ipc_layer.redis_layer.RedisChannelLayer`) only what must cross:
messages for another host's process channels, normal channels consumed
anywhere, and group sends. asgi_redis 1.x had ``RedisLocalChannelLayer``;
it sent *every* ``!``/``?`` channel through Redis (so each HTTP response
crossed Redis twice), polled when a receive mixed both sides, and needed
every normal channel consumed on the same machine. This layer fixes the three.

Theory of operation
-------------------
**Hosts and names.** Every process sharing a segment is one *host*, named
by the ``host`` setting (default: the machine's name plus a hash of it and
the segment ``prefix``, so two segments on one machine are two hosts). The
names this layer makes carry the host: ``new_process_channel("server")``
gives ``server.h-<host>.<12 random>!`` and ``new_channel("x?")`` gives
``x?h-<host>.<12 random>``. So any process on any host knows from the name
alone where a ``!``/``?`` channel is received. The first layer to attach
writes the host into the segment, and a layer that says another host for
the same segment is refused: two host names on one segment would deliver
group messages twice.

**Where a message goes** (decided once per channel name and cached):

=========================================  =======================================
channel                                    path
=========================================  =======================================
``!``/``?`` channel of this host           this host's shared memory
normal channel matching ``local_channels``  this host's shared memory
(default ``http.*``, ``websocket.*``,
``__wait__.*``)
``!``/``?`` channel of host H               H's *inbox* in Redis, channel
                                           ``hybrid.<H>!``, the target's name in
                                           the message's ``__asgi_channel__``
                                           key; H's forwarder moves it into H's
                                           shared memory
any other channel (normal channels not     a plain Redis channel, received there
local, ``!``/``?`` names made by another   by whoever asks, on any host
layer)
=========================================  =======================================

So the request/response traffic of a host (``http.request`` to a local
worker, the response to the local server's ``!`` channel, the body's ``?``
channel) touches no Redis key at all, and a background-task channel
(``thumbnails``) reaches an idle worker on whichever host has one.

**The forwarder.** One thread per host (elected among the processes of the
host that receive: each volunteers on its first receive, an ``flock`` on
``/dev/shm/rbuf.<prefix>~fwd~<host>`` picks one; the others sleep in
``flock`` until the kernel hands the lock on when the holder dies) blocks in
Redis on the host's inbox and moves what arrives into shared memory:
direct messages with a ``send``, group deliveries with the segment's
``send_group``, cross-host ``group_add``/``group_discard`` as local ones.
Receivers therefore block only on the segment's futex: one blocking
receive (and ``receive_twisted``, served by the segment's FD watches) covers
messages from this host and from every other, and nothing polls.

**Groups.** A group's members live where they are received: this host's
members in this host's segment, and in Redis the group holds one member per
host that has members, ``hybrid.<host>!<group>`` (plus any host-less member,
e.g. a non-local normal channel, as itself). ``send_group`` delivers to this
host's members at once through shared memory and makes one Redis
``send_group``: each other host's forwarder gets *one* copy (whatever its
number of members) and fans it out locally; the copy reaching this host's
own forwarder carries ``__asgi_origin__`` = this host and is dropped there.
A plain Redis layer process (no shared memory) sharing the Redis prefix can
``send_group`` to the same groups: its copies reach every host. Group names
must leave room for the host member: at most ``100 - 8 - len(host)``
characters (68 with the longest host name).

**A receive that mixes both sides** (a worker consuming ``http.request``
locally and ``thumbnails`` from Redis) is served by a *pump*: a thread that,
only while such a receive is waiting, blocks in Redis on the Redis-side
channels and hands what it pops to the receiver through memory, ringing a
private shared-memory queue the receiver also waits on.

**Misconfiguration shows.** Receivers of local normal channels register them
in the segment (set ``hybrid:consumers``, refreshed every minute while they
receive); the forwarder registers itself (``hybrid:forwarder``).
``ipc-layer stats`` lists local channels holding messages that no receiver
registered ("nobody consumes them on this host": a channel in
``local_channels`` whose consumers run elsewhere), and says when no
forwarder runs.

Failure modes, and what is lost where
-------------------------------------
* **The forwarder's process dies** (SIGKILL included): the kernel drops its
  ``flock``, another receiving process of the host takes over at once.
  Lost: what it had taken from Redis and not yet queued in shared memory,
  at most one round trip's worth (the inbox is a ``!`` queue with one
  reader, so the Redis layer takes up to ``BATCH_ITEMS`` (1,024) waiting
  messages of it at once, and a backlog moves in batches). While no process of the host forwards, messages for it
  wait in its inbox (up to ``inbox_capacity``, then senders to that host get
  ``ChannelFull`` and group sends skip it) and expire after ``expiry``.
* **A forwarded message meets a full channel**: it is dropped and logged
  (the sender, on another host, cannot be told; ``send`` to another host's
  channel raises ``ChannelFull`` only when that host's inbox is full). A
  forwarded message gets a fresh ``expiry`` in shared memory, so it lives at
  most twice ``expiry`` end to end.
* **Redis is down or unreachable**: this host's own traffic goes on
  untouched (local channels, local ``!``/``?`` channels). Sends to other
  hosts or Redis channels, ``group_add``/``group_discard``/``send_group``
  raise the Redis layer's error (``ShardDown``, a ``redis.ConnectionError``,
  once its ``retry_timeout`` has passed; ``send_group`` after delivering to
  this host's members). The forwarder's and the pumps' blocking receives
  ride the outage out (the Redis layer reconnects inside them and returns
  nothing at ``blocking_timeout``); any error that still comes out of one is
  logged and retried with a bounded back-off (0.1 s doubling to 5 s). What
  Redis held when it died is lost, as with the Redis layer.
* **A mixed receive's pump** may pop one message from Redis just after its
  receive was answered by a local message; it is handed out by the next
  receive on the same channels, and lost only if the process never asks
  again (or closes the layer).
* ``group_channels`` lists this host's members and host-less ones; other
  hosts' members are in their segments and not listed.
* ``flush`` empties this host's segment and every key under the Redis
  prefix (all hosts' inboxes and groups), not other hosts' segments.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import fnmatch
import hashlib
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from _memo import remember
from _ringbuf import RingBufError
from _ringbuf.binding import SEGMENT_FILE_PREFIX, SHM_DIR

from . import names, options
from ._errors import segment_error
from .base import BaseChannelLayer, Message, ReceiveResult
from .exceptions import ChannelFull
from .hybrid_facts import CONSUMERS_SET, FORWARDER_SET, HOST_SET, PUMP_PREFIX
from .layer import IPCChannelLayer
from .options import CapacityKey
from .redis_layer import RedisChannelLayer

__all__ = [
    "CHANNEL_KEY",
    "CONSUMERS_SET",
    "FORWARDER_SET",
    "HOST_SET",
    "HybridChannelLayer",
    "ORIGIN_KEY",
    "default_host",
    "forwarder_lock_path",
    "host_of",
    "inbox_channel",
]

logger = logging.getLogger(__name__)

#: Reserved message keys (ASGI 1 reserves ``__asgi_*`` for layers): the target of a
#: message in a host's inbox, the host a group copy was sent from, a control request.
CHANNEL_KEY = "__asgi_channel__"
ORIGIN_KEY = "__asgi_origin__"
CONTROL_KEY = "__asgi_hybrid__"

#: Channels of the layer itself: the inboxes in Redis (the pumps' doorbells in shared
#: memory start with PUMP_PREFIX, see ipc_layer.hybrid_facts).
INBOX_PREFIX = "hybrid."

#: A consumer registration lasts this long and is refreshed after a third of it.
CONSUMER_TTL_NS = 180 * 1_000_000_000
_CONSUMER_REFRESH = 60.0
#: The forwarder's registration outlives its last loop by this much (plus blocking_timeout).
_FORWARDER_GRACE_NS = 10 * 1_000_000_000
#: Back-off of the forwarder and pumps while Redis fails.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
#: A pump with no waiting receive for this long ends its thread (a new one starts on demand).
PUMP_IDLE_EXIT = 30.0
#: Bytes the reserved keys may add to a message bound for Redis.
_WRAP_SLACK = 512
_U32_MAX = (1 << 32) - 1

_NS = 1_000_000_000
_monotonic = time.monotonic
_monotonic_ns = time.monotonic_ns

_HOST_CHARS = rf"[A-Za-z0-9-]{{1,{options.HOST_NAME_MAX}}}"
# ``<prefix>.h-<host>.<12>`` before the '!', ``h-<host>.<12>`` after the '?'.
_PROCESS_TAG = re.compile(rf".+\.h-({_HOST_CHARS})\.[A-Za-z0-9]{{{names.SUFFIX_LENGTH}}}", re.ASCII)
_SINGLE_TAG = re.compile(rf"h-({_HOST_CHARS})\.[A-Za-z0-9]{{{names.SUFFIX_LENGTH}}}", re.ASCII)
_INBOX_MEMBER = re.compile(rf"{re.escape(INBOX_PREFIX)}{_HOST_CHARS}!.*", re.ASCII)

# Routes (see the module docstring's table).
_SHM = "shm"
_REDIS = "redis"
_INBOX = "inbox"


def host_of(name: str) -> str | None:
    """The host a ``!``/``?`` channel name made by this layer is received on, or None."""
    bang = name.find("!")
    if bang >= 0:
        found = _PROCESS_TAG.fullmatch(name, 0, bang)
    else:
        mark = name.find("?")
        if mark < 0:
            return None
        found = _SINGLE_TAG.fullmatch(name, mark + 1)
    return found.group(1) if found else None


def inbox_channel(host: str) -> str:
    """The Redis channel a host's forwarder receives on."""
    return f"{INBOX_PREFIX}{host}!"


def default_host(prefix: str, hostname: str | None = None) -> str:
    """``<machine name>-<hash>``: the same for every process of one segment, different across."""
    machine = hostname if hostname is not None else socket.gethostname()
    readable = re.sub(r"[^A-Za-z0-9-]+", "-", machine).strip("-")[:12].strip("-") or "host"
    digest = hashlib.blake2b(f"{machine}\0{prefix}".encode(), digest_size=3).hexdigest()
    return f"{readable}-{digest}"


def forwarder_lock_path(prefix: str, host: str) -> str:
    """The file whose ``flock`` elects the forwarder of ``host`` (a companion of the segment)."""
    return os.path.join(SHM_DIR, f"{SEGMENT_FILE_PREFIX}{prefix}~fwd~{host}")


def _strip(result: ReceiveResult) -> ReceiveResult:
    """A message received from Redis, without the origin key a hybrid group send adds."""
    message = result[1]
    if message is not None and ORIGIN_KEY in message:
        del message[ORIGIN_KEY]
    return result


class _Failures:
    """Logs a run of failures of one loop once at WARNING, then at DEBUG, and its end."""

    __slots__ = ("count", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0

    def failed(self, exc: BaseException) -> float:
        """Log ``exc``; the seconds to back off."""
        self.count += 1
        if self.count == 1:
            logger.warning("%s failed, retrying with back-off: %s: %s", self.what, type(exc).__name__, exc)
        else:
            logger.debug("%s failed again (%d): %s", self.what, self.count, exc)
        return float(min(BACKOFF_MAX, BACKOFF_MIN * 2.0 ** min(self.count - 1, 10)))

    def ok(self) -> None:
        if self.count:
            logger.warning("%s works again after %d failure(s)", self.what, self.count)
            self.count = 0


class _Pump:
    """Moves messages of Redis-side channels to the receives of one mixed channel list.

    ``thread``/``demand`` (guarded by ``cond``):

    =========  ================================================================
    STOPPED    ``thread is None``
    PUMPING    ``demand > 0``: a receive waits; the thread blocks in Redis
    PARKED     thread alive, ``demand == 0``: it sleeps on ``cond`` (nothing
               is taken from Redis that no receive waits for)
    =========  ================================================================
    """

    def __init__(self, layer: HybridChannelLayer, channels: tuple[str, ...]) -> None:
        self.layer = layer
        self.channels = channels
        self.doorbell = PUMP_PREFIX + names.random_suffix()
        self.cond = threading.Condition()
        self.demand = 0
        self.closed = False
        self.thread: threading.Thread | None = None
        self.items: collections.deque[tuple[str, Message]] = collections.deque()
        self.stop = threading.Event()

    def want(self) -> None:
        with self.cond:
            self.demand += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name=f"hybrid-pump {','.join(self.channels)}"[:60])
                self.thread.start()  # state: STOPPED -> PUMPING
            elif self.demand == 1:
                self.cond.notify()  # state: PARKED -> PUMPING

    def release(self) -> None:
        with self.cond:
            self.demand -= 1  # at 0: PUMPING -> PARKED once the Redis wait in flight returns

    def take(self) -> tuple[str, Message] | None:
        try:
            return self.items.popleft()
        except IndexError:
            return None

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.stop.set()

    def _run(self) -> None:
        failures = _Failures(f"receiving {list(self.channels)!r} from Redis")
        while True:
            with self.cond:
                while self.demand == 0 and not self.closed:
                    if not self.cond.wait(PUMP_IDLE_EXIT) and self.demand == 0:
                        self.thread = None  # state: PARKED -> STOPPED
                        return
                if self.closed:
                    self.thread = None
                    return
            try:
                channel, message = self.layer._redis.receive(self.channels, block=True)
            except Exception as exc:
                if self.closed:
                    return
                self.stop.wait(failures.failed(exc))
                continue
            failures.ok()
            if channel is None or message is None:
                continue
            self.items.append((channel, message))
            try:
                # The doorbell's capacity is unlimited (its glob, see the layer); this
                # fails only if the segment does, and then the message waits in items
                # for the next doorbell.
                self.layer._local.send(self.doorbell, {})
            except Exception:
                logger.exception("could not wake the receive of %r; the message waits for the next one",
                                 self.channels)


class _Plan:
    """A validated receive list: which side each channel is on."""

    __slots__ = ("consumers", "kind", "pump", "redis", "refresh_at", "shm", "with_doorbell")

    def __init__(self, kind: str, shm: tuple[str, ...], redis: tuple[str, ...],
                 consumers: tuple[bytes, ...]) -> None:
        self.kind = kind
        self.shm = shm
        self.redis = redis
        self.consumers = consumers
        self.refresh_at = 0.0
        self.pump: _Pump | None = None
        self.with_doorbell: tuple[str, ...] = shm


class _Forwarder:
    """The host's forwarder as one process volunteers it (see the module docstring).

    ``state``:

    =========  ================================================================
    NEW        not started (this process has not received yet)
    STANDBY    the thread waits in ``flock`` for the host's forwarder lock
    ACTIVE     it holds the lock and moves the inbox into shared memory
    STOPPED    the layer closed (final); the lock, if held, is released
    =========  ================================================================
    """

    def __init__(self, layer: HybridChannelLayer) -> None:
        self.layer = layer
        self.state = "NEW"
        self.path = forwarder_lock_path(layer.prefix, layer.host)
        self.fd_lock = threading.Lock()
        self.fd: int | None = None
        self.closed = False
        self.stop = threading.Event()
        self.dropped = 0
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.state != "NEW":
            return
        self.state = "STANDBY"  # state: NEW -> STANDBY
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"hybrid-forwarder {self.layer.host}")
        self.thread.start()

    def close(self) -> None:
        self.closed = True
        self.stop.set()

    def _run(self) -> None:
        try:
            with self.fd_lock:  # fork takes this lock: a child never inherits an fd it does not know
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            logger.error("host %r: cannot open the forwarder lock %s (%s); this process will not forward",
                         self.layer.host, self.path, exc)
            self.state = "STOPPED"
            return
        try:
            while True:
                try:
                    # Sleeps in the kernel (GIL released) until the holder, in this or
                    # another process, closes its fd or dies.
                    fcntl.flock(self.fd, fcntl.LOCK_EX)
                    break
                except InterruptedError:  # pragma: no cover - PEP 475 retries EINTR itself
                    continue
                except OSError as exc:
                    if exc.errno == errno.EINTR:  # pragma: no cover
                        continue
                    raise
            if self.closed:
                return
            self.state = "ACTIVE"  # state: STANDBY -> ACTIVE
            logger.info("host %r: this process (pid %d) forwards the host's inbox from Redis",
                        self.layer.host, os.getpid())
            self._forward()
        except Exception:
            logger.exception("host %r: the forwarder stopped", self.layer.host)
        finally:
            self.state = "STOPPED"  # state: STANDBY/ACTIVE -> STOPPED
            with self.fd_lock:
                fd, self.fd = self.fd, None
            if fd is not None:
                os.close(fd)  # releases the lock: a standby of the host takes over

    def _forward(self) -> None:
        layer = self.layer
        inbox = [layer.inbox]
        failures = _Failures(f"host {layer.host!r}: forwarding from Redis")
        next_beat = 0
        while not self.closed:
            now = _monotonic_ns()
            if now >= next_beat:
                next_beat = now + _NS
                layer._register(FORWARDER_SET, f"pid {os.getpid()}".encode(),
                                now + int(layer.blocking_timeout * _NS) + _FORWARDER_GRACE_NS)
            try:
                channel, message = layer._redis.receive(inbox, block=True)
            except Exception as exc:
                if self.closed:
                    return
                self.stop.wait(failures.failed(exc))
                continue
            failures.ok()
            if channel is not None and message is not None:
                try:
                    self.deliver(channel, message)
                except Exception:
                    # One bad message (a hand-made key, a full segment) must not stop
                    # the host's inbound traffic.
                    logger.exception("host %r: could not forward a message from %r", layer.host, channel)

    def deliver(self, channel: str, message: Message) -> None:
        """Move one inbox message into shared memory (on the forwarder thread)."""
        layer = self.layer
        group = channel[len(layer.inbox):]
        origin = message.pop(ORIGIN_KEY, None)
        local = layer._local
        if group:  # a group copy for this host's members
            if origin != layer.host:  # our own sends reached our members already
                local.send_group(group, message)
            return
        control = message.pop(CONTROL_KEY, None)
        if control is not None:
            target_group, target = message.get("group"), message.get("channel")
            if control == "add":
                local.group_add(target_group, target)  # type: ignore[arg-type]
            elif control == "discard":
                local.group_discard(target_group, target)  # type: ignore[arg-type]
            else:
                logger.error("host %r: unknown control request %r in the inbox; dropped", layer.host, control)
            return
        target = message.pop(CHANNEL_KEY, None)
        if not isinstance(target, str):
            logger.error("host %r: a message in the inbox names no target channel; dropped", layer.host)
            return
        try:
            local.send(target, message)
        except ChannelFull:
            self.dropped += 1
            logger.warning("host %r: channel %r is full; a message from another host was dropped (%d so far)",
                           layer.host, target, self.dropped)


_LAYERS: weakref.WeakSet[HybridChannelLayer] = weakref.WeakSet()


def _before_fork() -> None:
    for layer in list(_LAYERS):
        layer._forwarder.fd_lock.acquire()


def _after_fork_in_parent() -> None:
    for layer in list(_LAYERS):
        layer._forwarder.fd_lock.release()


def _after_fork_in_child() -> None:
    for layer in list(_LAYERS):
        layer._reset_in_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def _compile_globs(globs: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(glob) for glob in globs]
    return re.compile("|".join(f"(?:{part})" for part in parts)) if parts else None


def _capacities_with(first: Mapping[CapacityKey, int], user: Mapping[CapacityKey, int] | None
                     ) -> dict[CapacityKey, int]:
    """``first`` ahead of the user's globs (first match wins)."""
    return {**first, **{key: value for key, value in (user or {}).items() if key not in first}}


class HybridChannelLayer(BaseChannelLayer):
    """ASGI 1 channel layer: this host's traffic in shared memory, other hosts' through Redis.

    ``prefix`` names this host's segment (as for :class:`~ipc_layer.IPCChannelLayer`);
    ``ipc`` holds the segment's other options and ``redis`` the Redis side's
    (``url`` or ``hosts``, its key ``prefix``, ...), which every host of a site
    shares. The options every layer takes (``expiry``, ``capacity``, ...) apply
    to both sides. See the module docstring for where each channel goes.
    """

    extensions = ("groups", "flush", "statistics", "twisted")
    #: The options this class takes, as declared in :mod:`ipc_layer.options`.
    option_kind: ClassVar[str] = "hybrid"

    def __init__(
        self,
        prefix: str = options.PREFIX.default,
        expiry: float = options.EXPIRY.default,
        group_expiry: float = options.GROUP_EXPIRY.default,
        capacity: int = options.CAPACITY.default,
        channel_capacity: Mapping[CapacityKey, int] | None = options.CHANNEL_CAPACITY.default,
        max_message_size: int = options.MAX_MESSAGE_SIZE.default,
        blocking_timeout: float = options.BLOCKING_TIMEOUT.default,
        host: str | None = options.HOST.default,
        local_channels: Iterable[str] = options.LOCAL_CHANNELS.default,
        inbox_capacity: int = options.INBOX_CAPACITY.default,
        ipc: Mapping[str, Any] | None = options.IPC_OPTIONS.default,
        redis: Mapping[str, Any] | None = options.REDIS_OPTIONS.default,
    ) -> None:
        # First statement: locals() holds exactly the parameters.
        config = options.validate("hybrid", locals(), owner=type(self).__name__)
        base = config.subset("base")
        super().__init__(**base)
        self.prefix = config[options.PREFIX]
        self.host = config[options.HOST] or default_host(self.prefix)
        self.local_channels = config[options.LOCAL_CHANNELS]
        self.inbox_capacity = config[options.INBOX_CAPACITY]
        self.inbox = inbox_channel(self.host)
        self._local_re = _compile_globs(self.local_channels)
        user_capacities = config[options.CHANNEL_CAPACITY]
        ipc_options: dict[str, Any] = config[options.IPC_OPTIONS.name] or {}
        redis_options: dict[str, Any] = config[options.REDIS_OPTIONS.name] or {}
        # The pumps' doorbells must never refuse: a refused ring strands a message.
        self._local = IPCChannelLayer(**{
            **base, **ipc_options, "prefix": self.prefix,
            "channel_capacity": _capacities_with({PUMP_PREFIX + "*": _U32_MAX}, user_capacities),
        })
        try:
            self._redis = RedisChannelLayer(**{
                **base, **redis_options,
                # Room for the reserved keys; this layer checks the user's limit itself.
                "max_message_size": min(options.MESSAGE_SIZE_MAX, self.max_message_size + _WRAP_SLACK),
                "channel_capacity": _capacities_with({INBOX_PREFIX + "*!": self.inbox_capacity},
                                                     user_capacities),
            })
            self._claim_segment()
        except BaseException:
            self._local.close()
            raise
        self._group_room = names.MAX_NAME_LENGTH - len(self.inbox)
        # channel -> _SHM | _REDIS | (_INBOX, inbox channel, host)
        self._routes: dict[str, Any] = {}
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._plans_lock = threading.Lock()
        self._forwarder = _Forwarder(self)
        self._forwarding = False
        self._closed = False
        _LAYERS.add(self)

    # -- the segment's hybrid facts ---------------------------------------------------

    def _claim_segment(self) -> None:
        """Write this host into the segment, refusing one another host name claimed."""
        seg = self._local.segment
        try:
            seg.set_add(HOST_SET, self.host.encode("ascii"))
            claimed = sorted(member.decode("ascii", "replace") for member in seg.set_members(HOST_SET))
        except RingBufError as exc:
            raise segment_error(f"hybrid layer attaching to segment {self.prefix!r}", exc) from exc
        if claimed != [self.host]:
            others = [name for name in claimed if name != self.host]
            raise ValueError(
                f"segment {self.prefix!r} belongs to hybrid host {others[0]!r}, and this layer says "
                f"host={self.host!r}: every process sharing a segment must use one host name (set "
                f"the same 'host' everywhere, or give this host its own prefix)"
            )

    def _register(self, set_name: bytes, member: bytes, deadline_ns: int) -> None:
        try:
            self._local.segment.set_add(set_name, member, deadline_ns)
        except RingBufError:
            # Only ipc-layer stats reads these: a full name table must not fail a receive.
            logger.debug("could not register %r in %r", member, set_name, exc_info=True)

    # -- routing ------------------------------------------------------------------------

    def _route(self, channel: object) -> Any:
        name = names.validate_channel(channel)
        if "!" in name or "?" in name:
            host = host_of(name)
            if host is None:
                route: Any = _REDIS
            elif host == self.host:
                route = _SHM
            else:
                route = (_INBOX, inbox_channel(host), host)
        else:
            route = _SHM if self._is_local(name) else _REDIS
        return remember(self._routes, name, route)

    def _is_local(self, name: str) -> bool:
        return self._local_re is not None and self._local_re.fullmatch(name) is not None

    def is_local(self, channel: str) -> bool:
        """Whether messages sent to ``channel`` from this host stay in its shared memory."""
        try:
            return self._routes[channel] is _SHM
        except (KeyError, TypeError):
            return self._route(channel) is _SHM

    # -- core API ---------------------------------------------------------------------------

    def send(self, channel: str, message: Message) -> None:
        try:
            route = self._routes[channel]
        except (KeyError, TypeError):
            route = self._route(channel)
        if route is _SHM:
            self._local.send(channel, message)
            return
        # Our own checks first: the Redis side takes a little more (the reserved keys).
        self.serializer.encode(message, channel)
        if route is _REDIS:
            self._redis.send(channel, message)
            return
        _, inbox, host = route
        try:
            self._redis.send(inbox, {**message, CHANNEL_KEY: channel})
        except ChannelFull:
            raise ChannelFull(
                f"channel {channel!r} is on host {host!r}, whose inbox in Redis is full "
                f"({self.inbox_capacity} messages wait for its forwarder: is a process of that host "
                "receiving?)"
            ) from None

    def _plan(self, channels: object, key: tuple[str, ...] | None) -> _Plan:
        wanted = tuple(names.validate_receive_channels(channels))
        shm: list[str] = []
        redis: list[str] = []
        consumers: list[bytes] = []
        for channel in wanted:
            if "!" in channel or "?" in channel:
                host = host_of(channel)
                if host is None:
                    redis.append(channel)
                elif host == self.host:
                    shm.append(channel)
                else:
                    raise ValueError(
                        f"cannot receive on {channel!r} here: it belongs to host {host!r} and this "
                        f"layer is host {self.host!r} (only the process that made a '!' or '?' "
                        "channel receives on it)"
                    )
            elif self._is_local(channel):
                shm.append(channel)
                consumers.append(channel.encode("ascii"))
            else:
                redis.append(channel)
        kind = _SHM if not redis else _REDIS if not shm else "mixed"
        plan = _Plan(kind, tuple(shm), tuple(redis), tuple(dict.fromkeys(consumers)))
        if kind == "mixed":
            plan.pump = _Pump(self, plan.redis)
            plan.with_doorbell = (*plan.shm, plan.pump.doorbell)
        if key is not None:
            with self._plans_lock:
                existing = self._plans.get(key)
                if existing is not None:  # another thread won: one pump per list
                    return existing
                remember(self._plans, key, plan)
        return plan

    def _lookup(self, channels: Iterable[str]) -> _Plan:
        kind = type(channels)
        key: tuple[str, ...] | None = None
        if kind is tuple:
            key = channels  # type: ignore[assignment]
        elif kind is list:
            key = tuple(channels)
        plan = None
        if key is not None:
            try:
                plan = self._plans.get(key)
            except TypeError:  # an unhashable item: _plan names it
                key = None
        if plan is None:
            plan = self._plan(channels, key)
        if not self._forwarding:
            self._start_forwarder()
        if plan.consumers and _monotonic() >= plan.refresh_at:
            self._refresh_consumers(plan)
        return plan

    def receive(self, channels: Iterable[str], block: bool = False) -> ReceiveResult:
        plan = self._lookup(channels)
        kind = plan.kind
        if kind is _SHM:
            return self._local.receive(plan.shm, block)
        if kind is _REDIS:
            return _strip(self._redis.receive(plan.redis, block))
        return self._receive_mixed(plan, block)

    def _receive_mixed(self, plan: _Plan, block: bool) -> ReceiveResult:
        pump = plan.pump
        if pump is None:  # pragma: no cover - every mixed plan has one
            raise RuntimeError("mixed receive plan without a pump")
        if not block:
            got = self._local.receive(plan.with_doorbell, False)
            if got[0] is not None:
                if got[0] != pump.doorbell:
                    return got
                item = pump.take()
                if item is not None:
                    return item
            return _strip(self._redis.receive(plan.redis, False))
        pump.want()
        try:
            got = self._local.receive(plan.with_doorbell, True)
        finally:
            pump.release()
        if got[0] == pump.doorbell:
            # The doorbell of a message another receive of this list took already
            # answers as "nothing yet"; callers ask again.
            return pump.take() or (None, None)
        return got

    def receive_twisted(self, channels: Iterable[str], reactor: Any = None) -> Any:
        """The ASGI 1 ``twisted`` extension: a Deferred firing with ``(channel, message)``.

        A list served by shared memory alone (a protocol server's ``!`` channel)
        waits on the segment's FD watches in the reactor (no thread); a list with
        Redis-side channels is a blocking receive in a reactor pool thread.
        """
        plan = self._lookup(channels)
        if plan.kind is _SHM:
            return self._local.receive_twisted(plan.shm, reactor)
        from .twisted_ext import receive_in_thread

        return receive_in_thread(self, plan.shm + plan.redis, reactor)

    def _start_forwarder(self) -> None:
        self._forwarding = True
        self._forwarder.start()

    def _refresh_consumers(self, plan: _Plan) -> None:
        plan.refresh_at = _monotonic() + _CONSUMER_REFRESH
        deadline = _monotonic_ns() + CONSUMER_TTL_NS
        for channel in plan.consumers:
            self._register(CONSUMERS_SET, channel, deadline)

    def new_channel(self, pattern: str) -> str:
        names.validate_new_channel_pattern(pattern)
        tag = f"h-{self.host}."
        if len(pattern) + len(tag) + names.SUFFIX_LENGTH > names.MAX_NAME_LENGTH:
            raise TypeError(
                f"new_channel pattern {pattern!r} is {len(pattern)} characters long; with the host tag "
                f"{tag!r} and the {names.SUFFIX_LENGTH}-character suffix at most "
                f"{names.MAX_NAME_LENGTH - len(tag) - names.SUFFIX_LENGTH} fit"
            )
        while True:
            name = pattern + tag + names.random_suffix()
            # ~71 random bits; a queue holding something proves the name taken.
            if self._local.channel_statistics(name)["messages_pending"] == 0:
                return name

    def new_process_channel(self, prefix: str = "process") -> str:
        """``"<prefix>.h-<host>.<unique>!"``: received in this host's shared memory."""
        names.validate_process_prefix(prefix)
        tag = f".h-{self.host}"
        limit = names.MAX_NAME_LENGTH - len(tag) - names.SUFFIX_LENGTH - 2
        if len(prefix) > limit:
            raise TypeError(
                f"process channel prefix {prefix!r} is {len(prefix)} characters long; with the host "
                f"tag {tag!r} at most {limit} leave room for '.', the unique suffix and '!'"
            )
        return f"{prefix}{tag}.{names.random_suffix()}!"

    # -- groups -------------------------------------------------------------------------

    def _host_member(self, group: str, host: str) -> str:
        member = inbox_channel(host) + group
        if len(member) > names.MAX_NAME_LENGTH:
            room = names.MAX_NAME_LENGTH - len(inbox_channel(host))
            raise ValueError(
                f"group {group!r} is {len(group)} characters long; the hybrid layer names each host's "
                f"share of a group {inbox_channel(host)!r} + group in Redis, so with host {host!r} at "
                f"most {room} fit"
            )
        return member

    def group_add(self, group: str, channel: str) -> None:
        names.validate_group(group)
        route = self._routes.get(channel) if isinstance(channel, str) else None
        if route is None:
            route = self._route(channel)
        if route is _SHM:
            member = self._host_member(group, self.host)
            self._local.group_add(group, channel)
            self._redis.group_add(group, member)
        elif route is _REDIS:
            self._redis.group_add(group, channel)
        else:
            _, inbox, host = route
            member = self._host_member(group, host)
            # Through the host's inbox: its forwarder adds the member there, before
            # any group copy sent after this call (one list, first in first out).
            self._redis.send(inbox, {CONTROL_KEY: "add", "group": group, "channel": channel})
            self._redis.group_add(group, member)

    def group_discard(self, group: str, channel: str) -> None:
        names.validate_group(group)
        route = self._routes.get(channel) if isinstance(channel, str) else None
        if route is None:
            route = self._route(channel)
        if route is _SHM:
            # The host's member in Redis stays until group_expiry: removing it when the
            # local group looks empty would race a concurrent group_add of this host.
            self._local.group_discard(group, channel)
        elif route is _REDIS:
            self._redis.group_discard(group, channel)
        else:
            self._redis.send(route[1], {CONTROL_KEY: "discard", "group": group, "channel": channel})

    def group_channels(self, group: str) -> list[str]:
        """This host's members and host-less ones (other hosts' are in their segments)."""
        names.validate_group(group)
        members = dict.fromkeys(self._local.group_channels(group))
        for member in self._redis.group_channels(group):
            if _INBOX_MEMBER.fullmatch(member) is None:
                members[member] = None
        return list(members)

    def send_group(self, group: str, message: Message) -> None:
        names.validate_group(group)
        self.serializer.encode(message, group, kind="group")
        self._local.send_group(group, message)
        self._redis.send_group(group, {**message, ORIGIN_KEY: self.host})

    # -- flush and statistics ------------------------------------------------------------

    def flush(self) -> None:
        """Empty this host's segment and every Redis key of the prefix (all hosts' share)."""
        self._local.flush()
        self._redis.flush()
        self._claim_segment()
        for plan in list(self._plans.values()):
            plan.refresh_at = 0.0  # the consumer registrations went too: renew at the next receive

    def global_statistics(self) -> dict[str, int]:
        """This host's segment plus Redis, without this host's inbox (counted again here)."""
        local = self._local.global_statistics()
        remote = self._redis.global_statistics()
        inbox = self._redis.channel_statistics(self.inbox)
        return {key: local[key] + remote[key] - inbox[key] for key in local}

    def channel_statistics(self, channel: str) -> dict[str, int]:
        """The channel's queue where this host sees it; another host's channel: its inbox."""
        route = self._routes.get(channel) if isinstance(channel, str) else None
        if route is None:
            route = self._route(channel)
        if route is _SHM:
            return self._local.channel_statistics(channel)
        if route is _REDIS:
            return self._redis.channel_statistics(channel)
        return self._redis.channel_statistics(route[1])

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def segment(self) -> Any:
        """This host's :class:`_ringbuf.Segment` (for tools and tests)."""
        return self._local.segment

    @property
    def local_layer(self) -> IPCChannelLayer:
        """The shared-memory side."""
        return self._local

    @property
    def redis_layer(self) -> RedisChannelLayer:
        """The Redis side."""
        return self._redis

    @property
    def forwarder_state(self) -> str:
        """This process's forwarder: NEW, STANDBY, ACTIVE or STOPPED (see :class:`_Forwarder`)."""
        return self._forwarder.state

    def _reset_in_child(self) -> None:
        # The parent's threads do not exist here. Its forwarder fd would keep the
        # parent's flock alive in this child: close our copy (the lock stays the
        # parent's), and volunteer afresh on this process's first receive.
        forwarder = self._forwarder
        fd, forwarder.fd = forwarder.fd, None
        forwarder.fd_lock = threading.Lock()
        if fd is not None:
            try:
                os.close(fd)
            except OSError:  # pragma: no cover
                pass
        self._forwarder = _Forwarder(self)
        self._forwarding = False
        self._plans = {}
        self._plans_lock = threading.Lock()

    def close(self) -> None:
        """Stop this process's forwarder and pumps, close both sides; shared state stays."""
        if self._closed:
            return
        self._closed = True
        _LAYERS.discard(self)
        self._forwarder.close()
        pumps = [plan.pump for plan in list(self._plans.values()) if plan.pump is not None]
        for pump in pumps:
            pump.close()
        try:
            self._redis.close()  # wakes threads blocked in Redis (their sockets are shut down)
        finally:
            # A thread of ours inside a segment call must be out of it before the
            # segment is unmapped. One waiting for the forwarder lock never touches
            # the segment again (it sees the layer closed), so it is not waited for.
            threads = [pump.thread for pump in pumps]
            if self._forwarder.state == "ACTIVE":
                threads.append(self._forwarder.thread)
            deadline = _monotonic() + min(self.blocking_timeout, 5.0) + 1.0
            for thread in threads:
                if thread is not None and thread is not threading.current_thread():
                    thread.join(max(0.0, deadline - _monotonic()))
            if any(thread is not None and thread.is_alive() for thread in threads):
                # Unmapping under a running call could crash the process; the
                # mapping goes with the process instead.
                logger.warning("%r: a forwarder or pump thread is still running; the segment stays "
                               "mapped until the process exits", self)
            else:
                self._local.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prefix={self.prefix!r}, host={self.host!r}, "
            f"local_channels={self.local_channels!r}, redis={self._redis!r})"
        )

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} cannot be pickled; make one per process with the same settings")


options.document(HybridChannelLayer, "hybrid")
