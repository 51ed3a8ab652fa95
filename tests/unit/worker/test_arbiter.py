"""The arbiter's decisions, driven through a fake OS seam: no fork, no signal, no real clock."""

from __future__ import annotations

import signal

import pytest

from tests.unit.worker.fake_os import FakeOS
from worker.arbiter import (
    ABORT_GRACE,
    BOOT_ERROR,
    MAX_BOOT_FAILURES,
    Arbiter,
    MasterState,
    WorkerState,
)

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 30.0
GRACEFUL = 10.0


class Command:
    """Records what each spawn asked for."""

    def __init__(self) -> None:
        self.calls: list[dict[str, int]] = []

    def argv(self, *, number: int, heartbeat_fd: int, notify_fd: int, master_pid: int) -> list[str]:
        self.calls.append(dict(number=number, heartbeat_fd=heartbeat_fd, notify_fd=notify_fd, master_pid=master_pid))
        return ["python", "-m", "worker.child", "--number", str(number), "--heartbeat-fd", str(heartbeat_fd)]

    def env(self) -> dict[str, str]:
        return {"DJANGO_SETTINGS_MODULE": "site.settings"}


def make(workers: int = 2, watcher=None) -> tuple[Arbiter, FakeOS, Command]:
    fake, command = FakeOS(), Command()
    arbiter = Arbiter(command, workers=workers, timeout=TIMEOUT, graceful_timeout=GRACEFUL, osapi=fake,
                      watcher=watcher)
    arbiter.start()
    return arbiter, fake, command


def ready(arbiter: Arbiter, fake: FakeOS, *pids: int) -> None:
    for pid in pids:
        fake.notice(arbiter._notify_w, pid, "ready")
    arbiter.tick()


def beat_all(arbiter: Arbiter, fake: FakeOS) -> None:
    """Every live worker makes progress now (as an idle one does every blocking_timeout)."""
    for record in arbiter.workers.values():
        record.heartbeat.set(fake.now)


def test_start_spawns_the_target_with_heartbeat_and_notice_pipe() -> None:
    arbiter, fake, command = make(workers=3)
    assert len(fake.spawned) == 3
    assert [c["number"] for c in command.calls] == [1, 2, 3]
    for spawned, call in zip(fake.spawned, command.calls, strict=True):
        # the child inherits exactly its own heartbeat and the notice pipe's write end
        assert spawned.inherit == (call["heartbeat_fd"], arbiter._notify_w)
        assert spawned.heartbeat.fd == call["heartbeat_fd"]
        assert call["master_pid"] == fake.pid
        assert spawned.env == {"DJANGO_SETTINGS_MODULE": "site.settings"}
    assert {r.state for r in arbiter.workers.values()} == {WorkerState.BOOTING}
    assert set(fake.installed) >= {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD}
    ready(arbiter, fake, *fake.pids())
    assert {r.state for r in arbiter.workers.values()} == {WorkerState.READY}
    assert len(fake.spawned) == 3  # nothing more while all are fine


def test_a_dead_worker_is_reaped_and_replaced() -> None:
    arbiter, fake, _ = make()
    first, second = fake.pids()
    ready(arbiter, fake, first, second)
    fake.exit(first, -signal.SIGKILL)
    arbiter.tick()
    assert first not in arbiter.workers
    assert fake.heartbeat_of(first).closed
    assert len(fake.spawned) == 3
    replacement = fake.spawned[-1].pid
    assert set(arbiter.workers) == {second, replacement}
    assert arbiter.workers[replacement].state is WorkerState.BOOTING
    assert arbiter.state is MasterState.RUNNING


def test_an_exit_of_an_unknown_pid_is_ignored() -> None:
    arbiter, fake, _ = make(workers=1)
    fake.exits.append((4242, 0))
    arbiter.tick()
    assert len(fake.spawned) == 1 and arbiter.state is MasterState.RUNNING


