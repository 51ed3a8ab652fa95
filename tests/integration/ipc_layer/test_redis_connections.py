"""RedisChannelLayer against the servers users run: a password, an ACL user, TLS with a
certificate made at test time, a Redis killed and restarted under load, and a Sentinel
failover during traffic. Every server is a private redis-server on free loopback ports,
started and stopped here (``tests/redis_support.private_servers``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import redis

from ipc_layer.base import BaseChannelLayer
from ipc_layer.redis_layer import RedisChannelLayer
from ipc_layer.redis_shards import ShardDown
from ipc_layer.testing import DEFAULT_LAYER_CONFIG, ConformanceTestCase
from tests.redis_support import private_servers, stop_servers
from tests.support import count_keys, remove_keys, unique_key_prefix

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


def _servers(count: int, **options: Any) -> list[Any]:
    try:
        return private_servers(count, **options)
    except unittest.SkipTest as exc:
        pytest.skip(str(exc))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _round_trip(layer: RedisChannelLayer) -> None:
    layer.send("cx.q", {"n": 1})
    assert layer.receive(["cx.q"], block=True) == ("cx.q", {"n": 1})
    for local in "ab":
        layer.group_add("cx-g", f"cx.p!{local}")
    layer.send_group("cx-g", {"body": b"x" * 2000})
    assert {layer.receive(["cx.p!"], block=True)[0] for _ in range(2)} == {"cx.p!a", "cx.p!b"}


# -- credentials ----------------------------------------------------------------------


def test_password_in_the_url_and_a_wrong_one() -> None:
    servers = _servers(1, extra_args=["--requirepass", "s3cret"])
    try:
        port = servers[0].port
        layer = RedisChannelLayer(f"redis://:s3cret@127.0.0.1:{port}/0", prefix=unique_key_prefix())
        try:
            _round_trip(layer)
        finally:
            layer.flush()
            layer.close()
        wrong = RedisChannelLayer(f"redis://:nope@127.0.0.1:{port}/0", prefix=unique_key_prefix(),
                                  retry_timeout=30)
        started = time.monotonic()
        # Refused at once (not retried for retry_timeout: waiting does not fix a password).
        with pytest.raises(redis.AuthenticationError, match=f"127.0.0.1:{port}.*refused the credentials"):
            wrong.send("cx.q", {})
        assert time.monotonic() - started < 10
        wrong.close()
    finally:
        stop_servers(servers)


def test_acl_user_in_a_host_dict(tmp_path: Any) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text("user default off\nuser app on >apppw ~* &* +@all\n")
    servers = _servers(1, extra_args=["--aclfile", str(acl)])
    try:
        host = {"host": "127.0.0.1", "port": servers[0].port, "username": "app", "password": "apppw"}
        layer = RedisChannelLayer(hosts=[host], prefix=unique_key_prefix())
        try:
            _round_trip(layer)
        finally:
            layer.flush()
            layer.close()
        anonymous = RedisChannelLayer(f"redis://127.0.0.1:{servers[0].port}/0", prefix=unique_key_prefix())
        with pytest.raises(redis.AuthenticationError):
            anonymous.send("cx.q", {})
        anonymous.close()
    finally:
        stop_servers(servers)


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate() -> Iterator[tuple[str, str]]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl now."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    directory = tempfile.mkdtemp(prefix="redis-tls-")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    yield cert, key
    shutil.rmtree(directory, ignore_errors=True)


def test_tls_with_a_verified_certificate(certificate: tuple[str, str]) -> None:
    cert, key = certificate
    tls_port = _free_port()
    servers = _servers(1, extra_args=["--tls-port", str(tls_port), "--tls-cert-file", cert,
                                      "--tls-key-file", key, "--tls-ca-cert-file", cert,
                                      "--tls-auth-clients", "no"])
    try:
        host = {"address": f"rediss://127.0.0.1:{tls_port}/0", "ssl_ca_certs": cert, "ssl_cert_reqs": "required"}
        layer = RedisChannelLayer(hosts=[host], prefix=unique_key_prefix())
        assert layer.locations == [f"rediss://127.0.0.1:{tls_port}/0"]
        try:
            _round_trip(layer)
        finally:
            layer.flush()
            layer.close()
        # Without the CA the certificate is refused: TLS really verifies.
        unverified = RedisChannelLayer(f"rediss://127.0.0.1:{tls_port}/0", prefix=unique_key_prefix(),
                                       retry_timeout=0.2)
        with pytest.raises(ShardDown, match="certificate verify failed"):
            unverified.send("cx.q", {})
        unverified.close()
    finally:
        stop_servers(servers)


# -- outages -------------------------------------------------------------------------------


def test_blocking_receive_rides_out_a_down_server_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    servers = _servers(1)
    server = servers[0]
    layer = RedisChannelLayer(server.url, prefix=unique_key_prefix(), blocking_timeout=0.5,
                              outage_error_after=0.8)
    try:
        layer.send("od.q", {"n": 0})
        assert layer.receive(["od.q"]) == ("od.q", {"n": 0})
        server.kill()
        with caplog.at_level(logging.INFO, logger="ipc_layer.redis_layer"):
            # A worker's loop: each blocking receive returns (None, None) at its bound.
            for _ in range(3):
                assert layer.receive(["od.q"], block=True) == (None, None)
            with pytest.raises(ShardDown, match="unreachable"):
                layer.send("od.q", {"n": 1})
            server.restart()
            layer.send("od.q", {"n": 2})
            assert layer.receive(["od.q"], block=True) == ("od.q", {"n": 2})
        levels = [record.levelname for record in caplog.records]
        # One WARNING when it went down, one ERROR past outage_error_after, one INFO back:
        # not a line per reconnect attempt.
        assert levels == ["WARNING", "ERROR", "INFO"], [r.getMessage() for r in caplog.records]
        assert str(server.port) in caplog.records[0].getMessage()
    finally:
        layer.flush()
        layer.close()
        stop_servers(servers)


def _traffic(layer: RedisChannelLayer, channel: str, stop: threading.Event,
             sent: list[int], refused: list[int]) -> threading.Thread:
    def run() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                layer.send(channel, {"n": n})
                sent.append(n)
            except redis.ConnectionError:
                refused.append(n)  # the layer said so: the caller knows this one may be lost
            time.sleep(0.002)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _drain(layer: RedisChannelLayer, channel: str, stop: threading.Event, got: list[int],
           errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            try:
                _, message = layer.receive([channel], block=True)
            except BaseException as exc:  # a receive must never raise for an outage
                errors.append(exc)
                return
            if message is not None:
                got.append(message["n"])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_redis_killed_and_restarted_under_load() -> None:
    servers = _servers(1)
    server = servers[0]
    prefix = unique_key_prefix()
    sender = RedisChannelLayer(server.url, prefix=prefix, capacity=100_000, retry_timeout=0.1)
    receiver = RedisChannelLayer(server.url, prefix=prefix, capacity=100_000, blocking_timeout=0.5)
    stop = threading.Event()
    sent: list[int] = []
    refused: list[int] = []
    got: list[int] = []
    errors: list[BaseException] = []
    threads = [_traffic(sender, "rl.q", stop, sent, refused), _drain(receiver, "rl.q", stop, got, errors)]
    try:
        _wait_for(lambda: len(got) > 50, 30, "traffic before the kill")
        server.kill()
        _wait_for(lambda: len(refused) > 5, 30, "sends refused while Redis is down")
        at_restart = len(sent)
        server.restart()
        _wait_for(lambda: len(sent) > at_restart + 100, 30, "sends after the restart")
        last = sent[-1]
        _wait_for(lambda: got and got[-1] >= last, 30, "the receiver to catch up after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        sender.flush()
        sender.close()
        receiver.close()
        stop_servers(servers)
    assert errors == []
    # At most once, in order: nothing duplicated or reordered.
    assert got == sorted(set(got))
    lost = sorted(set(sent) - set(got))
    # What was lost is what Redis held (or was answering) when it was killed: messages
    # acknowledged before the kill, none of those sent after the restart.
    after_restart = sent[at_restart:]
    assert not set(lost) & set(after_restart[:-1])
    assert len(lost) <= at_restart


def test_sentinel_failover_during_traffic() -> None:
    primary = _servers(1)[0]
    replica = _servers(1, extra_args=["--replicaof", "127.0.0.1", str(primary.port)])[0]
    directory = tempfile.mkdtemp(prefix="redis-sentinel-")
    config = os.path.join(directory, "sentinel.conf")
    with open(config, "w") as f:
        f.write(f"sentinel monitor site 127.0.0.1 {primary.port} 1\n"
                "sentinel down-after-milliseconds site 500\n"
                "sentinel failover-timeout site 2000\n")
    sentinel = _servers(1, config_file=config, extra_args=["--sentinel"])[0]
    prefix = unique_key_prefix()
    host = {"sentinels": [("127.0.0.1", sentinel.port)], "master_name": "site"}
    sender = RedisChannelLayer(hosts=[host], prefix=prefix, capacity=100_000, retry_timeout=0.1)
    receiver = RedisChannelLayer(hosts=[host], prefix=prefix, capacity=100_000, blocking_timeout=0.5)
    assert receiver.locations == [f"sentinel://127.0.0.1:{sentinel.port}/site"]
    stop = threading.Event()
    sent: list[int] = []
    refused: list[int] = []
    got: list[int] = []
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    try:
        replica_client = redis.Redis(port=replica.port)
        _wait_for(lambda: replica_client.info("replication").get("master_link_status") == "up", 30,
                  "the replica to sync")
        threads = [_traffic(sender, "sf.q", stop, sent, refused), _drain(receiver, "sf.q", stop, got, errors)]
        _wait_for(lambda: len(got) > 50, 30, "traffic before the failover")
        primary.kill()
        _wait_for(lambda: replica_client.info("replication").get("role") == "master", 60,
                  "the Sentinel to promote the replica")
        at_failover = len(sent)
        _wait_for(lambda: len(sent) > at_failover + 100, 30, "sends to the new primary")
        last = sent[-1]
        _wait_for(lambda: got and got[-1] >= last, 30, "the receiver to follow the failover")
        replica_client.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        sender.close()
        receiver.close()
        stop_servers([sentinel, replica, primary])
        shutil.rmtree(directory, ignore_errors=True)
    assert errors == []
    assert got == sorted(set(got))
    # Lost: only what the old primary had not handed on when it died.
    lost = set(sent) - set(got)
    assert not lost & set(sent[at_failover:-1])


# -- the conformance suite over TLS and through a Sentinel ---------------------------------


class _PrivateConformance(ConformanceTestCase):
    """The shipped suite on servers this class starts (``start_servers``) and stops."""

    __test__ = False
    layer_config = DEFAULT_LAYER_CONFIG
    servers: ClassVar[list[Any]]
    host: ClassVar[Any]
    direct_url: ClassVar[str]  # a plain URL of the same data, for the key checks

    @classmethod
    def start_servers(cls) -> None:
        raise NotImplementedError

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.servers = []
        try:
            cls.start_servers()
        except BaseException:
            stop_servers(cls.servers)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        stop_servers(cls.servers)
        super().tearDownClass()

    def make_layer(self, **config: Any) -> RedisChannelLayer:
        prefix = unique_key_prefix()
        self.addCleanup(remove_keys, self.direct_url, prefix)
        return RedisChannelLayer(hosts=[self.host], prefix=prefix, **config)

    def make_peer_layer(self, layer: BaseChannelLayer) -> BaseChannelLayer:
        if not isinstance(layer, RedisChannelLayer):
            raise TypeError(f"not a RedisChannelLayer: {layer!r}")
        return RedisChannelLayer(hosts=[self.host], prefix=layer.prefix, **self.layer_config)

    def close_layer(self, layer: BaseChannelLayer) -> None:
        super().close_layer(layer)
        if isinstance(layer, RedisChannelLayer):
            self.assertEqual(count_keys(self.direct_url, layer.prefix), 0)


class TestConformanceOverTLS(_PrivateConformance):
    __test__ = True

    @classmethod
    def start_servers(cls) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise unittest.SkipTest("openssl is not installed (needed to make a test certificate)")
        directory = tempfile.mkdtemp(prefix="redis-tls-")
        cls.addClassCleanup(shutil.rmtree, directory, True)
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
        tls_port = _free_port()
        cls.servers += private_servers(1, extra_args=[
            "--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key,
            "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"])
        cls.host = {"address": f"rediss://127.0.0.1:{tls_port}/0", "ssl_ca_certs": cert}
        cls.direct_url = cls.servers[0].url


class TestConformanceThroughSentinel(_PrivateConformance):
    __test__ = True

    @classmethod
    def start_servers(cls) -> None:
        cls.servers += private_servers(1)
        primary = cls.servers[0]
        directory = tempfile.mkdtemp(prefix="redis-sentinel-")
        cls.addClassCleanup(shutil.rmtree, directory, True)
        config = os.path.join(directory, "sentinel.conf")
        with open(config, "w") as f:
            f.write(f"sentinel monitor site 127.0.0.1 {primary.port} 1\n")
        cls.servers += private_servers(1, config_file=config, extra_args=["--sentinel"])
        cls.host = {"sentinels": [("127.0.0.1", cls.servers[1].port)], "master_name": "site"}
        cls.direct_url = primary.url
