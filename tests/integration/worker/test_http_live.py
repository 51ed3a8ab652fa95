"""Django over the layer for real: a browser-like client -> ``ipc-server`` -> layer -> worker processes.

A real ``ipc-server`` (port 0, ``--proxy-headers`` so a test can set the mount point and the
scheme the way a proxy would) and a real worker pool (``ipc-worker --workers 2``; on Redis
``manage.py runworker``) running the test site
(``tests.django_site``) on the shared-memory layer, then the same suite on the Redis layer;
requests from httpx over TCP. Every case of the HTTP consumer a site depends on: GET,
POST form, JSON, a 10 MiB upload (which the server streams through a body channel),
streaming and file responses, 404, 500, redirects, cookies and sessions (shared by the
worker processes), root_path, a per-URL low-level consumer.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import unique_prefix
from tests.worker_support import Pool, ipc_layer, redis_layer, running_pool

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WORKERS = 2


@dataclass
class Site:
    """The running site: ``ipc-server`` + the worker pool (``tests.worker_support``)."""

    pool: Pool

    @property
    def url(self) -> str:
        return self.pool.url

    @property
    def port(self) -> int:
        return self.pool.port

    def client(self, **kwargs: Any) -> Any:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def worker_log(self) -> str:
        """What the master and its workers logged so far."""
        return self.pool.log.text()


@pytest.fixture(scope="module", params=["ipc", "redis"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The site on the shared-memory layer (started with ``ipc-worker``), then on Redis (``manage.py runworker``)."""
    layer = ipc_layer(unique_prefix()) if request.param == "ipc" else redis_layer()
    via = "ipc-worker" if request.param == "ipc" else "runworker"
    # --proxy-headers: a test sets the mount point (Daphne-Root-Path) and the scheme as a proxy would.
    with running_pool(layer, tmp_path_factory.mktemp("site"), workers=WORKERS, via=via,
                      server_args=("--http-timeout", "60", "--proxy-headers")) as pool:
        yield Site(pool)


# -- the cases -------------------------------------------------------------------------------

def test_get(site: Site) -> None:
    with site.client() as client:
        response = client.get("/")
    assert (response.status_code, response.text) == (200, "hello from GET /\n")
    assert response.headers["content-type"] == "text/plain"


