"""The continuous-sync library API the daemon drives: ContinuousControl (cutover request, live interval
and read limit, status), run_continuous on an image file through a real SSH server (asyncssh on
127.0.0.1 port 0). No root needed: nothing is mounted, so nothing is frozen."""

from __future__ import annotations

import asyncio
import time

import pytest

from migrated.engine import SshEndpoint, SyncControl, SyncOptions, open_session
from migrated.engine.continuous import ContinuousControl, ContinuousOptions, Phase, run_continuous
from migrated.errors import Interrupted, UsageError, VerificationFailed
from tests.asshd import (
    AsyncSSHD,
    asyncssh_server,  # noqa: F401 - the `sshd` fixture of this module
)
from tests.diskimg import MiB, assert_same, make_image, mutate


def endpoint(sshd: AsyncSSHD) -> SshEndpoint:
    return SshEndpoint(host="127.0.0.1", port=sshd.port, identity_files=(str(sshd.keys.client_key),),
                       host_keys=(sshd.keys.host_pub,), recv_command="upload")


async def test_rounds_until_a_cutover_request_then_verified(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 8 * MiB, seed=3)
    dst = tmp_path / "dst.img"
    control = ContinuousControl(SyncControl())
    events: list[dict] = []

    def on_event(ev: dict) -> None:
        events.append(ev)
        if ev["event"] == "round":
            if ev["round"] < 2:
                mutate(src, regions=3, seed=10 + ev["round"], max_len=65536)  # the server keeps writing
                control.set_interval(0.1)  # live change: the next wait is short
            else:
                assert control.status()["phase"] == Phase.ROUND.value
                control.set_interval(600)
                # a cutover request in the middle of a 600 s wait cuts it short
                asyncio.get_running_loop().call_later(0.3, control.request_cutover)

    copts = ContinuousOptions(interval=600, quiesce="none")
    async with open_session(endpoint(sshd)) as s:
        started = time.monotonic()
        result = await run_continuous(s, str(src), str(dst), SyncOptions(state_dir=tmp_path / "state"), copts,
                                      control, on_event)
    assert time.monotonic() - started < 300
    assert [e["round"] for e in events if e["event"] == "round"] == [0, 1, 2]
    assert events[1]["bytes_changed"] > 0 and events[-1]["event"] == "verified"
    assert result.cutover is not None and result.cutover.verified and result.cutover.mountpoints == []
    assert_same(src, dst)
    st = control.status()
    assert st["phase"] == "done" and st["round"] == 3 and st["summary"]["advice"] in ("cutover", "keep-going")
    d = result.to_dict()
    assert d["verified"] is True and len(d["rounds"]) == 3 and d["cutover"]["quiesce"] == "none"


async def test_read_limit_holds_and_can_be_lifted_while_running(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 8 * MiB, seed=4, sparse_zero=False)
    control = ContinuousControl(SyncControl())
    control.set_read_limit(2 * MiB)
    copts = ContinuousOptions(interval=0, quiesce="none", cutover_after=1, verify=False)
    rounds: list[float] = []

    def on_event(ev: dict) -> None:
        if ev["event"] == "round":
            rounds.append(ev["seconds"])
            control.set_read_limit(None)  # live: the next round reads unthrottled

    async with open_session(endpoint(sshd)) as s:
        await run_continuous(s, str(src), str(tmp_path / "dst.img"), SyncOptions(state_dir=tmp_path / "state",
                                                                                 chunk_size=MiB),
                             copts, control, on_event)
    # 8 MiB at 2 MiB/s cannot take less than ~3.5 s (a burst of 0.1 s is allowed), whatever the machine
    assert rounds[0] >= 3.5
    assert control.read_limit is None


async def test_stop_between_rounds_is_resumable(sshd, tmp_path):
    src = make_image(tmp_path / "src.img", 4 * MiB, seed=6)
    control = ContinuousControl(SyncControl())

    def on_event(ev: dict) -> None:
        if ev["event"] == "round":
            asyncio.get_running_loop().call_soon(control.stop, "paused by the test")

    async with open_session(endpoint(sshd)) as s:
        with pytest.raises(Interrupted, match="paused by the test"):
            await run_continuous(s, str(src), str(tmp_path / "dst.img"), SyncOptions(state_dir=tmp_path / "state"),
                                 ContinuousOptions(interval=60, quiesce="none"), control, on_event)
    assert control.status()["round"] == 1


async def test_verification_catches_a_target_changed_behind_our_back(sshd, tmp_path):
    """The cutover verifies the target against the hashes the final pass recorded (Session.verify_disk)."""
    src = make_image(tmp_path / "src.img", 4 * MiB, seed=7, sparse_zero=False)
    dst = tmp_path / "dst.img"
    opts = SyncOptions(state_dir=tmp_path / "state")
    async with open_session(endpoint(sshd)) as s:
        await s.sync_disk(str(src), str(dst), opts)
        assert await s.verify_disk(str(src), str(dst), opts) == 64
        with open(dst, "r+b") as f:
            f.seek(2 * MiB + 5)
            f.write(b"corrupted")
        with pytest.raises(VerificationFailed, match=r"1 blocks of .* differ .*first offsets: 2097152"):
            await s.verify_disk(str(src), str(dst), opts)


def test_bad_continuous_options_name_the_flag():
    with pytest.raises(UsageError, match="--quiesce 'snapshot'"):
        ContinuousOptions(quiesce="snapshot").validate()
    ContinuousOptions(quiesce="lvm").validate()  # wired (tests/test_continuous_lvm.py)
    with pytest.raises(UsageError, match="--snapshot-size 'lots'"):
        ContinuousOptions(quiesce="lvm", snapshot_size="lots").validate()
    with pytest.raises(UsageError, match="--freeze-budget"):
        ContinuousOptions(freeze_budget=0).validate()
    with pytest.raises(UsageError, match="interval"):
        ContinuousControl().set_interval(-1)


async def test_two_disks_are_rounded_and_cut_over_together(sshd, tmp_path):
    from migrated.engine.continuous import run_continuous_disks

    a = make_image(tmp_path / "a.img", 4 * MiB, seed=11)
    b = make_image(tmp_path / "b.img", 6 * MiB, seed=12)
    disks = [(str(a), str(tmp_path / "ta.img")), (str(b), str(tmp_path / "tb.img"))]
    events: list[dict] = []

    def on_event(ev: dict) -> None:
        events.append(ev)
        if ev["event"] == "round" and ev["round"] == 0:
            mutate(b, regions=2, seed=13, max_len=65536)

    control = ContinuousControl(SyncControl())
    async with open_session(endpoint(sshd)) as s:
        result = await run_continuous_disks(s, disks, SyncOptions(state_dir=tmp_path / "state"),
                                            ContinuousOptions(interval=0, quiesce="none", cutover_after=1),
                                            control, on_event)
    rounds = [e for e in events if e["event"] == "round"]
    assert [[d["source"] for d in r["disks"]] for r in rounds] == [[str(a), str(b)]] * 2
    assert rounds[1]["disks"][0]["bytes_changed"] == 0 and rounds[1]["disks"][1]["bytes_changed"] > 0
    assert result.bytes_total == 10 * MiB and result.cutover is not None and result.cutover.verified
    assert result.cutover.blocks_verified == 160  # 64 KiB blocks of both disks
    assert_same(a, tmp_path / "ta.img")
    assert_same(b, tmp_path / "tb.img")
