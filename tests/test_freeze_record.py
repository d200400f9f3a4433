"""The agent and its freeze guardian both killed with -9 mid-freeze (what systemd's final SIGKILL of
the unit does): the guardian's record says what is frozen, and `migrated thaw --recorded` (the
unit's ExecStopPost) or the daemon at its next start thaws it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrated.agent.daemon import Agent
from migrated.agent.state import AgentStore
from migrated.config import Config, ControlConfig
from tests.conftest import cli, repo_env
from tests.loopfs import can_write, loop_ext4, root_only

pytestmark = [pytest.mark.root, root_only, pytest.mark.timeout(120)]

HOLDER = """
import sys, time
from migrated.source.freeze import GuardedFreeze
fz = GuardedFreeze([sys.argv[1]], budget=600, record=sys.argv[2])
fz.freeze()
print(fz.guardian_pid, flush=True)
time.sleep(3600)
"""


def frozen_and_orphaned(mountpoint: Path, record: Path) -> None:
    """Freeze ``mountpoint`` through a guardian writing ``record``, then SIGKILL the guardian and its
    parent at once: nothing is left to thaw it."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(mountpoint), str(record)], stdout=subprocess.PIPE,
                         text=True, env=repo_env())
    guardian = int(p.stdout.readline())  # type: ignore[union-attr]
    rec = json.loads(record.read_text())
    assert rec["mountpoints"] == [str(mountpoint)] and rec["guardian_pid"] == guardian
    os.kill(guardian, signal.SIGKILL)
    p.kill()
    p.wait()
    p.stdout.close()  # type: ignore[union-attr]
    time.sleep(0.2)
    assert not can_write(mountpoint, timeout=1), "the filesystem should be left frozen"


def test_thaw_recorded_thaws_what_a_killed_guardian_left(tmp_path: Path) -> None:
    record = tmp_path / "run" / "frozen.json"
    record.parent.mkdir()
    with loop_ext4(tmp_path, size_mb=32) as fs:
        frozen_and_orphaned(fs.mountpoint, record)
        r = subprocess.run([*cli("migrated"), "thaw", "--recorded", str(record), "--json"], env=repo_env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["thawed"]["was_frozen"] == {str(fs.mountpoint): True}
        assert out["thawed"]["guardian_alive"] is False
        assert can_write(fs.mountpoint), "thawed: a write completes"
        assert not record.exists()
        again = subprocess.run([*cli("migrated"), "thaw", "--recorded", str(record)], env=repo_env(),
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "nothing recorded as frozen" in again.stderr, again.stderr


def test_the_daemon_thaws_a_recorded_freeze_when_it_starts(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", "")  # unset for the agent; restored after the test
    cfg = Config(state_dir=str(tmp_path / "state"), control=ControlConfig(socket=str(run / "control.sock")))
    with loop_ext4(tmp_path, size_mb=32) as fs:
        frozen_and_orphaned(fs.mountpoint, run / "frozen.json")
        agent = Agent(cfg, None, AgentStore(tmp_path / "state"))
        agent._thaw_leftovers()  # what `migrated run` does first
        assert can_write(fs.mountpoint)
        assert not (run / "frozen.json").exists()
        assert agent.freeze_record == str(run / "frozen.json")  # later freezes of this daemon are recorded there


def test_a_thawed_freeze_leaves_no_record(tmp_path: Path) -> None:
    from migrated.source.freeze import GuardedFreeze

    record = tmp_path / "frozen.json"
    with loop_ext4(tmp_path, size_mb=32) as fs:
        with GuardedFreeze([str(fs.mountpoint)], budget=30, record=str(record)):
            assert json.loads(record.read_text())["mountpoints"] == [str(fs.mountpoint)]
        assert not record.exists()
        assert can_write(fs.mountpoint)


def test_no_record_on_the_filesystem_being_frozen(tmp_path: Path) -> None:
    from migrated.source.freeze import GuardedFreeze

    with loop_ext4(tmp_path, size_mb=32) as fs:
        record = fs.mountpoint / "frozen.json"
        with GuardedFreeze([str(fs.mountpoint)], budget=30, record=str(record)):
            assert not record.exists()  # it would block on the very freeze it describes
        assert can_write(fs.mountpoint)


def test_thaw_needs_something_to_thaw() -> None:
    r = subprocess.run([*cli("migrated"), "thaw"], env=repo_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "DISK|MOUNTPOINT arguments, or --recorded" in r.stderr, r.stderr
