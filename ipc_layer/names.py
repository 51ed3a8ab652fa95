"""Validation and parsing of ASGI 1 channel and group names.

Pure functions, no layer state. The rules are those of ASGI 1
(asgiref 1.1.2 ``base_layer.py``) with three deliberate differences:

* Names are ASCII only. ASGI 1's regex used ``\\w`` and ``\\d`` in their
  Unicode sense, so ``"£_test"`` slipped through; our C core keys queues by
  byte strings and DESIGN.md allows "ASCII letters, digits, ``-``, ``_``,
  ``.``", so every character class here is compiled with ``re.ASCII``.
* Names of exactly ``MAX_NAME_LENGTH`` (100) characters are accepted; asgiref
  checked ``len < 100`` although the spec asks layers to support "at least
  100".
* The regexes are applied with ``fullmatch``: ``^...$`` lets a trailing
  newline through (``$`` matches before a final ``\\n``).

Every check raises ``TypeError`` (what ASGI 1 specifies for bad names) with
the offending name quoted and the broken rule spelled out; nothing uses
``assert``, so ``python -O`` keeps the checks.

Channel kinds:

* ``name``       a normal channel, any number of readers.
* ``name?xyz``   a single-reader channel; ``name?`` alone is a *pattern* for
  ``new_channel()``, never a channel.
* ``name!xyz``   a process-specific channel; the process that owns ``name!``
  receives on ``name!`` and gets everything sent to ``name!<anything>``.
  Receiving on ``name!xyz`` directly is an error.

Names that passed are remembered (a plain dict per check, bounded by
:mod:`_memo`'s rule) because the same few names are checked on every send
and receive: a hit is one dict lookup.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable

from _memo import remember

__all__ = [
    "MAX_NAME_LENGTH",
    "SUFFIX_LENGTH",
    "is_process_channel",
    "new_channel_name",
    "new_process_channel_name",
    "non_local_name",
    "random_suffix",
    "split_process_channel",
    "validate_channel",
    "validate_group",
    "validate_new_channel_pattern",
    "validate_process_prefix",
    "validate_receive_channel",
    "validate_receive_channels",
]

#: Longest channel or group name accepted (inclusive).
MAX_NAME_LENGTH = 100

#: Length of the random part ``new_channel()`` and ``new_process_channel()``
#: append: 12 characters of 62 symbols is ~71 bits, so collisions between
#: processes that never talk to each other are not a practical concern.
SUFFIX_LENGTH = 12

# The alphabet must be valid in every part of a name.
_SUFFIX_ALPHABET = string.ascii_letters + string.digits

_CHARS = r"[a-zA-Z0-9\-_.]"
_CHANNEL_RE = re.compile(rf"{_CHARS}+(?:[?!]{_CHARS}*)?", re.ASCII)
_GROUP_RE = re.compile(rf"{_CHARS}+", re.ASCII)
_BAD_CHAR_RE = re.compile(r"[^a-zA-Z0-9\-_.?!]", re.ASCII)
_BAD_GROUP_CHAR_RE = re.compile(r"[^a-zA-Z0-9\-_.]", re.ASCII)
_ALLOWED = "ASCII letters, digits, '-', '_' and '.'"

# Names that passed each check (name -> name), bounded by _memo.remember: an
# evicted name is just validated again. Failures are never stored.
_CHANNELS_OK: dict[str, str] = {}
_RECEIVE_OK: dict[str, str] = {}
_GROUPS_OK: dict[str, str] = {}

# Quoted names are cut to this length so a 10 MB "name" does not produce a
# 10 MB exception message.
_QUOTE_LIMIT = 120


def _quote(name: object) -> str:
    text = repr(name)
    if len(text) > _QUOTE_LIMIT:
        text = f"{text[:_QUOTE_LIMIT]}... ({len(name) if isinstance(name, str) else '?'} chars)"
    return text


def _require_str(name: object, kind: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, not {type(name).__name__}: {_quote(name)}")
    return name


def _charset_problem(name: str, kind: str, markers: bool) -> str:
    """Say which rule ``name`` breaks; only called once the regex failed."""
    if not name:
        return f"{kind} name must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"{kind} name {_quote(name)} is {len(name)} characters long, over the limit of {MAX_NAME_LENGTH}"
    bad = (_BAD_CHAR_RE if markers else _BAD_GROUP_CHAR_RE).search(name)
    if bad is not None:
        allowed = f"{_ALLOWED}, with at most one '!' or '?' marker" if markers else _ALLOWED
        return (
            f"{kind} name {_quote(name)} has the invalid character {bad.group()!r} at index "
            f"{bad.start()}; only {allowed} are allowed"
        )
    first = min((i for i in (name.find("!"), name.find("?")) if i >= 0), default=-1)
    if first == 0:
        return f"{kind} name {_quote(name)} must not start with {name[0]!r}"
    return (
        f"{kind} name {_quote(name)} has more than one '!' or '?' marker; "
        f"a name is 'base', 'base?suffix' or 'base!suffix'"
    )


def _check_channel(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or _CHANNEL_RE.fullmatch(name) is None:
        raise TypeError(_charset_problem(name, "channel", markers=True))
    if name.endswith("?"):
        raise TypeError(
            f"channel name {_quote(name)} ends with '?': that is a pattern for new_channel(), "
            "not a channel; a single-reader channel name has a suffix after the '?'"
        )
    return name


def _check_receive_channel(name: str) -> str:
    _check_channel(name)
    bang = name.find("!")
    if bang >= 0 and bang != len(name) - 1:
        raise TypeError(
            f"cannot receive on the process-specific channel {_quote(name)} directly; "
            f"receive on {name[: bang + 1]!r}, which gets every message sent to "
            f"{name[: bang + 1] + '<anything>'!r}"
        )
    return name


def _check_group(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or _GROUP_RE.fullmatch(name) is None:
        raise TypeError(_charset_problem(name, "group", markers=False))
    return name


def _remembered(passed: dict[str, str], check: Callable[[str], str], name: object, kind: str) -> str:
    """``name`` if ``passed`` holds it (one dict lookup), else ``check`` it and remember it."""
    if type(name) is str:  # only a str meets the str keys (bytes == str warns under -b)
        try:
            return passed[name]
        except KeyError:
            pass
    checked = check(_require_str(name, kind))
    return remember(passed, checked, checked)


def validate_channel(name: object) -> str:
    """Return ``name`` if a message may be sent to it, else raise ``TypeError``.

    Accepts normal, ``base?suffix`` and ``base!suffix`` (and ``base!``) names;
    also the rule for group members.
    """
    return _remembered(_CHANNELS_OK, _check_channel, name, "channel")


def validate_receive_channel(name: object) -> str:
    """Return ``name`` if it may be received on, else raise ``TypeError``.

    Like :func:`validate_channel`, except that a process-specific name must
    end at its ``!`` (``"name!"`` is fine, ``"name!x"`` is not).
    """
    return _remembered(_RECEIVE_OK, _check_receive_channel, name, "channel")


def validate_receive_channels(channels: object) -> list[str]:
    """Validate the ``channels`` argument of ``receive()``; return it as a list.

    It must be a non-empty list or tuple of names. A bare ``str`` is refused
    explicitly: iterating it would "receive" on one-letter channels.
    """
    if isinstance(channels, (str, bytes)) or not isinstance(channels, (list, tuple)):
        raise TypeError(
            f"channels must be a list of channel names, not {type(channels).__name__}: {_quote(channels)}"
        )
    if not channels:
        raise ValueError("channels must name at least one channel; got an empty list")
    return [validate_receive_channel(name) for name in channels]


def validate_group(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise ``TypeError``.

    Group names use the channel charset without ``!`` or ``?``.
    """
    return _remembered(_GROUPS_OK, _check_group, name, "group")


