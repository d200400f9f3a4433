"""Freeze, guardian and held writes on real ext4 filesystems on loop devices (root),
plus the pure mountinfo parsing (anyone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrated.source.freeze import (
    FreezeBudgetExceeded,
    FreezeError,
    GuardedFreeze,
    HeldWrites,
    mounted_filesystems,
    parse_mountinfo,
    path_on_filesystems,
    thaw_fs,
)
from tests.conftest import repo_env
from tests.loopfs import can_write, loop_ext4, process_state, root_only, run, wait_for

MOUNTINFO = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 7:3 / /srv/data rw,relatime shared:2 - ext4 /dev/loop3 rw
31 22 7:3 /sub /mnt/bind\\040dir rw,relatime shared:2 - ext4 /dev/loop3 rw
32 22 259:1 / /srv rw shared:3 - xfs /dev/loop4p1 rw
33 22 0:25 / /run rw - tmpfs tmpfs rw
"""


def test_parse_mountinfo_reads_devices_types_and_escaped_paths() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mountpoint for m in mounts] == ["/", "/srv/data", "/mnt/bind dir", "/srv", "/run"]
    assert mounts[1].device == "7:3" and mounts[1].fstype == "ext4" and mounts[1].source == "/dev/loop3"
    assert mounts[3].fstype == "xfs"


def test_parse_mountinfo_skips_garbage_lines() -> None:
    assert parse_mountinfo("nonsense\n\n1 2 3\n") == []


def test_held_writes_keep_newest_and_write_on_release(tmp_path: Path) -> None:
    hw = HeldWrites()
    hw.hold()
    hw.write(tmp_path / "a", b"1")
    hw.write(tmp_path / "b", b"x")
    hw.write(tmp_path / "a", b"2")
    assert not (tmp_path / "a").exists() and hw.pending == [str(tmp_path / "b"), str(tmp_path / "a")]
    hw.release()
    assert (tmp_path / "a").read_bytes() == b"2" and (tmp_path / "b").read_bytes() == b"x"
    hw.write(tmp_path / "c", b"now")  # not held: written at once
    assert (tmp_path / "c").read_bytes() == b"now"


def test_guarded_freeze_rejects_a_zero_budget() -> None:
    with pytest.raises(ValueError):
        GuardedFreeze(["/"], budget=0)


# ----------------------------------------------------------------- root tests


@pytest.mark.root
@root_only
def test_mounted_filesystems_of_a_loop_device_and_of_its_image(tmp_path: Path) -> None:
    with loop_ext4(tmp_path) as fs:
        by_dev = mounted_filesystems(fs.loopdev)
        assert [m.mountpoint for m in by_dev] == [str(fs.mountpoint)]
        assert by_dev[0].fstype == "ext4"
        assert [m.mountpoint for m in mounted_filesystems(str(fs.image))] == [str(fs.mountpoint)]
        assert path_on_filesystems(fs.mountpoint / "state" / "x", by_dev)
        assert not path_on_filesystems(tmp_path, by_dev)


def test_mounted_filesystems_follows_partitions_and_holders(tmp_path: Path) -> None:
    # this kernel has no partition-table support for loop devices, so the sysfs tree is built by hand:
    # loop0 -> loop0p1 (partition) -> dm-0 (an LVM volume on it); loop1 is unrelated
    sysblock = tmp_path / "sys"
    for name, dev in (("loop0", "7:0"), ("loop0/loop0p1", "259:0"), ("dm-0", "253:0"), ("loop1", "7:1")):
        (sysblock / name).mkdir(parents=True)
        (sysblock / name / "dev").write_text(dev + "\n")
        (sysblock / name / "holders").mkdir()
    (sysblock / "loop0/loop0p1/partition").write_text("1\n")
    (sysblock / "loop0p1").symlink_to(sysblock / "loop0/loop0p1")
    (sysblock / "loop0/loop0p1/holders/dm-0").symlink_to(sysblock / "dm-0")
    info = ("1 0 259:0 / /boot rw - ext4 /dev/loop0p1 rw\n"
            "2 0 253:0 / /var rw - xfs /dev/mapper/vg-var rw\n"
            "3 0 253:0 / /var/bind rw - xfs /dev/mapper/vg-var rw\n"
            "4 0 7:1 / /other rw - ext4 /dev/loop1 rw\n")
    img = tmp_path / "disk.img"
    img.write_bytes(b"\0")
    fake_loop0 = sysblock / "loop0"
    (fake_loop0 / "loop").mkdir()
    (fake_loop0 / "loop" / "backing_file").write_text(str(img) + "\n")
    found = mounted_filesystems(str(img), mountinfo_text=info, sysblock=str(sysblock))
    assert [(m.mountpoint, m.fstype) for m in found] == [("/boot", "ext4"), ("/var", "xfs")]


