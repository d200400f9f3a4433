"""End-to-end syncs through a real asyncssh server (in-process, 127.0.0.1 port 0) and the CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.asshd import (
    AsyncSSHD,
    asyncssh_server,  # noqa: F401 - the `sshd` fixture of this module
)
from tests.conftest import cli, repo_env
from tests.diskimg import MiB, assert_same, differing_bytes, make_image, mutate, sha256


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
        if proc.returncode is not None:
            err = (await proc.stderr.read()).decode()
            raise AssertionError(f"sync finished before the kill point (exit {proc.returncode}): {err}")
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


async def test_small_scattered_writes_cost_about_their_size(sshd, tmp_path):
    """4 KiB changes inside 64 KiB blocks travel as 4 KiB pieces (sub-block hashes), not whole blocks."""
    import random

    src = make_image(tmp_path / "src.img", 16 * MiB, seed=12, sparse_zero=False)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    rc, _, err = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err
    rng = random.Random(5)
    for flags in ((), ("--state-dir", str(tmp_path / "other"))):  # checkpoint trusted, then unknown target
        with open(src, "r+b") as f:
            for _ in range(40):
                f.seek(rng.randrange(0, 16 * MiB // 4096) * 4096)
                f.write(rng.randbytes(4096))
        rc, s, err = await run_sync(sshd, src, dst, *flags, state=state)
        assert rc == 0, err
        assert_same(src, dst)
        assert s["blocks_sent"] >= 30
        assert s["bytes_sent"] <= 40 * (4096 + 512) + 64 * 1024, s  # whole blocks would be ~2.5 MiB


def run_in_pty(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``argv`` with a terminal as stdin/stdout/stderr (so the progress display is on)."""
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                            env=repo_env(TERM="xterm", COLUMNS="160"), close_fds=True)
    os.close(slave)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout), out.decode("utf-8", "replace")


async def test_progress_on_a_terminal_starts_at_the_checkpoint_after_resume(sshd, tmp_path):
    import re

    src = make_image(tmp_path / "src.img", 32 * MiB, seed=13, sparse_zero=False)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    proc = await start_sync(sshd, src, dst, *SLOW, state=state)
    await wait_cursor(state, 16 * MiB, proc)
    proc.kill()
    await proc.wait()
    await receivers_gone(sshd)
    at = checkpoint_cursor(state) / MiB
    argv = [*cli("migrated"), "sync", str(src), sshd.target(dst), *sshd.ssh_args(), "--state-dir", str(state),
            "--recv-command", "upload", "--bwlimit", "8MiB", "--chunk-size", "1MiB"]
    rc, screen = await asyncio.to_thread(run_in_pty, argv)
    assert rc == 0, screen
    assert_same(src, dst)
    shown = [float(a) for a, _ in re.findall(r"(\d+\.\d)/(\d+\.\d) MiB", screen)]
    assert shown, screen
    assert shown[0] >= at - 0.1, (shown[:5], at)  # never restarts from zero
    assert shown[-1] == 32.0
    assert "32.0 MiB" in screen and "sent" in screen  # the closing summary line


async def test_paced_delta_onto_unknown_target_keeps_frames_whole(sshd, tmp_path):
    """HASH/SUBHASH/FLUSH requests from other tasks interleave with paced data only between frames."""
    src = make_image(tmp_path / "src.img", 24 * MiB, seed=14, sparse_zero=False)
    dst = tmp_path / "dst.img"
    shutil.copyfile(src, dst)
    mutate(src, regions=40, max_len=300 * 1024)
    rc, s, err = await run_sync(sshd, src, dst, "--bwlimit", "12MiB", "--chunk-size", "1MiB",
                                "--checkpoint-interval", "0.2", state=tmp_path / "state")
    assert rc == 0, err
    assert_same(src, dst)
    assert s["blocks_sent"] > 40


@pytest.mark.parametrize("block_size", ["4KiB", "64KiB", "4MiB"])
async def test_odd_sized_source_any_block_size_onto_bigger_target(sshd, tmp_path, block_size):
    """A source that is not a multiple of the block size (nor of 4 KiB), onto a larger existing target."""
    src = tmp_path / "src.img"
    make_image(src, 6 * MiB, seed=15, sparse_zero=False)
    with open(src, "ab") as f:
        f.write(b"tail!" * 155)  # 775 bytes
    dst = tmp_path / "dst.img"
    make_image(dst, 8 * MiB, seed=16)  # bigger, other content: asked for hashes
    tail_before = dst.read_bytes()[src.stat().st_size:]
    state = tmp_path / "state"
    for _ in range(2):
        rc, s, err = await run_sync(sshd, src, dst, "--block-size", block_size, "--checksum", state=state)
        assert rc == 0, err
        assert s["verified"] is True
        assert dst.read_bytes()[:src.stat().st_size] == src.read_bytes()
        assert dst.read_bytes()[src.stat().st_size:] == tail_before  # beyond the source: untouched
        with open(src, "r+b") as f:  # change the very last bytes for the next round
            f.seek(-3, 2)
            f.write(b"END")


async def test_zero_regions_travel_as_markers_and_become_holes(sshd, tmp_path):
    import os

    src = tmp_path / "src.img"
    dst = tmp_path / "dst.img"
    data = os.urandom(8 * MiB)
    dst.write_bytes(data)  # the target holds data everywhere
    src.write_bytes(data[:2 * MiB] + bytes(4 * MiB) + data[6 * MiB:])  # the source zeroed 4 MiB of it
    allocated = os.stat(dst).st_blocks
    rc, s, err = await run_sync(sshd, src, dst, state=tmp_path / "state")
    assert rc == 0, err
    assert_same(src, dst)
    assert s["blocks_zero"] == 64 and s["blocks_sent"] == 0 and s["bytes_sent"] < 64 * 1024
    assert os.stat(dst).st_blocks <= allocated - (4 * MiB // 512) * 9 // 10  # punched, not written


async def test_two_ctrl_c_exit_at_once_and_the_checkpoint_still_resumes(sshd, tmp_path):
    import signal

    src = make_image(tmp_path / "src.img", 32 * MiB, seed=17, sparse_zero=False)
    dst = tmp_path / "dst.img"
    state = tmp_path / "state"
    proc = await start_sync(sshd, src, dst, *SLOW, state=state)
    await wait_cursor(state, 4 * MiB, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = await proc.communicate()
    assert proc.returncode == 130, err
    assert b"run the same command again to resume" in err and b"Traceback" not in err
    await receivers_gone(sshd)
    rc, s, err2 = await run_sync(sshd, src, dst, state=state)
    assert rc == 0, err2
    assert_same(src, dst)
    assert s["resumed"]
