"""The worker's loop: one blocking receive on every channel it serves, dispatch, repeat.

Theory of operation
-------------------
Each of the worker's ``--threads`` threads runs :meth:`WorkerLoop.serve`:

1. a progress point (:class:`worker.heartbeat.Progress`), then
   ``layer.receive(channels, block=True)``: one call on *every* channel the
   worker serves, which sleeps in the layer (futex, or Redis ``BLPOP``) until
   a message comes or ``blocking_timeout`` passes; an idle worker costs no CPU
   and polls nothing;
2. another progress point when it returns; on ``(None, None)`` (the layer's
   ``blocking_timeout`` passed) it checks that the master is still its parent
   and waits again;
3. a message: :meth:`WorkerLoop.dispatch` builds the
   :class:`~worker.message.Message`, asks the router for ``(consumer,
   kwargs)`` and runs ``consumer(message, **kwargs)`` through
   :func:`worker.dispatch.consume` (deferred sends, ``ConsumeLater`` and the
   other control-flow exceptions) between Django's
   ``request_started`` and ``request_finished`` (Django connects
   ``close_old_connections`` to both, so a database connection past its
   ``CONN_MAX_AGE`` or broken by the previous message is closed, as for a
   view) and this package's ``consumer_started``/``consumer_finished``. An
   exception is logged with the channel and the consumer and the loop goes
   on: one bad message never kills the worker;
4. after ``--max-requests`` (+ jitter) messages the worker tells the master
   it is retiring (so the replacement boots while it finishes) and stops.

Stopping (:meth:`WorkerLoop.stop`, called from the TERM/INT handler) only
sets a flag: the message being handled is finished, and an idle thread
leaves at its next wake-up (at most ``blocking_timeout``). Interrupting
the receive instead could lose a message the layer had already handed
over. A fast stop (QUIT) is the child's business (:mod:`worker.child`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any, Protocol

from django.core import signals as django_signals

from . import signals
from .heartbeat import Progress

__all__ = ["NoChannelsError", "WorkerLoop", "served_channels"]

logger = logging.getLogger("worker.loop")

#: Back-off after a receive that raised: from this, doubling, to the max (seconds).
RECEIVE_RETRY_MIN = 0.1
RECEIVE_RETRY_MAX = 5.0


class Router(Protocol):
    @property
    def channels(self) -> Iterable[str]: ...

    def match(self, message: Any) -> tuple[Callable[..., Any], dict[str, Any]] | None: ...


class NoChannelsError(ValueError):
    """The --only-channels/--exclude-channels globs leave nothing to serve."""


def served_channels(routed: Iterable[str], only: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """The routed channels kept by the globs (sorted); :class:`NoChannelsError` names them if none."""
    routed = sorted(set(routed))
    kept = [c for c in routed if (not only or any(fnmatchcase(c, g) for g in only))
            and not any(fnmatchcase(c, g) for g in exclude)]
    if not kept:
        rules = []
        if only:
            rules.append(f"--only-channels {' '.join(only)}")
        if exclude:
            rules.append(f"--exclude-channels {' '.join(exclude)}")
        raise NoChannelsError(
            f"no channel to serve: {' and '.join(rules) or 'the routing'} left none of the routed "
            f"channels {routed!r}"
        )
    return kept


class WorkerLoop:
    """Receives on ``channels`` and runs what ``router`` matches, in ``threads`` threads."""

    def __init__(
        self,
        layer: Any,
        router: Router,
        channels: Sequence[str],
        *,
        message_class: Callable[[dict[str, Any], str, Any], Any],
        consume: Callable[[Callable[..., Any], Any, dict[str, Any]], None],
        progress: Progress,
        notify: Callable[[str, str], None] = lambda event, text: None,
        threads: int = 1,
        max_requests: int = 0,
        max_requests_jitter: int = 0,
        master_pid: int | None = None,
    ) -> None:
        self.layer = layer
        self.router = router
        self.channels = list(channels)
        self.message_class = message_class
        self.consume = consume
        self.progress = progress
        self.notify = notify
        self.threads = threads
        self.limit = max_requests + random.randint(0, max_requests_jitter) if max_requests else 0
        self.master_pid = master_pid
        self.handled = 0
        self._count_lock = threading.Lock()
        self._stopping = threading.Event()

    # -- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current message(s), then return from :meth:`run` (safe in a signal handler)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        """Serve until stopped (TERM, --max-requests, the master gone)."""
        signals.worker_ready.send(sender=WorkerLoop)
        self.notify("ready", "")
        logger.info("worker %d ready: %d thread(s) on %s", os.getpid(), self.threads, ", ".join(self.channels))
        if self.threads == 1:
            self.serve()
            return
        # The main thread only waits from here on: its boot-time progress point must not hold
        # the stamp back (the serving threads' points make it).
        self.progress.leave()
        # Daemon threads: a fast stop (QUIT) leaves without joining them.
        workers = [threading.Thread(target=self.serve, name=f"worker-{n}", daemon=True)
                   for n in range(self.threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            while thread.is_alive():
                thread.join(timeout=1.0)  # signal handlers run between the joins

    # -- one thread's loop -------------------------------------------------------------------

    def serve(self) -> None:
        failures = 0
        try:
            while not self.stopping:
                self.progress.point()
                try:
                    channel, content = self.layer.receive(self.channels, block=True)
                except Exception as exc:
                    # The layer failed (a Redis layer past its retry bound raises ShardDown,
                    # a segment lock timed out): the thread must live on, or a worker whose
                    # threads all died would exit, be replaced and die again for as long as
                    # the outage lasts. A bounded back-off; the heartbeat still advances.
                    failures += 1
                    delay = min(RECEIVE_RETRY_MIN * 2 ** (failures - 1), RECEIVE_RETRY_MAX)
                    logger.error("worker %d: receive on %r failed (%s: %s); retrying in %.2f s",
                                 os.getpid(), self.channels, type(exc).__name__, exc, delay)
                    self.pause(delay)
                    continue
                failures = 0
                self.progress.point()
                if channel is None:
                    self._check_master()
                    continue
                self.dispatch(channel, content)
                self._count()
        finally:
            self.progress.leave()

    def pause(self, seconds: float) -> None:
        """Wait after a failed receive; a stop (TERM) cuts the wait short."""
        self._stopping.wait(seconds)

    def _check_master(self) -> None:
        if self.master_pid is not None and os.getppid() != self.master_pid:
            logger.warning("worker %d: the master (pid %d) is gone; exiting", os.getpid(), self.master_pid)
            self.stop()

    def _count(self) -> None:
        with self._count_lock:
            self.handled += 1
            if self.limit and self.handled == self.limit:
                logger.info("worker %d handled %d messages (--max-requests): retiring", os.getpid(), self.handled)
                self.notify("retiring", "")
                self.stop()

    def dispatch(self, channel: str, content: dict[str, Any]) -> None:
        """Run the consumer of one message; every error is logged here, none escapes."""
        try:
            message = self.message_class(content, channel, self.layer)
            match = self.router.match(message)
        except Exception:
            logger.exception("cannot route a message on channel %r", channel)
            return
        if match is None:
            logger.warning("no route for a message on channel %r; dropped", channel)
            return
        consumer, kwargs = match
        try:
            django_signals.request_started.send(sender=WorkerLoop, environ=None)
            signals.consumer_started.send(sender=WorkerLoop, environ=None, message=message)
            self.consume(consumer, message, kwargs)
        except Exception:
            logger.exception("error in consumer %s on channel %r", _name(consumer), channel)
        finally:
            try:
                signals.consumer_finished.send(sender=WorkerLoop, message=message)
                django_signals.request_finished.send(sender=WorkerLoop)
            except Exception:
                logger.exception("error in a consumer_finished/request_finished receiver after channel %r",
                                 channel)


def _name(consumer: Any) -> str:
    module = getattr(consumer, "__module__", None)
    qualname = getattr(consumer, "__qualname__", None) or type(consumer).__qualname__
    return f"{module}.{qualname}" if module else str(qualname)
