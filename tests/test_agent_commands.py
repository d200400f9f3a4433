"""Command handling of the daemon without network: applied once (IDs on disk), acked every time,
refused with a reason; a restart mid-transfer resumes as starting. The console here is a small
recorder (tests/ only); the real console is exercised in test_agent_e2e.py."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from migrated.agent.daemon import Agent
from migrated.agent.runners.driver import parse_ssh as _parse_ssh
from migrated.agent.state import AgentStore, SourceRecord, TaskRecord
from migrated.config import Config
from migrated.errors import ConfigError
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


def test_a_damaged_task_file_is_named(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "state")
    store.save_source(SourceRecord("src-1", "http://console"))
    (tmp_path / "state" / "task.json").write_text("{not json")
    agent = Agent(Config(state_dir=str(tmp_path / "state")), None, store)
    with pytest.raises(ConfigError, match=r"task\.json is damaged"):
        agent.load()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_register_hands_its_files_to_the_daemon_user(tmp_path: Path) -> None:
    from migrated.cli.agent_cmds import _give_to_state_dir_owner

    state = tmp_path / "state"
    AgentStore(state).save_source(SourceRecord("src-1", "http://console"))
    nobody = pwd.getpwnam("nobody")
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    _give_to_state_dir_owner(str(state))
    assert (state / "source.json").stat().st_uid == nobody.pw_uid


def test_rate_and_eta_come_from_recent_progress(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, RecordingConsole())
    p = TaskProgress(task_id="task-1", state="transferring", disks=[])
    d = p.to_dict()
    d["disks"] = [{"name": "/dev/vdb", "target": "/dev/vdb", "bytes_total": 1000 << 20, "bytes_done": 400 << 20}]
    agent.task = TaskRecord(task_id="task-1", spec=SPEC, state="transferring", progress=d)
    for t, done in ((100.0, 200 << 20), (102.0, 300 << 20), (104.0, 400 << 20)):
        agent._rate.add(t, done)
    now = agent.progress()
    assert now is not None
    assert now.rate_bps == 50 << 20 and now.eta_seconds == 12.0  # 600 MiB left at 50 MiB/s
    assert "task-1 transferring 40.0% 50.0 MiB/s ETA 00:12" in agent.status_line()
    agent.task.state = "paused"
    assert agent.progress().eta_seconds is None  # type: ignore[union-attr]


async def test_daemon_logs_carry_journal_fields_and_stop_cleanly(tmp_path: Path) -> None:
    import asyncio
    import socket

    from migrated import logs
    from migrated.config import ControlConfig

    journal_path = str(tmp_path / "journal.sock")
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(journal_path)
    journal.setblocking(False)
    store = AgentStore(tmp_path / "state")
    store.save_source(SourceRecord("src-77", "http://console"))
    cfg = Config(state_dir=str(tmp_path / "state"), control=ControlConfig(socket=str(tmp_path / "run" / "c.sock"),
                                                                          group=None))
    logs.configure("info", "journald", journal_socket=journal_path)
    try:
        agent = Agent(cfg, None, store)
        running = asyncio.create_task(agent.run())
        for _ in range(200):
            if (tmp_path / "run" / "c.sock").exists():
                break
            await asyncio.sleep(0.02)
        agent.stop()
        await asyncio.wait_for(running, 10)
    finally:
        logs.configure("info", "console")
    entries = []
    while True:
        try:
            entries.append(logs.decode_journal_datagram(journal.recv(1 << 16)))
        except BlockingIOError:
            break
    journal.close()
    started = next(e for e in entries if e["MESSAGE"].startswith("migrated running"))
    assert started["SOURCE_ID"] == "src-77" and started["PRIORITY"] == "6"
    assert any(e["MESSAGE"].startswith("migrated stopped") for e in entries)
    assert not (tmp_path / "run" / "c.sock").exists()
