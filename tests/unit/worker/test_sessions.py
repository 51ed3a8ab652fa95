"""worker.sessions / worker.auth / worker.security: sessions and users on channels, origin checks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.worker import consumer_support

consumer_support.setup()

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import override_settings  # noqa: E402

from ipc_layer import InMemoryChannelLayer  # noqa: E402
from worker.auth import (  # noqa: E402
    channel_and_http_session_user_from_http,
    channel_session_user,
    channel_session_user_from_http,
    http_session_user,
)
from worker.exceptions import DenyConnection  # noqa: E402
from worker.message import Message  # noqa: E402
from worker.security.websockets import allowed_hosts_only  # noqa: E402
from worker.sessions import (  # noqa: E402
    channel_and_http_session,
    channel_session,
    http_session,
    session_for_reply_channel,
)

pytestmark = pytest.mark.timeout(60)


def msg(channel: str, reply: str = "websocket.send!s1", **content: Any) -> Message:
    return Message({"reply_channel": reply, "path": "/", **content}, channel, InMemoryChannelLayer())


def site_session(**data: Any) -> Any:
    from importlib import import_module

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    for key, value in data.items():
        store[key] = value
    store.save()
    return store


def cookie(key: str) -> list[list[bytes]]:
    return [[b"cookie", f"other=1; {settings.SESSION_COOKIE_NAME}={key}".encode()]]


def test_channel_session_persists_per_reply_channel() -> None:
    @channel_session
    def count(message: Message) -> int:
        message.channel_session["n"] = message.channel_session.get("n", 0) + 1  # type: ignore[attr-defined]
        return int(message.channel_session["n"])  # type: ignore[attr-defined]

    assert [count(msg("websocket.receive", reply="websocket.send!a")) for _ in range(3)] == [1, 2, 3]
    assert count(msg("websocket.receive", reply="websocket.send!b")) == 1
    stored = session_for_reply_channel("websocket.send!a")
    assert stored["n"] == 3 and stored.session_key.startswith("chn") and len(stored.session_key) == 32


def test_channel_session_is_deleted_after_disconnect() -> None:
    @channel_session
    def touch(message: Message) -> None:
        message.channel_session["x"] = 1  # type: ignore[attr-defined]

    touch(msg("websocket.receive", reply="websocket.send!gone"))
    key = session_for_reply_channel("websocket.send!gone").session_key
    assert session_for_reply_channel("websocket.send!gone").exists(key)
    touch(msg("websocket.disconnect", reply="websocket.send!gone", code=1000))
    assert not session_for_reply_channel("websocket.send!gone").exists(key)


def test_channel_session_refuses_signed_cookies_and_messages_without_reply() -> None:
    @channel_session
    def noop(message: Message) -> None:
        pass

    with override_settings(CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"), \
            pytest.raises(ImproperlyConfigured, match="CHANNEL_SESSION_ENGINE is the signed-cookie engine"):
        noop(msg("websocket.connect"))
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"), \
            pytest.raises(ImproperlyConfigured, match="SESSION_ENGINE is the signed-cookie engine"):
        noop(msg("websocket.connect"))
    with override_settings(CHANNEL_SESSION_ENGINE="no.such.engine"), \
            pytest.raises(ImproperlyConfigured, match="CHANNEL_SESSION_ENGINE = 'no.such.engine' does not import"):
        noop(msg("websocket.connect"))
    with pytest.raises(ValueError, match="has no reply_channel"):
        noop(Message({"x": 1}, "thumbnails", None))
    with pytest.raises(ValueError, match="not called with a Message"):
        noop("not a message")  # type: ignore[arg-type]


def test_the_first_save_stores_the_session_and_a_concurrent_create_is_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.contrib.sessions.backends import file

    reply = "websocket.send!race"

    @channel_session
    def read(message: Message) -> Any:
        return message.channel_session.get("winner")  # type: ignore[attr-defined]

    assert read(msg("websocket.receive", reply=reply)) is None
    assert not session_for_reply_channel(reply).exists(session_for_reply_channel(reply).session_key)  # no write

    @channel_session
    def write(message: Message) -> None:
        # Another worker stores the session between our failed update and our create.
        other = session_for_reply_channel(reply)
        other["winner"] = "other worker"
        real_save = file.SessionStore.save

        def racing_save(self: Any, must_create: bool = False) -> Any:
            if must_create and self is not other and not other.exists(other.session_key):
                other.save(must_create=True)
            return real_save(self, must_create)

        monkeypatch.setattr(file.SessionStore, "save", racing_save)
        message.channel_session["winner"] = "us"  # type: ignore[attr-defined]

    write(msg("websocket.receive", reply=reply))
    assert session_for_reply_channel(reply)["winner"] == "us"  # the newer write, no CreateError


def test_http_session_from_the_cookie_or_the_query_string() -> None:
    site = site_session(colour="green")

    @http_session
    def colour(message: Message) -> Any:
        session = message.http_session  # type: ignore[attr-defined]
        return None if session is None else session.get("colour")

    assert colour(msg("websocket.connect", headers=cookie(site.session_key))) == "green"
    assert colour(msg("websocket.connect", query_string=f"session_key={site.session_key}".encode())) == "green"
    assert colour(msg("websocket.connect", headers=[[b"x", b"y"]])) is None
    assert colour(msg("websocket.connect")) is None


def test_channel_and_http_session_keeps_the_http_session_for_later_messages() -> None:
    site = site_session(colour="blue")
    reply = "websocket.send!both"

    @channel_and_http_session
    def colour(message: Message) -> Any:
        return message.http_session.get("colour")  # type: ignore[attr-defined]

    assert colour(msg("websocket.connect", reply=reply, headers=cookie(site.session_key))) == "blue"
    assert colour(msg("websocket.receive", reply=reply, text="x")) == "blue"  # no cookie on receive


@pytest.mark.parametrize("connect", [channel_session_user_from_http, channel_and_http_session_user_from_http])
def test_the_logged_in_user_follows_the_socket(connect: Any) -> None:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    user = consumer_support.make_user("alice")
    site = site_session(**{SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: settings.AUTHENTICATION_BACKENDS[0],
                           HASH_SESSION_KEY: user.get_session_auth_hash()})
    reply = f"websocket.send!user{connect.__name__[:5]}"

    @connect
    def on_connect(message: Message) -> Any:
        return message.user  # type: ignore[attr-defined]

    @channel_session_user
    def on_receive(message: Message) -> Any:
        return message.user  # type: ignore[attr-defined]

    assert on_connect(msg("websocket.connect", reply=reply, headers=cookie(site.session_key))).username == "alice"
    assert on_receive(msg("websocket.receive", reply=reply, text="x")).username == "alice"
    assert on_receive(msg("websocket.receive", reply="websocket.send!stranger", text="x")).is_anonymous


def test_http_session_user_and_a_changed_password() -> None:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    user = consumer_support.make_user("bob")
    site = site_session(**{SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: settings.AUTHENTICATION_BACKENDS[0],
                           HASH_SESSION_KEY: user.get_session_auth_hash()})

    @http_session_user
    def who(message: Message) -> Any:
        return message.user  # type: ignore[attr-defined]

    assert who(msg("websocket.connect", headers=cookie(site.session_key))).username == "bob"
    assert who(msg("websocket.connect")).is_anonymous
    user.set_password("new")
    user.save()
    assert who(msg("websocket.connect", headers=cookie(site.session_key))).is_anonymous  # hash no longer matches


@pytest.mark.parametrize(
    ("origin", "allowed", "debug", "ok"),
    [
        (b"http://example.com", ["example.com"], False, True),
        (b"https://example.com:8443", ["example.com"], False, True),
        (b"http://evil.com", ["example.com"], False, False),
        (b"http://sub.example.com", [".example.com"], False, True),
        (None, ["*"], False, False),
        (b"null", ["*"], False, False),
        (b"http://\xc3\xa9.com", ["*"], False, False),
        (b"http://localhost:8000", [], True, True),
        (b"http://[::1]:8000", [], True, True),
        (b"http://example.com", [], True, False),
        (b"http://anything.org", ["*"], False, True),
    ],
)
def test_allowed_hosts_only(origin: bytes | None, allowed: list[str], debug: bool, ok: bool) -> None:
    @allowed_hosts_only
    def connect(message: Message) -> str:
        return "ran"

    headers = [[b"host", b"example.com"]] + ([[b"origin", origin]] if origin is not None else [])
    with override_settings(ALLOWED_HOSTS=allowed, DEBUG=debug):
        if ok:
            assert connect(msg("websocket.connect", headers=headers)) == "ran"
        else:
            with pytest.raises(DenyConnection):
                connect(msg("websocket.connect", headers=headers))
