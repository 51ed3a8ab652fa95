"""Every option of every layer, declared once: name, default, allowed range, help.

The layers (:class:`ipc_layer.IPCChannelLayer`, :class:`ipc_layer.aio.IPCChannelLayer`,
:class:`ipc_layer.InMemoryChannelLayer`, :class:`ipc_layer.redis_layer.RedisChannelLayer`)
keep explicit keyword signatures, because users and IDEs read them and
``CHANNEL_LAYERS`` passes ``CONFIG`` as keyword arguments; but the default
of each parameter is read from the declaration here, and each constructor
makes one :func:`validate` call, so a value is accepted or refused the same
way by every layer, by :mod:`ipc_layer.loading`, and by the command lines
built with :func:`add_arguments` (gunicorn's ``config.py`` is the model:
one ``Setting`` per option, with its validator, feeding the command line
and the docs alike).

Theory of operation
-------------------
* An :class:`Option` is a name, a default, a :class:`Rule` (the check and
  the text of what it allows), a help line, the layer *kinds* that take it
  (``"base"`` is :class:`~ipc_layer.base.BaseChannelLayer`'s own subset,
  ``"ipc"``, ``"aio"``, ``"inmemory"``, ``"redis"``) and its command-line
  flag. A name is declared once per kind; ``prefix`` is declared twice
  because a segment name and a Redis key prefix obey different rules.
* :func:`validate` checks every value a kind takes (defaults for the
  missing ones) and returns a :class:`Config`; ``config[EXPIRY]`` is typed
  by the option. A check raises ``TypeError`` (wrong type) or ``ValueError``
  (out of range) naming the option, the value and what is allowed.
* Ranges come from what the C core can take, with documented sane bounds
  where the core's own limit would be meaningless (a 500-year expiry): the
  deadline arithmetic is u64 nanoseconds, capacities are u32, and
  ``rb_open`` refuses ``max_record`` above 2**30, ``slots`` above 2**24
  and ``waiters`` above 65536 (``_ringbuf/src/segment.c``). A value past
  the range used to construct and then fail every send with
  ``OverflowError`` or a raw cffi error; now the constructor refuses it.
* :func:`render_table` is the README's option table; a test fails when the
  two drift (``python -m ipc_layer.options`` prints the table).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union, overload

__all__ = [
    "BLOCKING_TIMEOUT",
    "CAPACITY",
    "CHANNEL_CAPACITY",
    "CLOCK",
    "EXPIRY",
    "GROUP_EXPIRY",
    "HOST",
    "HOSTS",
    "INBOX_CAPACITY",
    "IPC_OPTIONS",
    "KINDS",
    "LOCAL_CHANNELS",
    "LOCK_TIMEOUT",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_SIZE_MAX",
    "MODE",
    "OPTIONS",
    "OUTAGE_ERROR_AFTER",
    "PREFIX",
    "REDIS_OPTIONS",
    "REDIS_PREFIX",
    "RETRY_TIMEOUT",
    "SEGMENT_SIZE",
    "SLOTS",
    "SPIN_US",
    "TRUSTED_UIDS",
    "URL",
    "WAITERS",
    "WAKEUP",
    "CapacityKey",
    "Config",
    "Option",
    "Rule",
    "accepted",
    "add_arguments",
    "config_from_args",
    "document",
    "options_for",
    "param_docs",
    "render_table",
    "validate",
    "validate_capacity",
]

T = TypeVar("T")

CapacityKey = Union[str, "re.Pattern[str]"]

#: Layer kinds and the class each names (the README table's column heads).
KINDS: dict[str, str] = {
    "base": "ipc_layer.base.BaseChannelLayer",
    "ipc": "ipc_layer.IPCChannelLayer",
    "aio": "ipc_layer.aio.IPCChannelLayer",
    "inmemory": "ipc_layer.InMemoryChannelLayer",
    "redis": "ipc_layer.redis_layer.RedisChannelLayer",
    "hybrid": "ipc_layer.hybrid.HybridChannelLayer",
}
_SHARED = frozenset(KINDS)
_SEGMENT = frozenset({"ipc", "aio"})
#: Options of the shared-memory layer that the hybrid layer takes at its top level.
_SEGMENT_AND_HYBRID = _SEGMENT | {"hybrid"}

# -- limits, and where each comes from ---------------------------------------------

#: Capacities are u32 in the core (``rb_send``'s ``capacity``).
U32_MAX = (1 << 32) - 1
#: Longest expiry / group expiry: 10 years. Deadlines are u64 nanoseconds of
#: CLOCK_MONOTONIC (``now + expiry``); 10 years is 3.2e17 ns, leaving 1.8e19
#: of headroom, and anything longer is a units mistake, not a setting.
SECONDS_MAX = 10 * 365 * 86400
#: Longest bounded ``receive(block=True)``: one day. Callers loop on
#: ``(None, None)``; the bound only says how late a worker notices a stop.
BLOCKING_TIMEOUT_MAX = 86400
#: ``rb_open`` refuses a ``max_record`` above 2**30 (``RB_MAX_RECORD_LIMIT``, segment.c).
RECORD_MAX = 1 << 30
#: Bytes a record spends on its tag frame (1 length byte + a tag of at most
#: 255 bytes; ``ipc_layer.layer.FRAME_MAX``, which a test ties to this).
FRAME_RESERVE = 256
#: Largest ``max_message_size``: the core's largest record minus the frame.
MESSAGE_SIZE_MAX = RECORD_MAX - FRAME_RESERVE
#: Largest segment: the core counts record cells in a u32 capped at
#: 0xFFFFFFF0 cells of 256 bytes (segment.c), about 1 TiB; beyond that the
#: bytes would never be used. /dev/shm's own size is checked on creation.
SEGMENT_SIZE_MAX = 1 << 40
#: ``rb_open`` refuses more name-table rows or waiter rows (``RB_SLOTS_LIMIT``,
#: ``RB_WAITERS_LIMIT``, segment.c; a test ties these to the core).
SLOTS_MAX = 1 << 24
WAITERS_MAX = 65536
#: Longest spin before a blocking receive sleeps: one minute (the core takes
#: a u32 of microseconds, 71 minutes; a longer busy-wait is a units mistake).
SPIN_US_MAX = 60_000_000
#: The ways the Channels 4 layer wakes a waiting receive.
WAKEUPS = ("fd", "thread")
#: Most uids ``trusted_uids`` may list (``RB_TRUSTED_MAX``, ringbuf.h; a test ties them).
TRUSTED_MAX = 16
#: Uids are u32; (uid_t)-1 means "no uid" to chown(2), so it is not one.
UID_MAX = (1 << 32) - 2
#: Most shards of the Redis layer: channels_redis' ring has 4096 points, and a
#: shard needs at least one.
HOSTS_MAX = 4096
#: Longest ``retry_timeout`` / ``outage_error_after``: one hour.
REDIS_WAIT_MAX = 3600
#: Longest ``lock_timeout``: one day (the binding's ``LOCK_TIMEOUT_MAX``; a
#: lock held that long by a live process is not coming back by itself).
LOCK_TIMEOUT_MAX = 86400


# -- rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule(Generic[T]):
    """How one option's values are checked, described and parsed from a command line.

    :param check: ``(what, value) -> value``; raises ``TypeError`` or
        ``ValueError`` whose message starts with ``what``.
    :param allowed: the allowed values, for the docs and ``--help``.
    :param parse: a command-line string to a raw value (then checked);
        ``None`` if the option has no command-line form.
    """

    check: Callable[[str, object], T]
    allowed: str
    parse: Callable[[str], object] | None = None


def _type_name(value: object) -> str:
    return type(value).__name__


def _parse_number(text: str) -> float | int:
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None


_SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _parse_int(text: str) -> int:
    """``"100"``, ``"0x40"``; byte sizes may end in K, M, G or T (binary: ``64M``)."""
    body, scale = text.strip(), 1
    if body[-1:].lower() in _SIZE_SUFFIXES:
        body, scale = body[:-1], _SIZE_SUFFIXES[body[-1].lower()]
    try:
        return int(body, 0) * scale
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _parse_mode(text: str) -> int:
    """A file mode, octal with or without ``0o``: ``600``, ``0o640``."""
    body = text.strip()
    try:
        return int(body[2:] if body[:2].lower() == "0o" else body, 8)
    except ValueError:
        raise ValueError(f"not an octal file mode: {text!r}") from None


def seconds(maximum: int, maximum_text: str) -> Rule[float]:
    """A number of seconds in (0, ``maximum``]; ints stay ints."""
    allowed = f"seconds, > 0 and <= {maximum} ({maximum_text})"

    def check(what: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{what} must be a number of seconds, not {_type_name(value)}: {value!r}")
        # NaN fails both comparisons; an int too large for a float compares exactly.
        if not 0 < value <= maximum:
            raise ValueError(f"{what} must be a number of seconds > 0 and <= {maximum} ({maximum_text}), "
                             f"got {value!r}")
        return value

    return Rule(check, allowed, _parse_number)


def integer(minimum: int, maximum: int, note: str = "") -> Rule[int]:
    """An int (not a bool) in ``minimum..maximum``; ``note`` explains the bound."""
    suffix = f" ({note})" if note else ""
    allowed = f"int, {minimum}..{maximum}{suffix}"

    def check(what: str, value: object) -> int:
        # bool is an int subclass; True as a count is a config mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an int, not {_type_name(value)}: {value!r}")
        if not minimum <= value <= maximum:
            raise ValueError(f"{what} must be an int in {minimum}..{maximum}{suffix}, got {value!r}")
        return int(value)

    return Rule(check, allowed, _parse_int)


def _check_mode(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int file mode such as 0o600, not {_type_name(value)}: {value!r}")
    # Setuid/setgid/sticky bits on a segment are refused (issue 11): they mean
    # nothing for shared memory and only widen what a mistake can do. Without
    # the owner's read and write bits the owner's other processes could not
    # attach (and the core would silently turn 0 into 0o600).
    if not 0 <= value <= 0o777 or value & 0o600 != 0o600:
        shown = oct(value) if value >= 0 else repr(value)
        raise ValueError(f"{what} must be a file mode within 0o777 that includes 0o600 (the owner reads "
                         f"and writes the segment; no setuid, setgid or sticky bits), got {shown}")
    return int(value)


MODE_RULE: Rule[int] = Rule(_check_mode, "0o600..0o777, owner read+write required", _parse_mode)


def _check_uids(what: str, value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a sequence of uids (ints), not {_type_name(value)}: {value!r}")
    uids = tuple(value)
    for uid in uids:
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid <= UID_MAX:
            raise ValueError(f"{what}: {uid!r} is not a uid (an int in 0..{UID_MAX})")
    if len(uids) > TRUSTED_MAX:
        raise ValueError(f"{what} lists {len(uids)} uids, at most {TRUSTED_MAX} are allowed")
    return uids


def _parse_uids(text: str) -> tuple[int, ...]:
    """``"www-data,1001"``: user names or uids, comma-separated."""
    import pwd

    uids = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            uids.append(pwd.getpwnam(item).pw_uid)
        except KeyError:
            try:
                uids.append(int(item))
            except ValueError:
                raise ValueError(f"no such user: {item!r}") from None
    return tuple(uids)


def choice(*values: str) -> Rule[str]:
    """One of ``values``."""
    shown = ", ".join(repr(v) for v in values)

    def check(what: str, value: object) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{what} must be one of {shown}, not {_type_name(value)}: {value!r}")
        if value not in values:
            raise ValueError(f"{what} must be one of {shown}, got {value!r}")
        return value

    return Rule(check, f"one of {shown}", str)


_SEGMENT_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}", re.ASCII)


def _check_segment_prefix(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {_type_name(value)}: {value!r}")
    if _SEGMENT_PREFIX_RE.fullmatch(value) is None:
        raise ValueError(
            f"{what} {value!r} must be 1..100 ASCII letters, digits, '_', '.' or '-' "
            "(it names the /dev/shm file)"
        )
    return value


def _check_key_prefix(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {_type_name(value)}: {value!r}")
    if not value or value.isspace():
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    return value


_CAPACITY_RULE = integer(1, U32_MAX, "the core counts in a u32")


def validate_capacity(value: object, what: str = "capacity") -> int:
    """Return ``value`` if it is a valid capacity (an int in 1..2**32-1); ``what`` names it."""
    return _CAPACITY_RULE.check(what, value)


def _check_channel_capacity(what: str, value: object) -> dict[CapacityKey, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping of glob (or compiled regex) to capacity, or None, "
                        f"not {_type_name(value)}: {value!r}")
    checked: dict[CapacityKey, int] = {}
    for key, capacity in value.items():
        if not isinstance(key, (str, re.Pattern)):
            raise TypeError(f"{what} key {key!r} must be a glob str or a compiled regex, not {_type_name(key)}")
        checked[key] = validate_capacity(capacity, f"{what}[{key!r}]")
    return checked


def _parse_capacity_rule(text: str) -> tuple[str, int]:
    glob, sep, number = text.rpartition("=")
    if not sep or not glob:
        raise ValueError(f"expected GLOB=CAPACITY, got {text!r}")
    return glob, _parse_int(number)


def _check_optional_str(what: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a redis:// URL str or None, not {_type_name(value)}: {value!r}")
    return value


def _check_hosts(what: str, value: object) -> Sequence[Any] | None:
    # The entries' shapes are checked, each named hosts[i], where its pool is
    # built (ipc_layer.redis_shards.decode_host).
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a list of Redis addresses (one per shard), even for one server, "
                        f"not {_type_name(value)}: {value!r}")
    if not value:
        raise ValueError(f"{what} is empty; list at least one Redis server")
    if len(value) > HOSTS_MAX:
        raise ValueError(f"{what} lists {len(value)} servers; at most {HOSTS_MAX} (the consistent-hash ring "
                         "has 4096 points)")
    return value


def _check_clock(what: str, value: object) -> Callable[[], float]:
    if not callable(value):
        raise TypeError(f"{what} must be a callable returning monotonic seconds, not {_type_name(value)}: "
                        f"{value!r}")
    return value


# -- options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Option(Generic[T]):
    """One option: its name, default, rule, help, the kinds that take it, its flag.

    :param flag: the command-line flag (``None``: no command-line form);
        defaults to ``--`` plus the name with ``-`` for ``_``.
    :param default_text: how the docs show the default, when ``repr`` would not do.
    :param repeat: the flag may be given several times (``channel_capacity``).
    """

    name: str
    default: T
    rule: Rule[T]
    help: str
    kinds: frozenset[str]
    flag: str | None = ""
    default_text: str = ""
    repeat: bool = False

    def validate(self, value: object) -> T:
        """``value`` checked (``TypeError``/``ValueError`` naming this option otherwise)."""
        return self.rule.check(self.name, value)

    @property
    def cli_flag(self) -> str | None:
        """The command-line flag, or None when the option has no command-line form."""
        if self.flag is None or self.rule.parse is None:
            return None
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def shown_default(self) -> str:
        return self.default_text or repr(self.default)


PREFIX: Option[str] = Option(
    "prefix", "default", Rule(_check_segment_prefix, "1..100 of A-Z a-z 0-9 _ . -", str),
    "names the segment /dev/shm/rbuf.<prefix>; every layer with the same prefix shares all state",
    _SEGMENT_AND_HYBRID)
REDIS_PREFIX: Option[str] = Option(
    "prefix", "asgi:", Rule(_check_key_prefix, "non-empty str (':' appended if missing)", str),
    "every Redis key of the layer starts with it; flush() deletes only these keys",
    frozenset({"redis"}))
EXPIRY: Option[float] = Option(
    "expiry", 60, seconds(SECONDS_MAX, "10 years"),
    "seconds before an undelivered message is dropped", _SHARED)
GROUP_EXPIRY: Option[float] = Option(
    "group_expiry", 86400, seconds(SECONDS_MAX, "10 years"),
    "seconds a group membership lasts after its last group_add", _SHARED)
CAPACITY: Option[int] = Option(
    "capacity", 100, _CAPACITY_RULE,
    "messages a channel holds before send raises ChannelFull", _SHARED)
CHANNEL_CAPACITY: Option[dict[CapacityKey, int] | None] = Option(
    "channel_capacity", None,
    Rule(_check_channel_capacity, "{glob or regex: capacity}, capacities as for capacity",
         _parse_capacity_rule),
    "per-channel capacities by name glob (or compiled regex), first match wins "
    "(command line: GLOB=N, repeated)", _SHARED, repeat=True)
MAX_MESSAGE_SIZE: Option[int] = Option(
    "max_message_size", 1 << 20, integer(1, MESSAGE_SIZE_MAX, "2**30 - 256: the core's largest record"),
    "largest encoded message in bytes; MessageTooLarge above", _SHARED, default_text="1048576 (1 MiB)")
BLOCKING_TIMEOUT: Option[float] = Option(
    "blocking_timeout", 5.0, seconds(BLOCKING_TIMEOUT_MAX, "1 day"),
    "longest receive(block=True) waits before returning (None, None)",
    frozenset({"base", "ipc", "inmemory", "redis", "hybrid"}))
SPIN_US: Option[int] = Option(
    "spin_us", 0, integer(0, SPIN_US_MAX, "1 minute"),
    "microseconds a receive keeps looking before it sleeps (0: sleep at once); CPU for latency",
    _SEGMENT)
SEGMENT_SIZE: Option[int] = Option(
    "segment_size", 64 << 20, integer(0, SEGMENT_SIZE_MAX, "1 TiB; 0: the core's 64 MiB"),
    "bytes of the segment, reserved in /dev/shm by the process that creates it", _SEGMENT,
    default_text="67108864 (64 MiB)")
MODE: Option[int] = Option(
    "mode", 0o600, MODE_RULE, "file mode of a segment this layer creates (the umask does not narrow it), "
    "and the widest mode accepted on an existing one",
    _SEGMENT, default_text="0o600")
SLOTS: Option[int] = Option(
    "slots", 0, integer(0, SLOTS_MAX, "2**24; 0: the core's 16384"),
    "name-table rows (queues + groups + memberships) of a segment this layer creates", _SEGMENT)
WAITERS: Option[int] = Option(
    "waiters", 0, integer(0, WAITERS_MAX, "0: the core's 256"),
    "receivers that may sleep at once on a segment this layer creates", _SEGMENT)
TRUSTED_UIDS: Option[tuple[int, ...]] = Option(
    "trusted_uids", (), Rule(_check_uids, f"up to {TRUSTED_MAX} uids (command line: users or uids, "
                                          "comma-separated)", _parse_uids),
    "owners whose segment and watch FIFOs are used besides this process's effective uid; "
    "anyone else's, or one wider than mode, is refused (SegmentNotTrusted)", _SEGMENT,
    default_text="() (only this uid)")
LOCK_TIMEOUT: Option[float] = Option(
    "lock_timeout", 5.0, seconds(LOCK_TIMEOUT_MAX, "1 day"),
    "seconds an operation waits for the segment lock while a live process (stopped, traced) "
    "holds it, then raises LockTimeout (retryable back-pressure)", _SEGMENT)
WAKEUP: Option[str] = Option(
    "wakeup", "fd", choice(*WAKEUPS),
    "how a waiting receive is woken: 'fd' (the loop polls a FIFO senders poke) or 'thread' "
    "(a helper thread per queue)", frozenset({"aio"}))
CLOCK: Option[Callable[[], float]] = Option(
    "clock", time.monotonic, Rule(_check_clock, "a callable returning seconds"),
    "stamps messages and memberships (tests pass a manual clock)", frozenset({"inmemory"}),
    flag=None, default_text="time.monotonic")
URL: Option[str | None] = Option(
    "url", None, Rule(_check_optional_str, "redis:// URL (or rediss://, unix://) or None", str),
    "the Redis server; None: redis://127.0.0.1:6379/0 (query options reach redis-py)",
    frozenset({"redis"}), flag="--redis-url")
HOSTS: Option[Sequence[Any] | None] = Option(
    "hosts", None, Rule(_check_hosts, f"list of 1..{HOSTS_MAX} URLs, (host, port) pairs or dicts of options"),
    "instead of url, channels_redis' shape; several entries shard the layer (a dict may hold "
    "'sentinels' and 'master_name')", frozenset({"redis"}), flag=None)
RETRY_TIMEOUT: Option[float] = Option(
    "retry_timeout", 1.0, seconds(REDIS_WAIT_MAX, "1 hour"),
    "seconds an operation other than a blocking receive keeps reconnecting to a down Redis "
    "before it raises ShardDown", frozenset({"redis"}))
OUTAGE_ERROR_AFTER: Option[float] = Option(
    "outage_error_after", 10.0, seconds(REDIS_WAIT_MAX, "1 hour"),
    "seconds a Redis outage lasts before it is logged as an ERROR (once; the first failure is a "
    "WARNING)", frozenset({"redis"}))

#: A hybrid host name: what process and single-reader channel names carry to say
#: where they are received (``ipc_layer.hybrid``); short, so names keep room.
HOST_NAME_MAX = 24
_HOST_RE = re.compile(rf"[A-Za-z0-9-]{{1,{HOST_NAME_MAX}}}", re.ASCII)


def _check_host(what: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, not {_type_name(value)}: {value!r}")
    if _HOST_RE.fullmatch(value) is None:
        raise ValueError(f"{what} {value!r} must be 1..{HOST_NAME_MAX} ASCII letters, digits or '-' "
                         "(it is written into channel names)")
    return value


def _check_globs(what: str, value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of channel-name globs, not {_type_name(value)}: {value!r}")
    globs = tuple(value)
    for glob in globs:
        if not isinstance(glob, str) or not glob or any(char.isspace() for char in glob):
            raise ValueError(f"{what}: {glob!r} is not a channel-name glob (a non-empty str without spaces)")
    return globs


def _parse_globs(text: str) -> tuple[str, ...]:
    """``"http.*,websocket.*"``: globs, comma-separated."""
    return tuple(filter(None, (part.strip() for part in text.split(","))))


def _sub_options(kind: str, left_out: frozenset[str]) -> Callable[[str, object], dict[str, Any] | None]:
    """A check for a mapping of layer ``kind``'s options, each checked by its own rule."""

    def check(what: str, value: object) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise TypeError(f"{what} must be a mapping of {KINDS[kind]} options, or None, "
                            f"not {_type_name(value)}: {value!r}")
        declared = _kind(kind)
        allowed = sorted(name for name in declared if name not in left_out)
        checked: dict[str, Any] = {}
        for name, item in value.items():
            if name in left_out:
                raise TypeError(f"{what}[{name!r}]: set {name!r} at the top level of the hybrid layer's "
                                "config (it applies to both sides)")
            if name not in declared:
                raise TypeError(f"{what} got unknown option {name!r}; {KINDS[kind]} takes {allowed!r}")
            checked[name] = declared[name].validate(item)
        return checked

    return check