def test_a_silent_worker_gets_abrt_then_kill_and_is_replaced() -> None:
    arbiter, fake, _ = make()
    hung, fine = fake.pids()
    ready(arbiter, fake, hung, fine)
    # Time passes; `fine` keeps making progress, `hung` does not.
    while not fake.kills:
        arbiter.workers[fine].heartbeat.set(fake.now)
        arbiter.tick()
    assert fake.kills == [(hung, signal.SIGABRT)]
    assert fake.now - fake.heartbeat_of(hung).value >= TIMEOUT  # not a moment early
    assert arbiter.workers[hung].state is WorkerState.ABORTED
    # A hung worker serves nobody: its replacement boots at once, not when it is reaped.
    assert len(fake.spawned) == 3
    aborted_at = fake.now
    # It ignores ABRT (stuck in C, say): KILL once ABORT_GRACE has passed, not before.
    while len(fake.kills) == 1:
        arbiter.workers[fine].heartbeat.set(fake.now)
        arbiter.tick()
    assert fake.now >= aborted_at + ABORT_GRACE
    assert fake.kills == [(hung, signal.SIGABRT), (hung, signal.SIGKILL)]
    assert arbiter.workers[hung].state is WorkerState.KILLED
    fake.exit(hung, -signal.SIGKILL)
    arbiter.tick()
    assert hung not in arbiter.workers and len(fake.spawned) == 3  # no second replacement
    assert fine in arbiter.workers and (fine, signal.SIGABRT) not in fake.kills


def test_the_loop_sleeps_no_longer_than_the_next_heartbeat_deadline() -> None:
    arbiter, fake, _ = make(workers=1)
    (pid,) = fake.pids()
    ready(arbiter, fake, pid)
    fake.heartbeat_of(pid).set(fake.now - TIMEOUT + 0.25)
    arbiter.tick()
    assert fake.sleeps[-1] == pytest.approx(0.25)


def test_a_boot_error_halts_the_master_with_the_cause() -> None:
    arbiter, fake, _ = make(workers=3)
    broken, other, booting = fake.pids()
    ready(arbiter, fake, other)
    fake.notice(arbiter._notify_w, broken, "booterror",
                "ImproperlyConfigured: CHANNEL_LAYERS has no alias 'nope'")
    fake.exit(broken, BOOT_ERROR)
    arbiter.tick()
    assert arbiter.halt_reason == (f"worker 1 (pid {broken}) failed to boot: "
                                   "ImproperlyConfigured: CHANNEL_LAYERS has no alias 'nope'")
    assert arbiter.state is MasterState.STOPPING
    assert sorted(fake.kills) == sorted([(other, signal.SIGTERM), (booting, signal.SIGTERM)])
    assert len(fake.spawned) == 3  # no replacement: no crash loop
    fake.exit(other, 0)
    fake.exit(booting, 0)
    arbiter.tick()
    assert arbiter.state is MasterState.DONE and arbiter.exit_code == BOOT_ERROR


def test_a_boot_error_notice_read_only_with_the_exit_still_names_the_cause() -> None:
    # The notice and the exit arrive in the same tick, the notice after the first read.
    arbiter, fake, _ = make(workers=1)
    (pid,) = fake.pids()
    original_reap = fake.reap

    def reap_after_notice():
        fake.notice(arbiter._notify_w, pid, "booterror", "SyntaxError: bad")
        return original_reap()

    fake.reap = reap_after_notice  # type: ignore[method-assign]
    fake.exit(pid, BOOT_ERROR)
    arbiter.tick()
    assert arbiter.halt_reason is not None and arbiter.halt_reason.endswith("SyntaxError: bad")


def test_workers_dying_while_booting_halt_after_a_few_in_a_row() -> None:
    arbiter, fake, _ = make(workers=1)
    for _ in range(MAX_BOOT_FAILURES):
        assert arbiter.state is MasterState.RUNNING
        fake.exit(fake.spawned[-1].pid, -signal.SIGSEGV)
        arbiter.tick()
    assert arbiter.state is MasterState.DONE
    assert arbiter.exit_code == BOOT_ERROR
    assert "5 workers in a row died while booting (last: killed by SIGSEGV)" in (arbiter.halt_reason or "")
    assert len(fake.spawned) == MAX_BOOT_FAILURES


