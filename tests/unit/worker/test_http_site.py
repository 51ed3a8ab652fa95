"""The test site itself, through Django's own test client: every view answers as the worker tests expect.

If one of these fails, a failing worker test is the site's fault, not the consumer's.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.django_site import testing

testing.setup()

from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.test import Client  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


def test_index_and_meta(client: Client) -> None:
    assert client.get("/").content == b"hello from GET /\n"
    data = client.get("/meta/?a=1&a=2&b=x", HTTP_X_THING="v").json()
    assert data["get"] == {"a": ["1", "2"], "b": ["x"]}
    assert data["headers"]["HTTP_X_THING"] == "v"
    assert data["meta"]["QUERY_STRING"] == "a=1&a=2&b=x"
    assert data["reverse"] == "/meta/"
    assert data["is_secure"] is False


def test_form_json_upload_body(client: Client) -> None:
    assert client.post("/form/", {"name": ["a", "b"], "x": "1"}).json()["post"] == {"name": ["a", "b"], "x": ["1"]}
    answer = client.post("/json/", json.dumps({"numbers": [1, 2, 3.5]}), content_type="application/json").json()
    assert answer == {"echo": {"numbers": [1, 2, 3.5]}, "sum": 6.5}
    assert client.post("/json/", "nope", content_type="application/json").status_code == 400
    payload = bytes(range(256)) * 40
    files = client.post("/upload/", {"f": SimpleUploadedFile("a.bin", payload), "k": "v"}).json()
    assert files["files"]["f"] == {"name": "a.bin", "size": len(payload),
                                   "sha256": hashlib.sha256(payload).hexdigest(), "in_memory": True}
    assert files["post"] == {"k": ["v"]}
    raw = client.post("/body/", b"\x00\x01abc", content_type="application/octet-stream").json()
    assert raw["length"] == 5 and raw["sha256"] == hashlib.sha256(b"\x00\x01abc").hexdigest()


def test_stream_and_download(client: Client) -> None:
    response = client.get("/stream/?chunks=3&size=12")
    assert response.streaming
    assert b"".join(response.streaming_content) == b"00000000|000" + b"00000001|000" + b"00000002|000"
    response = client.get("/download/?size=70000")
    content = b"".join(response.streaming_content)
    response.close()
    assert len(content) == 70000 and content.startswith(b"00000000|") and content[65536:65545] == b"00000001|"
    assert response["Content-Disposition"] == 'attachment; filename="data.bin"'


def test_errors_redirect_status(client: Client) -> None:
    assert client.get("/missing/").status_code == 404
    assert client.get("/nowhere/").status_code == 404
    assert client.get("/error/").status_code == 500
    response = client.get("/go/")
    assert (response.status_code, response["Location"]) == (302, "/meta/")
    assert client.get("/meta").status_code == 301  # CommonMiddleware's APPEND_SLASH
    response = client.get("/status/418/")
    assert (response.status_code, response["X-Custom"]) == (418, "yes")


def test_cookies_and_session(client: Client) -> None:
    client.get("/set-cookie/?flavour=ginger")
    assert client.get("/cookies/").json()["cookies"] == {"flavour": "ginger", "second": "two"}
    assert [client.get("/session/").json()["count"] for _ in range(3)] == [1, 2, 3]