#: The hybrid layer sets these for both of its sides itself.
_HYBRID_SHARED = frozenset({"expiry", "group_expiry", "capacity", "channel_capacity", "max_message_size",
                            "blocking_timeout"})

HOST: Option[str | None] = Option(
    "host", None, Rule(_check_host, f"None or 1..{HOST_NAME_MAX} of A-Z a-z 0-9 -", str),
    "this host's name in the hybrid layer (every process sharing the segment must agree); "
    "None: the machine's host name plus a hash of it and prefix",
    frozenset({"hybrid"}), default_text="None (<hostname>-<hash>)")
LOCAL_CHANNELS: Option[tuple[str, ...]] = Option(
    "local_channels", ("http.*", "websocket.*", "__wait__.*"),
    Rule(_check_globs, "list of globs (command line: comma-separated)", _parse_globs),
    "normal channels consumed on every host, kept in this host's shared memory (the protocol "
    "server's and enforce_ordering's); the others go through Redis to any host's consumer",
    frozenset({"hybrid"}))
INBOX_CAPACITY: Option[int] = Option(
    "inbox_capacity", 10000, _CAPACITY_RULE,
    "messages waiting in Redis for one host's forwarder before senders to that host get "
    "ChannelFull (group sends skip the host)", frozenset({"hybrid"}))