def test_a_worker_that_got_ready_resets_the_boot_failure_count() -> None:
    arbiter, fake, _ = make(workers=1)
    for _ in range(MAX_BOOT_FAILURES - 1):
        fake.exit(fake.spawned[-1].pid, 1)
        arbiter.tick()
    ready(arbiter, fake, fake.spawned[-1].pid)
    for _ in range(MAX_BOOT_FAILURES - 1):
        fake.exit(fake.spawned[-1].pid, 1)
        arbiter.tick()
    assert arbiter.state is MasterState.RUNNING


def test_term_stops_gracefully_and_kills_only_after_the_graceful_timeout() -> None:
    arbiter, fake, _ = make()
    quick, slow = fake.pids()
    ready(arbiter, fake, quick, slow)
    fake.signal(signal.SIGTERM)
    arbiter.tick()
    assert arbiter.state is MasterState.STOPPING
    assert sorted(fake.kills) == sorted([(quick, signal.SIGTERM), (slow, signal.SIGTERM)])
    stopped_at = fake.now
    fake.exit(quick, 0)
    arbiter.tick()
    assert len(fake.spawned) == 2  # never replaced while stopping
    while fake.now < stopped_at + GRACEFUL:
        assert fake.kills_of(signal.SIGKILL) == []
        arbiter.tick()
    arbiter.tick()
    assert fake.kills_of(signal.SIGKILL) == [slow]
    assert arbiter.state is MasterState.STOPPING
    fake.exit(slow, -signal.SIGKILL)
    arbiter.tick()
    assert arbiter.state is MasterState.DONE and arbiter.exit_code == 0
    assert len(fake.spawned) == 2


def test_run_returns_when_the_workers_are_gone_and_closes_everything() -> None:
    fake, command = FakeOS(), Command()
    arbiter = Arbiter(command, workers=1, timeout=TIMEOUT, graceful_timeout=GRACEFUL, osapi=fake)
    original_wait = fake.wait_readable

    def wait(fds, timeout):
        # the first sleep: TERM arrives; the next: the worker has exited
        if not fake.kills:
            fake.signal(signal.SIGTERM)
        elif fake.alive:
            fake.exit(fake.spawned[0].pid, 0)
        return original_wait(fds, timeout)

    fake.wait_readable = wait  # type: ignore[method-assign]
    assert arbiter.run() == 0
    assert fake.installed == ()
    assert {arbiter._sig_r, arbiter._sig_w, arbiter._notify_r, arbiter._notify_w} <= fake.closed


def test_an_error_in_the_loop_kills_the_workers_and_exits_1() -> None:
    fake, command = FakeOS(), Command()
    arbiter = Arbiter(command, workers=2, timeout=TIMEOUT, graceful_timeout=GRACEFUL, osapi=fake)
    original_reap = fake.reap

    def broken_reap():
        if not fake.kills:
            raise RuntimeError("boom")
        for pid in list(fake.alive):
            fake.exit(pid, -signal.SIGKILL)
        return original_reap()

    fake.reap = broken_reap  # type: ignore[method-assign]
    assert arbiter.run() == 1
    assert sorted(fake.kills_of(signal.SIGKILL)) == fake.pids()
    assert arbiter.workers == {}


def test_quit_is_a_fast_stop_and_a_second_int_escalates() -> None:
    arbiter, fake, _ = make()
    ready(arbiter, fake, *fake.pids())
    fake.signal(signal.SIGQUIT)
    arbiter.tick()
    assert arbiter.state is MasterState.QUITTING
    assert sorted(fake.kills_of(signal.SIGQUIT)) == fake.pids()

    arbiter, fake, _ = make()
    ready(arbiter, fake, *fake.pids())
    fake.signal(signal.SIGINT)
    arbiter.tick()
    assert arbiter.state is MasterState.STOPPING
    assert sorted(fake.kills_of(signal.SIGTERM)) == fake.pids()
    fake.signal(signal.SIGINT)
    arbiter.tick()
    assert arbiter.state is MasterState.QUITTING
    assert sorted(fake.kills_of(signal.SIGQUIT)) == fake.pids()
    fake.signal(signal.SIGHUP)  # ignored while stopping: nothing new starts
    arbiter.tick()
    assert len(fake.spawned) == 2


