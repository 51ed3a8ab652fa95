"""The pre-forking master: spawns, supervises, reloads and stops the worker processes.

Theory of operation
-------------------
One thread, one loop (:meth:`Arbiter.tick`), gunicorn's shape. Signal
handlers only append the signal number to :attr:`Arbiter.signals` and
write a byte to the self-pipe; the loop sleeps in ``select`` on the
self-pipe and the *notice pipe* (on which workers say ``ready``,
``retiring`` or ``booterror <cause>``), at most one second, then:

1. reads the workers' notices;
2. handles the queued signals (below);
3. polls the ``--reload`` file watcher, if any;
4. reaps exited workers (``waitpid(WNOHANG)``) and decides what each exit means;
5. enforces deadlines: a silent heartbeat (SIGABRT, then SIGKILL), a
   graceful-stop window that ran out (SIGKILL);
6. brings the pool to its target (spawn what is missing, retire what is extra).

Nothing here imports Django or a channel layer: a worker is a fresh
interpreter the :class:`ChildCommand` describes (``python -m worker.child``),
started through :mod:`worker.osapi`, the seam the unit tests replace.

Signals (of the master)::

    TERM, INT   graceful stop: every worker gets TERM, finishes its current message and exits;
                SIGKILL for any still there after --graceful-timeout. A second INT = QUIT.
    QUIT        fast stop: every worker gets QUIT and exits at once (its message is dropped).
    HUP         zero-downtime reload: --workers new workers start (fresh interpreters, so
                freshly imported code); each old worker gets TERM only once a new one has said
                it is ready, so the pool never has fewer ready workers than before. A new
                worker that fails to boot aborts the reload: the old workers keep serving.
    TTIN, TTOU  one worker more / one fewer (not below 1).
    CHLD        wakes the loop to reap.

Worker states (the ``state`` column of the table)::

    state      entered when                                     leaves for
    ---------  -----------------------------------------------  ------------------------------------
    BOOTING    spawned                                          READY (notice), RETIRING (TERM sent),
                                                                ABORTED (heartbeat silent)
    READY      its "ready" notice arrived                       RETIRING, ABORTED
    RETIRING   we sent TERM (stop, reload, TTOU), or it said    KILLED (--graceful-timeout passed)
               "retiring" (--max-requests reached)
    ABORTED    heartbeat silent past --timeout: SIGABRT sent    KILLED (ABORT_GRACE passed)
    KILLED     SIGKILL sent                                     -
    (gone)     reaped: removed from the table, from any state

Master states::

    RUNNING -> STOPPING (TERM, INT; or HALTING: a worker failed to boot) -> DONE (no worker left)
    RUNNING, STOPPING -> QUITTING (QUIT, a second INT) -> DONE

The worker table: what is the truth, what is derived
-----------------------------------------------------
``self.workers`` maps pid -> :class:`WorkerRecord`.

- ``pid`` PRIMARY: the kernel's, returned by spawn. A pid is in the table
  from the spawn call's return until ``waitpid`` returned it: the children
  are ours, so an exited one stays a zombie until we reap it, and the table
  can never name a process that is not (or no longer) our child, nor miss one.
- ``number``, ``generation`` PRIMARY: set at spawn and never changed; the
  spawn order (oldest first when retiring) and the reload generation.
- ``heartbeat`` PRIMARY, written by the child: its stamp in shared memory
  is the only truth about liveness (:mod:`worker.heartbeat`).
- ``state`` PRIMARY for what *we did* (the last signal we sent), DERIVED
  from the child's notices for BOOTING -> READY and READY -> RETIRING
  (max-requests); a notice lost with a dead child changes nothing, the
  reap decides then.
- ``deadline``, ``cause`` DERIVED: from the state and when it was entered,
  and from the ``booterror`` notice.
- ``target`` and ``generation`` of the arbiter PRIMARY: changed only by
  TTIN/TTOU, HUP and an aborted reload (back to the generation still
  serving). Everything else (who to spawn, who to retire) is recomputed
  from the table on every tick (:meth:`Arbiter.manage`), so no decision
  depends on a counter that a missed event could make wrong.

What a kill leaves:

- A worker SIGKILLed at any point: the master reaps it on the next tick
  and spawns a replacement; the layer loses at most the message it held.
- The master SIGKILLed at any point: nothing is on disk (heartbeats are
  anonymous memory; the pidfile, if any, names a dead pid and is replaced
  by the next start). The workers notice their parent changed at their next
  progress point (at most ``blocking_timeout`` away) and exit after their
  current message. Between ``spawn`` returning and the record being stored
  there is no call that can fail, so an exception cannot orphan a worker.
"""

