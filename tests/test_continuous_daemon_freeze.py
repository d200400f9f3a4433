"""The freeze driven through the daemon: a console process, ``migrated run`` as a subprocess, a real
OpenSSH target, and as the source disk a loop device whose ext4 is mounted and written to by a
writer process (creating, rewriting, deleting files) the whole time. The daemon's state directory
lives ON that filesystem: the daemon must not write there while it is frozen.

console CreateTask(ContinuousSync) -> StartTask -> full pass -> rounds (syncing) -> `migratectl
cutover` / console CutoverTask -> freeze (guardian) -> final pass -> thaw -> verify -> success.

What an operator checks: the task is successful with a downtime in DescribeTasks and in
`migratectl status --json`; the target image passes `e2fsck -fn`; mounted read-only, its files are
the source's files as they were while frozen (recorded while the writer was blocked on the freeze
lock, see ``tests.loopfs.FrozenRecorder``); the source is writable right after. And kill -9 of the
daemon's process group during the freeze: the guardian (own session, by design) sees the daemon
gone and thaws at once; the restarted daemon finishes the cutover that was asked for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from migrated.model.checkpoint import Checkpoint
from tests.agent_world import World, ctl_status, make_world, wait_for
from tests.loopfs import (
    FrozenRecorder,
    LoopFs,
    can_write,
    frozen_wait,
    fsck_clean,
    guardian_of,
    loop_ext4,
    mounted_ro,
    process_state,
    root_only,
    tracefs_cleanup,  # noqa: F401 - fixture
    tree_digest,
    writer_process,
)

F = TypeVar("F", bound=Callable[..., Any])


def loop_test(f: F) -> F:
    """Root (loop devices, mount, FIFREEZE), slow, and the tracefs instance of a killed agent removed."""
    for mark in (pytest.mark.root, pytest.mark.slow, root_only, pytest.mark.timeout(420),
                 pytest.mark.usefixtures("tracefs_cleanup")):
        f = mark(f)
    return f


@dataclass
class Busy:
    w: World
    fs: LoopFs
    writer: subprocess.Popen[bytes]
    state: Path  # the daemon's state dir, on the mounted filesystem


@pytest.fixture
def busy(tmp_path: Path, sshd) -> Iterator[Busy]:
    with loop_ext4(tmp_path, size_mb=96) as fs:
        state = fs.mountpoint / "migrated-state"
        with (make_world(tmp_path, sshd, 0, agent_config={"state_dir": str(state)}, source=Path(fs.loopdev)) as w,
              writer_process(fs.mountpoint) as writer):
            yield Busy(w, fs, writer, state)


def log_events(w: World, event: str, offset: int = 0) -> list[dict[str, Any]]:
    """The daemon's JSON log lines for ``event`` from character ``offset`` on (whole lines only)."""
    out = []
    for line in w.daemon_log()[offset:].split("\n")[:-1]:
        if f'"event": "{event}"' in line:
            out.append(json.loads(line))
    return out


def guardian_lines(w: World) -> list[str]:
    """The guardian writes one line to its stderr (the daemon's log here) after each thaw."""
    return re.findall(r"migrated guardian: thawed .*", w.daemon_log())


def start_rounds(b: Busy, name: str, **extra: Any) -> str:
    w = b.w
    source_id = w.register()
    assert (b.state / "source.json").exists()  # the state dir really is on the busy filesystem
    return w.create_continuous_task(source_id, name, **extra)


def check_target(b: Busy, record: dict[str, str] | None, tmp: Path) -> None:
    """The target image: a clean ext4 whose files are the source's files at the freeze."""
    assert record is not None, "the freeze was never observed"
    r = fsck_clean(b.w.target)
    assert r.returncode == 0, r.stdout + r.stderr
    with mounted_ro(b.w.target, tmp / "target.mnt") as tm:
        assert tree_digest(tm) == record


