"""Bad input gets a clear message and a documented exit code, and loses nothing on the target."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.asshd import asyncssh_server  # noqa: F401 - the `sshd` fixture of this module
from tests.diskimg import MiB, assert_same, make_image, mutate, sha256
from tests.test_engine_sync import run_sync

HERE = Path(__file__).resolve().parent




@pytest.fixture
def images(tmp_path):
    src = make_image(tmp_path / "src.img", 8 * MiB, seed=3)
    return src, tmp_path / "dst.img", tmp_path / "state"


async def test_unknown_host_key(sshd, images, tmp_path):
    src, dst, state = images
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    rc, _, err = await run_sync(sshd, src, dst, state=state, json_out=False,
                                ssh_args=["-i", str(sshd.keys.client_key), "--known-hosts", str(empty)])
    assert rc == 3 and "host key" in err and "not trusted" in err, err
    assert not dst.exists()


async def test_changed_host_key(sshd, images):
    src, dst, state = images
    rc, _, err = await run_sync(sshd, src, dst, state=state, json_out=False,
                                ssh_args=["-i", str(sshd.keys.client_key), "--known-hosts",
                                          str(sshd.keys.wrong_known_hosts)])
    assert rc == 3 and "host key" in err, err
    assert not dst.exists()


async def test_pinned_host_key_right_and_wrong(sshd, images, tmp_path):
    src, dst, state = images
    rc, _, err = await run_sync(sshd, src, dst, state=state,
                                ssh_args=["-i", str(sshd.keys.client_key), "--host-key", sshd.keys.host_pub])
    assert rc == 0, err
    assert_same(src, dst)
    wrong = (sshd.keys.wrong_known_hosts.read_text().split("\n")[0]).split(" ", 1)[1]
    rc, _, err = await run_sync(sshd, src, tmp_path / "other.img", state=state, json_out=False,
                                ssh_args=["-i", str(sshd.keys.client_key), "--host-key", wrong])
    assert rc == 3 and "not trusted" in err, err


async def test_missing_known_hosts_file(sshd, images, tmp_path):
    src, dst, state = images
    rc, _, err = await run_sync(sshd, src, dst, state=state, json_out=False,
                                ssh_args=["-i", str(sshd.keys.client_key), "--known-hosts", str(tmp_path / "nope")])
    assert rc == 3 and "known_hosts" in err and "does not exist" in err, err


async def test_nothing_listening_is_a_retryable_connection_error(sshd, images):
    import socket

    src, dst, state = images
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from tests.conftest import cli, repo_env

    p = subprocess.run([*cli("migrated"), "sync", str(src), f"127.0.0.1:{port}:{dst}", *sshd.ssh_args(),
                        "--state-dir", str(state), "--json"], capture_output=True, text=True, env=repo_env())
    assert p.returncode == 3 and "connection refused" in p.stderr, p.stderr
    assert '"retryable": true' in p.stdout


async def test_wrong_client_key(sshd, images):
    src, dst, state = images
    rc, _, err = await run_sync(sshd, src, dst, state=state, json_out=False,
                                ssh_args=["-i", str(sshd.keys.wrong_client_key), "--known-hosts",
                                          str(sshd.keys.known_hosts)])
    assert rc == 3 and "refused our credentials" in err, err


async def test_target_too_small_nothing_written(sshd, images):
    src, dst, state = images
    dst.write_bytes(b"keep me" * 1000)
    before = sha256(dst)
    rc, _, err = await run_sync(sshd, src, dst, state=state, json_out=False)
    assert rc == 4 and "smaller than the source" in err, err
    assert sha256(dst) == before


async def test_bad_options_are_usage_errors(sshd, images, tmp_path):
    src, dst, state = images
    for extra, words in ((["--block-size", "1000"], "--block-size"), (["--bwlimit", "fast"], "--bwlimit")):
        rc, _, err = await run_sync(sshd, src, dst, *extra, state=state, json_out=False)
        assert rc == 2 and words in err, err
    rc, _, err = await run_sync(sshd, src, dst, state=state, json_out=False,
                                ssh_args=["-i", str(tmp_path / "no-such-key"), "--known-hosts",
                                          str(sshd.keys.known_hosts)])
    assert rc == 2 and "identity file" in err and "does not exist" in err, err
    assert not dst.exists()


async def test_json_reports_the_error(sshd, images):
    src, dst, state = images
    dst.write_bytes(b"x" * 1000)
    rc, s, _ = await run_sync(sshd, src, dst, state=state)
    assert rc == 4 and s["error_type"] == "TargetError" and s["exit_code"] == 4 and "smaller" in s["error"]


async def test_missing_source(sshd, tmp_path):
    rc, _, err = await run_sync(sshd, tmp_path / "nope.img", tmp_path / "dst.img", state=tmp_path / "s",
                                json_out=False)
    assert rc == 6 and "does not exist" in err, err


def test_missing_source_is_named_before_the_missing_known_hosts(tmp_path):
    """Issue #10: `migrated sync missing.img host:/x` used to report the missing ~/.ssh/known_hosts."""
    from tests.conftest import cli, repo_env

    home = tmp_path / "home"  # no ~/.ssh/known_hosts here
    home.mkdir()
    p = subprocess.run([*cli("migrated"), "sync", str(tmp_path / "missing.img"), "127.0.0.1:1:/x"],
                       capture_output=True, text=True, env=repo_env(HOME=str(home)), timeout=60)
    assert p.returncode == 6, p.stderr
    assert "missing.img does not exist" in p.stderr and "known_hosts" not in p.stderr, p.stderr


