"""msgpack encoding of ASGI messages, limited to the ASGI value types.

An ASGI 1 message is a ``dict`` with ``str`` keys whose values are ``dict``
(str keys again), ``list``/``tuple`` (a tuple comes back as a list), ``str``,
``bytes``, ``int`` (msgpack's range, -2**63 .. 2**64-1), ``float``, ``bool``
or ``None``. ``bytes`` and ``str`` stay distinct through a round trip
(``use_bin_type=True`` on the way in, ``raw=False`` on the way out), which is
what asgi_ipc lost when msgpack 1.0 dropped ``encoding=``.

Why a walk before packing
-------------------------
msgpack alone is not strict enough: it happily packs ``int``/``bytes`` map
keys, ``bytearray``, ``memoryview``, ``ExtType`` (a tuple subclass) and
``Timestamp``, none of which is an ASGI type, and an ``int`` key only fails
on the *receiving* side (``strict_map_key``), far from the bug. Key types
cannot be checked more cheaply than by visiting every dict, so
:meth:`Serializer.encode` does:

1. a fast validity walk (:func:`_valid`): ``type() is`` checks only, no path
   bookkeeping, no exceptions; it costs about what packing costs (~0.3 us for
   a small message, ~2.5 us for an ``http.request`` with 12 headers). It
   also adds up the lengths of the top-level ``bytes``/``str`` values: when
   they alone exceed the limit, ``MessageTooLarge`` is raised before packing
   (a 200 MiB body is never copied into an encoding only to be refused);
2. packing, with a per-thread ``msgpack.Packer``; its only remaining
   failures are an ``int`` out of range and a ``str`` with lone surrogates;
3. only when 1 or 2 fails, a slow walk (:func:`_find_culprit`) that tracks the
   key path and raises ``TypeError`` (wrong type) or ``ValueError`` (value
   out of range) naming it, e.g. ``message['headers'][2][1]``.

Subclasses of the allowed types (``OrderedDict``, Django's ``SafeString``,
``IntEnum``) are accepted through an ``isinstance`` fallback that the exact
types never reach.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from . import options
from .exceptions import MessageTooLarge

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "MAX_DEPTH", "Serializer", "decode", "encode"]

#: ASGI 1 asks layers to carry messages of at least 1 MB (encoded as JSON);
#: msgpack is never larger than JSON for the same content, so 1 MiB suffices
#: (declared, with its range, as :data:`ipc_layer.options.MAX_MESSAGE_SIZE`).
DEFAULT_MAX_MESSAGE_SIZE = options.MAX_MESSAGE_SIZE.default

#: Deepest container nesting accepted. Well below msgpack's own limit (511)
#: and Python's recursion limit; real ASGI messages nest 3 levels at most.
#: A reference cycle hits this limit instead of looping forever.
MAX_DEPTH = 64

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1

_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
_SCALAR_BASES = (str, bytes, int, float)
# A namedtuple that msgpack packs as an extension type, not as an array.
_EXCLUDED = (msgpack.ExtType,)
_ALLOWED = "dict with str keys, list, tuple, str, bytes, int, float, bool or None"
_PATH_LIMIT = 200


def _valid(obj: Any, depth: int) -> bool:
    """True if ``obj`` (a container) holds only ASGI types and str keys.

    Hot path: identity type checks, no path bookkeeping, no exceptions.
    """
    if depth > MAX_DEPTH:
        return False
    if type(obj) is dict or isinstance(obj, dict):
        for key in obj:
            if type(key) is not str and not isinstance(key, str):
                return False
        values = obj.values()
    else:
        values = obj
    for value in values:
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is list or kind is tuple:
            # Lists of scalars (header pairs) are checked inline, saving a
            # call each; the first container inside means a real recursion.
            if depth >= MAX_DEPTH:
                return False
            for item in value:
                if type(item) not in _SCALARS:
                    if not _valid(value, depth + 1):
                        return False
                    break
        elif kind is dict:
            if not _valid(value, depth + 1):
                return False
        elif isinstance(value, _EXCLUDED):
            return False
        elif isinstance(value, (dict, list, tuple)):
            if not _valid(value, depth + 1):
                return False
        elif not isinstance(value, _SCALAR_BASES):
            return False
    return True


def _valid_message(message: dict[str, Any]) -> int:
    """:func:`_valid` for the message itself, also adding up its top-level bytes/str lengths.

    Returns -1 if the message is not valid (the slow walk then names the
    culprit), else the sum of the lengths of its top-level ``bytes`` and
    ``str`` values: a lower bound of the encoded size, so a sum over the
    limit is refused before msgpack copies a 200 MiB body into an encoding.
    The sum costs one identity test per top-level value; nested values are
    left to the check of the encoded size.
    """
    for key in message:
        if type(key) is not str and not isinstance(key, str):
            return -1
    known = 0
    for value in message.values():
        kind = type(value)
        if kind in _SCALARS:
            if kind is bytes or kind is str:
                known += len(value)  # a str encodes to at least one byte per character
            continue
        if kind is list or kind is tuple:
            for item in value:
                if type(item) not in _SCALARS:
                    if not _valid(value, 1):
                        return -1
                    break
        elif kind is dict:
            if not _valid(value, 1):
                return -1
        elif isinstance(value, _EXCLUDED):
            return -1
        elif isinstance(value, (dict, list, tuple)):
            if not _valid(value, 1):
                return -1
        elif not isinstance(value, _SCALAR_BASES):
            return -1
    return known


def _format_path(parts: list[str]) -> str:
    path = "message" + "".join(parts)
    if len(path) > _PATH_LIMIT:
        path = path[: _PATH_LIMIT // 2] + "..." + path[-_PATH_LIMIT // 2 :]
    return path


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} of type {type(value).__name__}"


def _find_culprit(obj: Any, parts: list[str], depth: int) -> tuple[type[Exception], str] | None:
    """Return (exception class, message) for the first bad item, or None."""
    if depth > MAX_DEPTH:
        return ValueError, (
            f"{_format_path(parts)} is nested more than {MAX_DEPTH} containers deep "
            "(a reference cycle?)"
        )
    if isinstance(obj, dict):
        items: Any = obj.items()
    else:
        items = enumerate(obj)
    for key, value in items:
        if isinstance(obj, dict):
            if not isinstance(key, str):
                return TypeError, (
                    f"{_format_path(parts)} has the key {_describe(key)}; ASGI message keys must be str"
                )
            try:
                key.encode("utf-8")
            except UnicodeEncodeError as exc:
                return ValueError, (
                    f"{_format_path(parts)} has the key {key!r}, a str that is not valid UTF-8 "
                    f"({exc.reason} at index {exc.start})"
                )
        here = [*parts, f"[{key!r}]"]
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                return ValueError, (
                    f"{_format_path(here)} is the int {value!r}, outside msgpack's range "
                    f"-2**63 .. 2**64-1"
                )
            continue
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return ValueError, (
                    f"{_format_path(here)} is a str that is not valid UTF-8 "
                    f"({exc.reason} at index {exc.start})"
                )
            continue
        if isinstance(value, (bytes, float)):
            continue
        if isinstance(value, (dict, list, tuple)) and not isinstance(value, _EXCLUDED):
            found = _find_culprit(value, here, depth + 1)
            if found is not None:
                return found
            continue
        return TypeError, (
            f"{_format_path(here)} is {_describe(value)}, which an ASGI message cannot carry "
            f"(allowed: {_ALLOWED})"
        )
    return None


class Serializer:
    """Encode and decode ASGI messages with msgpack, enforcing a size limit.

    :param max_size: largest encoded message in bytes; ``None`` for no limit.

    Thread-safe: each thread packs with its own ``msgpack.Packer`` (reusing a
    packer is ~25% faster than ``packb``, but a packer's buffer is not
    shareable between threads).
    """

    __slots__ = ("_local", "max_size")

    def __init__(self, max_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_size is not None:
            if isinstance(max_size, bool) or not isinstance(max_size, int):
                raise TypeError(f"max_size must be an int or None, not {type(max_size).__name__}: {max_size!r}")
            if max_size < 1:
                raise ValueError(f"max_size must be >= 1, got {max_size!r}")
        self.max_size = max_size
        self._local = threading.local()

    def _packer(self) -> msgpack.Packer:
        packer: msgpack.Packer | None = getattr(self._local, "packer", None)
        if packer is None:
            packer = msgpack.Packer(use_bin_type=True, autoreset=True)
            self._local.packer = packer
        return packer

    def encode(self, message: dict[str, Any], channel: str | None = None, *, kind: str = "channel") -> bytes:
        """Return the msgpack bytes of ``message``.

        :param channel: only used to name the destination in error messages,
            as ``"message for <kind> '<channel>': ..."``.
        :param kind: what ``channel`` is, e.g. ``"group"`` for ``send_group``.
        :raises TypeError: ``message`` is not a dict, or holds a value or key
            of a non-ASGI type (the message names its path).
        :raises ValueError: an int out of range or nesting too deep (path named).
        :raises MessageTooLarge: the encoding is over ``max_size``.
        """
        if not isinstance(message, dict):
            raise TypeError(
                f"{_for(channel, kind)}message must be a dict, not {_describe(message)}"
            )
        data: bytes | None = None
        known = _valid_message(message)
        limit = self.max_size
        if limit is not None and known > limit:
            # Refused before encoding: the top-level bytes/str alone are too big.
            raise MessageTooLarge(
                f"{_for(channel, kind)}message holds {known:,} bytes of str/bytes values, over "
                f"the limit of {limit:,} bytes (max_message_size) before it is even encoded; "
                "split large bodies into chunks"
            )
        if known >= 0:
            try:
                data = self._packer().pack(message)
            except (OverflowError, ValueError, TypeError):
                data = None  # Fall through to the walk that names the culprit.
        if data is None:
            found = _find_culprit(message, [], 0)
            if found is None:
                # msgpack refused something the walk allows; still name the channel.
                raise TypeError(f"{_for(channel, kind)}message cannot be encoded with msgpack")
            error, text = found
            raise error(f"{_for(channel, kind)}{text}")
        if self.max_size is not None and len(data) > self.max_size:
            raise MessageTooLarge(
                f"{_for(channel, kind)}message is {len(data):,} bytes encoded, over the limit of "
                f"{self.max_size:,} bytes (max_message_size); split large bodies into chunks"
            )
        return data

    def decode(self, data: bytes) -> dict[str, Any]:
        """Return the message dict ``data`` encodes (lists for tuples).

        :raises ValueError: ``data`` is not a msgpack-encoded dict.
        """
        try:
            message = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        # msgpack's ExtraData, FormatError and StackError are all ValueErrors.
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot decode message of {len(data)} bytes: {exc}") from exc
        if not isinstance(message, dict):
            raise ValueError(f"decoded message is a {type(message).__name__}, not a dict")
        return message


def _for(channel: str | None, kind: str) -> str:
    return "" if channel is None else f"message for {kind} {channel!r}: "


_DEFAULT = Serializer()


def encode(message: dict[str, Any], channel: str | None = None, *, kind: str = "channel") -> bytes:
    """:meth:`Serializer.encode` with the default 1 MiB limit."""
    return _DEFAULT.encode(message, channel, kind=kind)


def decode(data: bytes) -> dict[str, Any]:
    """:meth:`Serializer.decode`."""
    return _DEFAULT.decode(data)
