"""The one bridge from the channel layer into the reactor: replies for this server, no polling.

Three ways, picked by what the layer offers (``layer.extensions``):

* :class:`StreamReader` (``"twisted_stream"``, the shared-memory layer's):
  ``layer.receive_twisted_stream([channel], dispatch, on_error)`` hands
  every reply to ``dispatch`` as it comes, from the FD watch's own reactor
  callback: one standing wait drained at each wake-up and re-armed only
  when the channel is empty, no Deferred, no extra reactor turn and no new
  waiter per reply. The default where the layer has it.
* :class:`TwistedReader`: the ASGI 1 ``twisted`` extension.
  ``layer.receive_twisted([channel])`` returns a Deferred that fires with
  ``(channel, message)``; the shared-memory layer serves it from the core's
  FD watch registered as a reactor reader, so a reply wakes the reactor
  directly (one kernel wake-up, no thread). Each result asks for the next.
* :class:`ThreadReader`: a thread blocked in ``layer.receive([channel],
  block=True)`` (the layer sleeps in the kernel, GIL released) hands each
  message to the reactor with ``callFromThread``. Works on any layer.

Either way, messages reach ``dispatch(channel, message)`` on the reactor
thread, in the order the layer gave them. A layer error is logged and the
reader goes on after a short pause: a server must outlive a layer hiccup
(a Redis restart, a full segment) instead of dying with every socket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from .config import READERS

__all__ = ["StreamReader", "ThreadReader", "TwistedReader", "make_reader"]

logger = logging.getLogger(__name__)

Dispatch = Callable[[str, dict[str, Any]], None]
#: Seconds to wait before receiving again after the layer raised.
ERROR_PAUSE = 0.5
#: The suffix of the message :meth:`ThreadReader.stop` sends itself to end
#: the blocked receive at once (it is never registered, so never dispatched).
_STOP_SUFFIX = "_stop"


class ThreadReader:
    """A thread blocked in ``receive(block=True)`` handing messages to the reactor."""

    kind = "thread"

    def __init__(self, layer: Any, channel: str, reactor: Any, dispatch: Dispatch) -> None:
        self.layer = layer
        self.channel = channel
        self.reactor = reactor
        self.dispatch = dispatch
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader {channel}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        channels = [self.channel]
        while not self._stopping.is_set():
            try:
                channel, message = self.layer.receive(channels, block=True)
            except Exception:
                logger.exception("receive on %r failed; retrying in %.1f s", self.channel, ERROR_PAUSE)
                self._stopping.wait(ERROR_PAUSE)
                continue
            if channel is None or self._stopping.is_set():
                continue
            try:
                self.reactor.callFromThread(self.dispatch, channel, message)
            except RuntimeError:  # the reactor has stopped: nothing left to serve
                return

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        try:
            self.layer.send(self.channel + _STOP_SUFFIX, {"stop": True})
        except Exception:  # a full channel: the receive times out by itself
            logger.debug("could not wake the reader of %r; it stops at its receive timeout", self.channel)
        if self._thread.is_alive():
            self._thread.join(timeout)


class TwistedReader:
    """``receive_twisted`` Deferreds on the reactor thread, taken in a loop, not a callback chain.

    A layer hands back an already-fired Deferred while messages wait, so
    chaining "on result, ask again" would recurse once per waiting reply
    (a backlog of a few hundred overflowed the stack and ended the chain).
    Results that are there at once are handled in a loop instead, and after
    ``BATCH`` of them the loop yields to the reactor, so a backlog never
    starves the sockets.
    """

    kind = "twisted"
    #: Replies handled in one go before the reactor gets a turn.
    BATCH = 64

    def __init__(self, layer: Any, channel: str, reactor: Any, dispatch: Dispatch) -> None:
        self.layer = layer
        self.channel = channel
        self.reactor = reactor
        self.dispatch = dispatch
        self._pending: Any = None
        self._stopped = False
        from twisted.internet import reactor as global_reactor

        self._global = reactor is global_reactor

    def start(self) -> None:
        self._loop()

    def _receive(self) -> Any:
        # ASGI 1's signature is receive_twisted(channels), for the global
        # reactor; our layers also take the reactor to wake (tests run
        # private ones), passed only when it is not the global one.
        if self._global:
            return self.layer.receive_twisted([self.channel])
        return self.layer.receive_twisted([self.channel], self.reactor)

    def _loop(self) -> None:
        for _ in range(self.BATCH):
            if self._stopped:
                return
            outcome: list[Any] = []
            try:
                deferred = self._receive()
            except Exception:
                logger.exception("receive_twisted on %r raised; retrying in %.1f s", self.channel, ERROR_PAUSE)
                self.reactor.callLater(ERROR_PAUSE, self._loop)
                return
            deferred.addBoth(outcome.append)  # consumes the result (or the failure)
            if not outcome:  # nothing yet: go on when it fires
                self._pending = deferred
                deferred.addBoth(self._resume, outcome)
                return
            if not self._handle(outcome[0]):
                return
        self.reactor.callLater(0, self._loop)  # a backlog: let the reactor breathe

    def _resume(self, _: Any, outcome: list[Any]) -> None:
        self._pending = None
        if outcome and self._handle(outcome[0]):
            self._loop()

    def _handle(self, result: Any) -> bool:
        """Dispatch one result; False when the loop must not go on now."""
        if self._stopped:
            return False
        if isinstance(result, Failure):
            logger.error("receive_twisted on %r failed; retrying in %.1f s: %s", self.channel, ERROR_PAUSE,
                         result.getErrorMessage())
            self.reactor.callLater(ERROR_PAUSE, self._loop)
            return False
        channel, message = result
        if channel is not None and message is not None:
            try:
                self.dispatch(channel, message)
            except Exception:  # the router guards its handlers; this guards the loop itself
                logger.exception("dispatching a reply on %r failed", channel)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped = True
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()


class StreamReader:
    """``receive_twisted_stream``: the layer calls ``dispatch`` for each reply, on the reactor thread."""

    kind = "stream"

    def __init__(self, layer: Any, channel: str, reactor: Any, dispatch: Dispatch) -> None:
        self.layer = layer
        self.channel = channel
        self.reactor = reactor
        self.dispatch = dispatch
        self._stream: Any = None
        self._retry: Any = None
        self._stopped = False
        from twisted.internet import reactor as global_reactor

        self._global = reactor is global_reactor

    def start(self) -> None:
        if self._stopped:
            return
        try:
            # The reactor is passed only when it is not the global one (as
            # TwistedReader does: tests run private reactors).
            extra = () if self._global else (self.reactor,)
            self._stream = self.layer.receive_twisted_stream([self.channel], self.dispatch, self._failed, *extra)
        except Exception:
            logger.exception("receive_twisted_stream on %r raised; retrying in %.1f s", self.channel, ERROR_PAUSE)
            self._retry = self.reactor.callLater(ERROR_PAUSE, self.start)

    def _failed(self, exc: Exception) -> None:
        logger.error("receive on %r failed; retrying in %.1f s: %s", self.channel, ERROR_PAUSE, exc)
        if not self._stopped:
            self._retry = self.reactor.callLater(ERROR_PAUSE, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._stream is not None and not self._stopped:
            self._stream.resume()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.stop()


Reader = StreamReader | ThreadReader | TwistedReader
_NEEDS = {"stream": ("twisted_stream", "receive_twisted_stream"), "twisted": ("twisted", "receive_twisted")}


def make_reader(layer: Any, channel: str, reactor: Any, dispatch: Dispatch, mode: str = "auto") -> Reader:
    """The reader for ``layer``: ``auto`` takes the fastest way the layer offers."""
    if mode not in READERS:
        raise ValueError(f"reader mode must be one of {', '.join(map(repr, READERS))}, got {mode!r}")
    extensions = getattr(layer, "extensions", ())
    if mode in _NEEDS and _NEEDS[mode][0] not in extensions:
        extension, method = _NEEDS[mode]
        raise ValueError(f"layer {type(layer).__name__} has no {extension!r} extension ({method})")
    if mode == "auto":
        mode = next((kind for kind, (extension, _) in _NEEDS.items() if extension in extensions), "thread")
    if mode == "stream":
        return StreamReader(layer, channel, reactor, dispatch)
    if mode == "twisted":
        return TwistedReader(layer, channel, reactor, dispatch)
    return ThreadReader(layer, channel, reactor, dispatch)