async def test_directory_at_the_checkpoint_path_is_a_usage_error_that_loses_nothing(sshd, images):
    """Issue #10: a directory where the checkpoint goes crashed `migrated sync` with IsADirectoryError."""
    src, dst, state = images
    rc, _, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    (ckpt,) = state.glob("*.ckpt")
    ckpt.unlink()
    ckpt.mkdir()
    (ckpt / "keep").write_text("mine")
    mutate(src, regions=3, max_len=64 * 1024)
    before = sha256(dst)
    rc, _, err = await run_sync(sshd, src, dst, state=state, json_out=False)
    assert rc == 2, err
    assert "Traceback" not in err and str(ckpt) in err and "not a regular file" in err, err
    assert (ckpt / "keep").read_text() == "mine" and sha256(dst) == before  # nothing moved, nothing written
    assert sorted(p.name for p in state.iterdir() if p.name.startswith(".")) == []  # no temp file left


async def test_bad_target_syntax(sshd, images):
    src, _, _state = images
    from tests.conftest import cli, repo_env

    p = subprocess.run([*cli("migrated"), "sync", str(src), "no-colon-here"], capture_output=True, text=True,
                       env=repo_env())
    assert p.returncode == 2 and "[user@]host[:port]:/path" in p.stderr


async def test_damaged_checkpoint_falls_back_to_hash_compare(sshd, images):
    src, dst, state = images
    rc, _, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    mutate(src, regions=3, max_len=32 * 1024)
    (ckpt,) = state.glob("*.ckpt")
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x20
    ckpt.write_bytes(bytes(data))
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    assert s["checkpoint"].startswith("fallback") and "damaged" in s["checkpoint"]
    assert_same(src, dst)
    assert s["bytes_changed"] <= 3 * 3 * 64 * 1024  # compared with the target, not re-sent whole
    # truncated checkpoint: the same
    ckpt.write_bytes(ckpt.read_bytes()[:40])
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0 and s["checkpoint"].startswith("fallback") and s["blocks_sent"] == 0, err


async def test_unknown_target_sends_only_differences(sshd, images):
    src, dst, state = images
    shutil.copyfile(src, dst)
    changed = mutate(src, regions=4, max_len=16 * 1024)
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    assert_same(src, dst)
    assert s["checkpoint"] == "none" and not s["target_created"]
    assert 0 < s["bytes_changed"] <= changed + 8 * 64 * 1024


async def test_checksum_repairs_target_changed_behind_our_back(sshd, images):
    src, dst, state = images
    rc, s, err = await run_sync(sshd, src, dst, "--checksum", state=state)
    assert rc == 0 and s["verified"] is True and s["blocks_resent"] == 0, err
    with open(dst, "r+b") as f:  # the checkpoint now lies about these blocks
        f.seek(3 * MiB + 100)
        f.write(b"\xff" * 5000)
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0 and s["blocks_sent"] == 0  # without --checksum the checkpoint is trusted
    rc, s, err = await run_sync(sshd, src, dst, "--checksum", state=state)
    assert rc == 0, err
    assert s["verified"] is True and s["blocks_resent"] >= 1
    assert_same(src, dst)


@pytest.mark.parametrize("mode,code,words", [
    ("hash-len", 4, "do not match"),
    ("hash-offset", 4, "do not match"),
    ("flush-seq", 4, "wrong flush"),
    ("big-frame", 4, "exceeds"),
    ("opened-junk", 4, "malformed OPENED"),
    ("extra-frame", 4, "unexpected frame"),
    ("version", 4, "protocol 99"),
    ("garbage", 4, "receiver on"),
])
async def test_lying_receiver_stops_with_protocol_error(sshd, images, mode, code, words):
    src, dst, state = images
    old = make_image(dst, 8 * MiB, seed=4)  # an existing target: asks the receiver for hashes
    before = sha256(old)
    liar = f"{sys.executable} {HERE / 'liar_recv.py'} {mode}"
    rc, _, err = await run_sync(sshd, src, dst, "--recv-command", liar, state=state, json_out=False)
    assert rc == code and words in err, err
    assert "Traceback" not in err
    if mode != "flush-seq":
        assert sha256(dst) == before  # nothing written on a lie found before any data moved


def _losetup(img: Path) -> str:
    return subprocess.run(["losetup", "--find", "--show", str(img)], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("losetup"), reason="needs root and losetup")
async def test_block_device_target_and_mounted_device_refused(sshd, images, tmp_path):
    src, _, state = images
    backing = tmp_path / "loop.img"
    backing.write_bytes(b"")
    os.truncate(backing, 16 * MiB)
    try:
        dev = _losetup(backing)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"no loop device: {e.stderr}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        rc, s, err = await run_sync(sshd, src, Path(dev), "--checksum", state=state)
        assert rc == 0, err
        assert s["verified"] is True
        with open(dev, "rb") as d, open(src, "rb") as f:
            assert d.read(8 * MiB) == f.read()
        subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
        subprocess.run(["mount", dev, str(mnt)], check=True, capture_output=True)
        mounted = True
        (mnt / "keep.txt").write_text("precious\n" * 1000)
        os.sync()
        rc, _, err = await run_sync(sshd, src, Path(dev), state=state, json_out=False)
        assert rc == 4 and "refusing to write" in err and "mounted" in err, err
        subprocess.run(["umount", str(mnt)], check=True)
        mounted = False
        fsck = subprocess.run(["e2fsck", "-fn", dev], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr  # the filesystem was not touched
        subprocess.run(["mount", "-o", "ro", dev, str(mnt)], check=True)
        mounted = True
        assert (mnt / "keep.txt").read_text() == "precious\n" * 1000
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)