@loop_test
def test_daemon_cutover_freezes_a_busy_ext4_holding_its_state_dir(busy: Busy, tmp_path: Path) -> None:
    b, w = busy, busy.w
    task_id = start_rounds(b, "freeze", BandwidthLimitKBps=4096)
    daemon = w.daemon()
    rec = FrozenRecorder(b.writer.pid, b.fs.mountpoint)
    try:
        w.wait_daemon_online()
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "syncing" and (w.task(task_id)["Progress"]["Round"] or 0) >= 3,
                 "the full pass and two rounds", timeout=180)
        # lifting the limit live holds for the rounds after it (it used to come back at the next round)
        r = w.ctl("bandwidth", "0")
        assert r.returncode == 0, r.stderr
        mark = len(w.daemon_log())
        starts = wait_for(lambda: log_events(w, "sync_start", mark), "a round to start after the limit was lifted")
        assert starts[0]["bwlimit"] is None, starts[0]
        r = w.ctl("bandwidth", "4M")  # slow again: the recorder reads every file while frozen
        assert r.returncode == 0, r.stderr
        rec.start()
        r = w.ctl("cutover")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: w.task(task_id)["State"] in ("success", "failed"), "the cutover to end", timeout=180)
        rec.done.set()
        rec.join()
        final = w.task(task_id)
        assert final["State"] == "success", (final, w.daemon_log()[-4000:])
        # the source is writable right after, and the writer went on
        assert can_write(b.fs.mountpoint, timeout=30)
        assert b.writer.poll() is None

        downtime = final["Progress"]["DowntimeSeconds"]
        assert downtime is not None and 0 < downtime < 30
        local = ctl_status(w.socket)["task"]
        assert local["state"] == "success" and local["downtime_seconds"] == pytest.approx(downtime, abs=0.01)
        evs = w.events(task_id)
        assert any(f"cutover: final pass with the source quiesced (freeze: {b.fs.mountpoint})" in m for m in evs), evs
        assert any(m.startswith("cutover done: downtime") and "blocks verified" in m for m in evs), evs
        # one freeze, thawed because the daemon said so (not by the guardian's budget)
        assert rec.freezes_seen == 1
        lines = guardian_lines(w)
        assert len(lines) == 1 and lines[0].endswith("(told)"), lines
    finally:
        rec.done.set()
        rc = daemon.stop()
    assert rc == 0, w.daemon_log()[-3000:]
    # the state written after the thaw: the checkpoint of the final pass, complete
    cps = [Checkpoint.decode(p.read_bytes()) for p in (b.state / "checkpoints" / task_id).glob("*.ckpt")]
    assert len(cps) == 1 and cps[0].complete
    check_target(b, rec.record, tmp_path)