def test_meta_as_django_sees_it(site: Site) -> None:
    with site.client() as client:
        data = client.get("/meta/?a=1&a=2&q=%C3%A9", headers={"X-Thing": "yes", "X_Spoof": "no"}).json()
    assert data["meta"]["REMOTE_ADDR"] == "127.0.0.1"
    assert int(data["meta"]["REMOTE_PORT"]) > 0
    assert data["meta"]["SERVER_PORT"] == str(site.port)
    assert data["meta"]["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert data["meta"]["QUERY_STRING"] == "a=1&a=2&q=%C3%A9"
    assert data["get"] == {"a": ["1", "2"], "q": ["é"]}
    assert data["headers"]["HTTP_X_THING"] == "yes"
    assert "HTTP_X_SPOOF" not in data["headers"]
    assert data["host"] == f"127.0.0.1:{site.port}"
    assert data["is_secure"] is False


def test_is_secure_behind_a_tls_proxy(site: Site) -> None:
    with site.client() as client:
        data = client.get("/meta/", headers={"X-Forwarded-Proto": "https", "Host": "example.com"}).json()
    assert (data["is_secure"], data["absolute_uri"]) == (True, "https://example.com/meta/")


def test_post_form(site: Site) -> None:
    with site.client() as client:
        data = client.post("/form/?via=url", data={"name": ["a", "b"], "x": "é"}).json()
    assert data["post"] == {"name": ["a", "b"], "x": ["é"]}
    assert data["get"] == {"via": ["url"]}


def test_json(site: Site) -> None:
    with site.client() as client:
        data = client.post("/json/", json={"numbers": [1, 2, 3], "nested": {"k": "v"}}).json()
    assert data == {"echo": {"numbers": [1, 2, 3], "nested": {"k": "v"}}, "sum": 6}


def test_ten_mebibyte_upload(site: Site) -> None:
    payload = os.urandom(10 << 20)
    with site.client() as client:
        data = client.post("/upload/", files={"f": ("big.bin", payload, "application/octet-stream")},
                           data={"note": "ten"}).json()
    assert data["files"]["f"] == {"name": "big.bin", "size": len(payload),
                                  "sha256": hashlib.sha256(payload).hexdigest(), "in_memory": False}
    assert data["post"] == {"note": ["ten"]}


def test_raw_body_streamed_in_by_the_client(site: Site) -> None:
    # A chunked upload (no Content-Length), generated piece by piece.
    pieces = [bytes([i]) * 100_000 for i in range(30)]
    with site.client() as client:
        data = client.post("/body/", content=iter(pieces)).json()
    body = b"".join(pieces)
    assert (data["length"], data["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_streaming_response(site: Site) -> None:
    with site.client() as client, client.stream("GET", "/stream/?chunks=200&size=1000") as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        body = b"".join(response.iter_bytes())
    assert len(body) == 200_000
    assert body[:9] == b"00000000|" and body[199_000:199_009] == b"00000199|"


def test_file_response(site: Site) -> None:
    with site.client() as client:
        response = client.get("/download/?size=5000000")
    assert response.status_code == 200
    assert response.headers["content-length"] == "5000000"
    assert response.headers["content-disposition"] == 'attachment; filename="data.bin"'
    assert len(response.content) == 5_000_000 and response.content[65536:65545] == b"00000001|"


def test_large_plain_response(site: Site) -> None:
    with site.client() as client:
        response = client.get("/big/?size=3000000")
    assert len(response.content) == 3_000_000 and response.headers["content-length"] == "3000000"


def test_not_found_and_server_error(site: Site) -> None:
    with site.client() as client:
        assert client.get("/missing/").status_code == 404
        assert client.get("/no/such/url/").status_code == 404
        error = client.get("/error/")
        assert error.status_code == 500
        assert "ViewError" not in error.text  # DEBUG is off
        assert client.get("/").status_code == 200  # the worker lives on
    assert "ViewError: the error view failed on purpose" in site.worker_log()


def test_redirects(site: Site) -> None:
    with site.client() as client:
        response = client.get("/go/")
        assert (response.status_code, response.headers["location"]) == (302, "/meta/")
        assert client.get("/meta").headers["location"] == "/meta/"  # APPEND_SLASH
    with site.client(follow_redirects=True) as client:
        response = client.get("/go/")
    assert response.status_code == 200 and response.json()["path"] == "/meta/"


def test_cookies(site: Site) -> None:
    with site.client() as client:
        response = client.get("/set-cookie/?flavour=ginger")
        assert len(response.headers.get_list("set-cookie")) == 2
        assert client.get("/cookies/").json()["cookies"] == {"flavour": "ginger", "second": "two"}


def test_sessions_across_worker_processes(site: Site) -> None:
    with site.client() as client:
        answers = [client.get("/session/").json() for _ in range(8)]
    assert [a["count"] for a in answers] == list(range(1, 9))


def test_root_path(site: Site) -> None:
    with site.client() as client:
        data = client.get("/mount/meta/", headers={"Daphne-Root-Path": "/mount"}).json()
        assert (data["script_name"], data["path_info"], data["path"]) == ("/mount", "/meta/", "/mount/meta/")
        assert data["reverse"] == "/mount/meta/"
        response = client.get("/mount/go/", headers={"Daphne-Root-Path": "/mount"})
    assert response.headers["location"] == "/mount/meta/"


def test_low_level_consumer_for_one_url(site: Site) -> None:
    with site.client() as client:
        response = client.put("/x/")
        assert (response.status_code, response.text) == (200, "raw consumer saw PUT /x/\n")
        assert response.headers["x-consumer"] == "raw_http"
        assert client.get("/x/other/").status_code == 404  # Django's, not the raw consumer's


def test_concurrent_requests(site: Site) -> None:
    def fetch(i: int) -> tuple[int, Any]:
        with site.client() as client:
            response = client.get(f"/meta/?i={i}")
            return response.status_code, response.json()["get"]["i"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, range(40)))
    assert results == [(200, [str(i)]) for i in range(40)]


def test_head(site: Site) -> None:
    with site.client() as client:
        response = client.head("/big/?size=1000")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "1000"


def _raw_upload(site: Site, path: str, declared: int, sent: int) -> socket.socket:
    """A client that declares ``declared`` body bytes and sends only ``sent`` (past the inline part)."""
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Length: {declared}\r\n\r\n".encode("ascii"))
    sock.sendall(b"x" * sent)
    return sock


def test_stalled_upload_is_408(site: Site) -> None:
    # /slow/ is routed to ViewConsumer(body_timeout=2); the body goes past the server's
    # inline part (256 KiB), so the worker is waiting on the body channel when it stalls.
    with _raw_upload(site, "/slow/body/", 1_000_000, 400_000) as sock:
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    with site.client() as client:
        assert client.get("/").status_code == 200


def test_client_gone_mid_upload_gets_no_reply_and_the_worker_lives_on(site: Site) -> None:
    sock = _raw_upload(site, "/body/", 1_000_000, 400_000)
    sock.close()
    pattern = r"POST /body/: the client went away during the upload; not answered"
    deadline = time.monotonic() + 60
    while not re.search(pattern, site.worker_log()):
        assert time.monotonic() < deadline, "no worker logged the aborted upload"
        time.sleep(0.1)
    with site.client() as client:
        assert client.get("/").status_code == 200


_SEGMENT = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8).filter(
    lambda s: s not in (".", ".."))
_FIELD = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
_HEADER_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10).map(
    lambda s: "x-" + s)
_HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20)


@settings(max_examples=30, deadline=None)
@given(segments=st.lists(_SEGMENT, max_size=4), query=st.lists(st.tuples(_FIELD, _FIELD), max_size=4),
       headers=st.dictionaries(_HEADER_NAME, _HEADER_VALUE, max_size=4))
def test_any_path_query_and_headers_arrive_as_sent(site: Site, segments: list[str], query: list[tuple[str, str]],
                                                   headers: dict[str, str]) -> None:
    """Whatever the client sends, the view sees exactly it (the server's decoding + our META)."""
    from urllib.parse import quote, urlencode

    path = "/meta/" + "/".join(quote(s, safe="") for s in segments)
    raw_query = urlencode(query)
    with site.client() as client:
        data = client.get(path + ("?" + raw_query if raw_query else ""), headers=headers).json()
    assert data["path"] == "/meta/" + "/".join(segments)
    assert data["meta"]["QUERY_STRING"] == raw_query
    expected: dict[str, list[str]] = {}
    for key, value in query:
        expected.setdefault(key, []).append(value)
    assert data["get"] == expected
    for name, value in headers.items():
        assert data["headers"]["HTTP_" + name.upper().replace("-", "_")] == value


def test_request_signals_sent_once_per_request(site: Site) -> None:
    """The worker loop sends request_started/request_finished once per message; the consumer adds none."""
    with site.client() as client:
        answers = [client.get("/signals/").json() for _ in range(12)]
    by_pid: dict[int, list[dict[str, int]]] = {}
    for answer in answers:
        by_pid.setdefault(answer["pid"], []).append(answer)
    compared = 0
    for seen in by_pid.values():
        # Sequential requests: between two answers of one process, it served exactly the
        # requests in between that it answered (nothing else reaches this test's site).
        for before, after in itertools.pairwise(seen):
            assert after["started"] - before["started"] == 1
            assert after["finished"] - before["finished"] == 1
            compared += 1
    assert compared >= 12 - len(by_pid)