from __future__ import annotations

import enum
import logging
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .osapi import OSAPI, HeartbeatSlot, System, exit_description

__all__ = [
    "ABORT_GRACE",
    "BOOT_ERROR",
    "MAX_BOOT_FAILURES",
    "Arbiter",
    "ChildCommand",
    "MasterState",
    "WorkerRecord",
    "WorkerState",
]

logger = logging.getLogger("worker.arbiter")

#: The reserved exit code of a worker that could not boot (gunicorn's WORKER_BOOT_ERROR):
#: the master stops with the cause instead of respawning into a crash loop.
BOOT_ERROR = 3
#: Seconds between SIGABRT (faulthandler prints the hung worker's stacks) and SIGKILL.
ABORT_GRACE = 2.0
#: Workers in a row that died before saying ready (not with BOOT_ERROR: a crash, a boot
#: past --timeout) before the master gives up as for a boot error.
MAX_BOOT_FAILURES = 5
#: The loop never sleeps longer than this (deadlines are checked at least this often).
TICK = 1.0
#: Queued signals beyond this are dropped (a burst of the same request).
MAX_QUEUED_SIGNALS = 16

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)


class WorkerState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    RETIRING = "retiring"
    ABORTED = "aborted"
    KILLED = "killed"


class MasterState(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    QUITTING = "quitting"
    DONE = "done"


class ChildCommand(Protocol):
    """How to start worker number ``number`` (its argv and environment)."""

    def argv(self, *, number: int, heartbeat_fd: int, notify_fd: int, master_pid: int) -> list[str]: ...
    def env(self) -> dict[str, str]: ...


@dataclass
class WorkerRecord:
    pid: int
    number: int
    generation: int
    heartbeat: HeartbeatSlot
    state: WorkerState = WorkerState.BOOTING
    deadline: float | None = None
    #: What the worker said when it failed to boot.
    cause: str | None = None

    def describe(self) -> str:
        return f"worker {self.number} (pid {self.pid})"


@dataclass
class _Notices:
    """Lines ``<pid> <event> [text]`` from the notice pipe (a write <= PIPE_BUF is atomic)."""

    pending: bytes = b""
    events: deque[tuple[int, str, str]] = field(default_factory=deque)

    def feed(self, data: bytes) -> None:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            pid_text, _, rest = line.decode("utf-8", "replace").partition(" ")
            event, _, text = rest.partition(" ")
            try:
                pid = int(pid_text)
            except ValueError:
                logger.warning("ignoring a malformed worker notice %r", line)
                continue
            self.events.append((pid, event, text))


class Arbiter:
    """The master of ``target`` workers started by ``command``; :meth:`run` until stopped."""

    def __init__(
        self,
        command: ChildCommand,
        *,
        workers: int,
        timeout: float,
        graceful_timeout: float,
        osapi: System | None = None,
        watcher: Callable[[], bool] | None = None,
    ) -> None:
        self.command = command
        self.target = workers
        self.timeout = timeout
        self.graceful_timeout = graceful_timeout
        self.os: System = osapi if osapi is not None else OSAPI()
        self.watcher = watcher
        self.workers: dict[int, WorkerRecord] = {}
        self.state = MasterState.RUNNING
        self.generation = 0
        self._generations = 0
        self.exit_code = 0
        #: Why the master stopped on its own (a boot error), for the caller's last line.
        self.halt_reason: str | None = None
        self.signals: deque[int] = deque()
        self._dropped_signals = 0
        self._spawned = 0
        self._boot_failures = 0
        self._notices = _Notices()
        self._started = False
        self._sig_r = self._sig_w = self._notify_r = self._notify_w = -1

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._sig_r, self._sig_w = self.os.pipe()
        self._notify_r, self._notify_w = self.os.pipe()
        self.os.install_signals(HANDLED_SIGNALS, self.on_signal)
        self._started = True
        logger.info("master %d starting %d worker(s)", self.os.getpid(), self.target)
        self.manage()

    def run(self) -> int:
        """Start, loop until every worker is gone after a stop, clean up; the exit code."""
        self.start()
        try:
            while self.state is not MasterState.DONE:
                self.tick()
        except Exception:
            logger.exception("the master failed; killing the workers")
            self._kill_everyone()
            self.exit_code = 1
        finally:
            self.close()
        return self.exit_code

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        self.os.restore_signals(HANDLED_SIGNALS)
        for fd in (self._sig_r, self._sig_w, self._notify_r, self._notify_w):
            self.os.close(fd)
        for record in self.workers.values():
            record.heartbeat.close()

    def on_signal(self, signum: int) -> None:
        """The signal handler: queue and wake the loop; nothing else (no logging: its locks)."""
        if len(self.signals) < MAX_QUEUED_SIGNALS:
            self.signals.append(signum)
        else:
            self._dropped_signals += 1
        self.os.write_nowait(self._sig_w, b".")

    # -- the loop --------------------------------------------------------------------------

    def tick(self) -> None:
        """One turn of the loop: sleep until woken or a deadline, then everything else."""
        readable = self.os.wait_readable([self._sig_r, self._notify_r], self._sleep_time())
        if self._sig_r in readable:
            self.os.read_available(self._sig_r)
        self._read_notices()
        if self._dropped_signals:
            logger.warning("dropped %d signal(s) of a burst", self._dropped_signals)
            self._dropped_signals = 0
        while self.signals:
            self.handle_signal(self.signals.popleft())
        if self.watcher is not None and self.state is MasterState.RUNNING and self.watcher():
            logger.info("a watched file changed: reloading the workers")
            self.reload()
        self.reap()
        self.check_deadlines()
        self.manage()
        if self.state is not MasterState.RUNNING and not self.workers:
            # state: STOPPING|QUITTING -> DONE
            self.state = MasterState.DONE

    def _sleep_time(self) -> float:
        now = self.os.monotonic()
        soonest = now + TICK
        for record in self.workers.values():
            if record.deadline is not None:
                soonest = min(soonest, record.deadline)
            elif record.state in (WorkerState.BOOTING, WorkerState.READY):
                soonest = min(soonest, record.heartbeat.stamp(now) + self.timeout)
        return max(0.0, soonest - now)

    # -- signals ---------------------------------------------------------------------------

    def handle_signal(self, signum: int) -> None:
        name = _signal_name(signum)
        if signum == signal.SIGCHLD:
            return  # the reap below runs on every tick
        if self.state is MasterState.RUNNING:
            if signum in (signal.SIGTERM, signal.SIGINT):
                logger.info("%s: graceful stop", name)
                self.stop(graceful=True)
            elif signum == signal.SIGQUIT:
                logger.info("SIGQUIT: fast stop")
                self.stop(graceful=False)
            elif signum == signal.SIGHUP:
                logger.info("SIGHUP: reloading the workers")
                self.reload()
            elif signum == signal.SIGTTIN:
                self.target += 1
                logger.info("SIGTTIN: %d worker(s)", self.target)
            elif signum == signal.SIGTTOU:
                if self.target > 1:
                    self.target -= 1
                logger.info("SIGTTOU: %d worker(s)", self.target)
        elif self.state is MasterState.STOPPING and signum in (signal.SIGINT, signal.SIGQUIT):
            logger.info("%s while stopping: fast stop", name)
            self.stop(graceful=False)
        else:
            logger.info("%s ignored: the master is %s", name, self.state.value)

    def stop(self, *, graceful: bool) -> None:
        """TERM (graceful) or QUIT (fast) to every worker; KILL after --graceful-timeout."""
        now = self.os.monotonic()
        if graceful:
            # state: RUNNING -> STOPPING
            self.state = MasterState.STOPPING
        else:
            # state: RUNNING|STOPPING -> QUITTING
            self.state = MasterState.QUITTING
        for record in self.workers.values():
            if record.state is WorkerState.KILLED:
                continue
            if graceful and record.state in (WorkerState.RETIRING, WorkerState.ABORTED):
                continue  # already told; its own deadline stands
            self.os.kill(record.pid, signal.SIGTERM if graceful else signal.SIGQUIT)
            if record.state is not WorkerState.ABORTED:
                # state: BOOTING|READY|RETIRING -> RETIRING
                record.state = WorkerState.RETIRING
                record.deadline = now + self.graceful_timeout

    def reload(self) -> None:
        """A new generation: manage() starts it and retires the old one as it gets ready."""
        # Numbers are never reused (an aborted reload goes back to an older one).
        self._generations += 1
        self.generation = self._generations

    def _older_generation_ready(self) -> bool:
        return any(r.state is WorkerState.READY and r.generation < self.generation for r in self.workers.values())

    def abort_reload(self, cause: str) -> None:
        """A reload's new code does not boot: keep the previous generation serving, retire the new one.

        The old workers that are still ready become the current generation again
        (manage() stops retiring them); if the pool is short (some were replaced
        already), the replacements boot the code on disk, and a boot error of
        theirs halts the master as usual.
        """
        logger.error("%s; reload aborted, the workers of the previous code keep running", cause)
        for record in list(self.workers.values()):
            if record.generation == self.generation and record.state in (WorkerState.BOOTING, WorkerState.READY):
                self.retire(record, "its reload was aborted")
        self.generation = max((r.generation for r in self.workers.values()
                               if r.state is WorkerState.READY and r.generation < self.generation),
                              default=self.generation)

    def halt(self, reason: str) -> None:
        """Stop because the workers cannot run (a boot error): graceful, exit code BOOT_ERROR."""
        if self.state is not MasterState.RUNNING:
            return
        logger.error("%s; stopping the master", reason)
        self.halt_reason = reason
        self.exit_code = BOOT_ERROR
        self.stop(graceful=True)  # state: RUNNING -> STOPPING (halting)

    # -- notices, reaping, deadlines ---------------------------------------------------------

    def _read_notices(self) -> None:
        data = self.os.read_available(self._notify_r)
        if data:
            self._notices.feed(data)
        while self._notices.events:
            pid, event, text = self._notices.events.popleft()
            record = self.workers.get(pid)
            if record is None:
                continue  # reaped already: its exit said everything
            if event == "ready":
                if record.state is WorkerState.BOOTING:
                    # state: BOOTING -> READY
                    record.state = WorkerState.READY
                    self._boot_failures = 0
                    logger.info("%s ready", record.describe())
            elif event == "retiring":
                if record.state in (WorkerState.BOOTING, WorkerState.READY):
                    logger.info("%s retiring after its --max-requests", record.describe())
                    # state: READY -> RETIRING (its own decision: no signal to send)
                    record.state = WorkerState.RETIRING
                    record.deadline = self.os.monotonic() + self.graceful_timeout
            elif event == "booterror":
                record.cause = text
            else:
                logger.warning("%s sent an unknown notice %r", record.describe(), event)

    def reap(self) -> None:
        for pid, code in self.os.reap():
            self._read_notices()  # a notice written just before the exit
            record = self.workers.pop(pid, None)
            if record is None:
                continue
            # state: any -> (gone)
            record.heartbeat.close()
            self._exited(record, code)

    def _exited(self, record: WorkerRecord, code: int) -> None:
        how = exit_description(code)
        if code == BOOT_ERROR:
            cause = f"{record.describe()} failed to boot: {record.cause or 'no cause reported (see its log above)'}"
            if record.generation != self.generation or record.state is not WorkerState.BOOTING:
                logger.error("%s (it was %s)", cause, "superseded" if record.generation != self.generation
                             else "being retired")
            elif self._older_generation_ready():
                self.abort_reload(cause)
            else:
                self.halt(cause)
            return
        if record.state in (WorkerState.RETIRING, WorkerState.KILLED, WorkerState.ABORTED):
            log = logger.info if record.state is WorkerState.RETIRING else logger.warning
            log("%s exited (%s)", record.describe(), how)
            return
        if record.state is WorkerState.BOOTING:
            self._boot_failures += 1
            logger.error("%s died while booting (%s)", record.describe(), how)
            if self._boot_failures >= MAX_BOOT_FAILURES:
                self.halt(f"{self._boot_failures} workers in a row died while booting (last: {how})")
            return
        logger.warning("%s exited unexpectedly (%s); replacing it", record.describe(), how)

    def check_deadlines(self) -> None:
        now = self.os.monotonic()
        for record in list(self.workers.values()):
            if record.state in (WorkerState.BOOTING, WorkerState.READY):
                silent = now - record.heartbeat.stamp(now)
                if silent >= self.timeout:
                    logger.error("%s silent for %.1f s (--timeout %g): SIGABRT", record.describe(), silent,
                                 self.timeout)
                    self.os.kill(record.pid, signal.SIGABRT)
                    # state: BOOTING|READY -> ABORTED
                    record.state = WorkerState.ABORTED
                    record.deadline = now + ABORT_GRACE
            elif (record.state in (WorkerState.RETIRING, WorkerState.ABORTED)
                  and record.deadline is not None and now >= record.deadline):
                logger.warning("%s still running after %s: SIGKILL", record.describe(),
                               "--graceful-timeout" if record.state is WorkerState.RETIRING else "SIGABRT")
                self.os.kill(record.pid, signal.SIGKILL)
                # state: RETIRING|ABORTED -> KILLED
                record.state = WorkerState.KILLED
                record.deadline = None

    # -- the pool's size ---------------------------------------------------------------------

    def manage(self) -> None:
        """Spawn what the current generation lacks; retire extra and superseded workers.

        An old-generation worker is retired only when a new one is ready to
        take its place: the pool never has fewer ready workers during a reload.
        """
        if self.state is not MasterState.RUNNING:
            return
        serving = [r for r in self.workers.values() if r.state in (WorkerState.BOOTING, WorkerState.READY)]
        current = [r for r in serving if r.generation == self.generation]
        for _ in range(self.target - len(current)):
            current.append(self.spawn())
        if len(current) > self.target:
            # TTOU: the ones not ready yet first, then the oldest.
            extra = sorted(current, key=lambda r: (r.state is WorkerState.READY, r.number))
            for record in extra[: len(current) - self.target]:
                self.retire(record, "one worker fewer")
        ready_new = sum(1 for r in current if r.state is WorkerState.READY)
        old = sorted((r for r in serving if r.generation != self.generation), key=lambda r: r.number)
        old_ready = [r for r in old if r.state is WorkerState.READY]
        keep = max(0, self.target - ready_new)
        for record in old:
            if record.state is WorkerState.BOOTING:
                self.retire(record, "superseded before it was ready")
        for record in old_ready[: max(0, len(old_ready) - keep)]:
            self.retire(record, "replaced by a reloaded worker")

    def spawn(self) -> WorkerRecord:
        self._spawned += 1
        number = self._spawned
        now = self.os.monotonic()
        heartbeat = self.os.new_heartbeat(now)
        try:
            argv = self.command.argv(number=number, heartbeat_fd=heartbeat.fd, notify_fd=self._notify_w,
                                     master_pid=self.os.getpid())
            pid = self.os.spawn(argv, self.command.env(), (heartbeat.fd, self._notify_w))
        except BaseException:
            heartbeat.close()
            raise
        # state: (none) -> BOOTING
        record = WorkerRecord(pid, number, self.generation, heartbeat)
        self.workers[pid] = record
        logger.info("%s booting (generation %d)", record.describe(), self.generation)
        return record

    def retire(self, record: WorkerRecord, why: str) -> None:
        logger.info("%s: %s, SIGTERM", record.describe(), why)
        self.os.kill(record.pid, signal.SIGTERM)
        # state: BOOTING|READY -> RETIRING
        record.state = WorkerState.RETIRING
        record.deadline = self.os.monotonic() + self.graceful_timeout

    def _kill_everyone(self) -> None:
        for record in list(self.workers.values()):
            self.os.kill(record.pid, signal.SIGKILL)
        # Reap them (SIGKILL cannot be caught; they go within moments), bounded.
        deadline = self.os.monotonic() + 10.0
        while self.workers and self.os.monotonic() < deadline:
            for pid, _ in self.os.reap():
                gone = self.workers.pop(pid, None)
                if gone is not None:
                    gone.heartbeat.close()
            if self.workers:
                self.os.wait_readable([], 0.05)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