IPC_OPTIONS: Option[dict[str, Any] | None] = Option(
    "ipc", None, Rule(_sub_options("ipc", _HYBRID_SHARED | {"prefix"}),
                      "None or {option: value} of the shared-memory layer"),
    "the shared-memory side's other options (segment_size, spin_us, mode, ...)",
    frozenset({"hybrid"}), flag=None)
REDIS_OPTIONS: Option[dict[str, Any] | None] = Option(
    "redis", None, Rule(_sub_options("redis", _HYBRID_SHARED),
                        "None or {option: value} of the Redis layer"),
    "the Redis side's options (url or hosts, prefix, ...); every host of a site uses the same",
    frozenset({"hybrid"}), flag=None)

#: Every declaration, in the order of the docs.
OPTIONS: tuple[Option[Any], ...] = (
    PREFIX, REDIS_PREFIX, EXPIRY, GROUP_EXPIRY, CAPACITY, CHANNEL_CAPACITY, MAX_MESSAGE_SIZE,
    BLOCKING_TIMEOUT, SPIN_US, SEGMENT_SIZE, MODE, SLOTS, WAITERS, TRUSTED_UIDS, LOCK_TIMEOUT,
    WAKEUP, CLOCK, URL, HOSTS, RETRY_TIMEOUT, OUTAGE_ERROR_AFTER, HOST, LOCAL_CHANNELS, INBOX_CAPACITY,
    IPC_OPTIONS, REDIS_OPTIONS,
)