def test_hup_starts_new_workers_and_retires_old_ones_only_as_new_ones_are_ready() -> None:
    arbiter, fake, _ = make(workers=2)
    old1, old2 = fake.pids()
    ready(arbiter, fake, old1, old2)
    fake.signal(signal.SIGHUP)
    arbiter.tick()
    assert len(fake.spawned) == 4
    new1, new2 = fake.pids()[2:]
    assert {arbiter.workers[p].generation for p in (new1, new2)} == {1}
    assert fake.kills == []  # nobody stops before a new worker is ready
    for _ in range(3):
        beat_all(arbiter, fake)
        arbiter.tick()
    assert fake.kills == []
    ready(arbiter, fake, new2)
    assert fake.kills == [(old1, signal.SIGTERM)]  # one ready new worker: one old one (the oldest) goes
    assert arbiter.workers[old2].state is WorkerState.READY
    ready(arbiter, fake, new1)
    assert fake.kills == [(old1, signal.SIGTERM), (old2, signal.SIGTERM)]
    # the order of events: each TERM came after a "ready" of the new generation was read
    fake.exit(old1, 0)
    fake.exit(old2, 0)
    arbiter.tick()
    assert set(arbiter.workers) == {new1, new2}
    assert len(fake.spawned) == 4


def test_hup_retires_an_old_worker_that_was_still_booting_at_once() -> None:
    arbiter, fake, _ = make(workers=2)
    old_ready, old_booting = fake.pids()
    ready(arbiter, fake, old_ready)
    fake.signal(signal.SIGHUP)
    arbiter.tick()
    assert fake.kills == [(old_booting, signal.SIGTERM)]
    new = fake.pids()[2:]
    ready(arbiter, fake, *new)
    assert fake.kills == [(old_booting, signal.SIGTERM), (old_ready, signal.SIGTERM)]


def test_a_reload_whose_code_does_not_boot_keeps_the_old_workers() -> None:
    arbiter, fake, _ = make(workers=2)
    old1, old2 = fake.pids()
    ready(arbiter, fake, old1, old2)
    fake.signal(signal.SIGHUP)
    arbiter.tick()
    new1, new2 = fake.pids()[2:]
    fake.notice(arbiter._notify_w, new1, "booterror", "SyntaxError: invalid syntax (views.py, line 3)")
    fake.exit(new1, BOOT_ERROR)
    arbiter.tick()
    assert arbiter.state is MasterState.RUNNING and arbiter.halt_reason is None
    assert fake.kills == [(new2, signal.SIGTERM)]  # the rest of the new generation goes, the old stays
    assert {arbiter.workers[p].state for p in (old1, old2)} == {WorkerState.READY}
    # The superseded one fails to boot as well: logged, no halt, nothing respawned.
    fake.exit(new2, BOOT_ERROR)
    for _ in range(3):
        beat_all(arbiter, fake)
        arbiter.tick()
    assert arbiter.state is MasterState.RUNNING and len(fake.spawned) == 4
    assert set(arbiter.workers) == {old1, old2}
    # The code is fixed: the next HUP reloads as usual.
    fake.signal(signal.SIGHUP)
    arbiter.tick()
    assert len(fake.spawned) == 6
    ready(arbiter, fake, *fake.pids()[4:])
    assert sorted(fake.kills_of(signal.SIGTERM)) == sorted([new2, old1, old2])


def test_a_boot_error_after_a_reload_replaced_everyone_halts() -> None:
    arbiter, fake, _ = make(workers=1)
    (old,) = fake.pids()
    ready(arbiter, fake, old)
    fake.signal(signal.SIGHUP)
    arbiter.tick()
    new = fake.pids()[1]
    ready(arbiter, fake, new)
    fake.exit(old, 0)
    fake.exit(new, -signal.SIGKILL)  # its replacement boots the same (now broken) code
    arbiter.tick()
    replacement = fake.pids()[2]
    fake.exit(replacement, BOOT_ERROR)
    arbiter.tick()
    assert arbiter.state is MasterState.DONE and arbiter.exit_code == BOOT_ERROR