def staging_dirs(pid: int, base: Path) -> list[Path]:
    """The tmpfs dirs where process ``pid`` staged the state dir during a freeze (StagedDir) in ``base``."""
    return list(base.glob(f"migrated-final-{pid}-*"))


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A private $XDG_RUNTIME_DIR (tmpfs) for the daemon's staging dir: any agent's cutover sweeps dead
    agents' staging dirs from its own base, so another test's daemon must not share this one's."""
    d = Path(tempfile.mkdtemp(prefix="migrated-test-xdg-", dir="/dev/shm"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@loop_test
@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_daemon_stopped_during_the_freeze_thaws_then_the_restart_cuts_over(busy: Busy, tmp_path: Path,
                                                                          how: str, runtime_dir: Path) -> None:
    """kill -9 of the daemon's process group (a crash, the OOM killer) or SIGTERM (systemctl stop,
    an upgrade) while the source is frozen: thawed at once, and the restart finishes the cutover."""
    b, w = busy, busy.w
    # a budget far past anything the test waits for: a thaw seen here is not the budget's
    task_id = start_rounds(b, how, FreezeBudgetSeconds=600)
    daemon = w.daemon(XDG_RUNTIME_DIR=str(runtime_dir))
    rec: FrozenRecorder | None = None
    try:
        w.wait_daemon_online()
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "syncing" and (w.task(task_id)["Progress"]["Round"] or 0) >= 2,
                 "the full pass and a round", timeout=180)
        # a slow link from now on: the final pass stays frozen long enough to be caught in the act
        r = w.ctl("bandwidth", "256K")
        assert r.returncode == 0, r.stderr
        cut = w.admin_call("CutoverTask", {"TaskId": task_id})
        assert cut["CommandId"]
        assert daemon.proc is not None
        wait_for(lambda: frozen_wait(b.writer.pid), "the writer to block on the frozen source", timeout=120,
                 step=0.005)
        guardian = guardian_of(daemon.proc.pid)
        assert guardian is not None, "frozen, but no guardian?"
        # the guardian has its own session: a signal to the daemon's process group (what systemd
        # does to the unit) does not reach it
        assert os.getsid(guardian) != os.getsid(daemon.proc.pid)
        assert frozen_wait(b.writer.pid), "the final pass ended before the kill; slow the link further"
        killed = daemon.proc.pid
        if how == "kill9":
            daemon.kill9()
        else:  # the daemon stops the final pass at a checkpoint, has the source thawed, exits
            rc = daemon.stop(timeout=30)
            assert rc == 0, w.daemon_log()[-3000:]

        # kill -9: the guardian saw the daemon's end of its pipe close and thawed at once (not at its
        # budget); SIGTERM: the daemon told it to
        assert can_write(b.fs.mountpoint, timeout=60)
        line = wait_for(lambda: guardian_lines(w), "the guardian's line after the thaw", timeout=30)
        assert len(line) == 1 and line[0].endswith("(parent-gone)" if how == "kill9" else "(told)"), line
        wait_for(lambda: process_state(guardian) in ("", "Z"), "the guardian to exit after the thaw", timeout=30)
        assert b.writer.poll() is None
        # the state the daemon wrote before the freeze (kill -9) or after the thaw (SIGTERM): the
        # cutover asked for is not lost
        assert json.loads((b.state / "task.json").read_text())["state"] == "verifying"

        # the daemon's state dir was staged in tmpfs for the freeze; a killed daemon left it there
        assert bool(staging_dirs(killed, runtime_dir)) is (how == "kill9")

        # restarted: it resumes the task and finishes the cutover that was asked for
        rec = FrozenRecorder(b.writer.pid, b.fs.mountpoint)
        rec.start()
        daemon = w.daemon(XDG_RUNTIME_DIR=str(runtime_dir))
        wait_for(lambda: ctl_status(w.socket, allow_down=True).get("task"), "the restarted daemon's socket")
        r = w.ctl("bandwidth", "0")  # the fast link again, for the final pass after the restart
        assert r.returncode == 0, r.stderr
        wait_for(lambda: w.task(task_id)["State"] in ("success", "failed"), "the cutover after the restart",
                 timeout=180)
        rec.done.set()
        rec.join()
        final = w.task(task_id)
        assert final["State"] == "success", (final, w.daemon_log()[-4000:])
        assert can_write(b.fs.mountpoint, timeout=30)
        downtime = final["Progress"]["DowntimeSeconds"]
        assert downtime is not None and 0 < downtime < 600
        local = ctl_status(w.socket)["task"]
        assert local["state"] == "success" and local["downtime_seconds"] == pytest.approx(downtime, abs=0.01)
        lines = guardian_lines(w)
        assert len(lines) == 2 and lines[1].endswith("(told)"), lines
        assert rec.freezes_seen == 1
        evs = w.events(task_id)
        assert any(m.startswith("cutover done: downtime") for m in evs), evs
        assert staging_dirs(killed, runtime_dir) == []  # the next cutover swept a dead daemon's copy away
    finally:
        if rec is not None:
            rec.done.set()
        rc = daemon.stop()
    assert rc == 0, w.daemon_log()[-3000:]
    check_target(b, rec.record, tmp_path)


# ------------------------------------------------------------- the parts, without root


def test_the_agent_store_holds_its_writes_until_released(tmp_path: Path) -> None:
    from migrated.agent.state import AgentStore, TaskRecord

    store = AgentStore(tmp_path)
    store.save_task(TaskRecord(task_id="task-1", spec={}, state="syncing"))
    store.hold()
    store.save_task(TaskRecord(task_id="task-1", spec={}, state="verifying"))
    store.save_applied([["cmd-1", True, "ok"]])
    assert store.load_task().state == "syncing" and not (tmp_path / "commands.json").exists()
    assert sorted(Path(p).name for p in store.release()) == ["commands.json", "task.json"]
    assert store.load_task().state == "verifying" and store.load_applied() == [["cmd-1", True, "ok"]]
    store.save_task(TaskRecord(task_id="task-1", spec={}, state="success"))  # written through again
    assert store.load_task().state == "success" and not store.holding


def test_a_staging_dir_of_a_dead_process_is_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    from migrated.source.freeze import StagedDir

    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / f"migrated-final-{dead.pid}-abc"
    live = tmp_path / f"migrated-final-{os.getpid()}-def"
    other = tmp_path / "migrated-final-xyz"  # not ours to judge
    for d in (gone, live, other):
        d.mkdir()
        (d / "x.hashes").write_bytes(b"h")
    assert StagedDir.sweep(tmp_path) == [gone]
    assert not gone.exists() and live.exists() and other.exists()


@loop_test
def test_one_shot_task_with_a_consistent_finish_freezes_once_after_its_full_pass(busy: Busy, tmp_path: Path) -> None:
    """CreateTask ConsistentFinish (no ContinuousSync): full pass of the busy ext4, then at once the
    cutover: frozen final pass, every block verified, success with its downtime. No rounds, never
    *syncing*; the target is the filesystem as it was at the freeze."""
    b, w = busy, busy.w
    task_id = start_rounds(b, "finish", ContinuousSync=False, ConsistentFinish=True, RoundIntervalSeconds=None,
                           BandwidthLimitKBps=4096)  # slow enough for the recorder to read every file while frozen
    view = w.task(task_id)
    assert (view["ContinuousSync"], view["ConsistentFinish"]) == (False, True)
    daemon = w.daemon()
    rec = FrozenRecorder(b.writer.pid, b.fs.mountpoint)
    states: set[str] = set()
    try:
        w.wait_daemon_online()
        rec.start()
        w.admin_call("StartTask", {"TaskId": task_id})

        def finished() -> bool:
            states.add(w.task(task_id)["State"])
            return w.task(task_id)["State"] in ("success", "failed")

        wait_for(finished, "the full pass and the cutover", timeout=240)
        rec.done.set()
        rec.join()
        final = w.task(task_id)
        assert final["State"] == "success", (final, w.daemon_log()[-4000:])
        assert "syncing" not in states, states
        assert 0 < final["Progress"]["DowntimeSeconds"] < 30
        evs = w.events(task_id)
        assert any(m.startswith("full pass: ") and m.endswith("cutting over now (consistent finish)") for m in evs), evs
        assert any(m.startswith("cutover done: downtime") and "blocks verified" in m for m in evs), evs
        assert not any(m.startswith("round ") for m in evs), evs
        assert rec.freezes_seen == 1
        assert can_write(b.fs.mountpoint, timeout=30)
    finally:
        rec.done.set()
        rc = daemon.stop()
    assert rc == 0, w.daemon_log()[-3000:]
    check_target(b, rec.record, tmp_path)
