"""A real ``ipc-server`` process on the shared-memory layer, a real echo application process, real clients."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


class _Lines:
    """Lines of a child's stream, read by a thread so the test never blocks on a pipe."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stream = stream
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def close(self) -> None:
        """After the child exited: the pump has seen EOF; close our end."""
        self.thread.join(timeout=5)
        self.stream.close()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; saw:\n{''.join(self.seen)}")

    def drain(self) -> str:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return "".join(self.seen)


@dataclass
class Live:
    port: int
    server: subprocess.Popen[str]
    app: subprocess.Popen[str]
    log: _Lines
    access: _Lines
    conns: list[http.client.HTTPConnection]
    udp_port: int

    def http(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.conns.append(conn)
        return conn


def _spawn(args: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds)


_LISTENING = r"Listening on 127\.0\.0\.1:(\d+)"


@contextlib.contextmanager
def _extra_server(*args: str, pass_fds: tuple[int, ...] = ()) -> Iterator[_Lines]:
    """Another ``ipc-server`` for one test: yields its log; SIGTERM and pipes closed after."""
    proc = _spawn(["-m", "server", *args], pass_fds)
    log, out = _Lines(proc.stderr), _Lines(proc.stdout)  # type: ignore[arg-type]
    try:
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        log.close()
        out.close()


@pytest.fixture
def live(prefix: str) -> Iterator[Live]:
    app = _spawn(["-m", "tests.integration.server.echo_app", "--prefix", prefix])
    # A generous http_timeout: these machines are shared and slow at times
    # (the 503 test starts its own server with a short one).
    server = _spawn(["-m", "server", "-p", "0", "--prefix", prefix, "--http-timeout", "60",
                     "--request-body-inline", "65536", "--graceful-timeout", "5", "--udp-port", "0"])
    log, access = _Lines(server.stderr), _Lines(server.stdout)  # type: ignore[arg-type]
    app_out, app_err = _Lines(app.stdout), _Lines(app.stderr)  # type: ignore[arg-type]
    try:
        port = int(log.wait_for(_LISTENING).group(1))
        udp_port = int(log.wait_for(r"Listening on udp 127\.0\.0\.1:(\d+)").group(1))
        app_out.wait_for("echo app ready")
        state = Live(port, server, app, log, access, [], udp_port)
        yield state
        for conn in state.conns:
            conn.close()
    finally:
        for proc in (server, app):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (server, app):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for lines in (log, access, app_out, app_err):
            lines.close()


def test_get_and_post_keep_alive(live: Live) -> None:
    conn = live.http()
    conn.request("GET", "/echo?a=1&b=%20")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("x-method") == "GET"
    assert response.getheader("x-query") == "a=1&b=%20"
    assert response.getheader("server") == "ipc-server"
    assert response.read() == b""
    conn.request("POST", "/echo", body=b"hello world")
    response = conn.getresponse()
    assert response.read() == b"hello world"
    assert response.getheader("x-method") == "POST"
    conn.close()
    live.access.wait_for(r'"POST /echo" 200 11')


def test_ten_mebibyte_upload_through_the_body_channel(live: Live) -> None:
    body = os.urandom(10 << 20)
    conn = live.http()
    conn.request("POST", "/echo", body=body)
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == body


def test_chunked_upload(live: Live) -> None:
    conn = live.http()
    conn.request("POST", "/echo", body=iter([b"abc", b"defg", b"h" * 100_000]), encode_chunked=True)
    assert conn.getresponse().read() == b"abcdefg" + b"h" * 100_000


def test_streaming_response(live: Live) -> None:
    conn = live.http()
    conn.request("GET", "/stream")
    response = conn.getresponse()
    assert response.getheader("transfer-encoding") == "chunked"
    assert response.read() == b"one,two,three"


def test_headers_arrive_in_order_with_duplicates(live: Live) -> None:
    conn = live.http()
    conn.putrequest("GET", "/headers", skip_accept_encoding=True)
    for name, value in (("X-B", "1"), ("X-A", "2"), ("X-B", "3"), ("X_Drop", "4")):
        conn.putheader(name, value)
    conn.endheaders()
    lines = conn.getresponse().read().decode().splitlines()
    assert [line for line in lines if line.startswith("x-")] == ["x-b: 1", "x-a: 2", "x-b: 3"]


def test_unanswered_request_is_503_after_http_timeout(live: Live, prefix: str) -> None:
    with _extra_server("-p", "0", "--prefix", prefix, "--http-timeout", "1.5") as log:
        port = int(log.wait_for(_LISTENING).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        started = time.monotonic()
        conn.request("GET", "/slow")
        response = conn.getresponse()
        assert response.status == 503
        assert b"failed to respond" in response.read()
        assert time.monotonic() - started >= 1.4
        conn.close()


def test_bad_request_is_400_and_the_server_lives_on(live: Live) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"GET /%FF HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    conn = live.http()
    conn.request("GET", "/echo")
    assert conn.getresponse().status == 200


def test_websocket_echo_text_bytes_close(live: Live) -> None:
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{live.port}/chat/", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"
        ws.send("close")
        with pytest.raises(Exception) as info:
            ws.recv(timeout=10)
        assert getattr(getattr(info.value, "rcvd", None), "code", None) == 4000
    live.access.wait_for(r'"WSCONNECT /chat/"')
    live.access.wait_for(r'"WSDISCONNECT /chat/"')


def test_websocket_reject_is_403(live: Live) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{live.port}/reject", open_timeout=10)
    assert info.value.response.status_code == 403


def test_graceful_stop_finishes_requests_and_closes_sockets_1001(live: Live) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    statuses: list[int] = []
    slow = live.http()

    def in_flight() -> None:
        slow.request("GET", "/delay")
        response = slow.getresponse()
        response.read()
        statuses.append(response.status)

    with connect(f"ws://127.0.0.1:{live.port}/chat/", open_timeout=10) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
        request = threading.Thread(target=in_flight)
        request.start()
        time.sleep(0.3)  # the request reaches the application before the stop
        live.server.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        request.join(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert statuses == [200]  # the request in flight finished during the drain
    assert live.server.wait(timeout=10) == 0
    live.log.wait_for("stopped")


def test_udp_echo(live: Live) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        for payload in (b"one", b"\x00two"):
            sock.sendto(payload, ("127.0.0.1", live.udp_port))
            data, _ = sock.recvfrom(100)
            assert data == b"echo:" + payload


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_idle_server_with_100_websockets_uses_no_cpu(live: Live, report_line: Callable[[str], None]) -> None:
    """The issue's idle bound: 100 connected, silent WebSocket clients cost the server < 1% of a core."""
    from websockets.sync.client import connect

    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(f"ws://127.0.0.1:{live.port}/idle/{i}", open_timeout=30))
                   for i in range(100)]
        sockets[-1].send("awake?")
        assert sockets[-1].recv(timeout=30) == "awake?"
        time.sleep(0.5)  # let the handshakes' work settle
        cpu0, t0 = _cpu_seconds(live.server.pid), time.monotonic()
        time.sleep(4.0)
        used, wall = _cpu_seconds(live.server.pid) - cpu0, time.monotonic() - t0
        share = 100 * used / wall
        report_line(f"idle server, 100 WebSockets: {used:.3f} s CPU in {wall:.1f} s ({share:.2f}% of a core)")
        assert used / wall < 0.01, f"idle server used {used:.3f} s of CPU in {wall:.1f} s"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (cryptography comes with Twisted's tls extra)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = tmp / "key.pem", tmp / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_http2_over_tls(live: Live, prefix: str, tmp_path: Path) -> None:
    """ALPN picks h2; requests, a streamed upload and a streamed response work over one connection."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    key, cert = _self_signed(tmp_path)
    import ssl

    with _extra_server("--prefix", prefix, "-e", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}") as log:
        port = int(log.wait_for(_LISTENING).group(1))

        with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as client:
            response = client.get(f"https://127.0.0.1:{port}/echo?q=2")
            assert response.http_version == "HTTP/2"
            assert response.status_code == 200 and response.headers["x-query"] == "q=2"
            body = os.urandom(300_000)  # past the inline limit: the body channel, over HTTP/2
            response = client.post(f"https://127.0.0.1:{port}/echo", content=body)
            assert response.http_version == "HTTP/2" and response.content == body
            assert client.get(f"https://127.0.0.1:{port}/stream").content == b"one,two,three"
            # Interleaved names keep their order over HTTP/2 too (Twisted's Headers would group them).
            response = client.get(f"https://127.0.0.1:{port}/headers",
                                  headers=[("x-a", "1"), ("x-b", "2"), ("x-a", "3")])
            assert [line for line in response.content.split(b"\n") if line.startswith(b"x-")] == [
                b"x-a: 1", b"x-b: 2", b"x-a: 3"]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def test_unix_socket_and_inherited_fd(live: Live, prefix: str, tmp_path: Path) -> None:
    """-u PATH and --fd N (a listening socket handed over, as supervisord and systemd do)."""
    import socket

    path = str(tmp_path / "s.sock")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    fd_port = listener.getsockname()[1]
    with listener, _extra_server("--prefix", prefix, "-u", path, "--fd", str(listener.fileno()),
                                 pass_fds=(listener.fileno(),)) as log:
        log.wait_for(r"Listening on .*fd:")
        unix = _UnixHTTPConnection(path)
        unix.request("POST", "/echo", body=b"over unix")
        assert unix.getresponse().read() == b"over unix"
        unix.close()
        inherited = http.client.HTTPConnection("127.0.0.1", fd_port, timeout=30)
        inherited.request("POST", "/echo", body=b"over the fd")
        assert inherited.getresponse().read() == b"over the fd"
        inherited.close()


def test_reuse_port_lets_two_servers_share_a_port(live: Live, prefix: str) -> None:
    """--reuse-port: a second and a third ipc-server bind the same -p (supervisord numprocs);
    both serve, and one leaving does not close the port for the other. Without the option the
    same bind is refused with one line naming the address."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    args = ("--prefix", prefix, "-p", str(port), "--reuse-port", "--graceful-timeout", "2")
    with _extra_server(*args) as first:
        first.wait_for(rf"Listening on 127\.0\.0\.1:{port} ")
        with _extra_server(*args) as second:
            second.wait_for(rf"Listening on 127\.0\.0\.1:{port} ")
            for _ in range(20):  # new connections, spread by the kernel: every one answered
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/echo", body=b"shared")
                assert conn.getresponse().read() == b"shared"
                conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # the first still listens
        conn.request("POST", "/echo", body=b"after")
        assert conn.getresponse().read() == b"after"
        conn.close()
        plain = _spawn(["-m", "server", "--prefix", prefix, "-p", str(port)])
        try:
            _, err = plain.communicate(timeout=30)
        finally:
            if plain.poll() is None:
                plain.kill()
                plain.wait()
        assert plain.returncode == 1
        assert "Address already in use" in err or "address already in use" in err.lower(), err


def test_full_request_channel_is_503_live(prefix: str) -> None:
    """No worker drains a capacity-1 http.request channel: the first request waits, the second gets 503."""
    config = json.dumps({"prefix": prefix + "bp", "channel_capacity": {"http.request": 1}})
    with _extra_server("-p", "0", "--layer-config", config, "--http-timeout", "30") as log:
        port = int(log.wait_for(_LISTENING).group(1))
        waiting = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        waiting.request("GET", "/first")
        time.sleep(0.5)  # the first request is in the channel now
        refused = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        refused.request("GET", "/second")
        response = refused.getresponse()
        assert response.status == 503 and b"Request queue full" in response.read()
        log.wait_for("http.request is full: 503 for GET /second")
        refused.close()
        waiting.close()
