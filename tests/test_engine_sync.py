"""End-to-end syncs through a real asyncssh server (in-process, 127.0.0.1 port 0) and the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.asshd import AsyncSSHD, make_keys
from tests.conftest import cli, repo_env
from tests.diskimg import MiB, assert_same, differing_bytes, make_image, mutate, sha256


@pytest.fixture
async def sshd(tmp_path):
    keys, host_key = make_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir()
    server = await AsyncSSHD(home=home, keys=keys, host_key=host_key).start()
    try:
        yield server
    finally:
        await server.stop()


async def run_sync(sshd: AsyncSSHD, src: Path, dst: Path, *extra: str, state: Path, json_out: bool = True,
                   ssh_args: list[str] | None = None) -> tuple[int, dict | None, str]:
    args = [*cli("migrated"), "sync", str(src), sshd.target(dst), *(ssh_args or sshd.ssh_args()),
            "--state-dir", str(state), "--recv-command", "upload", *extra]
    if json_out:
        args.append("--json")
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=repo_env())
    out, err = await proc.communicate()
    print(" ".join(args[2:4]), out.decode().strip()[-600:], err.decode()[-2000:])
    summary = json.loads(out.decode().strip().splitlines()[-1]) if json_out and out.strip() else None
    return proc.returncode, summary, err.decode()


async def test_full_copy_then_delta_then_noop(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 24 * MiB)
    before = sha256(src)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    assert_same(src, dst)
    assert sha256(src) == before  # the source is never written
    assert s["target_created"] and s["blocks_sent"] > 0 and s["blocks_zero"] == 0  # fresh target: zeros are holes
    assert s["bytes_sent"] < s["bytes_total"]
    # a delta: only the changed blocks travel
    changed = mutate(src, regions=5, max_len=64 * 1024)
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    assert_same(src, dst)
    assert s["round"] == 2 and s["checkpoint"] == "trusted"
    assert 0 < s["bytes_changed"] <= changed + 10 * 128 * 1024
    # nothing changed: nothing but a few control frames travel
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    assert s["blocks_sent"] == 0 and s["bytes_changed"] == 0 and s["bytes_sent"] < 4096


def checkpoint_cursor(state: Path) -> int:
    from migrated.model.checkpoint import Checkpoint

    for f in state.glob("*.ckpt"):
        try:
            return Checkpoint.decode(f.read_bytes()).cursor
        except Exception:
            return -1
    return -1


async def start_sync(sshd: AsyncSSHD, src: Path, dst: Path, *extra: str, state: Path):
    args = [*cli("migrated"), "sync", str(src), sshd.target(dst), *sshd.ssh_args(), "--state-dir", str(state),
            "--recv-command", "upload", "--json", *extra]
    return await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=repo_env())


async def wait_cursor(state: Path, at_least: int, proc, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while checkpoint_cursor(state) < at_least:
        assert proc.returncode is None, "sync finished before the kill point"
        assert loop.time() < end, "no progress"
        await asyncio.sleep(0.05)


async def receivers_gone(sshd: AsyncSSHD) -> None:
    for p in sshd.children:
        await asyncio.wait_for(p.wait(), 10)


SLOW = ["--bwlimit", "6MiB", "--checkpoint-interval", "0.3", "--chunk-size", "1MiB"]


async def test_kill9_agent_at_several_points_then_resume(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 32 * MiB, seed=7, sparse_zero=False)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    size = src.stat().st_size
    for kill_point in (size // 5, size // 2, size * 3 // 4):
        proc = await start_sync(sshd, src, dst, *SLOW, state=state)
        await wait_cursor(state, kill_point, proc)
        proc.kill()  # SIGKILL: no flush, no checkpoint
        await proc.wait()
        await receivers_gone(sshd)
        assert checkpoint_cursor(state) >= kill_point
    missing = differing_bytes(src, dst)
    assert missing > 0
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    assert_same(src, dst)
    assert s["resumed"] and s["checkpoint"] == "trusted" and s["round"] == 1
    # Only what was still missing travels (plus framing): nothing the target holds is re-sent.
    assert s["bytes_sent"] <= missing + 64 * 1024, (s["bytes_sent"], missing)


async def test_kill9_before_first_checkpoint_resumes(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 16 * MiB, seed=8)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    proc = await start_sync(sshd, src, dst, "--bwlimit", "2MiB", state=state)
    while not dst.exists():
        await asyncio.sleep(0.02)
    proc.kill()
    await proc.wait()
    await receivers_gone(sshd)
    rc, _, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    assert_same(src, dst)


async def test_server_cuts_connection_then_rerun_resumes(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 32 * MiB, seed=9, sparse_zero=False)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    proc = await start_sync(sshd, src, dst, *SLOW, state=state)
    await wait_cursor(state, 8 * MiB, proc)
    sshd.abort_all()
    _out, err = await proc.communicate()
    assert proc.returncode == 3, err  # connection error: retryable
    assert b"lost" in err or b"connection" in err.lower()
    await receivers_gone(sshd)
    missing = differing_bytes(src, dst)
    rc, s, err2 = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err2
    assert_same(src, dst)
    assert s["resumed"] and s["bytes_sent"] <= missing + 64 * 1024


async def test_receiver_killed_then_rerun_resumes(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 32 * MiB, seed=10, sparse_zero=False)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    proc = await start_sync(sshd, src, dst, *SLOW, state=state)
    await wait_cursor(state, 8 * MiB, proc)
    sshd.kill_children()  # kill -9 of the target side
    _out, err = await proc.communicate()
    assert proc.returncode in (3, 4), err
    rc, s, err2 = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err2
    assert_same(src, dst)
    assert s["resumed"]


async def test_sigterm_checkpoints_and_exits_130(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 32 * MiB, seed=11, sparse_zero=False)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    proc = await start_sync(sshd, src, dst, *SLOW, state=state)
    await wait_cursor(state, 4 * MiB, proc)
    proc.terminate()
    out, err = await proc.communicate()
    assert proc.returncode == 130, err
    assert b"run the same command again to resume" in err
    s = json.loads(out.decode().strip().splitlines()[-1])
    assert s["interrupted"] is True
    # the checkpoint covers everything sent before the stop: the target holds exactly that prefix
    cursor = checkpoint_cursor(state)
    assert cursor > 4 * MiB
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read(cursor) == b.read(cursor)
    rc, s, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    assert_same(src, dst)
    assert s["resumed"]
