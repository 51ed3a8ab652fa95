"""The chat example end to end: real ``ipc-server``, web workers and a task worker; httpx and websockets.

What a visitor does, checked on the wire: the pages, logging in, a chat between two
users' sockets (each sees the other's line, with the sender's name taken from the session
cookie), sockets refused without a login or from another site's page, a background task
run by the dedicated task worker with its result pushed to the room, the long-poll
counter (an answer held until the value changes, a departed client leaving the group),
and the statistics page. On the shared-memory layer, then on Redis.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.chat_support import ChatSite, running_chat_site
from tests.support import unique_prefix
from tests.worker_support import ipc_layer, redis_layer

httpx = pytest.importorskip("httpx")
pytest.importorskip("websockets")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module", params=["ipc", "redis"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatSite]:
    layer = ipc_layer(unique_prefix()) if request.param == "ipc" else redis_layer()
    with running_chat_site(layer, tmp_path_factory.mktemp("chat")) as running:
        yield running


@pytest.fixture(autouse=True)
def _close_clients(site: ChatSite) -> Iterator[None]:
    """Each test's clients and sockets are closed after it (the site lives for the module)."""
    yield
    site.stack.close()


def events(ws: Any, until: Callable[[dict[str, Any]], bool], timeout: float = 30) -> list[dict[str, Any]]:
    """The JSON events of ``ws`` up to and including the first for which ``until`` is true."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no matching event within {timeout} s; got {seen!r}")
        seen.append(json.loads(ws.recv(timeout=left)))
        if until(seen[-1]):
            return seen


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def group_size(site: ChatSite, group: str) -> int:
    return int(site.client().get("/stats.json").json()["groups"].get(group, 0))


def channel_sent(site: ChatSite, channel: str) -> int:
    return int(site.client().get("/stats.json").json()["channels"][channel]["messages_count"])


def channel_pending(site: ChatSite, channel: str) -> int:
    return int(site.client().get("/stats.json").json()["channels"][channel]["messages_pending"])


def test_pages_and_static_files(site: ChatSite) -> None:
    client = site.client()
    home = client.get("/")
    assert home.status_code == 200 and "Rooms" in home.text and "Live counter" in home.text
    css = client.get("/static/chat/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    for script in ("site.js", "room.js", "counter.js", "stats.js"):
        assert client.get(f"/static/chat/{script}").status_code == 200, script
    assert client.get("/static/chat/nothing.js").status_code == 404
    # A room needs a login; the "open a room" form goes to the slug of what was typed.
    room = client.get("/room/lobby/")
    assert room.status_code == 302 and room.headers["location"].startswith("/accounts/login/?next=/room/lobby/")
    assert client.get("/go/", params={"name": "Tea Room!"}).headers["location"] == "/room/tea-room/"


def test_login_and_the_room_page(site: ChatSite) -> None:
    client = site.client()
    client.get("/accounts/login/")
    bad = client.post("/accounts/login/", data={"username": "alice", "password": "wrong",
                                                "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    assert bad.status_code == 200 and "did not match" in bad.text
    alice = site.login("alice")
    page = alice.get("/room/lobby/")
    assert page.status_code == 200
    assert '<strong id="username">alice</strong>' in page.text and 'data-room="lobby"' in page.text


def test_chat_between_two_users_with_names_from_their_sessions(site: ChatSite) -> None:
    alice, bob = site.login("alice"), site.login("bob")
    alice.get("/room/chat-test/")  # the page makes the room
    ws_alice = site.websocket("/ws/room/chat-test/", alice)
    assert events(ws_alice, lambda e: e["type"] == "presence")[-1] == {"type": "presence", "user": "alice",
                                                                       "joined": True}
    ws_bob = site.websocket("/ws/room/chat-test/", bob)
    assert events(ws_alice, lambda e: e["type"] == "presence")[-1]["user"] == "bob"
    events(ws_bob, lambda e: e["type"] == "presence" and e["user"] == "bob")

    ws_alice.send(json.dumps({"text": "  hello bob  "}))
    got = events(ws_bob, lambda e: e["type"] == "message")[-1]
    assert (got["user"], got["text"]) == ("alice", "hello bob")
    assert events(ws_alice, lambda e: e["type"] == "message")[-1] == got  # the sender sees it too
    ws_bob.send(json.dumps({"text": "hi alice"}))
    assert events(ws_alice, lambda e: e["type"] == "message")[-1]["user"] == "bob"
    # Lines are kept: the page's history has them, in order.
    page = bob.get("/room/chat-test/").text
    assert page.index("hello bob") < page.index("hi alice")
    # Bad frames get an error frame, the socket stays.
    ws_bob.send(json.dumps({"text": ""}))
    assert events(ws_bob, lambda e: e["type"] == "error")[-1]["error"].startswith("send {")
    ws_bob.send(json.dumps({"text": "x" * 501}))
    assert "at most 500" in events(ws_bob, lambda e: e["type"] == "error")[-1]["error"]
    assert group_size(site, "room-chat-test") == 2
    ws_bob.close()
    assert events(ws_alice, lambda e: e["type"] == "presence")[-1] == {"type": "presence", "user": "bob",
                                                                       "joined": False}
    wait_until("bob's socket leaves the room's group", lambda: group_size(site, "room-chat-test") == 1)


def test_sockets_without_a_login_or_from_another_site_are_refused(site: ChatSite) -> None:
    from websockets.exceptions import InvalidStatus

    bob = site.login("bob")
    bob.get("/room/lobby/")
    watcher = site.websocket("/ws/room/lobby/", bob)
    events(watcher, lambda e: e["type"] == "presence")
    disconnects = channel_sent(site, "websocket.disconnect")
    with pytest.raises(InvalidStatus) as anonymous:
        site.websocket("/ws/room/lobby/", site.client())
    assert anonymous.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as foreign:
        site.websocket("/ws/room/lobby/", site.login("alice"), origin="http://evil.example")
    assert foreign.value.response.status_code == 403
    assert group_size(site, "room-lobby") == 1  # refused before joining the group: only bob's
    site.pool.log.wait_for(r"refused a WebSocket handshake on '/ws/room/lobby/': origin 'http://evil.example'")
    # The server sends websocket.disconnect for a refused handshake too: it must not tell
    # the room that somebody left. The next event bob sees is his own line.
    wait_until("both refused sockets' disconnects are taken",
               lambda: channel_sent(site, "websocket.disconnect") >= disconnects + 2
               and channel_pending(site, "websocket.disconnect") == 0)
    watcher.send(json.dumps({"text": "anyone there?"}))
    seen = events(watcher, lambda e: e["type"] == "message")
    assert [(e["type"], e.get("text")) for e in seen] == [("message", "anyone there?")], seen


def test_background_task_runs_on_the_task_worker_and_reaches_the_room(site: ChatSite) -> None:
    alice = site.login("alice")
    alice.get("/room/tasks-test/")
    ws = site.websocket("/ws/room/tasks-test/", alice)
    events(ws, lambda e: e["type"] == "presence")
    response = site.post_json(alice, "/tasks/", {"n": 1_000_000, "room": "tasks-test"})
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]
    seen = events(ws, lambda e: e["type"] == "task" and e["status"] == "done", timeout=60)
    statuses = [e["status"] for e in seen if e["type"] == "task" and e["id"] == task_id]
    assert statuses == ["queued", "running", "done"]
    done = seen[-1]
    assert (done["result"], done["user"]) == (78498, "alice")
    # The dedicated task worker ran it, not a web worker.
    task_pids = {int(m.group(2)) for m in site.tasks_log.matches(r"worker (\d+) \(pid (\d+)\) ready")}
    assert done["worker_pid"] in task_pids and done["worker_pid"] not in site.pool.ready_pids()
    assert alice.get(f"/tasks/{task_id}/").json()["status"] == "done"
    # Refused input, named.
    assert site.post_json(alice, "/tasks/", {"n": "many"}).json() == {"error": "n must be an integer"}
    assert site.post_json(alice, "/tasks/", {"n": 10**9}).status_code == 400
    assert site.post_json(site.client(), "/tasks/", {"n": 10}).status_code == 401


def test_long_poll_counter_answers_when_the_value_changes(site: ChatSite) -> None:
    client = site.client()
    value = client.get("/counter/").json()["value"]
    # Out of date: answered at once.
    assert client.get("/counter/poll/", params={"since": value - 1}).json() == {"value": value}
    assert client.get("/counter/poll/").status_code == 400
    # Up to date: held until a clap.
    answers: list[Any] = []
    pollers = [threading.Thread(target=lambda: answers.append(
        site.client().get("/counter/poll/", params={"since": value}).json())) for _ in range(3)]
    for poller in pollers:
        poller.start()
    wait_until("three polls wait in the group", lambda: group_size(site, "counter-pollers") == 3)
    assert answers == []
    clap = site.post_json(client, "/counter/", {})
    assert clap.json() == {"value": value + 1}
    for poller in pollers:
        poller.join(timeout=30)
    assert answers == [{"value": value + 1}] * 3
    wait_until("answered polls leave the group", lambda: group_size(site, "counter-pollers") == 0)


def test_a_poll_whose_client_left_leaves_the_group(site: ChatSite) -> None:
    value = site.client().get("/counter/").json()["value"]
    leaver = httpx.Client(base_url=site.url, timeout=2)
    with pytest.raises(httpx.ReadTimeout):
        leaver.get("/counter/poll/", params={"since": value})  # gives up after 2 s: the socket closes
    leaver.close()
    wait_until("the departed poll leaves the group (http.disconnect)",
               lambda: group_size(site, "counter-pollers") == 0)


def test_statistics_page(site: ChatSite) -> None:
    client = site.client()
    page = client.get("/stats/")
    assert page.status_code == 200 and "Channel layer statistics" in page.text and "http.request" in page.text
    alice = site.login("alice")
    alice.get("/room/stats-test/")
    ws = site.websocket("/ws/room/stats-test/", alice)
    events(ws, lambda e: e["type"] == "presence")
    before = client.get("/stats.json").json()
    client.get("/")
    after = client.get("/stats.json").json()
    requests = [s["channels"]["http.request"]["messages_count"] for s in (before, after)]
    assert requests[1] >= requests[0] + 2
    assert after["global"]["messages_count"] > before["global"]["messages_count"]
    assert after["channels"]["websocket.connect"]["messages_count"] >= 1
    assert after["channels"]["tasks"]["messages_pending"] == 0
    assert after["groups"]["room-stats-test"] == 1
    assert after["layer"].endswith(("IPCChannelLayer", "RedisChannelLayer"))