def _index(declared: Iterable[Option[Any]]) -> dict[str, dict[str, Option[Any]]]:
    by_kind: dict[str, dict[str, Option[Any]]] = {kind: {} for kind in KINDS}
    for option in declared:
        for kind in option.kinds:
            if kind not in by_kind:
                raise ValueError(f"option {option.name!r} names an unknown layer kind {kind!r}")
            if option.name in by_kind[kind]:
                raise ValueError(f"option {option.name!r} is declared twice for {kind!r}")
            by_kind[kind][option.name] = option
    return by_kind


_BY_KIND = _index(OPTIONS)


def _kind(kind: str) -> dict[str, Option[Any]]:
    try:
        return _BY_KIND[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown layer kind {kind!r}; the kinds are {sorted(KINDS)}") from None


def options_for(kind: str) -> Mapping[str, Option[Any]]:
    """The options layer ``kind`` takes, by name, in declaration order."""
    return dict(_kind(kind))


def accepted(kind: str) -> tuple[str, ...]:
    """The option names layer ``kind`` takes, in declaration order."""
    return tuple(_kind(kind))


# -- validated configs -------------------------------------------------------------------


class Config:
    """The validated options of one layer kind: ``config[EXPIRY]`` (typed) or ``config["expiry"]``."""

    __slots__ = ("_values", "kind")

    def __init__(self, kind: str, values: dict[str, Any]) -> None:
        self.kind = kind
        self._values = values

    @overload
    def __getitem__(self, key: Option[T]) -> T: ...
    @overload
    def __getitem__(self, key: str) -> Any: ...
    def __getitem__(self, key: Option[Any] | str) -> Any:
        return self._values[key if isinstance(key, str) else key.name]

    def as_dict(self) -> dict[str, Any]:
        """Every option of this config by name."""
        return dict(self._values)

    def subset(self, kind: str) -> dict[str, Any]:
        """The values of this config that layer ``kind`` takes (to forward them to it)."""
        wanted = _kind(kind)
        return {name: value for name, value in self._values.items() if name in wanted}

    def __repr__(self) -> str:
        return f"Config({self.kind!r}, {self._values!r})"


#: Keys of a constructor's ``locals()`` that are not options.
_NOT_OPTIONS = frozenset({"self", "__class__"})


def validate(kind: str, values: Mapping[str, object] | None = None, *, owner: str | None = None) -> Config:
    """Check ``values`` for layer ``kind``; missing options take their defaults.

    Constructors pass ``locals()`` as their first statement (``self`` and
    ``__class__`` are skipped), so the signature is the only list of names.

    :raises TypeError: an option ``kind`` does not take (every one is named,
        with the accepted ones), or a value of the wrong type.
    :raises ValueError: a value out of range; the message names the option,
        the value and the range.
    """
    declared = _kind(kind)
    given = {name: value for name, value in (values or {}).items() if name not in _NOT_OPTIONS}
    unknown = sorted(name for name in given if name not in declared)
    if unknown:
        who = owner or KINDS[kind]
        raise TypeError(f"{who} got unknown option(s) {unknown!r}; it accepts {sorted(declared)!r}")
    return Config(kind, {
        name: option.validate(given[name]) if name in given else option.default
        for name, option in declared.items()
    })


# -- command lines ---------------------------------------------------------------------------


def _argparse_type(option: Option[Any]) -> Callable[[str], object]:
    parse = option.rule.parse
    if parse is None:  # add_arguments only calls this for options with a command-line form
        raise ValueError(f"option {option.name!r} has no command-line form")

    def convert(text: str) -> object:
        try:
            raw = parse(text)
            # A repeated option's items are checked together, in config_from_args.
            return raw if option.repeat else option.validate(raw)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = option.name  # argparse names it in "invalid <name> value"
    return convert


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, kind: str,
                  names: Iterable[str] | None = None) -> None:
    """Add a flag for each option of ``kind`` that has a command-line form (or for ``names``).

    Flags left out of the command line do not appear in the namespace, so
    :func:`config_from_args` returns only what was given and the layer's
    defaults stay the declared ones.
    """
    declared = _kind(kind)
    if names is None:  # every option that has a command-line form
        wanted = [name for name, option in declared.items() if option.cli_flag is not None]
    else:
        wanted = list(names)
    for name in wanted:
        if name not in declared:
            raise ValueError(f"{KINDS[kind]} has no option {name!r}; it has {sorted(declared)!r}")
        option = declared[name]
        flag = option.cli_flag
        if flag is None:
            raise ValueError(f"option {name!r} has no command-line form")
        parser.add_argument(
            flag, dest=name, type=_argparse_type(option), default=argparse.SUPPRESS,
            action="append" if option.repeat else "store",
            metavar="GLOB=N" if option.repeat else name.upper(),
            help=f"{option.help} (default {option.shown_default}; {option.rule.allowed})".replace("%", "%%"),
        )


