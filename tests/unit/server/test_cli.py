"""``ipc-server``'s command line: every option reaches the config or the listening list; mistakes are one line, rc 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ipc_layer import options
from server.cli import build_parser, endpoints_from, layer_config, layer_from, parse_args

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_are_daphnes() -> None:
    args, config = parse_args([])
    assert endpoints_from(args) == ["tcp:port=8000:interface=127.0.0.1"]
    assert (config.http_timeout, config.websocket_timeout, config.websocket_connect_timeout) == (120.0, None, 5.0)
    assert (config.ping_interval, config.ping_timeout) == (20.0, 30.0)
    assert config.websocket_max_message_size == 1 << 20
    assert config.server_name == "ipc-server" and config.reader == "auto"
    assert args.layer == "ipc_layer.IPCChannelLayer" and args.verbosity == 1


def test_every_option_is_carried() -> None:
    args, config = parse_args([
        "-b", "::1", "-p", "9000", "-u", "/tmp/s.sock", "--fd", "5", "-e", "ssl:443:privateKey=k.pem",
        "--udp-port", "9001", "--http-timeout", "7", "--websocket-timeout", "60", "--websocket-connect-timeout", "2",
        "--ping-interval", "3", "--ping-timeout", "4", "--ws-protocol", "chat", "--ws-protocol", "v2",
        "--proxy-headers", "--root-path", "/site", "--server-name", "", "--websocket-max-message-size", "1000",
        "--request-body-inline", "10", "--graceful-timeout", "9", "--reader", "thread", "--access-log", "-",
        "-v", "2", "--prefix", "mysite",
    ])
    assert endpoints_from(args) == ["ssl:443:privateKey=k.pem", "unix:/tmp/s.sock", r"tcp:port=9000:interface=\:\:1"]
    assert args.fd == [5] and args.udp_port == [9001] and args.access_log == "-" and args.verbosity == 2
    assert (config.http_timeout, config.websocket_timeout, config.websocket_connect_timeout) == (7, 60, 2)
    assert (config.ping_interval, config.ping_timeout, config.graceful_timeout) == (3, 4, 9)
    assert config.ws_protocols == ("chat", "v2") and config.proxy_headers and config.root_path == "/site"
    assert config.server_name == "" and config.websocket_max_message_size == 1000
    assert config.request_body_inline == 10 and config.reader == "thread"
    assert args.layer_options == {"prefix": "mysite"}


def test_only_fd_or_unix_means_no_default_tcp() -> None:
    assert endpoints_from(parse_args(["--fd", "3"])[0]) == []
    assert endpoints_from(parse_args(["-u", "/tmp/x"])[0]) == ["unix:/tmp/x"]


def test_websocket_timeout_minus_one_is_the_layers_group_expiry() -> None:
    assert parse_args(["--websocket-timeout", "-1"])[1].websocket_timeout is None


def test_layer_config_and_prefix() -> None:
    args, _ = parse_args(["--layer", "ipc_layer.InMemoryChannelLayer", "--layer-config", '{"capacity": 7}'])
    layer = layer_from(args)
    assert type(layer).__name__ == "InMemoryChannelLayer" and layer.capacity == 7


@pytest.mark.parametrize("path", ["ipc_layer.IPCChannelLayer", "ipc_layer.InMemoryChannelLayer",
                                  "ipc_layer.redis_layer.RedisChannelLayer", "ipc_layer.hybrid.HybridChannelLayer"])
def test_the_layer_options_are_the_declared_ones_of_that_layer(path: str) -> None:
    """Each flag of the layer's kind in ipc_layer.options, with its declared help, and no other kind's."""
    args, _ = parse_args(["--layer", path])
    kind = args.layer_kind
    assert options.KINDS[kind] == path
    parser = build_parser(kind)
    by_flag = {flag: action for action in parser._actions for flag in action.option_strings}
    declared = {option.cli_flag: option for option in options.options_for(kind).values() if option.cli_flag}
    assert declared, kind
    for flag, option in declared.items():
        assert flag in by_flag, f"{flag} of {kind} missing"
        assert by_flag[flag].dest == option.name
        assert option.help in (by_flag[flag].help or "") or flag == "--prefix"
    others = {option.cli_flag for name in options.KINDS for option in options.options_for(name).values()
              if option.cli_flag and option.cli_flag not in declared}
    assert not others & set(by_flag), f"other layers' flags offered for {kind}: {others & set(by_flag)}"


def test_layer_flags_become_the_layers_config() -> None:
    args, _ = parse_args(["--layer", "ipc_layer.InMemoryChannelLayer", "--capacity", "7", "--expiry", "5",
                          "--channel-capacity", "http.request=3", "--channel-capacity", "websocket.*=4",
                          "--layer-config", '{"group_expiry": 30}'])
    assert layer_config(args) == {"capacity": 7, "expiry": 5, "group_expiry": 30,
                                  "channel_capacity": {"http.request": 3, "websocket.*": 4}}
    layer = layer_from(args)
    assert layer.capacity == 7 and layer.expiry == 5 and layer.group_expiry == 30
    assert layer.capacities.get("http.request") == 3 and layer.capacities.get("websocket.receive") == 4


def test_the_shared_memory_prefix_is_default_unless_given() -> None:
    # The server leaves the prefix to the layer's declared default, "default" (issue 12), the
    # same default a worker's CHANNEL_LAYERS entry without a prefix gets: left implicit on
    # both sides, the two open one segment (they used to differ, "default" and "ipc").
    assert options.PREFIX.default == "default"
    assert layer_config(parse_args([])[0]) == {}
    assert layer_config(parse_args(["--prefix", "site", "--spin-us", "50"])[0]) == {"prefix": "site", "spin_us": 50}
    assert layer_config(parse_args(["--layer-config", '{"prefix": "json"}'])[0]) == {"prefix": "json"}
    # Another layer kind keeps its own declared default.
    assert "prefix" not in layer_config(parse_args(["--layer", "ipc_layer.redis_layer.RedisChannelLayer"])[0])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--http-timeout", "0"], "must be a finite number > 0"),
        (["--http-timeout", "inf"], "must be a finite number > 0"),
        (["--ping-interval", "x"], "is not a number"),
        (["--request-body-inline", "-1"], "must be >= 0"),
        (["--layer-config", "{bad"], "not valid JSON"),
        (["--layer-config", "[1]"], "must be a JSON object"),
        (["--root-path", "site/"], "root_path must start with '/'"),
        (["--ws-protocol", "a b"], "is not a token"),
        (["--reader", "poll"], "invalid choice"),
        (["--layer", "nope.Nope"], "cannot import module 'nope'"),
        (["--layer", "ipc_layer.InMemoryChannelLayer", "--layer-config", '{"colour": 1}'], "colour"),
        (["--prefix", "no/slash"], "argument --prefix: prefix 'no/slash' must be 1..100"),
        (["--capacity", "0"], "argument --capacity"),
        (["--channel-capacity", "http.*"], "argument --channel-capacity"),
        (["--prefix", "a", "--layer-config", '{"prefix": "b"}'], "--prefix also given in --layer-config"),
        (["--layer", "ipc_layer.InMemoryChannelLayer", "--prefix", "x"],
         "--prefix is an option of ipc_layer.IPCChannelLayer"),
        (["--layer", "ipc_layer.redis_layer.RedisChannelLayer", "--spin-us", "5"],
         "--spin-us is an option of ipc_layer.IPCChannelLayer, ipc_layer.aio.IPCChannelLayer, not of --layer"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_mistakes_are_one_line_and_rc_2(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "server", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_every_option() -> None:
    proc = subprocess.run([sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    for option in ("--bind", "--port", "--unix-socket", "--fd", "--endpoint", "--udp-port", "--layer",
                   "--layer-config", "--prefix", "--http-timeout", "--websocket-timeout",
                   "--websocket-connect-timeout", "--ping-interval", "--ping-timeout", "--graceful-timeout",
                   "--ws-protocol", "--proxy-headers", "--root-path", "--server-name",
                   "--websocket-max-message-size", "--request-body-inline", "--reader", "--access-log",
                   "--verbosity", "--capacity", "--channel-capacity", "--expiry", "--spin-us", "--segment-size"):
        assert option in proc.stdout
    assert "(default 'default';" in " ".join(proc.stdout.split())  # the layer's declared default


def test_help_of_another_layer_lists_its_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "server", "--layer", "ipc_layer.redis_layer.RedisChannelLayer",
                           "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--redis-url" in proc.stdout and "--retry-timeout" in proc.stdout
    assert "--spin-us" not in proc.stdout and "--segment-size" not in proc.stdout
