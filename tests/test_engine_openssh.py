"""The same engine against a real OpenSSH sshd on loopback (tests/sshd.py): full copy, delta,
resume after kill -9 and after the server cut the connection, --checksum verification."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cli, repo_env
from tests.diskimg import MiB, assert_same, differing_bytes, make_image, mutate, sha256

pytestmark = pytest.mark.skipif(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
                                reason="the sshd fixture needs root")


def sync_argv(sshd, src: Path, dst: Path, state: Path, *extra: str) -> list[str]:
    return [*cli("migrated"), "sync", str(src), sshd.target(str(dst)), "-i", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts), "--state-dir", str(state), "--recv-command", "upload",
            "--json", *extra]


def run(argv: list[str]) -> tuple[int, dict, str]:
    p = subprocess.run(argv, capture_output=True, text=True, env=repo_env(), timeout=120)
    out = p.stdout.strip().splitlines()
    return p.returncode, (json.loads(out[-1]) if out else {}), p.stderr


def cursor(state: Path) -> int:
    from migrated.model.checkpoint import Checkpoint

    for f in state.glob("*.ckpt"):
        try:
            return Checkpoint.decode(f.read_bytes()).cursor
        except Exception:
            return -1
    return -1


def test_full_delta_verify_over_openssh(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 24 * MiB, seed=21)
    before = sha256(src)
    dst, state = tmp_path / "dst.img", tmp_path / "state"
    rc, s, err = run(sync_argv(sshd, src, dst, state))
    assert rc == 0, err
    assert_same(src, dst)
    assert sha256(src) == before
    # A receiver with nothing but the standard library (python3 -I -S: no site-packages at all):
    # the stdlib fallbacks are negotiated and the result is the same.
    import sys

    from migrated.transport import recv

    stdlib_dst = tmp_path / "stdlib.img"
    rc, s2, err = run([*sync_argv(sshd, src, stdlib_dst, tmp_path / "state2"), "--recv-command",
                       f"{sys.executable} -I -S {recv.__file__}"])
    assert rc == 0, err
    assert (s2["hash"], s2["codec"]) == ("blake2b-128", "none"), s2
    assert_same(src, stdlib_dst)
    changed = mutate(src, regions=6, max_len=100 * 1024)
    rc, s, err = run(sync_argv(sshd, src, dst, state, "--checksum"))
    assert rc == 0, err
    assert_same(src, dst)
    assert s["round"] == 2 and s["verified"] is True and s["blocks_resent"] == 0
    assert 0 < s["bytes_sent"] <= changed + 64 * 1024


async def test_kill9_and_dropped_connection_resume_over_openssh(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 32 * MiB, seed=22, sparse_zero=False)
    dst, state = tmp_path / "dst.img", tmp_path / "state"
    slow = ["--bwlimit", "6MiB", "--checkpoint-interval", "0.3", "--chunk-size", "1MiB"]
    loop = asyncio.get_running_loop()
    for how in ("kill", "drop"):
        proc = await asyncio.create_subprocess_exec(*sync_argv(sshd, src, dst, state, *slow), env=repo_env(),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        goal = 8 * MiB if how == "kill" else 20 * MiB
        end = loop.time() + 60
        while cursor(state) < goal:
            assert proc.returncode is None and loop.time() < end
            await asyncio.sleep(0.05)
        if how == "kill":
            proc.kill()
        else:
            assert sshd.drop_connections() >= 1
        _, err = await proc.communicate()
        if how == "drop":
            assert proc.returncode == 3, err
    await asyncio.sleep(0.5)  # the receiver drains what sshd had already passed it
    missing = differing_bytes(src, dst)
    rc, s, err = run(sync_argv(sshd, src, dst, state))
    assert rc == 0, err
    assert_same(src, dst)
    assert s["resumed"] and s["bytes_sent"] <= missing + 64 * 1024