@pytest.mark.root
@root_only
def test_mounted_filesystems_of_an_unmounted_disk_is_empty(tmp_path: Path) -> None:
    img = tmp_path / "plain.img"
    img.write_bytes(b"\0" * 4096)
    assert mounted_filesystems(str(img)) == []


@pytest.mark.root
@root_only
def test_freeze_blocks_a_writer_and_thaw_releases_it(tmp_path: Path) -> None:
    with loop_ext4(tmp_path) as fs:
        target = fs.mountpoint / "written"
        with GuardedFreeze([str(fs.mountpoint)], budget=60) as fz:
            writer = subprocess.Popen([sys.executable, "-c",
                                       f"open({str(target)!r}, 'w').write('hello')"])
            try:
                # a writer on a frozen fs sleeps uninterruptibly inside the kernel
                assert wait_for(lambda: process_state(writer.pid) == "D"), "writer was not blocked"
                assert not target.exists() or target.read_text() == ""  # reads still work while frozen
            finally:
                pass
        assert writer.wait(timeout=30) == 0
        assert target.read_text() == "hello"
        assert fz.report.reason == "told"
        assert fz.report.frozen_at is not None and fz.report.downtime > 0


@pytest.mark.root
@root_only
def test_kill_9_of_the_agent_mid_freeze_leaves_the_source_thawed(tmp_path: Path) -> None:
    with loop_ext4(tmp_path) as fs:
        # the "agent": freezes through the guardian with a long budget, then hangs
        agent_code = (
            "import sys, time\n"
            "from migrated.source.freeze import GuardedFreeze\n"
            f"fz = GuardedFreeze([{str(fs.mountpoint)!r}], budget=600)\n"
            "fz.freeze()\n"
            "print(fz.guardian_pid, flush=True)\n"
            "time.sleep(600)\n")
        agent = subprocess.Popen([sys.executable, "-c", agent_code], stdout=subprocess.PIPE, text=True,
                                 env=repo_env())
        try:
            assert agent.stdout is not None
            guardian_pid = int(agent.stdout.readline())
            assert not can_write(fs.mountpoint, timeout=1.0), "the filesystem should be frozen"
            agent.kill()  # SIGKILL: no cleanup code in the agent runs
            agent.wait()
            # far before the 600 s budget: the guardian saw its pipe close and thawed
            assert can_write(fs.mountpoint, timeout=30.0)
            assert wait_for(lambda: process_state(guardian_pid) in ("", "Z"))
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()


@pytest.mark.root
@root_only
def test_freeze_past_its_budget_is_thawed_and_reported(tmp_path: Path) -> None:
    with loop_ext4(tmp_path) as fs:
        fz = GuardedFreeze([str(fs.mountpoint)], budget=1.0)
        fz.freeze()
        try:
            assert wait_for(lambda: fz.remaining() < 0, timeout=30)
            with pytest.raises(FreezeBudgetExceeded):
                fz.check()
            assert can_write(fs.mountpoint, timeout=30.0)  # the guardian thawed on its own
        finally:
            with pytest.raises(FreezeBudgetExceeded, match="budget of 1 s"):
                fz.thaw()
        assert fz.report.reason == "budget"
        assert fz.report.downtime >= 1.0


@pytest.mark.root
@root_only
def test_sigterm_to_the_guardian_thaws_first(tmp_path: Path) -> None:
    with loop_ext4(tmp_path) as fs:
        fz = GuardedFreeze([str(fs.mountpoint)], budget=600)
        fz.freeze()
        try:
            assert fz.guardian_pid is not None
            os.kill(fz.guardian_pid, signal.SIGTERM)
            assert can_write(fs.mountpoint, timeout=30.0)
        finally:
            fz.thaw()
        assert fz.report.reason == "signal"


@pytest.mark.root
@root_only
def test_kill_9_of_the_guardian_makes_the_agent_thaw(tmp_path: Path) -> None:
    with loop_ext4(tmp_path) as fs:
        fz = GuardedFreeze([str(fs.mountpoint)], budget=600)
        fz.freeze()
        try:
            assert fz.guardian_pid is not None
            os.kill(fz.guardian_pid, signal.SIGKILL)
            assert wait_for(lambda: fz._proc is not None and fz._proc.poll() is not None)
            with pytest.raises(FreezeError, match="guardian died"):
                fz.check()
            assert can_write(fs.mountpoint, timeout=30.0)
        finally:
            thaw_fs(str(fs.mountpoint))


