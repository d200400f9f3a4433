"""The receiver as a real process on pipes: what it accepts, what it refuses, what it writes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from migrated import __version__
from migrated.transport import recv as wire

RECV = Path(wire.__file__)


def oldest_python() -> str | None:
    """The oldest interpreter the receiver is written for (docs/protocol.md: Python >= 3.7), if this
    machine has it (pyenv or PATH)."""
    import glob
    import shutil

    for cand in [*sorted(glob.glob("/root/.pyenv/versions/3.7*/bin/python3")), shutil.which("python3.7")]:
        if cand and subprocess.run([cand, "-c", "import sys; assert sys.version_info[:2] == (3, 7)"],
                                   capture_output=True).returncode == 0:
            return cand
    return None


class Peer:
    def __init__(self, tmp: Path, *, stdlib_only: bool = False, python: str | None = None) -> None:
        flags = ["-I", "-S"] if stdlib_only else []
        env = dict(os.environ, XDG_STATE_HOME=str(tmp / "state"))
        self.p = subprocess.Popen([python or sys.executable, *flags, str(RECV)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def send(self, frame: bytes) -> None:
        self.p.stdin.write(frame)
        self.p.stdin.flush()

    def recv(self) -> tuple[int, bytes]:
        t, n = wire.parse_header(self.p.stdout.read(wire.HEADER.size))
        return t, self.p.stdout.read(n)

    def ask(self, frame: bytes) -> tuple[int, bytes]:
        self.send(frame)
        return self.recv()

    def hello(self) -> dict:
        t, body = self.ask(wire.pack_json(wire.T_HELLO, {"magic": wire.MAGIC, "versions": [1]}))
        assert t == wire.T_HELLO_OK
        return wire.parse_json(body)

    def open(self, path: Path, size: int, hash_name: str = "blake2b-128", codec: str = "zlib") -> dict:
        t, body = self.ask(wire.pack_json(wire.T_OPEN, {"path": str(path), "size": size, "block_size": 65536,
                                                        "hash": hash_name, "codec": codec}))
        assert t == wire.T_OPENED, body
        return wire.parse_json(body)

    def close(self) -> int:
        self.p.stdin.close()
        rc = self.p.wait(10)
        self.p.stdout.close()
        self.p.stderr.close()
        return rc


def error_of(peer: Peer) -> dict:
    t, body = peer.recv()
    assert t == wire.T_ERROR
    return wire.parse_json(body)


@pytest.mark.parametrize("python", ["this", "oldest"])
def test_stdlib_only_receiver_negotiates_fallbacks(tmp_path, python):
    if python == "oldest" and oldest_python() is None:
        pytest.skip("no Python 3.7 on this machine")
    peer = Peer(tmp_path, stdlib_only=True, python=oldest_python() if python == "oldest" else None)
    hello = peer.hello()
    assert hello["hashes"] == ["blake2b-128"] and hello["codecs"] == ["zlib", "none"]
    target = tmp_path / "t.img"
    opened = peer.open(target, 1 << 20)
    assert opened["created"] and opened["size"] == 1 << 20
    data = os.urandom(65536)
    peer.send(wire.pack_frame(wire.T_WRITE, wire.WRITE_HDR.pack(65536, len(data), 1) + zlib.compress(data)))
    t, body = peer.ask(wire.pack_frame(wire.T_HASH, wire.RANGE.pack(0, 131072)))
    assert t == wire.T_HASHES
    h = lambda b: hashlib.blake2b(b, digest_size=16).digest()  # noqa: E731
    assert body[16:] == h(bytes(65536)) + h(data)
    assert peer.ask(wire.pack_frame(wire.T_FLUSH, wire.SEQ.pack(5))) == (wire.T_FLUSHED, wire.SEQ.pack(5))
    assert peer.ask(wire.pack_frame(wire.T_BYE)) == (wire.T_BYE_OK, b"")
    assert peer.close() == 0
    assert target.read_bytes()[65536:131072] == data
    assert os.stat(target).st_blocks * 512 < 1 << 20  # created sparse


def test_frame_before_hello_refused(tmp_path):
    peer = Peer(tmp_path)
    peer.send(wire.pack_frame(wire.T_FLUSH, wire.SEQ.pack(1)))
    assert error_of(peer)["kind"] == "protocol"
    assert peer.close() == 2


def test_write_past_end_refused_and_nothing_written(tmp_path):
    target = tmp_path / "t.img"
    target.write_bytes(b"A" * 100_000)
    peer = Peer(tmp_path)
    peer.hello()
    peer.open(target, 65536, codec="none")
    peer.send(wire.pack_frame(wire.T_WRITE, wire.WRITE_HDR.pack(90_000, 20_000, 0) + b"B" * 20_000))
    err = error_of(peer)
    assert err["kind"] == "protocol" and "outside the target" in err["message"]
    peer.close()
    assert target.read_bytes() == b"A" * 100_000


def test_lying_length_after_decompression_refused(tmp_path):
    target = tmp_path / "t.img"
    peer = Peer(tmp_path)
    peer.hello()
    peer.open(target, 1 << 20)
    peer.send(wire.pack_frame(wire.T_WRITE, wire.WRITE_HDR.pack(0, 4096, 1) + zlib.compress(b"x" * 100)))
    assert "expected 4096" in error_of(peer)["message"]
    peer.close()
    assert target.read_bytes() == bytes(1 << 20)


def test_oversized_frame_refused(tmp_path):
    peer = Peer(tmp_path)
    peer.hello()
    peer.send(wire.HEADER.pack(wire.T_WRITE, wire.MAX_PAYLOAD + 1))
    assert "cap" in error_of(peer)["message"]
    peer.close()


def test_zero_makes_holes_only_where_needed(tmp_path):
    target = tmp_path / "t.img"
    target.write_bytes(os.urandom(1 << 20))
    before_blocks = os.stat(target).st_blocks
    peer = Peer(tmp_path)
    peer.hello()
    peer.open(target, 1 << 20)
    peer.send(wire.pack_frame(wire.T_ZERO, wire.RANGE.pack(0, 1 << 20)))
    assert peer.ask(wire.pack_frame(wire.T_FLUSH, wire.SEQ.pack(1)))[0] == wire.T_FLUSHED
    peer.close()
    assert target.read_bytes() == bytes(1 << 20)
    assert os.stat(target).st_blocks < before_blocks  # a hole, not written zeros


def test_generation_marker_survives_reopen(tmp_path):
    target = tmp_path / "t.img"
    peer = Peer(tmp_path)
    peer.hello()
    assert peer.open(target, 65536)["previous_generation"] is None
    assert peer.ask(wire.pack_json(wire.T_SETGEN, {"generation": "g1"}))[0] == wire.T_GENSET
    peer.close()
    peer = Peer(tmp_path)
    peer.hello()
    assert peer.open(target, 65536)["previous_generation"] == "g1"
    peer.close()


@pytest.mark.parametrize("req,words", [
    ({"path": "/nonexistent-dir/x.img", "size": 10, "block_size": 65536, "hash": "blake2b-128", "codec": "none"},
     "cannot create"),
    ({"path": "/tmp", "size": 10, "block_size": 65536, "hash": "blake2b-128", "codec": "none"},
     "neither a block device nor a regular file"),
    ({"path": "x", "size": 10, "block_size": 1000, "hash": "blake2b-128", "codec": "none"}, "power of two"),
    ({"path": "x", "size": 10, "block_size": 65536, "hash": "md5", "codec": "none"}, "not available"),
    ({"size": 10}, "bad OPEN"),
])
def test_bad_open_refused(tmp_path, req, words):
    peer = Peer(tmp_path)
    peer.hello()
    peer.send(wire.pack_json(wire.T_OPEN, req))
    assert words in error_of(peer)["message"]
    peer.close()


def test_target_locked_by_another_receiver(tmp_path):
    import fcntl

    target = tmp_path / "t.img"
    target.write_bytes(bytes(65536))
    with open(target, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        os.environ["MIGRATED_RECV_LOCK_WAIT"] = "0.5"
        try:
            peer = Peer(tmp_path)
        finally:
            del os.environ["MIGRATED_RECV_LOCK_WAIT"]
        peer.hello()
        peer.send(wire.pack_json(wire.T_OPEN, {"path": str(target), "size": 65536, "block_size": 65536,
                                               "hash": "blake2b-128", "codec": "none"}))
        assert "in use by another migrated-recv" in error_of(peer)["message"]
        peer.close()
    peer = Peer(tmp_path)  # released: a new receiver gets it
    peer.hello()
    assert peer.open(target, 65536)["size"] == 65536
    peer.close()


def test_hashes_of_a_sparse_target_match_its_bytes_after_writes(tmp_path):
    target = tmp_path / "t.img"
    size = 24 << 20
    with open(target, "wb") as f:
        f.truncate(size)
        f.seek(5 << 20)
        f.write(os.urandom(70000))
    h = lambda b: hashlib.blake2b(b, digest_size=16).digest()  # noqa: E731

    def expected() -> bytes:
        data = target.read_bytes()
        return b"".join(h(data[i:i + 65536]) for i in range(0, size, 65536))

    peer = Peer(tmp_path)
    peer.hello()
    peer.open(target, size, codec="none")
    _t, body = peer.ask(wire.pack_frame(wire.T_HASH, wire.RANGE.pack(0, size)))
    assert body[16:] == expected()
    data = os.urandom(4096)  # fill a hole, then ask again: no stale view of the holes
    peer.send(wire.pack_frame(wire.T_WRITE, wire.WRITE_HDR.pack(20 << 20, len(data), 0) + data))
    _t, body = peer.ask(wire.pack_frame(wire.T_HASH, wire.RANGE.pack(0, size)))
    peer.close()
    assert body[16:] == expected()


def test_device_in_use_sees_the_mounted_root_filesystem(tmp_path):
    from migrated.source.mounts import device_in_use, in_use_reason

    root_dev = os.stat("/").st_dev  # the device "/" is mounted from, as mountinfo lists it
    assert device_in_use(root_dev) == "it is mounted"
    assert in_use_reason(str(tmp_path)) is None  # not a block device
    assert in_use_reason(str(tmp_path / "missing")) is None


def test_pipelined_requests_answered_in_order_with_flush_in_between(tmp_path):
    """The receiver fsyncs in its reply thread and keeps reading meanwhile: answers must still come
    back in request order (the agent matches them first in, first out), and a HASH asked after a
    WRITE sees that write."""
    peer = Peer(tmp_path)
    peer.hello()
    target = tmp_path / "t.img"
    peer.open(target, 4 << 20, hash_name="blake2b-128", codec="none")
    a, b = os.urandom(65536), os.urandom(65536)
    h = lambda x: hashlib.blake2b(x, digest_size=16).digest()  # noqa: E731
    frames = [
        wire.pack_frame(wire.T_WRITE, wire.WRITE_HDR.pack(0, len(a), 0) + a),
        wire.pack_frame(wire.T_FLUSH, wire.SEQ.pack(1)),
        wire.pack_frame(wire.T_HASH, wire.RANGE.pack(0, 65536)),
        wire.pack_frame(wire.T_WRITE, wire.WRITE_HDR.pack(65536, len(b), 0) + b),
        wire.pack_frame(wire.T_FLUSH, wire.SEQ.pack(2)),
        wire.pack_frame(wire.T_HASH, wire.RANGE.pack(0, 131072)),
        wire.pack_frame(wire.T_FLUSH, wire.SEQ.pack(3)),
    ]
    peer.send(b"".join(frames))  # all at once, no waiting for answers
    assert peer.recv() == (wire.T_FLUSHED, wire.SEQ.pack(1))
    assert peer.recv() == (wire.T_HASHES, wire.RANGE.pack(0, 65536) + h(a))
    assert peer.recv() == (wire.T_FLUSHED, wire.SEQ.pack(2))
    assert peer.recv() == (wire.T_HASHES, wire.RANGE.pack(0, 131072) + h(a) + h(b))
    assert peer.recv() == (wire.T_FLUSHED, wire.SEQ.pack(3))
    assert peer.ask(wire.pack_frame(wire.T_BYE)) == (wire.T_BYE_OK, b"")
    assert peer.close() == 0
    assert target.read_bytes()[:131072] == a + b


def test_error_after_queued_answers_comes_last_and_whole(tmp_path):
    """A refused frame right behind a FLUSH: the FLUSHED answer is out first, then one ERROR frame."""
    peer = Peer(tmp_path)
    peer.hello()
    peer.open(tmp_path / "t.img", 1 << 20, codec="none")
    peer.send(wire.pack_frame(wire.T_FLUSH, wire.SEQ.pack(9))
              + wire.pack_frame(wire.T_ZERO, wire.RANGE.pack(1 << 20, 4096)))
    assert peer.recv() == (wire.T_FLUSHED, wire.SEQ.pack(9))
    assert "outside the target" in error_of(peer)["message"]
    assert peer.close() == 2


@pytest.mark.parametrize("python", ["this", "oldest"])
@pytest.mark.parametrize(("args", "rc", "words"), [
    (["--help"], 0, "usage: migrated-recv"),
    (["-h"], 0, "usage: migrated-recv"),
    (["--version"], 0, f"migrated-recv {__version__} (protocol 1)"),
    (["--bogus"], 2, "unknown argument '--bogus'"),
])
def test_help_and_version_answer_at_once_without_reading_stdin(python, args, rc, words):
    """Issue #10: `migrated-recv --help` used to wait on stdin. Stdin stays open here: reading it would hang."""
    interpreter = oldest_python() if python == "oldest" else sys.executable
    if interpreter is None:
        pytest.skip("no Python 3.7 on this machine")
    r, w = os.pipe()
    try:
        p = subprocess.run([interpreter, "-I", "-S", str(RECV), *args], stdin=r, capture_output=True, text=True,
                           timeout=60)
    finally:
        os.close(r)
        os.close(w)
    assert p.returncode == rc, p.stderr
    assert words in (p.stdout if rc == 0 else p.stderr)


def test_receiver_atomic_write_is_whole_private_and_leaves_no_temp_file(tmp_path):
    """recv.py keeps its own copy of store.atomic_write (it must stand alone): same discipline."""
    path = tmp_path / "state" / "marker.json"
    wire._atomic_write(str(path), b"x" * 300000)
    assert path.read_bytes() == b"x" * 300000 and path.stat().st_mode & 0o777 == 0o600
    wire._atomic_write(str(path), b"second")
    assert path.read_bytes() == b"second"
    blocked = tmp_path / "state" / "dir"
    blocked.mkdir()
    with pytest.raises(IsADirectoryError):
        wire._atomic_write(str(blocked), b"y")
    assert sorted(p.name for p in path.parent.iterdir()) == ["dir", "marker.json"]  # no temp file left behind


def test_the_stand_alone_receiver_carries_the_package_version():
    assert wire.__version__ == __version__
