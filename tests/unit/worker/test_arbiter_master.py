"""The master's set-up (worker/master.py, worker/cli.py): layer checks, the child's command, pidfile, file watcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.django_site.testing import setup

setup()

from django.test import override_settings  # noqa: E402

from worker import cli  # noqa: E402
from worker.arbiter import BOOT_ERROR  # noqa: E402
from worker.child import ChildSpec  # noqa: E402
from worker.config import WorkerOptions  # noqa: E402
from worker.master import FileWatcher, MasterError, Pidfile, WorkerCommand, check_layer, serve  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def test_check_layer_names_the_alias_and_the_backend() -> None:
    check_layer("default")  # the test site's (in-memory) layer
    with pytest.raises(MasterError, match=r"--layer nope: settings.CHANNEL_LAYERS has no alias 'nope'"):
        check_layer("nope")
    layers: dict[str, Any] = {"default": {"CONFIG": {}}}
    with override_settings(CHANNEL_LAYERS=layers), pytest.raises(MasterError, match="has no BACKEND"):
        check_layer("default")
    layers = {"default": {"BACKEND": "ipc_layer.aio.IPCChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers), pytest.raises(MasterError, match=r"Channels 4 \(async\)"):
        check_layer("default")
    with override_settings(CHANNEL_LAYERS={"default": "ipc_layer.IPCChannelLayer"}), \
            pytest.raises(MasterError, match="must be a mapping"):
        check_layer("default")


def test_the_child_command_carries_the_spec_fds_and_interpreter_flags() -> None:
    spec = ChildSpec(settings="tests.django_site.settings", path=("/a", "/b"), layer="default",
                     only_channels=("http.*",), threads=2, timeout=12.0, max_requests=5)
    command = WorkerCommand(spec, env={"X": "1"})
    argv = command.argv(number=7, heartbeat_fd=11, notify_fd=12, master_pid=99)
    assert argv[0] == sys.executable
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    assert argv[1 : 1 + len(flags)] == flags  # -X dev, -bb under the test suite
    rest = argv[1 + len(flags):]
    assert rest[:10] == ["-m", "worker.child", "--heartbeat-fd", "11", "--notify-fd", "12", "--master-pid", "99",
                         "--number", "7"]
    assert ChildSpec.from_json(rest[10]) == spec
    assert json.loads(rest[10])["only_channels"] == ["http.*"]
    assert command.env() == {"X": "1"}


def test_pidfile_refuses_a_live_pid_and_replaces_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    path.write_text(f"{os.getppid()}\n")  # a live process that is not us
    with pytest.raises(MasterError, match=rf"names pid {os.getppid()}, which is running"):
        Pidfile(str(path)).create(os.getpid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(f"{dead.pid}\n")
    Pidfile(str(path)).create(os.getpid())
    assert path.read_text() == f"{os.getpid()}\n"
    Pidfile(str(path)).remove(os.getpid() + 1)  # not ours: left alone
    assert path.exists()
    Pidfile(str(path)).remove(os.getpid())
    assert not path.exists()
    with pytest.raises(MasterError, match="cannot write it"):
        Pidfile(str(tmp_path / "missing" / "w.pid")).create(os.getpid())


def test_file_watcher_reports_each_change_once(tmp_path: Path) -> None:
    module = tmp_path / "site_code.py"
    module.write_text("A = 1\n")
    (tmp_path / "notes.txt").write_text("not python")
    watcher = FileWatcher([tmp_path])
    assert watcher.changed() is False
    module.write_text("A = 22\n")
    assert watcher.changed() is True
    assert watcher.changed() is False
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.py").write_text("")
    assert watcher.changed() is True
    (tmp_path / "notes.txt").write_text("still not python, longer")
    assert watcher.changed() is False


class _Arbiter:
    """Stands in for the arbiter: records how serve() built it."""

    made: list[dict[str, Any]] = []
    halt_reason: str | None = None
    code = 0

    def __init__(self, command: WorkerCommand, **kwargs: Any) -> None:
        _Arbiter.made.append({"command": command, **kwargs})

    def run(self) -> int:
        return self.code


def test_serve_builds_the_arbiter_from_the_options(tmp_path: Path) -> None:
    _Arbiter.made.clear()
    options = WorkerOptions(workers=3, timeout=9.0, graceful_timeout=4.0, only_channels=("http.*",),
                            pidfile=str(tmp_path / "p.pid"))
    assert serve(options, settings_module="tests.django_site.settings", arbiter_factory=_Arbiter) == 0
    (made,) = _Arbiter.made
    assert (made["workers"], made["timeout"], made["graceful_timeout"], made["watcher"]) == (3, 9.0, 4.0, None)
    spec = made["command"].spec
    assert (spec.settings, spec.layer, spec.only_channels, spec.timeout) == ("tests.django_site.settings", "default",
                                                                           ("http.*",), 9.0)
    assert not (tmp_path / "p.pid").exists()  # removed after the run


def test_serve_turns_a_halt_into_a_master_error_with_the_boot_error_code() -> None:
    class Halted(_Arbiter):
        halt_reason = "worker 1 (pid 5) failed to boot: SyntaxError: bad"
        code = BOOT_ERROR

    with pytest.raises(MasterError, match="failed to boot: SyntaxError: bad") as info:
        serve(WorkerOptions(workers=1), arbiter_factory=Halted)
    assert info.value.code == BOOT_ERROR


def test_ipc_worker_refuses_bad_options_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--workers", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ipc-worker: error: argument --workers: '0' must be between 1 and 1024")
    with pytest.raises(SystemExit):
        cli.main(["--max-requests-jitter", "3"])
    assert "--max-requests-jitter needs --max-requests" in capsys.readouterr().err


def test_ipc_worker_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--settings", "--workers", "--threads", "--layer", "--only-channels", "--exclude-channels",
                 "--timeout", "--graceful-timeout", "--max-requests", "--max-requests-jitter", "--pidfile",
                 "--reload", "--verbosity"):
        assert flag in out
