"""A continuous task whose cutover this agent could not carry out fails when it starts, saying why
and how to fix it, instead of failing at the cutover after hours of rounds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from migrated.source.privileges import CAP_SYS_ADMIN, cutover_problem, effective_caps
from tests.agent_world import make_world, wait_for
from tests.loopfs import can_write, loop_ext4, root_only

ALL = (1 << 41) - 1
NO_ADMIN = ALL & ~(1 << CAP_SYS_ADMIN)


def test_effective_caps_parses_proc_status() -> None:
    text = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffedfffff\n"
    assert effective_caps(text) == 0x1FFFEDFFFFF
    assert not effective_caps(text) >> CAP_SYS_ADMIN & 1
    assert effective_caps("Name:\tx\n") == 0


@pytest.mark.parametrize(("quiesce", "caps", "euid", "mounts", "words"), [
    ("freeze", ALL, 0, {"/dev/vdb": ["/", "/boot"]}, None),
    ("freeze", NO_ADMIN, 998, {"/dev/vdb": []}, None),  # nothing mounted: nothing to freeze
    ("freeze", NO_ADMIN, 998, {"/dev/vdb": ["/srv"], "/dev/vdc": []},
     "freeze the filesystems mounted from /dev/vdb (/srv)"),
    ("hooks", NO_ADMIN, 998, {"/dev/vdb": ["/srv"]}, None),
    ("none", 0, 998, {"/dev/vdb": ["/srv"]}, None),
    ("lvm", ALL, 0, {}, None),
    ("lvm", 1 << CAP_SYS_ADMIN, 998, {}, "runs as uid 998"),
    ("lvm", NO_ADMIN, 0, {}, "without CAP_SYS_ADMIN"),
])
def test_cutover_problem(quiesce, caps, euid, mounts, words) -> None:
    problem = cutover_problem(quiesce, caps, euid, mounts)
    if words is None:
        assert problem is None
    else:
        assert problem and words in problem and "systemd/cutover.conf" in problem, problem


@pytest.mark.root
@pytest.mark.slow
@root_only
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_daemon_without_cap_sys_admin_refuses_a_freeze_cutover_at_start(tmp_path: Path, sshd) -> None:
    """The daemon runs without CAP_SYS_ADMIN (setpriv drops it from the bounding set, as the hardened
    unit does); its source is a mounted ext4 on a loop device. The task fails at start with the fix
    named; nothing was frozen and the target was never written."""
    with loop_ext4(tmp_path, size_mb=32) as fs, make_world(tmp_path, sshd, 0, source=Path(fs.loopdev)) as w:
        source_id = w.register()
        daemon = w.daemon(prefix=("setpriv", "--bounding-set", "-sys_admin", "--"))
        try:
            w.wait_daemon_online()
            task_id = w.create_continuous_task(source_id, "nocap")
            w.admin_call("StartTask", {"TaskId": task_id})
            wait_for(lambda: w.task(task_id)["State"] == "failed", "the task to be refused")
            msg = w.task(task_id)["Message"]
            assert f"freeze the filesystems mounted from {fs.loopdev} ({fs.mountpoint})" in msg, msg
            assert "lacks CAP_SYS_ADMIN" in msg and "systemd/cutover.conf" in msg, msg
            assert not w.target.exists(), "nothing may reach the target"
            assert can_write(fs.mountpoint), "the source filesystem is writable"
        finally:
            assert daemon.stop() == 0, w.daemon_log()[-3000:]
