"""Whose segments and watch FIFOs a process uses (issue 11, point 1).

``/dev/shm`` is world-writable: another local user can create
``rbuf.<prefix>`` before a site does (mode 0666, a real segment), and the
site's processes used to attach silently and send all their traffic through
it. Now a segment (or watch FIFO) is used only if this process's effective
uid or one of ``trusted_uids`` owns it and it grants no more than ``mode``;
the sweeps of companion files leave other users' files alone.

The second user is ``nobody``, entered with ``setpriv`` (util-linux, see
``.ci/run``); CI runs as root. The attacker is a real process of that uid
using the real binding, so the files are what an attacker would make.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

import _ringbuf
from _ringbuf import Segment, SegmentNotTrusted

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[3]
NOBODY = 65534
SHM = "/dev/shm"

needs_second_uid = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv (util-linux) to act as a second user",
)


def as_nobody(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as uid nobody / gid nogroup (no other groups), from the repo root."""
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def seg_path(prefix: str) -> str:
    return f"{SHM}/rbuf.{prefix}"


ATTACKER_SEGMENT = """
    import os, sys, _ringbuf
    os.umask(0)
    seg = _ringbuf.Segment(sys.argv[1], size=4 << 20, mode=0o666, slots=64, waiters=8)
    seg.close()
"""


def dead_pid() -> int:
    """A pid no process can have (above pid_max)."""
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


@needs_second_uid
def test_segment_made_by_another_user_is_refused(prefix: str) -> None:
    made = as_nobody(ATTACKER_SEGMENT, prefix)
    assert made.returncode == 0, made.stderr
    st = os.stat(seg_path(prefix))
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY, 0o666)  # a real, world-open segment

    with pytest.raises(SegmentNotTrusted) as info:
        Segment(prefix)
    text = str(info.value)
    assert text == (
        f"segment {seg_path(prefix)} is owned by uid 65534 (nobody), mode 0666; this process "
        f"runs as uid 0 (root): refusing to attach. Remove it (ipc-layer rm --prefix {prefix} "
        "--force) or add 65534 to trusted_uids"
    )
    assert isinstance(info.value, PermissionError)

    # The layer refuses it too, with its own exception class (an OSError).
    from ipc_layer import IPCChannelLayer, SegmentError
    from ipc_layer import SegmentNotTrusted as LayerNotTrusted

    with pytest.raises(LayerNotTrusted, match="owned by uid 65534 \\(nobody\\)") as layer_info:
        IPCChannelLayer(prefix=prefix)
    assert isinstance(layer_info.value, SegmentError) and prefix in str(layer_info.value)

    # Trusting the uid is not enough while the mode is wider than configured...
    with pytest.raises(SegmentNotTrusted, match="mode 0666, which grants more than the configured "
                                                "mode 0600 .* set mode=0o666"):
        Segment(prefix, trusted_uids=[NOBODY])
    # ... both widen it: an explicit, deliberate choice.
    with Segment(prefix, trusted_uids=[NOBODY], mode=0o666) as seg:
        seg.send(b"q", b"x")
    layer = IPCChannelLayer(prefix=prefix, trusted_uids=(NOBODY,), mode=0o666)
    assert layer.trusted_uids == (NOBODY,)
    layer.close()

    # The advised fix works: rm --force removes another user's segment (root may).
    from ipc_layer.cli import main

    assert main(["rm", "--prefix", prefix, "--force"]) == 0
    assert not os.path.exists(seg_path(prefix))


@needs_second_uid
def test_nothing_reaches_the_other_users_segment(prefix: str) -> None:
    """What the attack was for: a cookie sent by root read by nobody. It never leaves root now."""
    assert as_nobody(ATTACKER_SEGMENT, prefix).returncode == 0
    from ipc_layer import IPCChannelLayer
    from ipc_layer import SegmentNotTrusted as LayerNotTrusted

    with pytest.raises(LayerNotTrusted):
        IPCChannelLayer(prefix=prefix).send("http.request", {"cookie": "sessionid=s3cret"})
    read = as_nobody("""
        import sys, _ringbuf
        seg = _ringbuf.Segment(sys.argv[1], create=False, mode=0o666)
        print(seg.info()["sent"], seg.receive([b"http.request"]))
    """, prefix)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == ["0", "None"]


@needs_second_uid
def test_root_segment_is_refused_by_another_user(prefix: str) -> None:
    """The reverse: a process of uid nobody does not attach to root's segment."""
    old = os.umask(0)
    try:
        seg = Segment(prefix, size=4 << 20, mode=0o666, slots=64, waiters=8)
    finally:
        os.umask(old)
    try:
        tried = as_nobody("""
            import sys, _ringbuf
            try:
                _ringbuf.Segment(sys.argv[1], mode=0o666)
            except _ringbuf.SegmentNotTrusted as exc:
                print(exc)
            else:
                print("ATTACHED")
        """, prefix)
        assert tried.returncode == 0, tried.stderr
        assert tried.stdout.strip() == (
            f"segment {seg_path(prefix)} is owned by uid 0 (root), mode 0666; this process runs "
            f"as uid 65534 (nobody): refusing to attach. Remove it (ipc-layer rm --prefix {prefix} "
            "--force) or add 0 to trusted_uids"
        )
        # ... unless it trusts root explicitly.
        trusted = as_nobody("""
            import sys, _ringbuf
            _ringbuf.Segment(sys.argv[1], mode=0o666, trusted_uids=[0]).send(b"q", b"hello")
        """, prefix)
        assert trusted.returncode == 0, trusted.stderr
        assert seg.receive([b"q"]) == (0, b"hello")
    finally:
        seg.close()


