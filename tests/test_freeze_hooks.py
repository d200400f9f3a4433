"""Pre/post hooks: real shell commands, timeouts, failures reported, post always runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrated.source.hooks import HookFailed, HookResult, hooks_around, run_hook


async def test_hook_output_and_status_are_reported() -> None:
    r = await run_hook("pre", "echo stopping db; echo oops >&2; exit 3", timeout=30)
    assert not r.ok and r.returncode == 3
    assert "stopping db" in r.output and "oops" in r.output
    assert r.describe() == "pre hook `echo stopping db; echo oops >&2; exit 3` exited with status 3: stopping db | oops"


async def test_hook_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker, pidfile = tmp_path / "child-survived", tmp_path / "child.pid"
    # the hook starts a background child that would write the marker later
    r = await run_hook("pre", f"(sleep 3; touch {marker}) & echo $! > {pidfile}; sleep 60", timeout=0.5)
    assert r.timed_out and not r.ok and "timed out after" in r.describe()
    # the child was in the hook's process group and was killed with it: it is gone, marker unwritten
    import asyncio

    child = int(pidfile.read_text())
    for _ in range(200):
        if not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the hook's background child {child} outlived the hook's timeout")
    assert not marker.exists()


async def test_post_runs_after_a_successful_body(tmp_path: Path) -> None:
    log = tmp_path / "log"
    results: list[HookResult] = []
    async with hooks_around(f"echo pre >> {log}", f"echo post >> {log}", 30, results):
        log.open("a").write("body\n")
    assert log.read_text().split() == ["pre", "body", "post"]
    assert [r.name for r in results] == ["pre", "post"] and all(r.ok for r in results)


async def test_failed_pre_skips_the_body_but_post_still_runs(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ran_body = False
    with pytest.raises(HookFailed, match="pre hook `exit 7` exited with status 7"):
        async with hooks_around("exit 7", f"echo post >> {log}", 30):
            ran_body = True
    assert not ran_body
    assert log.read_text().split() == ["post"]


async def test_post_runs_when_the_body_fails_and_its_failure_is_noted(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as info:
        async with hooks_around(None, "echo cannot start nginx; exit 1", 30):
            raise RuntimeError("final pass failed")
    assert any("post hook" in n and "cannot start nginx" in n for n in info.value.__notes__)


async def test_failed_post_is_raised_after_a_good_body() -> None:
    with pytest.raises(HookFailed, match="post hook `false` exited with status 1"):
        async with hooks_around("true", "false", 30):
            pass


async def test_hook_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        await run_hook("pre", "true", timeout=0)


# ------------------------------------------------------------- LVM snapshot

def test_lvm_snapshot_command_lines() -> None:
    from migrated.source.snapshot import plan_snapshot

    p = plan_snapshot("vg0", "var", "task/42 x", "2G")
    assert p.create == ["lvcreate", "--snapshot", "--size", "2G", "--name", "migrated-snap-task_42_x", "vg0/var"]
    assert p.remove == ["lvremove", "--force", "vg0/migrated-snap-task_42_x"]
    # the device path is asked from lvm2, never assumed to be /dev/VG/LV
    assert p.path_query == ["lvs", "--noheadings", "-o", "lv_path", "vg0/migrated-snap-task_42_x"]
    assert plan_snapshot("vg0", "var", "t", "20%ORIGIN").create[2:4] == ["--extents", "20%ORIGIN"]


def test_lvm_snapshot_refuses_a_bad_size() -> None:
    from migrated.errors import QuiesceError
    from migrated.source.snapshot import plan_snapshot

    with pytest.raises(QuiesceError, match="--snapshot-size 'lots'"):
        plan_snapshot("vg0", "var", "t", "lots")


async def test_lvm_snapshot_without_lvm2_or_on_a_plain_disk_says_what_to_use(tmp_path: Path) -> None:
    import shutil

    from migrated.errors import QuiesceError
    from migrated.source.snapshot import lvm_snapshot

    img = tmp_path / "disk.img"
    img.write_bytes(b"\0" * 4096)
    expected = "needs lvm2" if shutil.which("lvcreate") is None else "not an LVM logical volume"
    with pytest.raises(QuiesceError, match=expected):
        async with lvm_snapshot(str(img), "t1"):
            pass
