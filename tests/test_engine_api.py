"""The library API the daemon drives: one session, several disks, progress, live bwlimit, stop."""

from __future__ import annotations

import asyncio

import pytest

from migrated.engine import SshEndpoint, SyncControl, SyncOptions, open_session
from migrated.errors import AuthError, Interrupted
from tests.asshd import (
    AsyncSSHD,
    asyncssh_server,  # noqa: F401 - the `sshd` fixture of this module
)
from tests.diskimg import MiB, assert_same, make_image, mutate


def endpoint(sshd: AsyncSSHD, **kw) -> SshEndpoint:
    return SshEndpoint(host="127.0.0.1", port=sshd.port, identity_files=(str(sshd.keys.client_key),),
                       host_keys=(sshd.keys.host_pub,), recv_command="upload", **kw)


async def test_two_disks_one_session_progress_and_incremental_round(sshd, tmp_path):
    a = make_image(tmp_path / "a.img", 8 * MiB, seed=1)
    b = make_image(tmp_path / "b.img", 4 * MiB, seed=2)
    opts = SyncOptions(state_dir=tmp_path / "state")
    seen: list[int] = []
    async with open_session(endpoint(sshd)) as s:
        ra = await s.sync_disk(str(a), str(tmp_path / "ta.img"), opts, None, lambda p: seen.append(p.bytes_done))
        rb = await s.sync_disk(str(b), str(tmp_path / "tb.img"), opts)
        assert seen == sorted(seen) and seen[-1] == ra.bytes_total
        assert_same(a, tmp_path / "ta.img")
        assert_same(b, tmp_path / "tb.img")
        assert rb.round == 1
        changed = mutate(a, regions=2, max_len=8192)
        again = await s.sync_disk(str(a), str(tmp_path / "ta.img"), opts)
        assert again.round == 2 and 0 < again.bytes_changed <= changed + 4 * 65536
        assert_same(a, tmp_path / "ta.img")
    assert len([c for c in sshd.commands if "migrated-recv" in c]) == 3  # one receiver per disk sync


async def test_request_stop_checkpoints_then_resume_and_live_bwlimit(sshd, tmp_path):
    src = make_image(tmp_path / "s.img", 16 * MiB, seed=5, sparse_zero=False)
    dst = tmp_path / "t.img"
    opts = SyncOptions(state_dir=tmp_path / "state", chunk_size=1 * MiB, checkpoint_seconds=0.2)
    control = SyncControl(bwlimit=2 * MiB)

    def on_progress(p):
        if p.bytes_done >= 4 * MiB:
            control.request_stop("paused")

    async with open_session(endpoint(sshd)) as s:
        with pytest.raises(Interrupted, match="run the same command again") as ei:
            await s.sync_disk(str(src), str(dst), opts, control, on_progress)
        first = ei.value.result
        assert first.bytes_sent > 0 and first.blocks_sent < 16 * MiB // 65536  # stopped part-way
        control2 = SyncControl(bwlimit=1 * MiB)
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, control2.set_bwlimit, None)  # lifted while running
        done: list[int] = []
        r = await s.sync_disk(str(src), str(dst), opts, control2, lambda p: done.append(p.bytes_done))
        assert r.resumed and done[0] >= 4 * MiB  # progress starts where the checkpoint was
    assert_same(src, dst)


async def test_unknown_host_key_is_auth_error(sshd, tmp_path):
    other = SshEndpoint(host="127.0.0.1", port=sshd.port, identity_files=(str(sshd.keys.client_key),),
                        known_hosts=str(sshd.keys.wrong_known_hosts))
    with pytest.raises(AuthError, match="not trusted"):
        async with open_session(other):
            pass


async def test_silent_receiver_times_out_as_retryable_connection_failure(sshd, tmp_path):
    import sys
    from pathlib import Path

    from migrated.errors import ConnectionFailed

    src = make_image(tmp_path / "s.img", 2 * MiB, seed=6)
    liar = Path(__file__).resolve().parent / "liar_recv.py"
    ep = endpoint(sshd)
    ep = type(ep)(**{**ep.__dict__, "recv_command": f"{sys.executable} {liar} hang"})
    async with open_session(ep) as s:
        with pytest.raises(ConnectionFailed, match="did not answer for 1 s") as ei:
            await s.sync_disk(str(src), str(tmp_path / "t.img"), SyncOptions(state_dir=tmp_path / "st",
                                                                             reply_timeout=1.0))
    assert ei.value.retryable
