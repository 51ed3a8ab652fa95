"""``ipc-server``'s command line: every option reaches the config or the listening list; mistakes are one line, rc 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import endpoints_from, layer_from, parse_args

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


def test_only_fd_or_unix_means_no_default_tcp() -> None:
    assert endpoints_from(parse_args(["--fd", "3"])[0]) == []
    assert endpoints_from(parse_args(["-u", "/tmp/x"])[0]) == ["unix:/tmp/x"]


def test_websocket_timeout_minus_one_is_the_layers_group_expiry() -> None:
    assert parse_args(["--websocket-timeout", "-1"])[1].websocket_timeout is None


def test_layer_config_and_prefix() -> None:
    args, _ = parse_args(["--layer", "ipc_layer.InMemoryChannelLayer", "--layer-config", '{"capacity": 7}'])
    layer = layer_from(args)
    assert type(layer).__name__ == "InMemoryChannelLayer" and layer.capacity == 7


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
                   "--verbosity"):
        assert option in proc.stdout