def config_from_args(namespace: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The options of ``kind`` given on the command line, checked, ready as a layer's CONFIG."""
    config: dict[str, Any] = {}
    for name, option in _kind(kind).items():
        if name not in vars(namespace):
            continue
        value = getattr(namespace, name)
        config[name] = option.validate(dict(value)) if option.repeat else value
    return config


# -- docs ---------------------------------------------------------------------------------

#: Short column heads of the README table, one per layer kind (``base`` is implied).
_HEADS = {"ipc": "ipc", "aio": "aio", "inmemory": "mem", "redis": "redis", "hybrid": "hybrid"}


def render_table() -> str:
    """The README's option table (a reStructuredText ``list-table``), from the declarations."""
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - option",
        "     - layers",
        "     - default",
        "     - allowed",
        "     - meaning",
    ]
    for option in OPTIONS:
        layers = " ".join(head for kind, head in _HEADS.items() if kind in option.kinds)
        lines += [
            f"   * - ``{option.name}``",
            f"     - {layers}",
            f"     - {option.shown_default}",
            f"     - {option.rule.allowed}",
            f"     - {option.help}",
        ]
    return "\n".join(lines) + "\n"


def param_docs(kind: str) -> str:
    """``:param name: help (default; allowed)`` lines for the options of ``kind``, for docstrings."""
    return "".join(
        f"    :param {name}: {option.help} (default {option.shown_default}; {option.rule.allowed}).\n"
        for name, option in _kind(kind).items()
    )


def document(cls: type, kind: str) -> None:
    """Append the declared options of ``kind`` to the docstring of ``cls`` (unless run with -OO)."""
    if cls.__doc__ is not None:
        heading = "\n\n    Options (declared in :mod:`ipc_layer.options`):\n\n"
        cls.__doc__ = cls.__doc__.rstrip() + heading + param_docs(kind)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ipc_layer.options``: print the option table the README embeds."""
    parser = argparse.ArgumentParser(prog="python -m ipc_layer.options", description=main.__doc__)
    parser.parse_args(argv)
    sys.stdout.write(render_table())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