def validate_new_channel_pattern(pattern: object) -> str:
    """Return ``pattern`` if ``new_channel()`` accepts it, else raise ``TypeError``.

    Only ``base?`` patterns are accepted, as ASGI 1's conformance suite
    requires: a ``!`` channel is named by the process that will receive on it
    (see :func:`new_process_channel_name`). The pattern must leave room for
    the :data:`SUFFIX_LENGTH` random characters within :data:`MAX_NAME_LENGTH`.
    """
    text = _require_str(pattern, "new_channel() pattern")
    if "!" in text:
        raise TypeError(
            f"new_channel() pattern {_quote(text)} contains '!': only single-reader 'name?' patterns "
            "are accepted; a process gets its own 'name!' channel from new_process_channel()"
        )
    if not text.endswith("?") or "?" in text[:-1]:
        raise TypeError(
            f"new_channel() pattern {_quote(text)} must be a base name followed by exactly one '?', "
            "e.g. 'http.request.body?'"
        )
    base = text[:-1]
    if _GROUP_RE.fullmatch(base) is None:
        raise TypeError(_charset_problem(base, "new_channel() pattern base", markers=False))
    limit = MAX_NAME_LENGTH - SUFFIX_LENGTH
    if len(text) > limit:
        raise TypeError(
            f"new_channel() pattern {_quote(text)} is {len(text)} characters long; at most {limit} "
            f"leave room for the {SUFFIX_LENGTH}-character unique suffix"
        )
    return text