def test_a_reload_watcher_that_reports_a_change_reloads_like_hup() -> None:
    changes = [False, True, False]
    arbiter, fake, _ = make(workers=1, watcher=lambda: changes.pop(0) if changes else False)
    (old,) = fake.pids()
    ready(arbiter, fake, old)
    assert len(fake.spawned) == 1
    arbiter.tick()
    assert len(fake.spawned) == 2 and fake.kills == []
    ready(arbiter, fake, fake.pids()[1])
    assert fake.kills == [(old, signal.SIGTERM)]


def test_ttin_adds_a_worker_and_ttou_retires_one_but_never_the_last() -> None:
    arbiter, fake, _ = make(workers=2)
    first, second = fake.pids()
    ready(arbiter, fake, first, second)
    fake.signal(signal.SIGTTIN)
    arbiter.tick()
    assert arbiter.target == 3 and len(fake.spawned) == 3
    third = fake.pids()[2]
    ready(arbiter, fake, third)
    fake.signal(signal.SIGTTOU)
    arbiter.tick()
    assert arbiter.target == 2
    assert fake.kills == [(first, signal.SIGTERM)]  # the oldest ready one
    fake.exit(first, 0)
    arbiter.tick()
    assert len(fake.spawned) == 3  # not replaced: it was retired on purpose
    for _ in range(3):
        fake.signal(signal.SIGTTOU)
    arbiter.tick()
    assert arbiter.target == 1
    assert fake.kills == [(first, signal.SIGTERM), (second, signal.SIGTERM)]


def test_ttou_retires_a_booting_worker_before_a_ready_one() -> None:
    arbiter, fake, _ = make(workers=2)
    first, second = fake.pids()
    ready(arbiter, fake, first)
    fake.signal(signal.SIGTTOU)
    arbiter.tick()
    assert fake.kills == [(second, signal.SIGTERM)]


def test_max_requests_retiring_worker_is_replaced_before_it_exits() -> None:
    arbiter, fake, _ = make(workers=1)
    (old,) = fake.pids()
    ready(arbiter, fake, old)
    fake.notice(arbiter._notify_w, old, "retiring")
    arbiter.tick()
    assert len(fake.spawned) == 2  # the replacement boots while the old one finishes
    assert fake.kills == []  # it is leaving on its own: no signal
    assert arbiter.workers[old].state is WorkerState.RETIRING
    fake.exit(old, 0)
    arbiter.tick()
    assert len(fake.spawned) == 2
    assert arbiter.state is MasterState.RUNNING


def test_a_retiring_worker_that_does_not_leave_is_killed_after_the_graceful_timeout() -> None:
    arbiter, fake, _ = make(workers=1)
    (old,) = fake.pids()
    ready(arbiter, fake, old)
    fake.notice(arbiter._notify_w, old, "retiring")
    arbiter.tick()
    fake.advance(GRACEFUL)
    beat_all(arbiter, fake)
    arbiter.tick()
    assert fake.kills == [(old, signal.SIGKILL)]


def test_notices_split_across_reads_and_malformed_ones() -> None:
    arbiter, fake, _ = make(workers=1)
    (pid,) = fake.pids()
    line = f"{pid} ready\n".encode()
    fake.write_nowait(arbiter._notify_w, b"garbage line\n" + line[:3])
    arbiter.tick()
    assert arbiter.workers[pid].state is WorkerState.BOOTING
    fake.write_nowait(arbiter._notify_w, line[3:])
    arbiter.tick()
    assert arbiter.workers[pid].state is WorkerState.READY


def test_a_signal_burst_is_bounded_and_the_handler_only_queues() -> None:
    arbiter, fake, _ = make(workers=1)
    for _ in range(100):
        fake.signal(signal.SIGTTIN)
    assert len(fake.spawned) == 1  # the handler itself changed nothing
    assert len(arbiter.signals) == 16
    arbiter.tick()
    assert arbiter.target == 17


def test_a_spawn_failure_closes_the_heartbeat_and_propagates() -> None:
    fake, command = FakeOS(), Command()
    fake.spawn_error = OSError("no more processes")
    arbiter = Arbiter(command, workers=1, timeout=TIMEOUT, graceful_timeout=GRACEFUL, osapi=fake)
    with pytest.raises(OSError):
        arbiter.start()
    assert fake._pending_heartbeat.closed
    assert arbiter.workers == {}
