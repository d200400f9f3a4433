"""Command handling of the daemon without network: applied once (IDs on disk), acked every time,
refused with a reason; a restart mid-transfer resumes as starting. The console here is a small
recorder (tests/ only); the real console is exercised in test_agent_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from migrated.agent.daemon import Agent, _parse_ssh
from migrated.agent.state import AgentStore, SourceRecord, TaskRecord
from migrated.config import Config
from migrated.model.status import TaskProgress


class RecordingConsole:
    def __init__(self) -> None:
        self.acks: list[tuple[str, bool, str]] = []
        self.reports: list[TaskProgress] = []

    async def ack(self, source_id: str, command_id: str, ok: bool, message: str = "") -> dict[str, Any]:
        self.acks.append((command_id, ok, message))
        return {}

    async def report_progress(self, source_id: str, p: TaskProgress) -> dict[str, Any]:
        self.reports.append(p)
        return {}


def make_agent(tmp_path: Path, console: RecordingConsole) -> Agent:
    store = AgentStore(tmp_path / "state")
    store.save_source(SourceRecord("src-1", "http://console"))
    cfg = Config(state_dir=str(tmp_path / "state"))
    agent = Agent(cfg, console, store)  # type: ignore[arg-type]
    agent.load()
    return agent


SPEC = {"TaskId": "task-1", "TargetSsh": "root@10.0.0.5:2222", "TargetHostKey": "ssh-ed25519 AAAA",
        "State": "starting", "BandwidthLimitKBps": 0, "Checksum": False, "DiskMapping": []}


async def test_a_redelivered_command_is_applied_once_and_acked_again(tmp_path: Path) -> None:
    console = RecordingConsole()
    agent = make_agent(tmp_path, console)
    start = {"CommandId": "cmd-1", "TaskId": "task-1", "Action": "start", "Params": {}, "Task": SPEC}
    await agent._handle_command(start)
    assert agent.task is not None and agent.task.state == "starting"
    bw = {"CommandId": "cmd-2", "TaskId": "task-1", "Action": "set-bandwidth", "Params": {"BandwidthLimitKBps": 100}}
    await agent._handle_command(bw)
    assert agent.bandwidth_bps == 100 * 1024
    agent.bandwidth_bps = None  # if cmd-2 were applied again, this would change back
    await agent._handle_command(bw)
    assert agent.bandwidth_bps is None
    assert [a[0] for a in console.acks] == ["cmd-1", "cmd-2", "cmd-2"] and all(a[1] for a in console.acks)

    # a restarted daemon remembers what it applied
    again = make_agent(tmp_path, console)
    assert again.bandwidth_bps == 100 * 1024  # the limit itself is kept with the task
    again.bandwidth_bps = None
    await again._handle_command(bw)
    assert again.bandwidth_bps is None and console.acks[-1][0] == "cmd-2"
    assert json.loads((tmp_path / "state" / "commands.json").read_text())[1][0] == "cmd-2"


async def test_refused_commands_are_acked_with_the_reason(tmp_path: Path) -> None:
    console = RecordingConsole()
    agent = make_agent(tmp_path, console)
    await agent._handle_command({"CommandId": "c1", "TaskId": "task-9", "Action": "pause", "Params": {}})
    await agent._handle_command({"CommandId": "c2", "TaskId": "task-1", "Action": "start", "Params": {}, "Task": SPEC})
    await agent._handle_command({"CommandId": "c3", "TaskId": "task-1", "Action": "pause", "Params": {}})
    await agent._handle_command({"CommandId": "c4", "TaskId": "task-1", "Action": "explode", "Params": {}})
    await agent._handle_command({"CommandId": "c5", "TaskId": "task-1", "Action": "set-bandwidth",
                                 "Params": {"BandwidthLimitKBps": -3}})
    acks = {a[0]: a for a in console.acks}
    assert acks["c1"][1] is False and "not on this agent" in acks["c1"][2]
    assert acks["c2"][1] is True
    assert acks["c3"][1] is False and "cannot pause a task that is starting" in acks["c3"][2]
    assert acks["c4"][1] is False and "unknown command action 'explode'" in acks["c4"][2]
    assert acks["c5"][1] is False and "BandwidthLimitKBps" in acks["c5"][2]


async def test_delete_drops_the_checkpoint(tmp_path: Path) -> None:
    console = RecordingConsole()
    agent = make_agent(tmp_path, console)
    agent.task = TaskRecord(task_id="task-1", spec=SPEC, state="paused")
    cp = agent.store.checkpoint_dir("task-1")
    cp.mkdir(parents=True)
    (cp / "disk.ckpt").write_bytes(b"x")
    await agent._handle_command({"CommandId": "d1", "TaskId": "task-1", "Action": "delete", "Params": {}})
    assert console.acks == [("d1", True, "task task-1: checkpoint dropped, target released")]
    assert not cp.exists() and agent.task is None and agent.store.load_task() is None


def test_restart_mid_transfer_resumes_as_starting(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "state")
    store.save_source(SourceRecord("src-1", "http://console"))
    store.save_task(TaskRecord(task_id="task-1", spec=SPEC, state="transferring", stage="transfer"))
    agent = Agent(Config(state_dir=str(tmp_path / "state")), None, store)
    agent.load()
    assert agent.task is not None and agent.task.state == "starting"
    assert agent.task.unreported[-1]["state"] == "starting"
    assert "restarted" in agent.task.unreported[-1]["message"]
    assert agent._wake_runner.is_set()


def test_parse_ssh() -> None:
    assert _parse_ssh("root@10.0.0.5:2222") == ("root", "10.0.0.5", 2222)
    assert _parse_ssh("admin@host") == ("admin", "host", 22)
    assert _parse_ssh("u@[::1]:22") == ("u", "::1", 22)