def validate_process_prefix(prefix: object) -> str:
    """Return ``prefix`` if :func:`new_process_channel_name` accepts it.

    The prefix is a plain base name (group charset, no markers) short enough
    for ``prefix + "." + suffix + "!"`` to fit in :data:`MAX_NAME_LENGTH`.
    """
    text = _require_str(prefix, "process channel prefix")
    if _GROUP_RE.fullmatch(text) is None:
        raise TypeError(
            _charset_problem(text, "process channel prefix", markers=False)
            + " (the layer adds the '!' itself)"
        )
    limit = MAX_NAME_LENGTH - SUFFIX_LENGTH - 2
    if len(text) > limit:
        raise TypeError(
            f"process channel prefix {_quote(text)} is {len(text)} characters long; at most {limit} "
            f"leave room for '.', the {SUFFIX_LENGTH}-character unique suffix and '!'"
        )
    return text


def is_process_channel(name: str) -> bool:
    """True for ``base!`` and ``base!suffix`` names."""
    return "!" in name


def non_local_name(name: str) -> str:
    """The queue a channel's messages live in: ``"a!b"`` -> ``"a!"``, else ``name``.

    Capacity, statistics and receiving all work on this name.
    """
    bang = name.find("!")
    return name if bang < 0 else name[: bang + 1]


def split_process_channel(name: str) -> tuple[str, str]:
    """Split ``"base!suffix"`` into ``("base!", "suffix")``.

    ``"base!"`` gives ``("base!", "")``; a name without ``!`` gives
    ``(name, "")``, so the first element is always :func:`non_local_name`.
    """
    bang = name.find("!")
    if bang < 0:
        return name, ""
    return name[: bang + 1], name[bang + 1 :]


def random_suffix(length: int = SUFFIX_LENGTH) -> str:
    """``length`` random letters and digits from ``secrets`` (never ``random``).

    ``secrets`` cannot be seeded or forked into identical streams, unlike
    ``random`` after ``fork()``, which made asgi_ipc and daphne 1.x processes
    pick the same "unique" names.
    """
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


def new_channel_name(pattern: str) -> str:
    """A fresh single-reader name ``pattern + suffix`` after validating ``pattern``.

    The layer still checks that the name is not in use before returning it.
    """
    return validate_new_channel_pattern(pattern) + random_suffix()


def new_process_channel_name(prefix: str) -> str:
    """A fresh process-specific name ``"<prefix>.<suffix>!"``."""
    return f"{validate_process_prefix(prefix)}.{random_suffix()}!"
