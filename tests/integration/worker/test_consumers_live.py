"""The consumer API for real: WebSocket and HTTP clients -> ``ipc-server`` -> layer -> 4 worker processes.

The test site (``tests.django_site``) routed by ``tests.django_site.sockets.routing``: the
README's chat (groups, the logged-in user from the site's cookie), a JSON socket, a
demultiplexed socket with a bound model, an ordered socket, an origin-checked socket, a
background task on a dedicated worker, a delayed message and a long-poll view. One pool of
four workers per layer (shared memory, then Redis) serves every test of the module; the
background-task test starts a second, dedicated pool on the same layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.django_site.environment import migrate
from tests.support import unique_prefix
from tests.worker_support import LayerUnderTest, Pool, ipc_layer, redis_layer, running_pool, site_env

httpx = pytest.importorskip("httpx")
ws_client = pytest.importorskip("websockets.sync.client")
ws_exceptions = pytest.importorskip("websockets.exceptions")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROUTING = "tests.django_site.sockets.routing.channel_routing"
WORKERS = 4
#: Room for the long-poll test's 1,000 requests and the 1,000 replies of one group send: every
#: reply channel of the server shares its "server.<id>!" queue's capacity (ASGI 1's rule).
CONFIG = {"channel_capacity": {"server.*": 5000, "http.request": 2000}}


@dataclass
class Site:
    pool: Pool
    layer: LayerUnderTest
    state: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.pool.port}"

    def http(self, **kwargs: Any) -> Any:
        return httpx.Client(base_url=self.pool.url, timeout=60, **kwargs)

    def socket(self, path: str, **kwargs: Any) -> Any:
        return ws_client.connect(self.ws_url + path, open_timeout=60, **kwargs)


@pytest.fixture(scope="module", params=["ipc", "redis"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    layer = ipc_layer(unique_prefix()) if request.param == "ipc" else redis_layer()
    state = tmp_path_factory.mktemp(f"sockets-{request.param}")
    migrate(site_env(layer, state, layer_config=CONFIG, routing=ROUTING))
    with running_pool(layer, state, workers=WORKERS, routing=ROUTING, layer_config=CONFIG,
                      args=["--exclude-channels", "thumbnails"]) as pool:
        yield Site(pool, layer, state)


def login_cookie(site: Site, user: str) -> str:
    with site.http() as client:
        assert client.get("/c/login/", params={"user": user}).json() == {"user": user}
        return f"sessionid={client.cookies['sessionid']}"


def recv_json(ws: Any) -> Any:
    return json.loads(ws.recv(timeout=60))


def test_chat_room_with_the_logged_in_user(site: Site) -> None:
    cookie = login_cookie(site, "alice")
    with site.socket("/chat/lobby/", additional_headers={"Cookie": cookie}) as alice, \
            site.socket("/chat/lobby/") as anon, site.socket("/chat/other/") as elsewhere:
        alice.send("hello")
        assert recv_json(alice) == {"user": "alice", "text": "hello"}
        assert recv_json(anon) == {"user": "alice", "text": "hello"}
        for n in range(20):  # later frames carry no cookie: the user comes from the channel session
            anon.send(f"line {n}")
        lines = [{"user": "anonymous", "text": f"line {n}"} for n in range(20)]
        # Four workers run them, so the room may see them in another order (no enforce_ordering).
        assert sorted(map(str, (recv_json(alice) for _ in range(20)))) == sorted(map(str, lines))
        assert sorted(map(str, (recv_json(anon) for _ in range(20)))) == sorted(map(str, lines))
        elsewhere.send("other room")
        assert recv_json(elsewhere) == {"user": "anonymous", "text": "other room"}
        alice.send("bye")
        assert recv_json(anon) == {"user": "alice", "text": "bye"}  # not the other room's line
        assert recv_json(alice) == {"user": "alice", "text": "bye"}


def test_json_socket_spread_over_the_workers_and_bad_frames_close_1007(site: Site) -> None:
    with site.socket("/json/") as ws:
        pids = set()
        for n in range(60):
            ws.send(json.dumps({"n": n}))
            reply = recv_json(ws)
            assert reply["echo"] == {"n": n}
            pids.add(reply["pid"])
        assert len(pids) >= 2, f"one worker answered everything: {pids}"  # the frames really spread
        ws.send("{not json")
        with pytest.raises(ws_exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=60)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007


def test_connect_refused_by_the_consumer_and_by_the_origin_check(site: Site) -> None:
    for path in ["/json/?deny=1", "/guarded/"]:  # DenyConnection; no Origin header at all
        with pytest.raises(ws_exceptions.InvalidStatus) as refused:
            site.socket(path)
        assert refused.value.response.status_code == 403, path
    assert "refused a WebSocket handshake on '/guarded/': origin None" in site.pool.log.text()
    with site.socket("/guarded/", origin="http://example.com") as ws:  # ALLOWED_HOSTS = ["*"]
        ws.ping().wait(30)


def test_ordering_of_1000_messages_over_four_workers(site: Site) -> None:
    total, window = 1000, 50  # at most 50 in flight: the channel's capacity is 100
    for path, ordered in [("/ordered/", True), ("/unordered/", False)]:
        with site.socket(path) as ws:
            sent, got = 0, list[int]()
            while len(got) < total:
                while sent < total and sent - len(got) < window:
                    ws.send(str(sent))
                    sent += 1
                got.append(int(ws.recv(timeout=60)))
        inversions = sum(1 for a, b in zip(got, got[1:], strict=False) if b < a)
        print(f"{path}: {total} messages, {inversions} out-of-order replies")
        assert sorted(got) == list(range(total))  # every message answered once
        if ordered:
            assert got == list(range(total))


def test_demultiplexed_socket_and_a_bound_model(site: Site) -> None:
    with site.socket("/multi/") as ws, site.http() as http:
        ws.send(json.dumps({"stream": "echo", "payload": {"x": 1}}))
        reply = recv_json(ws)
        assert reply["stream"] == "echo" and reply["payload"]["echo"] == {"x": 1}
        pk = http.get("/c/note/", params={"text": "saved"}).json()["pk"]
        assert recv_json(ws) == {"stream": "notes", "payload": {"action": "create", "pk": pk,
                                                               "data": {"text": "saved"}, "model": "sockets.note"}}
        http.get("/c/note/", params={"pk": pk, "text": "edited"})
        assert recv_json(ws)["payload"] == {"action": "update", "pk": pk, "data": {"text": "edited"},
                                            "model": "sockets.note"}
        http.get("/c/note/", params={"delete": pk})
        assert recv_json(ws)["payload"]["action"] == "delete"


def _wait_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def test_background_task_runs_on_the_dedicated_worker(site: Site) -> None:
    shared = dataclasses.replace(site.layer, cleanup=lambda: None)  # the module's pool owns the layer
    with running_pool(shared, site.state, workers=1, routing=ROUTING, layer_config=CONFIG,
                      args=["--only-channels", "thumbnails"]) as dedicated:
        with site.http() as http:
            for n in range(5):
                assert http.get("/c/task/", params={"id": f"t{n}"}).text == "queued\n"
        ran_on = {int(_wait_file(site.state / "tasks" / f"t{n}")) for n in range(5)}
        assert ran_on <= set(dedicated.worker_pids()), (ran_on, dedicated.worker_pids())
        assert not ran_on & set(site.pool.worker_pids())


def test_a_delayed_message_arrives_on_time(site: Site) -> None:
    lateness = []
    with site.http() as http:
        for n, ms in enumerate([300, 600]):
            sent = http.get("/c/delay/", params={"id": f"d{n}", "ms": ms}).json()["sent"]
            arrived = float(_wait_file(site.state / "delayed" / f"d{n}"))
            lateness.append(arrived - sent - ms / 1000)
    print(f"delayed messages late by {[round(x * 1000, 1) for x in lateness]} ms")
    assert all(late >= -0.005 for late in lateness), lateness  # never early (clock granularity aside)
    assert all(late < 2.0 for late in lateness), lateness  # a worker timer, not a 1 s database poll


def _cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


async def _long_poll(site: Site, clients: int) -> tuple[int, float, list[bytes]]:
    request = f"GET /c/poll/ HTTP/1.1\r\nHost: 127.0.0.1:{site.pool.port}\r\n\r\n".encode()
    conns = []
    for start in range(0, clients, 100):  # 100 at a time: http.request is a bounded channel
        batch = [await asyncio.open_connection("127.0.0.1", site.pool.port) for _ in range(100)]
        for _, writer in batch:
            writer.write(request)
        conns.extend(batch)
        await _await_pollers(site, start + 100)
    pids = [site.pool.server.pid, *site.pool.worker_pids()]
    before = _cpu(pids)
    await asyncio.sleep(3.0)
    idle_cpu = _cpu(pids) - before
    answered = httpx.get(site.pool.url + "/c/notify/", params={"text": "news"}, timeout=60).json()["answered"]
    bodies = [await asyncio.wait_for(reader.read(4096), 60) for reader, _ in conns]
    for _, writer in conns:
        writer.close()
    return answered, idle_cpu, bodies


async def _await_pollers(site: Site, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=site.pool.url, timeout=60) as client:
        while True:
            waiting = (await client.get("/c/pollers/")).json()["waiting"]
            if waiting == count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{waiting} pollers waiting, not {count}")
            await asyncio.sleep(0.05)


def test_1000_long_poll_clients_one_group_send_and_cleanup(site: Site, report_line: Any) -> None:
    if site.layer.name != "ipc":
        pytest.skip("the shared-memory layer's case; the Redis layer runs the other tests")
    answered, idle_cpu, bodies = asyncio.run(_long_poll(site, 1000))
    assert answered == 1000
    assert all(b.startswith(b"HTTP/1.1 200") and b.endswith(b"news") for b in bodies), bodies[:3]
    report_line(f"1000 waiting long-poll clients: server + {WORKERS} workers used {idle_cpu:.3f} s CPU in 3 s")
    assert idle_cpu < 0.3, idle_cpu  # waiting clients cost nothing: no poll anywhere

    async def leave_early() -> None:
        conns = [await asyncio.open_connection("127.0.0.1", site.pool.port) for _ in range(20)]
        for _, writer in conns:
            writer.write(b"GET /c/poll/ HTTP/1.1\r\nHost: x\r\n\r\n")
        await _await_pollers(site, 20)
        for _, writer in conns:
            writer.close()
        await _await_pollers(site, 0)  # http.disconnect took each out of the group

    asyncio.run(leave_early())


BRIDGE_SCRIPT = r"""
const Bridge = require(process.argv[2]);
const bridge = new Bridge({minDelay: 50});
const url = process.argv[3];
const seen = [];
let opens = 0;
bridge.onopen = () => {
  opens += 1;
  if (opens === 1) {
    bridge.stream("echo").send({n: 1});
  } else if (opens === 2) {
    bridge.stream("echo").send({n: 2});  // after the server closed us: reconnected by itself
  }
};
bridge.demultiplex("echo", (payload) => {
  seen.push(payload.echo.n);
  if (payload.echo.n === 1) {
    bridge.send("not a stream frame");  // the demultiplexer closes the socket (1007)
  } else {
    console.log(JSON.stringify({seen: seen, opens: opens}));
    bridge.close();
    process.exit(0);
  }
});
bridge.connect(url);
setTimeout(() => { console.log(JSON.stringify({seen: seen, opens: opens, timeout: true})); process.exit(1); }, 60000);
"""


def test_the_js_bridge_demultiplexes_and_reconnects(site: Site, tmp_path: Path) -> None:
    import shutil
    import subprocess

    import worker

    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run the browser client with")
    has_websocket = "process.exit(typeof WebSocket === 'function' ? 0 : 3)"
    probe = subprocess.run([node, "--experimental-websocket", "-e", has_websocket], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("this node has no WebSocket (node >= 20.10 with --experimental-websocket, or >= 22)")
    bridge = Path(worker.__file__).parent / "static" / "worker" / "js" / "websocketbridge.js"
    script = tmp_path / "bridge_test.js"
    script.write_text(BRIDGE_SCRIPT)
    done = subprocess.run([node, "--experimental-websocket", str(script), str(bridge), site.ws_url + "/multi/"],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"seen": [1, 2], "opens": 2}


def test_held_delayed_messages_survive_a_reload(site: Site) -> None:
    # Last in the module: it replaces the pool's workers. A HUP retires every worker, and the
    # one holding the delayed message hands it back to asgi.delay as it exits (an idle worker
    # leaves within the layer's 5 s blocking_timeout: the delay is longer than that).
    import signal

    with site.http() as http:
        sent = http.get("/c/delay/", params={"id": "reload", "ms": 12000}).json()["sent"]
    old = set(site.pool.worker_pids())
    mark = site.pool.log.mark()
    site.pool.send_signal(signal.SIGHUP)
    site.pool.log.wait_for(r"handed 1 delayed message\(s\) back to asgi.delay", since=mark, timeout=60)
    arrived = float(_wait_file(site.state / "delayed" / "reload"))
    assert not old & set(site.pool.worker_pids())  # every worker was replaced meanwhile
    late = arrived - sent - 12.0
    print(f"delayed message across a reload: late by {late * 1000:.1f} ms")
    assert -0.005 <= late < 2.0, late
