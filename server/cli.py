"""``ipc-server`` (also ``python -m server``): the protocol server's command line, Daphne 1.x's options.

::

    ipc-server                                   # 127.0.0.1:8000, shared-memory layer, prefix "default"
    ipc-server -b 0.0.0.0 -p 8080 --prefix mysite
    ipc-server -e tcp:8000 -e ssl:8443:privateKey=key.pem:certKey=cert.pem
    ipc-server -u /run/mysite.sock --layer ipc_layer.redis_layer.RedisChannelLayer \\
               --layer-config '{"hosts": ["redis://127.0.0.1:6379/0"]}'

Every mistake (a bad option value, a layer path that does not import, a
CONFIG key the layer does not take) is one line on stderr naming it and
exit status 2, as argparse does; nothing ends in a traceback.

The layer's own options (``--prefix``, ``--capacity``, ``--channel-capacity
GLOB=N``, ``--expiry``, ``--spin-us``, ``--redis-url``...) are not written
here: they come from their one declaration, :mod:`ipc_layer.options`
(:func:`~ipc_layer.options.add_arguments`), for the kind of layer
``--layer`` names, so their names, defaults, ranges and help are the
layer's and a bad value is refused before anything starts. The command
line is therefore read in two steps: ``--layer`` first (its class says its
``option_kind``; a layer that does not declare one gets the options every
ASGI 1 layer shares, the ``base`` kind), then everything with that kind's
flags. ``--layer X --help`` lists X's. ``--layer-config JSON`` still takes
any keyword argument; a key given both ways is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ipc_layer import options
from ipc_layer.loading import InvalidLayerError, import_backend, load_layer

from .access import access_logger
from .config import READERS, ServerConfig

__all__ = ["build_parser", "layer_config", "layer_from", "layer_kind", "main", "parse_args"]

logger = logging.getLogger("server")

DEFAULT_LAYER = "ipc_layer.IPCChannelLayer"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _websocket_timeout(text: str) -> float | None:
    if text.strip() == "-1":
        return None
    return _positive(text)


def layer_kind(path: str) -> str:
    """The :mod:`ipc_layer.options` kind of the layer class at ``path`` (``base`` when it declares none).

    :raises InvalidLayerError: ``path`` does not import or is not a layer class.
    """
    backend = import_backend(path)
    # Declared on the class itself only, as ipc_layer.loading reads it: a
    # subclass may take other options than the class it extends.
    kind = vars(backend).get("option_kind")
    return kind if isinstance(kind, str) and kind in options.KINDS else "base"


def build_parser(kind: str = "ipc") -> argparse.ArgumentParser:
    """The parser, with the layer options of ``kind`` (the default layer's: ``ipc``)."""
    parser = argparse.ArgumentParser(
        prog="ipc-server",
        description="HTTP/1.1 and WebSocket protocol server that passes ASGI 1 messages to workers "
                    "over a channel layer (shared memory by default).",
    )
    listen = parser.add_argument_group("listening (several may be combined)")
    listen.add_argument("-b", "--bind", default=None, help="address to bind (default 127.0.0.1)")
    listen.add_argument("-p", "--port", type=int, default=None, help="TCP port (default 8000)")
    listen.add_argument("-u", "--unix-socket", default=None, help="listen on this UNIX socket path")
    listen.add_argument("--fd", type=int, action="append", default=[],
                        help="listen on this inherited socket file descriptor (supervisord, systemd)")
    listen.add_argument("--reuse-port", action="store_true",
                        help="open -b/-p's TCP socket with SO_REUSEPORT, so several ipc-server processes "
                             "(supervisord numprocs) listen on the same port and the kernel spreads "
                             "connections between them")
    listen.add_argument("--udp-port", type=int, action="append", default=[], metavar="PORT",
                        help="also receive UDP datagrams on PORT (on --bind's address) as udp.receive messages")
    listen.add_argument("-e", "--endpoint", action="append", default=[],
                        help="a Twisted endpoint string, e.g. tcp:8000, ssl:443:privateKey=k.pem:certKey=c.pem")
    layer = parser.add_argument_group(
        "channel layer", f"The options of {options.KINDS[kind]} (from ipc_layer.options; "
                         "'--layer PATH --help' lists that layer's).")
    layer.add_argument("--layer", default=DEFAULT_LAYER,
                       help=f"dotted path of the layer class (default {DEFAULT_LAYER})")
    layer.add_argument("--layer-config", default=None, type=_json_object,
                       help='the layer\'s keyword arguments as JSON, e.g. \'{"prefix": "mysite"}\' '
                            "(any the layer takes; one also given as a flag is refused)")
    options.add_arguments(layer, kind)
    timeouts = parser.add_argument_group("timeouts")
    timeouts.add_argument("--http-timeout", type=_positive, default=120.0,
                          help="seconds before an unanswered request gets 503 (default 120)")
    timeouts.add_argument("--websocket-timeout", type=_websocket_timeout, default=None,
                          help="seconds a WebSocket may stay open; -1 = the layer's group_expiry (default)")
    timeouts.add_argument("--websocket-connect-timeout", type=_positive, default=5.0,
                          help="seconds the application has to accept a WebSocket before 403 (default 5)")
    timeouts.add_argument("--ping-interval", type=_positive, default=20.0,
                          help="seconds between WebSocket keep-alive pings (default 20)")
    timeouts.add_argument("--ping-timeout", type=_positive, default=30.0,
                          help="seconds without a pong before the socket is closed (default 30)")
    timeouts.add_argument("--graceful-timeout", type=_positive, default=30.0,
                          help="seconds in-flight requests get to finish on SIGTERM (default 30)")
    proto = parser.add_argument_group("protocol")
    proto.add_argument("--ws-protocol", action="append", default=[], metavar="PROTOCOL",
                       help="a WebSocket subprotocol to accept (several allowed)")
    proto.add_argument("--proxy-headers", action="store_true",
                       help="take the client address and scheme from X-Forwarded-For/-Port/-Proto")
    proto.add_argument("--root-path", default="", help="the ASGI root_path (mount point) of the site")
    proto.add_argument("--server-name", default="ipc-server", help="the Server header ('' for none)")
    proto.add_argument("--websocket-max-message-size", type=_size, default=1 << 20,
                       help="largest WebSocket message in bytes (default 1048576)")
    proto.add_argument("--request-body-inline", type=_size, default=256 * 1024,
                       help="body bytes sent inline in http.request; the rest streams on a body channel "
                            "(default 262144)")
    proto.add_argument("--reader", choices=READERS, default="auto",
                       help="how replies reach the reactor: the layer's twisted_stream or twisted extension, "
                            "or a thread (default auto: the first of these the layer has)")
    output = parser.add_argument_group("logging")
    output.add_argument("--access-log", default=None, metavar="FILE",
                        help="write the access log to FILE ('-' = stdout; default stdout at -v 1 and up)")
    output.add_argument("-v", "--verbosity", type=int, choices=(0, 1, 2), default=1,
                        help="0 = warnings only, 1 = info and the access log (default), 2 = debug")
    return parser


def _tcp_wanted(args: argparse.Namespace) -> bool:
    """Whether -b/-p (or the default 127.0.0.1:8000, when nothing else is given) is to be listened on."""
    return (args.bind is not None or args.port is not None
            or (not args.endpoint and not args.unix_socket and not args.fd))


def endpoints_from(args: argparse.Namespace) -> list[str]:
    """Twisted endpoint strings for -b/-p/-u/-e (the default 127.0.0.1:8000 when none is given).

    With ``--reuse-port`` the -b/-p socket is not an endpoint: :func:`reuse_port_socket` opens it.
    """
    endpoints = list(args.endpoint)
    if args.unix_socket:
        endpoints.append(f"unix:{args.unix_socket}")
    if _tcp_wanted(args) and not getattr(args, "reuse_port", False):
        host = args.bind or "127.0.0.1"
        port = 8000 if args.port is None else args.port
        interface = host.replace(":", r"\:")  # IPv6 colons are escaped in endpoint strings
        endpoints.append(f"tcp:port={port}:interface={interface}")
    return endpoints


def reuse_port_socket(args: argparse.Namespace, backlog: int = 1024) -> socket.socket | None:
    """The -b/-p listening socket with SO_REUSEPORT (``--reuse-port``), or None without it.

    Twisted's ``tcp:`` endpoint cannot set SO_REUSEPORT, so the socket is made here and
    adopted like an inherited ``--fd``. Every process that binds the same address with the
    option (same user) shares the port; the kernel hashes each new connection to one of them.

    :raises OSError: the address cannot be bound (in use without SO_REUSEPORT, not local...).
    """
    if not getattr(args, "reuse_port", False) or not _tcp_wanted(args):
        return None
    host = args.bind or "127.0.0.1"
    port = 8000 if args.port is None else args.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def layer_config(args: argparse.Namespace) -> dict[str, Any]:
    """The layer's CONFIG: ``--layer-config`` and the layer's own flags (checked by parse_args)."""
    config: dict[str, Any] = dict(args.layer_config or {})
    config.update(args.layer_options)
    return config


def layer_from(args: argparse.Namespace) -> Any:
    return load_layer(args.layer, layer_config(args))


def _configure_logging(args: argparse.Namespace) -> None:
    level = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[args.verbosity]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    access_logger.propagate = False
    if args.access_log or args.verbosity >= 1:
        target = args.access_log or "-"
        handler: logging.Handler = (logging.StreamHandler(sys.stdout) if target == "-"
                                    else logging.FileHandler(target, encoding="utf-8"))
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(handler)
        access_logger.setLevel(logging.INFO)
    # Twisted's own log into the logging module, quiet below -v 2 as Daphne's is.
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    twisted_logger = logging.getLogger("twisted")
    twisted_logger.setLevel(logging.DEBUG if args.verbosity >= 2 else logging.WARNING)
    observer: Any = STDLibLogObserver(name="twisted")  # provides ILogObserver (zope)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def _unknown(parser: argparse.ArgumentParser, extra: list[str], layer: str, kind: str) -> NoReturn:
    """Refuse arguments nobody takes; name the layers that take a flag another layer declares."""
    flag = next((arg.split("=", 1)[0] for arg in extra if arg.startswith("--")), None)
    if flag is not None:
        takers = [name for name, path in options.KINDS.items() if name != kind and any(
            option.cli_flag == flag for option in options.options_for(name).values())]
        if takers:
            parser.error(f"{flag} is an option of {', '.join(options.KINDS[name] for name in takers)}, "
                         f"not of --layer {layer}")
    parser.error(f"unrecognized arguments: {' '.join(extra)}")


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, ServerConfig]:
    """The namespace (with ``layer_kind`` and the checked ``layer_options``) and the server's config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Step one: which layer, hence which layer options (--help waits for step two).
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--layer", default=DEFAULT_LAYER)
    known, _ = first.parse_known_args(argv)
    try:
        kind = layer_kind(known.layer)
    except InvalidLayerError as exc:
        build_parser().error(str(exc))
    parser = build_parser(kind)
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown(parser, extra, known.layer, kind)
    args.layer_kind = kind
    try:
        args.layer_options = options.config_from_args(args, kind)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    both = sorted(set(args.layer_options) & set(args.layer_config or {}))
    if both:
        flags = ", ".join(options.options_for(kind)[name].cli_flag or name for name in both)
        parser.error(f"{flags} also given in --layer-config ({', '.join(map(repr, both))}); give each once")
    try:
        config = ServerConfig(
            http_timeout=args.http_timeout, websocket_timeout=args.websocket_timeout,
            websocket_connect_timeout=args.websocket_connect_timeout, ping_interval=args.ping_interval,
            ping_timeout=args.ping_timeout, ws_protocols=tuple(args.ws_protocol),
            proxy_headers=args.proxy_headers, root_path=args.root_path, server_name=args.server_name,
            websocket_max_message_size=args.websocket_max_message_size or 1,
            request_body_inline=args.request_body_inline, graceful_timeout=args.graceful_timeout,
            reader=args.reader,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return args, config


def main(argv: Sequence[str] | None = None) -> int:
    args, config = parse_args(argv)
    _configure_logging(args)
    try:
        layer = layer_from(args)
    except InvalidLayerError as exc:
        print(f"ipc-server: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the layer could not start (segment, Redis): say so in one line
        print(f"ipc-server: error: cannot start layer {args.layer}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    from twisted.internet import reactor as default_reactor

    from .server import Server

    reactor: Any = default_reactor  # IReactorCore etc. are zope interfaces

    try:
        shared = reuse_port_socket(args)
    except OSError as exc:
        print(f"ipc-server: error: cannot listen on {args.bind or '127.0.0.1'}:{args.port or 8000} "
              f"with --reuse-port: {exc}", file=sys.stderr)
        return 1
    fds = [*args.fd, *([shared.fileno()] if shared is not None else [])]
    udp = [(args.bind or "127.0.0.1", port) for port in args.udp_port]
    server = Server(layer, endpoints_from(args), config, reactor=reactor, fds=fds, udp=udp)
    failed: list[str] = []

    def started_failed(failure: Any) -> None:
        failed.append(failure.getErrorMessage())
        logger.error("cannot listen: %s", failure.getErrorMessage())
        reactor.stop()

    reactor.callWhenRunning(lambda: server.start().addErrback(started_failed))
    reactor.run()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
