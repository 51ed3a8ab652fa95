"""``worker.supervisord`` and ``manage.py supervisor_conf``: what supervisord reads back from the text.

The configuration is parsed by supervisor's own ``ServerOptions`` (the code supervisord runs
at start), so the quoting, the ``%`` expansion, the group and every stop setting are checked
as supervisord will see them. The live test (tests/integration/worker/test_supervisord_live.py)
runs it.
"""

from __future__ import annotations

import io
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.django_site import testing

pytest.importorskip("supervisor", reason="the supervisor package (the tests extra) is not installed")
testing.setup()

from django.core.management import CommandError, call_command  # noqa: E402
from django.test import override_settings  # noqa: E402
from supervisor.options import ServerOptions  # noqa: E402

from worker.supervisord import ConfigError, SiteConfig, render, worker_stopwaitsecs  # noqa: E402

TRICKY = 'a "quoted" 100% \\ value, with comma'


def _site(**overrides: Any) -> SiteConfig:
    values: dict[str, Any] = dict(
        site="mysite", settings_module="mysite.settings", directory="/srv/mysite",
        layer_backend="ipc_layer.IPCChannelLayer", layer_config={"prefix": "mysite", "note": "50%"},
        servers=2, port=8123, workers=3, server_graceful_timeout=12, worker_graceful_timeout=20,
        blocking_timeout=5.0, log_dir="/tmp", env={"SECRET": TRICKY},
    )
    values.update(overrides)
    return SiteConfig(**values)


def _parse(tmp_path: Path, text: str) -> ServerOptions:
    site = tmp_path / "site.conf"
    site.write_text(text)
    main = tmp_path / "supervisord.conf"
    main.write_text(f"[supervisord]\nlogfile={tmp_path}/s.log\npidfile={tmp_path}/s.pid\n"
                    f"[include]\nfiles={site}\n")
    options = ServerOptions()
    options.realize(args=["-c", str(main)])
    return options


def _programs(options: ServerOptions) -> dict[str, Any]:
    (group,) = [g for g in options.process_group_configs if g.name == "mysite"]
    return {process.name: process for process in group.process_configs}


def test_supervisord_reads_one_group_with_both_programs(tmp_path: Path) -> None:
    processes = _programs(_parse(tmp_path, render(_site())))
    assert sorted(processes) == ["mysite-server_00", "mysite-server_01", "mysite-worker"]
    server, worker = processes["mysite-server_00"], processes["mysite-worker"]
    argv = shlex.split(server.command)
    assert argv[1:9] == ["--bind", "127.0.0.1", "--port", "8123", "--reuse-port", "--layer",
                         "ipc_layer.IPCChannelLayer", "--layer-config"]
    # The JSON survives shlex and supervisord's %-expansion intact.
    assert argv[9] == '{"note":"50%","prefix":"mysite"}'
    assert argv[10:] == ["--graceful-timeout", "12"]
    assert shlex.split(worker.command)[1:] == ["--settings", "mysite.settings", "--layer", "default",
                                              "--workers", "3", "--threads", "1", "--graceful-timeout", "20"]
    for process in processes.values():
        assert process.environment == {"DJANGO_SETTINGS_MODULE": "mysite.settings", "PYTHONUNBUFFERED": "1",
                                       "SECRET": TRICKY}
        assert process.stopsignal == 15 and process.killasgroup and not process.stopasgroup
        assert process.directory == "/srv/mysite" and process.redirect_stderr
    assert server.stopwaitsecs == 12 + 5
    assert worker.stopwaitsecs == 20 + 5 + 5  # graceful + blocking_timeout + margin
    assert processes["mysite-server_01"].stdout_logfile == "/tmp/mysite-server_01.log"
    assert worker.stdout_logfile == "/tmp/mysite-worker.log"
    assert worker.priority < server.priority  # workers start first and stop last


def test_one_server_has_no_process_number_and_the_stop_wait_follows_blocking_timeout(tmp_path: Path) -> None:
    processes = _programs(_parse(tmp_path, render(_site(servers=1, blocking_timeout=0.5))))
    assert sorted(processes) == ["mysite-server", "mysite-worker"]
    assert processes["mysite-worker"].stopwaitsecs == worker_stopwaitsecs(_site(blocking_timeout=0.5)) == 26


@pytest.mark.parametrize(("overrides", "culprit"), [
    ({"site": "my:site"}, "site name 'my:site'"),
    ({"servers": 0}, "servers must be a whole number from 1 to 64"),
    ({"port": 70000}, "port must be"),
    ({"worker_graceful_timeout": float("nan")}, "worker graceful timeout"),
    ({"directory": "relative/dir"}, "directory 'relative/dir' must be an absolute path"),
    ({"env": {"BAD KEY": "x"}}, "'BAD KEY' is not a valid name"),
    ({"env": {"K": "two\nlines"}}, "line break"),
    ({"env": {"K": "both ' and \""}}, "holds both kinds"),
    ({"env": {"K": '"quoted"'}}, "starts or ends with a quote"),
    ({"layer_config": {"hosts": {1, 2}}}, "cannot be passed to ipc-server as --layer-config JSON"),
])
def test_what_supervisord_could_not_run_is_refused_by_name(overrides: dict[str, Any], culprit: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        render(_site(**overrides))
    assert culprit in str(caught.value)


def _command(*args: str, **layers: Any) -> str:
    out = io.StringIO()
    with override_settings(CHANNEL_LAYERS=layers):
        call_command("supervisor_conf", *args, stdout=out)
    return out.getvalue()


def test_the_command_writes_the_layers_default_prefix_out(tmp_path: Path) -> None:
    """ipc-server's default prefix ('default') is not the layer's ('ipc'): left implicit, the
    server and the workers would open different segments. The command writes it out."""
    text = _command("--log-dir", str(tmp_path / "log"), "--site", "mysite",
                    default={"BACKEND": "ipc_layer.IPCChannelLayer", "CONFIG": {"capacity": 50}})
    server = _programs(_parse(tmp_path, text))["mysite-server"]
    argv = shlex.split(server.command)
    assert argv[argv.index("--layer-config") + 1] == '{"capacity":50,"prefix":"default"}'
    assert (tmp_path / "log").is_dir()


def test_the_command_names_a_missing_alias_and_a_bad_backend(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="CHANNEL_LAYERS has no alias 'other' \\(--layer\\); defined: 'default'"):
        _command("--layer", "other", default={"BACKEND": "ipc_layer.IPCChannelLayer"})
    with pytest.raises(CommandError, match="CHANNEL_LAYERS\\['default'\\]: .*no_such"):
        _command("--log-dir", str(tmp_path), default={"BACKEND": "no_such.Layer"})
    with pytest.raises(CommandError, match="site name"):
        _command("--site", "a b", "--log-dir", str(tmp_path), default={"BACKEND": "ipc_layer.IPCChannelLayer"})


def test_the_command_writes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "mysite.conf"
    _command("-o", str(target), "--site", "mysite", "--log-dir", str(tmp_path),
             default={"BACKEND": "ipc_layer.IPCChannelLayer", "CONFIG": {"prefix": "p"}})
    assert "[group:mysite]\nprograms=mysite-server,mysite-worker\n" in target.read_text()