@pytest.mark.root
@root_only
def test_a_failed_freeze_thaws_what_was_already_frozen(tmp_path: Path) -> None:
    tmpfs = tmp_path / "tmpfs"
    tmpfs.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmpfs))
    try:
        with loop_ext4(tmp_path) as fs:
            fz = GuardedFreeze([str(fs.mountpoint), str(tmpfs)], budget=60)
            with pytest.raises(FreezeError, match=f"cannot freeze {tmpfs}"):
                fz.freeze()
            assert can_write(fs.mountpoint, timeout=30.0)
            assert fz.report.reason == "error"
    finally:
        run("umount", str(tmpfs), check=False)


@pytest.mark.root
@root_only
def test_freezing_an_already_frozen_fs_is_refused_and_leaves_it_to_its_owner(tmp_path: Path) -> None:
    with loop_ext4(tmp_path) as fs:
        run("fsfreeze", "-f", str(fs.mountpoint))
        try:
            with pytest.raises(FreezeError, match="already frozen"):
                GuardedFreeze([str(fs.mountpoint)], budget=60).freeze()
        finally:
            run("fsfreeze", "-u", str(fs.mountpoint))
        assert can_write(fs.mountpoint)


@pytest.mark.root
@root_only
def test_state_dir_on_the_frozen_fs_gets_nothing_until_the_thaw(tmp_path: Path) -> None:
    with loop_ext4(tmp_path) as fs:
        state = fs.mountpoint / "state"
        state.mkdir()
        held = HeldWrites()
        with GuardedFreeze([str(fs.mountpoint)], budget=60) as fz:
            held.hold()
            held.write(state / "checkpoint.json", json.dumps({"round": 3}).encode())
            fz.check()  # we got here: the write did not block us
            assert not (state / "checkpoint.json").exists()
        held.release()
        assert json.loads((state / "checkpoint.json").read_text()) == {"round": 3}
        assert fz.report.reason == "told"


def test_guardian_refuses_a_bad_budget() -> None:
    p = subprocess.run([sys.executable, "-m", "migrated.source.guardian", "--budget", "0", "--mount", "/"],
                       capture_output=True, text=True, env=repo_env(), timeout=30)
    assert p.returncode == 2 and "--budget must be positive" in p.stderr


def test_guardian_exits_without_freezing_when_its_parent_goes_away() -> None:
    p = subprocess.run([sys.executable, "-m", "migrated.source.guardian", "--budget", "5", "--mount", "/"],
                       input="", capture_output=True, text=True, env=repo_env(), timeout=30)
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert lines[0]["event"] == "ready"
    assert lines[-1] == {"event": "thawed", "reason": "parent-gone", "frozen_at": None,
                         "thawed_at": lines[-1]["thawed_at"], "errors": []}
    time.sleep(0)


def test_staged_dir_writes_back_only_what_changed_checkpoint_last(tmp_path: Path) -> None:
    from migrated.source.freeze import StagedDir

    real = tmp_path / "state"
    real.mkdir()
    (real / "a.ckpt").write_bytes(b"old")
    (real / "a.hashes").write_bytes(b"h1")
    (real / "other.ckpt").write_bytes(b"keep")
    st = StagedDir(real, frozen=[], names={"a.ckpt", "a.hashes"})
    staged = st.stage()
    assert sorted(p.name for p in staged.iterdir()) == ["a.ckpt", "a.hashes"]
    (staged / "a.ckpt").write_bytes(b"new")
    (staged / "a.hashes").write_bytes(b"h2")
    assert (real / "a.ckpt").read_bytes() == b"old"  # nothing reaches the real dir before unstage
    assert st.unstage() == ["a.hashes", "a.ckpt"]
    assert (real / "a.ckpt").read_bytes() == b"new" and (real / "a.hashes").read_bytes() == b"h2"
    assert (real / "other.ckpt").read_bytes() == b"keep" and not staged.exists()


@pytest.mark.root
@root_only
def test_migrated_thaw_frees_a_disk_left_frozen(tmp_path: Path) -> None:
    from tests.conftest import cli

    with loop_ext4(tmp_path) as fs:
        run("fsfreeze", "-f", str(fs.mountpoint))  # as if agent and guardian were both killed -9
        r = subprocess.run([*cli("migrated"), "thaw", fs.loopdev, "--json"], capture_output=True, text=True,
                           env=repo_env(), timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"thawed": [{"mountpoint": str(fs.mountpoint), "was_frozen": True}]}
        assert can_write(fs.mountpoint)
        r = subprocess.run([*cli("migrated"), "thaw", str(fs.mountpoint)], capture_output=True, text=True,
                           env=repo_env(), timeout=60)
        assert r.returncode == 0 and "was not frozen" in r.stderr
