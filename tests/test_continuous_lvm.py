"""``migrated sync --continuous --quiesce lvm`` end to end, with a FAKE lvm2.

The ``lvs`` / ``lvcreate`` / ``lvremove`` these tests put first on PATH are **not lvm2**: they are
the stand-ins of ``tests/fakelvm.py``, because device-mapper does not work on this machine (no
/dev/mapper/control, ``dmsetup version`` fails), so no real logical volume or snapshot can exist.
The fake "volume" is a loop device with a mounted ext4; the fake ``lvcreate --snapshot`` makes a
real point-in-time copy (fsfreeze, O_DIRECT copy, thaw, ``losetup -r`` of the copy, reported as the
snapshot's ``lv_path``); the fake ``lvremove`` detaches and deletes it; all of them log what they
were asked. So these tests prove what migrated does around lvm2 — the order pre hook / snapshot /
post hook / final pass / verify / remove, reading the snapshot into the origin's checkpoint, the
target equal to the snapshot, removal on every path, leftovers of a killed run removed — but not
device-mapper's own behaviour (copy-on-write space, invalidation), nor lvm2's exact output.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests import fakelvm
from tests.asshd import (
    AsyncSSHD,
    asyncssh_server,  # noqa: F401 - the `sshd` fixture of this module
)
from tests.conftest import cli, repo_env
from tests.loopfs import (
    can_write,
    fsck_clean,
    loop_ext4,
    mounted_ro,
    root_only,
    run,
    tree_digest,
    wchan,
    writer_process,
)
from tests.test_continuous import run_cli as continuous_run_cli

VG, LV = "vg0", "data"


@contextlib.contextmanager
def fake_lvm(tmp_path: Path, origin: str):
    """Install the fake lvm2 for ``VG/LV`` = ``origin``; yields (root, env for migrated).
    Afterwards: detaches any snapshot loop device a failed test left attached."""
    root = tmp_path / "fakelvm"
    bindir = fakelvm.install(root, VG, LV, origin)
    env = repo_env(PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        yield root, env
    finally:
        for meta in (root / "snaps").glob("*.json"):
            run("losetup", "-d", json.loads(meta.read_text())["loop"], check=False)


def loops_backed_by(root: Path) -> list[str]:
    """Loop devices still attached to a file under ``root`` (a snapshot copy that was not removed)."""
    out = []
    for bf in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if bf.read_text().strip().startswith(str(root)):
                out.append(bf.parent.parent.name)
    return out


def entries(log: list[dict], cmd: str) -> list[dict]:
    return [e for e in log if e["cmd"] == cmd]


async def run_cli(sshd: AsyncSSHD, src: str, dst: Path, env: dict[str, str], *extra: str, state: Path,
                  until_stderr: str | None = None, then_signal: int = signal.SIGTERM,
                  timeout: float = 240) -> tuple[int, dict | None, str]:
    """test_continuous.run_cli with ``--quiesce lvm`` and the fake lvm2 on PATH (``env``)."""
    return await continuous_run_cli(sshd, src, dst, "--quiesce", "lvm", *extra, state=state, env=env,
                                    until_stderr=until_stderr, then_signal=then_signal, timeout=timeout)


class BlockedWatch(threading.Thread):
    """Records each moment the writer is seen blocked on a frozen filesystem (wchan percpu_rwsem_wait)
    that no freeze of the fake lvcreate explains. The fake logs ``freezing`` before each freeze and
    ``thaw`` after it; a block is explained while more freezes have begun than have thawed and been
    followed by the writer running again. Counts, not clocks: a slow machine cannot fail it."""

    def __init__(self, pid: int, log: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.log = pid, log
        self.unexplained: list[float] = []
        self.done = threading.Event()

    def count(self, cmd: str) -> int:
        try:
            return self.log.read_text().count(f'"cmd": "{cmd}"')
        except FileNotFoundError:
            return 0

    def run(self) -> None:
        ended = 0  # fake freezes whose thaw was logged before the writer was last seen running
        while not self.done.is_set():
            thawed = self.count("thaw")
            if wchan(self.pid) != "percpu_rwsem_wait":
                ended = thawed
            elif self.count("freezing") <= ended:
                self.unexplained.append(time.time())
            self.done.wait(0.002)


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


@pytest.mark.root
@pytest.mark.slow
@root_only
async def test_lvm_cutover_of_a_live_ext4_gives_the_snapshot_on_the_target(sshd, tmp_path):
    with loop_ext4(tmp_path, size_mb=128) as fs, fake_lvm(tmp_path, fs.loopdev) as (lvm, env):
        # a snapshot left by an agent killed with -9 during an earlier cutover
        left = subprocess.run([str(lvm / "bin" / "lvcreate"), "--snapshot", "--extents", "10%ORIGIN", "--name",
                               f"migrated-snap-{LV}", f"{VG}/{LV}"], capture_output=True, text=True, env=env)
        assert left.returncode == 0, left.stderr
        dst, state = tmp_path / "target.img", tmp_path / "state"
        pre_t, post_t = tmp_path / "pre.t", tmp_path / "post.t"
        with writer_process(fs.mountpoint) as writer:
            watch = BlockedWatch(writer.pid, lvm / "log.jsonl")
            watch.start()
            try:
                rc, s, err = await run_cli(
                    sshd, fs.loopdev, dst, env, "--interval", "0.3", "--cutover-after", "2",
                    "--snapshot-size", "20%ORIGIN", "--bwlimit", "8MiB",
                    "--pre-hook", f"date +%s.%N > {pre_t}", "--post-hook", f"date +%s.%N > {post_t}", state=state)
            finally:
                watch.done.set()
                watch.join()
            assert rc == 0, err
            assert writer.poll() is None and can_write(fs.mountpoint)
        log = fakelvm.read_log(lvm)
        assert s is not None and s["verified"] is True
        cut = s["cutover"]
        assert cut["quiesce"] == "lvm" and cut["attempts"] == 1 and cut["blocks_verified"] == 128 * 16
        assert "removed the snapshot vg0/migrated-snap-data a killed earlier run left behind" in err
        assert any("killed earlier run" in n for n in cut["notes"])

        # lvm2 was asked: leftover removed before the first round, one snapshot at the cutover, removed
        creates = [e for e in entries(log, "lvcreate") if e["rc"] == 0]
        removes = [e for e in entries(log, "lvremove") if e["rc"] == 0]
        assert len(creates) == 2 and len(removes) == 2
        assert removes[0]["started"] > creates[0]["t"] and removes[0]["t"] < creates[1]["started"]
        assert removes[1]["argv"] == ["--force", f"{VG}/migrated-snap-{LV}"] and removes[1]["started"] > creates[1]["t"]
        assert list((lvm / "snaps").iterdir()) == [] and loops_backed_by(lvm) == []
        [snap] = cut["snapshots"]
        assert snap["name"] == f"{VG}/migrated-snap-{LV}" and snap["removed"] is True
        assert snap["device"].startswith("/dev/loop")  # what lvs reported, not /dev/vg0/...
        # the lv_path was asked from lvs
        assert any(e["argv"][-3:] == ["-o", "lv_path", f"{VG}/migrated-snap-{LV}"] for e in entries(log, "lvs"))

        # order and downtime: pre hook -> lvcreate -> post hook -> (final pass, verify) -> lvremove
        pre, post = float(pre_t.read_text()), float(post_t.read_text())
        assert pre < creates[1]["started"] and creates[1]["t"] < post < removes[1]["started"]
        assert s["downtime"] >= post - pre  # from the pre hook's start to the post hook's end
        # the final pass ran after the post hook: the source was written after the snapshot
        # the source was frozen only inside the fake lvcreate's freeze window (never by migrated)
        freezes, thaws = entries(log, "freeze"), entries(log, "thaw")
        assert len(freezes) == len(thaws) == 2
        assert watch.unexplained == [], f"writer blocked on a freeze outside the snapshot: {watch.unexplained[:5]}"

        # the target is the snapshot: byte for byte, a clean ext4, the same files
        kept = lvm / "kept" / f"migrated-snap-{LV}-1.img"  # the copy the agent's snapshot held
        assert sha256_file(dst) == sha256_file(kept)
        r = fsck_clean(dst)
        assert r.returncode == 0, r.stdout + r.stderr
        with mounted_ro(kept, tmp_path / "snap.mnt") as sm:
            snap_files = tree_digest(sm)
        with mounted_ro(dst, tmp_path / "target.mnt") as tm:
            assert tree_digest(tm) == snap_files and len(snap_files) > 5
        assert tree_digest(fs.mountpoint) != snap_files  # the writer went on after the cutover point

        # the final pass was recorded in the origin's checkpoint (one, keyed on the origin)
        from migrated.model.checkpoint import Checkpoint

        [cp] = [Checkpoint.decode(p.read_bytes()) for p in state.glob("*.ckpt")]
        assert cp.source_path == fs.loopdev and cp.complete and cp.round == 4
        st = os.stat(fs.loopdev)
        assert cp.source_id == f"blk:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        assert cut["traced_bytes"] is not None  # writes traced on the origin chose what to read


@pytest.mark.root
@root_only
async def test_lvcreate_failing_is_a_clear_quiesce_error_and_nothing_is_frozen(sshd, tmp_path):
    with loop_ext4(tmp_path, size_mb=32) as fs, fake_lvm(tmp_path, fs.loopdev) as (lvm, env):
        (lvm / "fail-create").write_text("  Insufficient free space: 820 extents needed, but only 0 available")
        hooks = tmp_path / "hooks.log"
        rc, s, err = await run_cli(sshd, fs.loopdev, tmp_path / "t.img", env, "--interval", "0",
                                   "--cutover-after", "0", "--pre-hook", f"echo pre >> {hooks}",
                                   "--post-hook", f"echo post >> {hooks}", state=tmp_path / "state")
        assert rc == 6, err
        assert "could not take the LVM snapshot of vg0/data" in err and "Insufficient free space" in err
        assert "nothing was frozen" in err and "verified" not in err
        assert s is None  # no success summary
        log = fakelvm.read_log(lvm)
        assert entries(log, "freeze") == [] and [e["rc"] for e in entries(log, "lvcreate")] == [5]
        assert entries(log, "lvremove") == []  # nothing was made, nothing to remove
        assert hooks.read_text().split() == ["pre", "post"]  # the post hook ran all the same
        assert can_write(fs.mountpoint)


@pytest.mark.root
@root_only
async def test_a_failure_during_the_final_pass_still_removes_the_snapshot(sshd, tmp_path):
    with loop_ext4(tmp_path, size_mb=32) as fs, fake_lvm(tmp_path, fs.loopdev) as (lvm, env):
        (lvm / "short-copy").touch()  # the "snapshot" is 1 MiB short: the final pass refuses it
        rc, _s, err = await run_cli(sshd, fs.loopdev, tmp_path / "t.img", env, "--interval", "0",
                                    "--cutover-after", "0", state=tmp_path / "state")
        assert rc == 6, err
        assert "is not a snapshot of it" in err and "raise --snapshot-size" in err
        log = fakelvm.read_log(lvm)
        [create] = entries(log, "lvcreate")
        [remove] = entries(log, "lvremove")
        assert create["rc"] == 0 and remove["rc"] == 0 and remove["started"] > create["t"]
        assert list((lvm / "snaps").iterdir()) == [] and loops_backed_by(lvm) == []
        assert can_write(fs.mountpoint)


@pytest.mark.root
@root_only
async def test_sigterm_during_the_final_pass_removes_the_snapshot_and_is_resumable(sshd, tmp_path):
    with loop_ext4(tmp_path, size_mb=48) as fs, fake_lvm(tmp_path, fs.loopdev) as (lvm, env):
        # the pre hook writes 6 MiB the final pass must send at 1 MiB/s: SIGTERM lands in the pass
        rc, s, err = await run_cli(
            sshd, fs.loopdev, tmp_path / "t.img", env, "--interval", "0", "--cutover-after", "0",
            "--bwlimit", "1MiB", "--pre-hook", f"head -c 6M /dev/urandom > {fs.mountpoint}/big && sync",
            state=tmp_path / "state", until_stderr="final pass from the snapshot")
        assert rc == 130, err
        assert s is not None and s["interrupted"]
        log = fakelvm.read_log(lvm)
        [create] = entries(log, "lvcreate")
        [remove] = entries(log, "lvremove")
        assert create["rc"] == 0 and remove["rc"] == 0
        assert list((lvm / "snaps").iterdir()) == [] and loops_backed_by(lvm) == []
        assert can_write(fs.mountpoint)
        # again: the interrupted pass is finished as a round, then a new snapshot, read whole this time
        rc, s, err = await run_cli(sshd, fs.loopdev, tmp_path / "t.img", env, "--interval", "0",
                                   "--cutover-after", "0", "--no-track-writes", state=tmp_path / "state")
        assert rc == 0 and s is not None and s["verified"], err
        assert s["cutover"]["traced_bytes"] is None and "read the whole disk" in err
        assert sha256_file(tmp_path / "t.img") == sha256_file(lvm / "kept" / f"migrated-snap-{LV}-1.img")
        assert [e["rc"] for e in entries(fakelvm.read_log(lvm), "lvremove")] == [0, 0]
        assert loops_backed_by(lvm) == []


@pytest.mark.root
@root_only
async def test_kill_9_during_the_final_pass_leaves_a_snapshot_that_the_next_run_removes(sshd, tmp_path):
    """kill -9 is the one way to leave a snapshot behind (no finally runs); the next run finds
    ``migrated-snap-*`` of the volume, removes it, and cuts over."""
    with loop_ext4(tmp_path, size_mb=48) as fs, fake_lvm(tmp_path, fs.loopdev) as (lvm, env):
        rc, _s, err = await run_cli(
            sshd, fs.loopdev, tmp_path / "t.img", env, "--interval", "0", "--cutover-after", "0",
            "--bwlimit", "1MiB", "--pre-hook", f"head -c 6M /dev/urandom > {fs.mountpoint}/big && sync",
            state=tmp_path / "state", until_stderr="final pass from the snapshot", then_signal=signal.SIGKILL)
        assert rc == -signal.SIGKILL, err
        assert [p.name for p in (lvm / "snaps").glob("*.json")] == [f"migrated-snap-{LV}.json"]  # left behind
        rc, s, err = await run_cli(sshd, fs.loopdev, tmp_path / "t.img", env, "--interval", "0",
                                   "--cutover-after", "0", state=tmp_path / "state")
        assert rc == 0 and s is not None and s["verified"], err
        assert f"removed the snapshot {VG}/migrated-snap-{LV} a killed earlier run left behind" in err
        log = fakelvm.read_log(lvm)
        assert [e["rc"] for e in entries(log, "lvcreate")] == [0, 0]
        assert [e["rc"] for e in entries(log, "lvremove")] == [0, 0]
        assert list((lvm / "snaps").iterdir()) == [] and loops_backed_by(lvm) == []
        assert sha256_file(tmp_path / "t.img") == sha256_file(lvm / "kept" / f"migrated-snap-{LV}-1.img")


async def test_a_source_that_is_no_logical_volume_is_refused_before_any_round(sshd, tmp_path):
    """No root needed: the fake lvs knows only /dev/null as vg0/data."""
    img = tmp_path / "plain.img"
    with open(img, "wb") as f:
        f.truncate(4 * 1024 * 1024)
    with fake_lvm(tmp_path, "/dev/null") as (_lvm, env):
        rc, _s, err = await run_cli(sshd, str(img), tmp_path / "t.img", env, "--cutover-after", "0",
                                   state=tmp_path / "state")
    assert rc == 6, err
    assert f"{img} is not an LVM logical volume; use --quiesce freeze" in err
    assert "full pass" not in err and not (tmp_path / "t.img").exists()


def test_snapshot_size_needs_quiesce_lvm_and_a_valid_size(tmp_path):
    img = tmp_path / "x"
    img.write_bytes(b"\0" * 4096)
    base = [*cli("migrated"), "sync", str(img), "127.0.0.1:1:/x", "--continuous"]
    r = subprocess.run([*base, "--snapshot-size", "2G"], capture_output=True, text=True, env=repo_env(), timeout=60)
    assert r.returncode == 2 and "--snapshot-size needs --continuous --quiesce lvm" in r.stderr
    r = subprocess.run([*base, "--quiesce", "lvm", "--snapshot-size", "lots"], capture_output=True, text=True,
                       env=repo_env(), timeout=60)
    assert r.returncode == 2 and "--snapshot-size 'lots'" in r.stderr


def test_the_daemon_reads_quiesce_lvm_and_the_snapshot_size_from_the_task_spec():
    from migrated.agent.runners.continuous import _options
    from migrated.agent.state import TaskRecord

    def task(spec: dict) -> TaskRecord:
        return TaskRecord(task_id="t", spec=spec, state="starting")

    copts = _options(task({"ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": "2G",
                           "PreHook": "systemctl stop db"}))
    copts.validate()
    assert (copts.quiesce, copts.snapshot_size, copts.pre_hook) == ("lvm", "2G", "systemctl stop db")
    assert _options(task({"Quiesce": "lvm"})).snapshot_size == "10%ORIGIN"


# ------------------------------------------------------------------ the daemon side (spec key Quiesce: lvm)


async def _agent_task(sshd: AsyncSSHD, tmp_path: Path, source: str, **spec_extra: object):  # type: ignore[no-untyped-def]
    """Run a continuous task with ``spec_extra`` in an in-process daemon (the console's CreateTask
    does not pass ``Quiesce`` yet, so the start command carries the spec as the console would):
    wait for *syncing*, ask for the cutover as ``migratectl cutover`` does, return the task."""
    from migrated.agent.daemon import Agent
    from migrated.agent.runners import continuous
    from migrated.agent.state import AgentStore, SourceRecord
    from migrated.config import Config
    from tests.test_agent_commands import RecordingConsole

    store = AgentStore(tmp_path / "agent")
    store.save_source(SourceRecord("src-1", "http://console"))
    cfg = Config(state_dir=str(tmp_path / "agent"), allow_console_hooks=True)  # this operator allows hooks
    agent = Agent(cfg, RecordingConsole(), store,  # type: ignore[arg-type]
                  ssh_identity=str(sshd.keys.client_key), recv_command="upload")
    agent.load()
    spec = {"TaskId": "task-lvm", "TargetSsh": f"root@127.0.0.1:{sshd.port}", "TargetHostKey": sshd.keys.host_pub,
            "State": "starting", "BandwidthLimitKBps": 0, "Checksum": False, "IgnoreChecks": "all",
            "DiskMapping": [{"Source": source, "Target": str(tmp_path / "t.img")}],
            "ContinuousSync": True, "RoundIntervalSeconds": 0, **spec_extra}
    await agent._handle_command({"CommandId": "c1", "TaskId": "task-lvm", "Action": "start", "Params": {},
                                 "Task": spec})
    assert agent.task is not None
    runner = asyncio.create_task(agent.run_task(agent.task))
    try:
        for _ in range(1200):
            if agent.task.state == "syncing" or runner.done():
                break
            await asyncio.sleep(0.05)
        assert agent.task.state == "syncing", agent.task.message
        continuous.cutover(agent.task, agent.run_control.continuous)
        await asyncio.wait_for(asyncio.shield(runner), 180)
    finally:
        if not runner.done():
            agent.run_control.control.request_stop("test over")
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(runner, 60)
    return agent.task


@pytest.mark.root
@root_only
async def test_the_daemon_runs_a_task_with_quiesce_lvm_to_success(sshd, tmp_path, monkeypatch):
    with loop_ext4(tmp_path, size_mb=32) as fs, fake_lvm(tmp_path, fs.loopdev) as (lvm, env):
        monkeypatch.setenv("PATH", env["PATH"])  # the daemon runs in this process
        hooks = tmp_path / "hooks.log"
        t = await _agent_task(sshd, tmp_path, fs.loopdev, Quiesce="lvm", SnapshotSize="20%ORIGIN",
                              PreHook=f"echo pre >> {hooks}", PostHook=f"echo post >> {hooks}")
        assert t.state == "success", t.message
        events = [str(e.get("message")) for e in t.unreported]
        assert any(m.startswith("cutover point: LVM snapshot vg0/migrated-snap-data taken") for m in events), events
        assert any(m.startswith("cutover done: downtime") and "(lvm)" in m for m in events), events
        assert t.progress["downtime_seconds"] > 0
        assert hooks.read_text().split() == ["pre", "post"]
        log = fakelvm.read_log(lvm)
        assert [e["rc"] for e in entries(log, "lvcreate")] == [0] and [e["rc"] for e in entries(log, "lvremove")] == [0]
        assert sha256_file(tmp_path / "t.img") == sha256_file(lvm / "kept" / f"migrated-snap-{LV}-0.img")


@pytest.mark.root
@root_only
async def test_the_daemon_fails_the_task_when_lvcreate_fails(sshd, tmp_path, monkeypatch):
    with loop_ext4(tmp_path, size_mb=32) as fs, fake_lvm(tmp_path, fs.loopdev) as (lvm, env):
        monkeypatch.setenv("PATH", env["PATH"])
        (lvm / "fail-create").write_text("  Volume group \"vg0\" has insufficient free space (0 extents): 82 required.")
        t = await _agent_task(sshd, tmp_path, fs.loopdev, Quiesce="lvm")
        assert t.state == "failed" and "could not take the LVM snapshot of vg0/data" in t.message, t.message
        assert entries(fakelvm.read_log(lvm), "freeze") == [] and can_write(fs.mountpoint)


# ------------------------------------------------------------------ several volumes (library API)


async def _two_disk_cutover(sshd: AsyncSSHD, tmp_path: Path, fa, fb, hooks: Path):  # type: ignore[no-untyped-def]
    from migrated.engine import SyncOptions, open_session
    from migrated.engine.continuous import ContinuousControl, ContinuousOptions, run_continuous_disks
    from tests.test_engine_api import endpoint

    copts = ContinuousOptions(interval=0, cutover_after=1, quiesce="lvm", pre_hook=f"echo pre >> {hooks}",
                              post_hook=f"echo post >> {hooks}")
    disks = [(fa.loopdev, str(tmp_path / "ta.img")), (fb.loopdev, str(tmp_path / "tb.img"))]
    async with open_session(endpoint(sshd)) as s:
        return await run_continuous_disks(s, disks, SyncOptions(state_dir=tmp_path / "state"), copts,
                                          ContinuousControl())


@pytest.mark.root
@root_only
async def test_two_lvm_disks_are_snapshotted_inside_one_hook_window(sshd, tmp_path, monkeypatch):
    with loop_ext4(tmp_path, 32, name="a") as fa, loop_ext4(tmp_path, 32, name="b") as fb, \
            fake_lvm(tmp_path, fa.loopdev) as (lvm, env):
        fakelvm.add_volume(lvm, "logs", fb.loopdev)
        monkeypatch.setenv("PATH", env["PATH"])
        (fa.mountpoint / "db").write_bytes(os.urandom(3 << 20))
        (fb.mountpoint / "wal").write_bytes(os.urandom(2 << 20))
        hooks = tmp_path / "hooks.log"
        result = await _two_disk_cutover(sshd, tmp_path, fa, fb, hooks)
        cut = result.cutover
        assert cut is not None and cut.verified and cut.blocks_verified == 2 * 32 * 16
        assert [sn["name"] for sn in cut.snapshots] == ["vg0/migrated-snap-data", "vg0/migrated-snap-logs"]
        assert all(sn["removed"] for sn in cut.snapshots)
        log = fakelvm.read_log(lvm)
        creates, removes = entries(log, "lvcreate"), entries(log, "lvremove")
        assert [e["argv"][-1] for e in creates] == ["vg0/data", "vg0/logs"]
        assert sorted(e["argv"][-1] for e in removes) == ["vg0/migrated-snap-data", "vg0/migrated-snap-logs"]
        assert max(e["t"] for e in creates) < min(e["started"] for e in removes)
        assert hooks.read_text().split() == ["pre", "post"] and loops_backed_by(lvm) == []
        assert sha256_file(tmp_path / "ta.img") == sha256_file(lvm / "kept" / "migrated-snap-data-0.img")
        assert sha256_file(tmp_path / "tb.img") == sha256_file(lvm / "kept" / "migrated-snap-logs-1.img")


@pytest.mark.root
@root_only
async def test_when_the_second_snapshot_fails_the_first_is_removed(sshd, tmp_path, monkeypatch):
    from migrated.errors import QuiesceError

    with loop_ext4(tmp_path, 32, name="a") as fa, loop_ext4(tmp_path, 32, name="b") as fb, \
            fake_lvm(tmp_path, fa.loopdev) as (lvm, env):
        fakelvm.add_volume(lvm, "logs", fb.loopdev)
        monkeypatch.setenv("PATH", env["PATH"])
        (lvm / "fail-create-logs").write_text('  Volume group "vg0" has insufficient free space (3 extents): 4 '
                                              'required.')
        hooks = tmp_path / "hooks.log"
        with pytest.raises(QuiesceError, match=r"LVM snapshot of vg0/logs .*insufficient free space"):
            await _two_disk_cutover(sshd, tmp_path, fa, fb, hooks)
        log = fakelvm.read_log(lvm)
        assert [(e["argv"][-1], e["rc"]) for e in entries(log, "lvcreate")] == [("vg0/data", 0), ("vg0/logs", 5)]
        assert [(e["argv"][-1], e["rc"]) for e in entries(log, "lvremove")] == [("vg0/migrated-snap-data", 0)]
        assert hooks.read_text().split() == ["pre", "post"] and loops_backed_by(lvm) == []
        assert can_write(fa.mountpoint) and can_write(fb.mountpoint)
