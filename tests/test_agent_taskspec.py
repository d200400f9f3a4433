"""The daemon reads its task as a TaskSpec: a mistyped setting in a start command is refused with
its key and takes no task; the task's IgnoreChecks skips those pre-migration checks at the start
(the daemon's own start path, the runners' driver, against a target port that refuses connections)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from migrated.agent.daemon import Agent
from migrated.agent.runners import driver
from migrated.agent.state import AgentStore, SourceRecord, TaskRecord
from migrated.config import Config
from migrated.engine.session import open_session
from migrated.engine.sync import SyncControl, SyncOptions
from migrated.errors import ChecksFailed, MigratedError, UsageError
from tests.test_agent_commands import SPEC, RecordingConsole


def make_agent(tmp_path: Path, console: RecordingConsole) -> Agent:
    store = AgentStore(tmp_path / "state")
    store.save_source(SourceRecord("src-1", "http://console"))
    # virtio_drivers looks at this machine's initramfs, which a test cannot choose
    agent = Agent(Config(state_dir=str(tmp_path / "state"), ignore_checks=("virtio_drivers",)), console, store)  # type: ignore[arg-type]
    agent.load()
    return agent


@pytest.mark.parametrize(("bad", "words"), [
    ({"Quiesce": "frezee", "ContinuousSync": True}, "setting Quiesce: must be one of freeze, hooks, none, lvm"),
    ({"Checksum": "yes"}, "setting Checksum: must be true or false"),
    ({"IgnoreChecks": ["virtio"]}, "setting IgnoreChecks: unknown check 'virtio'"),
    ({"DiskMapping": [{"Source": "/dev/vdb"}]}, "setting DiskMapping.0: "),
])
async def test_a_mistyped_setting_refuses_the_start_and_names_the_key(tmp_path: Path, bad: dict[str, object],
                                                                     words: str) -> None:
    console = RecordingConsole()
    agent = make_agent(tmp_path, console)
    await agent._handle_command({"CommandId": "c1", "TaskId": "task-1", "Action": "start", "Params": {},
                                 "Task": {**SPEC, **bad}})
    ((cid, ok, message),) = console.acks
    assert (cid, ok) == ("c1", False) and message.startswith("task task-1: ") and words in message
    assert agent.task is None and agent.store.load_task() is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("skip_target", [False, True])
async def test_ignore_checks_from_the_console_skip_those_checks(tmp_path: Path, skip_target: bool) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(b"\0" * 65536)
    spec = {**SPEC, "TargetSsh": f"root@127.0.0.1:{_closed_port()}",
            "DiskMapping": [{"Source": str(source), "Target": str(tmp_path / "t.img")}],
            "IgnoreChecks": ["target_ssh", "target_capacity", "target_receiver", "selinux"] if skip_target else []}
    console = RecordingConsole()
    agent = make_agent(tmp_path, console)
    await agent._handle_command({"CommandId": "c1", "TaskId": "task-1", "Action": "start", "Params": {},
                                 "Task": spec})
    assert agent.task is not None and agent.task.settings.ignore_checks == tuple(spec["IgnoreChecks"])
    with pytest.raises(MigratedError) as ei:
        await driver.attempt(agent, agent.run_control, agent.task, open_session, SyncControl(), SyncOptions)
    if skip_target:
        # the checks passed over the target; the SSH connection itself is what fails now
        assert not isinstance(ei.value, ChecksFailed), ei.value
        events = [e.get("message", "") for e in agent.task.unreported if e.get("kind") == "event"]
        assert not any("check target_ssh" in e for e in events)
    else:
        assert isinstance(ei.value, ChecksFailed) and "target_ssh: " in str(ei.value)


async def test_a_task_file_whose_spec_no_longer_reads_fails_its_run_naming_the_key(tmp_path: Path) -> None:
    """A hand-edited (or older) task.json: the status still shows, the run fails naming the setting."""
    store = AgentStore(tmp_path / "state")
    store.save_source(SourceRecord("src-1", "http://console"))
    store.save_task(TaskRecord(task_id="task-1", spec={**SPEC, "ContinuousSync": True, "Quiesce": "frezee"},
                               state="transferring", stage="transfer"))
    agent = Agent(Config(state_dir=str(tmp_path / "state")), RecordingConsole(), store)  # type: ignore[arg-type]
    agent.load()
    assert agent.task is not None
    p = agent.progress()
    assert p is not None and p.state == "starting"
    with pytest.raises(UsageError) as ei:
        await driver.attempt(agent, agent.run_control, agent.task, open_session, SyncControl(), SyncOptions)
    assert str(ei.value).startswith("task task-1: setting Quiesce: must be one of freeze, hooks, none, lvm")