@needs_second_uid
def test_watch_fifo_planted_by_another_user_is_refused(prefix: str) -> None:
    """Another user's FIFO at the path of our next watch is neither used nor removed."""
    with Segment(prefix, size=4 << 20, slots=64, waiters=8) as seg:
        # A fresh segment hands out token 1 to its first registration.
        path = f"{seg_path(prefix)}~w~{os.getpid()}~1"
        made = as_nobody("import os, sys; os.umask(0); os.mkfifo(sys.argv[1], 0o666)", path)
        assert made.returncode == 0, made.stderr
        with pytest.raises(SegmentNotTrusted) as info:
            seg.watch([b"q"])
        assert str(info.value).startswith(
            f"watch FIFO {path} already exists, owned by uid 65534, mode 0666 (another user's "
            "file, not removed): refusing to use it")
        assert os.stat(path).st_uid == NOBODY  # left alone
        os.unlink(path)
        # Our own watch still works; its FIFO is ours and private.
        with seg.watch([b"q"]) as watch:
            own = [p for p in os.listdir(SHM) if p.startswith(f"rbuf.{prefix}~w~")]
            assert len(own) == 1
            st = os.stat(f"{SHM}/{own[0]}")
            assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o600)
            assert watch.arm() is False
            seg.send(b"q", b"x")
            assert watch.drain() == 1


@needs_second_uid
def test_sweeps_leave_other_users_files_alone(prefix: str) -> None:
    """Creating and removing a segment sweeps companion files of dead pids - only trusted owners'."""
    gone = dead_pid()
    theirs = [f"{seg_path(prefix)}~init~{gone}", f"{seg_path(prefix)}~w~{gone}~7"]
    made = as_nobody("""
        import os, sys
        open(sys.argv[1], "w").close()
        os.mkfifo(sys.argv[2], 0o600)
    """, *theirs)
    assert made.returncode == 0, made.stderr
    ours = f"{seg_path(prefix)}~w~{gone}~8"
    os.mkfifo(ours, 0o600)

    seg = Segment(prefix, size=4 << 20, slots=64, waiters=8)  # create: sweeps dead pids' leftovers
    assert not os.path.exists(ours)
    assert all(os.stat(p).st_uid == NOBODY for p in theirs)
    seg.close()
    os.mkfifo(ours, 0o600)
    _ringbuf.unlink(prefix)  # removal: sweeps every FIFO of the prefix - ours only
    assert not os.path.exists(ours)
    assert all(os.stat(p).st_uid == NOBODY for p in theirs)


def test_mode_beyond_permission_bits_is_refused(prefix: str) -> None:
    """0o7777 would have made a setuid/setgid/sticky segment file."""
    for mode in (0o7777, 0o4600, 0o1000):
        with pytest.raises(ValueError, match=r"mode must be an int in 0\.\.0o777 .*no setuid"):
            Segment(prefix, mode=mode)
    assert not os.path.exists(seg_path(prefix))
    from tests.support import make_layer

    with pytest.raises(ValueError, match=r"mode must be a file mode within 0o777 .*no setuid, setgid "
                                         r"or sticky bits\), got 0o7777"):
        make_layer(prefix, mode=0o7777)
    assert not os.path.exists(seg_path(prefix))


def test_trust_option_checks(prefix: str) -> None:
    with pytest.raises(TypeError, match="trusted_uids must be a sequence"):
        Segment(prefix, trusted_uids=65534)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trusted_uids: -1 is not a uid"):
        Segment(prefix, trusted_uids=[-1])
    with pytest.raises(ValueError, match="at most 16"):
        Segment(prefix, trusted_uids=range(17))


def test_own_segment_with_a_wider_mode_than_configured_is_refused(prefix: str) -> None:
    """Our own segment, but made 0666 (by a misconfigured peer): refused at the default 0600."""
    old = os.umask(0)
    try:
        Segment(prefix, size=4 << 20, mode=0o666, slots=64, waiters=8).close()
    finally:
        os.umask(old)
    with pytest.raises(SegmentNotTrusted, match="has mode 0666, which grants more than the "
                                                "configured mode 0600"):
        Segment(prefix)
    Segment(prefix, mode=0o666).close()  # configured alike: fine
    Segment(prefix, mode=0o777).close()  # wider configured: fine


def test_a_fifo_under_the_segment_name_is_refused(prefix: str) -> None:
    os.mkfifo(seg_path(prefix), 0o600)
    with pytest.raises(SegmentNotTrusted, match="is a FIFO, not a regular file"):
        Segment(prefix)
