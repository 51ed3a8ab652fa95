"""``Message``, what a consumer gets, and the store of sends deferred until the consumer returns.

Theory of operation
-------------------
``Message(content, channel_name, channel_layer)`` wraps one received ASGI message: the dict
(``content``, also readable as ``message[key]``), the channel it came on (``channel``, a
:class:`~worker.channel.Channel`) and the ``reply_channel`` (a ``Channel``, or None when
the message carries none). Decorators hang more on it (``channel_session``, ``http_session``,
``user``), as in Channels 1.x.

Deferred sends (:data:`pending_message_store`, one per thread: ``--threads`` workers each
run their own consumer):

* the worker's dispatch (:mod:`worker.dispatch`) calls :meth:`PendingMessageStore.prepare`
  before a consumer runs; from then on ``Channel.send``/``Group.send`` without
  ``immediately=True`` append a *copy* of the content (so the consumer may go on mutating
  its dict, as after a real send) to the thread's batch;
* when the consumer returns, :meth:`~PendingMessageStore.send_and_flush` sends the batch in
  order. A send that meets ``ChannelFull`` is retried with a growing pause (5 ms doubling up
  to ``retry_interval``) until ``retry_time`` has passed since the flush began: one budget
  for the whole batch, so a batch of N sends to a stuck channel costs ``retry_time``, not
  N times it (Channels 1.x gave each message its own 2 s). A send still failing after that
  gets one last try; then :class:`~worker.exceptions.SendFailed` names every channel that
  failed, after every other send of the batch went out;
* when the consumer fails, :meth:`~PendingMessageStore.discard` drops the batch (logged):
  a half-done consumer does not send half its replies, and a message put back with
  ``ConsumeLater`` does not send its replies twice;
* batches nest (a stack): a consumer run from inside another one (the test tools'
  ``consume``) gets its own, and the outer one is untouched.

Group sends never raise ``ChannelFull`` (full members are skipped by the layer), so only
channel sends are retried.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, ItemsView, Iterator, KeysView, ValuesView
from typing import Any

from ipc_layer import ChannelFull

from .channel import Channel, _Sender
from .exceptions import SendFailed

__all__ = ["Message", "PendingMessageStore", "pending_message_store"]

logger = logging.getLogger(__name__)


class Message:
    """One received message: ``content`` (dict), ``channel``, ``reply_channel``, ``channel_layer``."""

    def __init__(self, content: dict[str, Any], channel_name: str, channel_layer: Any) -> None:
        if not isinstance(content, dict):
            raise TypeError(f"message content on {channel_name!r} must be a dict, got {type(content).__name__}")
        self.content = content
        self.channel_layer = channel_layer
        self.channel = Channel(channel_name, channel_layer=channel_layer)
        reply = content.get("reply_channel")
        self.reply_channel: Channel | None = Channel(reply, channel_layer=channel_layer) if reply else None

    def __getitem__(self, key: str) -> Any:
        return self.content[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.content[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.content

    def __iter__(self) -> Iterator[str]:
        return iter(self.content)

    def keys(self) -> KeysView[str]:
        return self.content.keys()

    def values(self) -> ValuesView[Any]:
        return self.content.values()

    def items(self) -> ItemsView[str, Any]:
        return self.content.items()

    def get(self, key: str, default: Any = None) -> Any:
        return self.content.get(key, default)

    def copy(self) -> Message:
        """A message with a deep copy of the content, safe to mutate."""
        return type(self)(copy.deepcopy(self.content), self.channel.name, self.channel_layer)

    def __repr__(self) -> str:
        return f"<Message on {self.channel.name!r} keys={sorted(self.content)!r}>"


class PendingMessageStore:
    """Per-thread batches of deferred sends (see the module docstring)."""

    #: Seconds a flush keeps retrying sends that meet ChannelFull (Channels 1.x: 2 s).
    retry_time = 2.0
    #: Longest pause between two tries of one send (Channels 1.x: a fixed 0.2 s).
    retry_interval = 0.2
    #: First pause; it doubles up to ``retry_interval``.
    first_interval = 0.005

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._local = threading.local()
        self.clock = clock
        self.sleep = sleep

    def _stack(self) -> list[list[tuple[_Sender, dict[str, Any]]]]:
        stack: list[list[tuple[_Sender, dict[str, Any]]]] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def prepare(self, **kwargs: Any) -> None:
        """Start a batch for the consumer about to run in this thread (kwargs: signal arguments)."""
        self._stack().append([])

    @property
    def active(self) -> bool:
        """Whether a consumer is running in this thread (sends are deferred)."""
        return bool(getattr(self._local, "stack", None))

    def append(self, sender: _Sender, content: dict[str, Any]) -> None:
        """Defer a send of a copy of ``content`` by ``sender`` (a Channel or Group)."""
        stack = self._stack()
        if not stack:
            raise RuntimeError(f"no consumer is running in this thread: send to {sender!r} now instead")
        stack[-1].append((sender, copy.deepcopy(content)))

    def pending(self) -> list[tuple[_Sender, dict[str, Any]]]:
        """The current batch (the test tools read it); empty outside a consumer."""
        stack = self._stack()
        return list(stack[-1]) if stack else []

    def discard(self) -> int:
        """Drop the current batch unsent; returns how many sends it held."""
        stack = self._stack()
        if not stack:
            return 0
        batch = stack.pop()
        if batch:
            logger.warning(
                "dropped %d deferred send(s) of a consumer that did not return (to %s)",
                len(batch), ", ".join(sorted({repr(s) for s, _ in batch})),
            )
        return len(batch)

    def send_and_flush(self, **kwargs: Any) -> None:
        """Send the current batch in order, retrying ChannelFull within ``retry_time``.

        :raises SendFailed: naming each send that still failed (the others were sent).
        """
        stack = self._stack()
        if not stack:
            return
        batch = stack.pop()
        if not batch:
            return
        deadline = self.clock() + self.retry_time
        failures: list[tuple[str, BaseException]] = []
        for sender, content in batch:
            error = self._send_until(sender, content, deadline)
            if error is not None:
                failures.append((repr(sender), error))
        if failures:
            raise SendFailed(self._explain(failures), failures) from failures[0][1]

    def _send_until(self, sender: _Sender, content: dict[str, Any], deadline: float) -> BaseException | None:
        full = getattr(sender.channel_layer, "ChannelFull", ChannelFull)
        pause = self.first_interval
        while True:
            try:
                sender._send_now(content)
                return None
            except full as exc:
                now = self.clock()
                if now >= deadline:
                    return exc
                self.sleep(min(pause, deadline - now))
                pause = min(pause * 2, self.retry_interval)
            except Exception as exc:  # MessageTooLarge, a bad name: reported with the rest
                return exc

    def _explain(self, failures: list[tuple[str, BaseException]]) -> str:
        lines = [
            f"  {target}: {type(error).__name__}: {error}"
            + (f" (still full after retrying for {self.retry_time:g} s)" if isinstance(error, ChannelFull) else "")
            for target, error in failures
        ]
        return (
            f"{len(failures)} deferred send(s) made by the consumer failed:\n" + "\n".join(lines) + "\n"
            "A full channel needs a faster consumer or a larger capacity; or send with "
            "immediately=True and handle ChannelFull yourself."
        )


#: The process's store (each thread has its own batches).
pending_message_store = PendingMessageStore()
