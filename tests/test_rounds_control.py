"""Changing a continuous task's rounds on the agent: ``runners.continuous.set_rounds`` against a real
``ContinuousControl`` and the agent's task record, the ``/v1/rounds`` endpoint's input checks on a
real control socket, and ``migratectl set``'s argument parsing. (End to end: test_rounds_live_e2e.py.)"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrated.agent.runners import continuous
from migrated.agent.state import AgentStore, TaskRecord
from migrated.cli import ctl
from migrated.control.client import ControlClient
from migrated.control.server import ControlServer
from migrated.engine.continuous import ContinuousControl
from migrated.errors import StateError, UsageError
from migrated.model.status import TaskProgress, rounds_settings_line
from tests.control_helper import MemoryBackend


class Agent:
    """The part of ``migrated.agent.daemon.Agent`` that set_rounds uses: the task, its store, events,
    and the running task's ContinuousControl (``Agent.run_control.continuous``)."""

    def __init__(self, store: AgentStore, task: TaskRecord) -> None:
        self.store, self.task, self.continuous = store, task, None
        self.events: list[str] = []

    def event(self, level: str, message: str) -> None:
        self.events.append(message)
        self.store.save_task(self.task)


def spec(**over: Any) -> dict[str, Any]:
    return {"TaskId": "task-1", "ContinuousSync": True, "RoundIntervalSeconds": 60, "ReadLimitKBps": None, **over}


def test_set_rounds_live_and_kept_for_a_restart(tmp_path: Path) -> None:
    store = AgentStore(tmp_path)
    agent = Agent(store, TaskRecord("task-1", spec(), "syncing"))
    cc = ContinuousControl(interval=60.0)
    agent.continuous = cc
    msg = continuous.set_rounds(agent.task, agent.continuous, 5, 2048, "migratectl", agent.event)
    assert msg == "task task-1: round interval 60 -> 5 s, source read limit unlimited -> 2.0 MiB/s (by migratectl)"
    assert (cc.interval, cc.read_limit, cc.sync.read_limit) == (5.0, 2 << 20, 2 << 20)
    assert agent.events == [msg.removeprefix("task task-1: ")]

    # what a restarted daemon reads: the change wins over the spec, also over a spec the console sends again
    again = store.load_task()
    assert again is not None and continuous.settings(again) == (5.0, 2 << 20)
    again.spec = spec(RoundIntervalSeconds=60)
    assert continuous._options(again).interval == 5.0 and continuous._options(again).read_limit == 2 << 20
    p = TaskProgress(task_id="task-1", state="syncing")
    continuous.fill_settings(p, again)
    assert rounds_settings_line(p) == "a round every 5 s, source read limit 2.0 MiB/s"

    agent.task = again
    continuous.set_rounds(agent.task, agent.continuous, None, 0, "console", agent.event)  # 0 = unlimited
    assert continuous.settings(store.load_task()) == (5.0, None)  # type: ignore[arg-type]
    assert cc.read_limit is None and cc.interval == 5.0


def test_set_rounds_during_the_final_pass_keeps_it_unlimited(tmp_path: Path) -> None:
    agent = Agent(AgentStore(tmp_path), TaskRecord("task-1", spec(), "verifying"))
    cc = ContinuousControl(interval=60.0)
    agent.continuous = cc
    continuous.set_rounds(agent.task, agent.continuous, None, 100, "console", agent.event)
    assert cc.sync.read_limit is None, "the final pass runs while the source is quiesced: never limited"
    assert continuous.settings(agent.task) == (60.0, 100 << 10), "kept for a round after a failed cutover"


@pytest.mark.parametrize("task, args, error, words", [
    (None, (5, None), StateError, "no task on this agent"),
    (TaskRecord("task-1", {"TaskId": "task-1"}, "transferring"), (5, None), StateError,
     "task task-1 is not a continuous task (created without ContinuousSync)"),
    (TaskRecord("task-1", spec(), "success"), (5, None), StateError, "task task-1 is success; nothing to change"),
    (TaskRecord("task-1", spec(), "syncing"), (None, None), UsageError, "give a round interval and/or a read limit"),
    (TaskRecord("task-1", spec(), "syncing"), (-1, None), UsageError, "round interval must be 0-86400 seconds"),
    (TaskRecord("task-1", spec(), "syncing"), (None, -5), UsageError, "read limit must be 0-"),
])
def test_set_rounds_refusals(tmp_path: Path, task, args, error, words) -> None:
    agent = Agent(AgentStore(tmp_path), task)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        continuous.set_rounds(agent.task, agent.continuous, *args, "migratectl", agent.event)
    assert agent.events == []


@pytest.mark.parametrize("text, seconds", [("30", 30), ("30s", 30), ("2m", 120), ("1h", 3600), ("0.5", 0.5)])
def test_parse_seconds(text: str, seconds: float) -> None:
    assert ctl.parse_seconds(text) == seconds


@pytest.mark.parametrize("text, words", [("soon", "not a duration"), ("2d", "not a duration"),
                                         ("25h", "longer than a day"), ("-3", "not a duration")])
def test_parse_seconds_refusals(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=f"--round-interval: '{text}'.*{words}"):
        ctl.parse_seconds(text)


def test_read_limit_rate_errors_name_the_flag() -> None:
    with pytest.raises(UsageError, match="--read-limit: 'fast' is not a rate"):
        ctl.parse_rate("fast", "--read-limit")
    assert ctl.parse_rate("20MiB", "--read-limit") == 20 << 20


class RoundsBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float | None, int | None]] = []

    async def set_rounds(self, interval: float | None, read_limit_bps: int | None) -> dict[str, Any]:
        self.calls.append((interval, read_limit_bps))
        return {"message": "ok"}


@pytest.fixture
def sock() -> Iterator[str]:
    base = Path(tempfile.mkdtemp(prefix="migrated-rounds-", dir="/tmp"))
    yield str(base / "run" / "control.sock")
    shutil.rmtree(base, ignore_errors=True)


async def test_rounds_endpoint_checks_its_body(sock: str) -> None:
    backend = RoundsBackend()
    async with ControlServer(sock, None, backend):
        client = ControlClient(sock)
        await client.set_rounds(30, None)
        await client.set_rounds(None, 0)
        await client.set_rounds(1.5, 1 << 20)
        assert backend.calls == [(30, None), (None, 0), (1.5, 1 << 20)]
        for body, words in [({}, "either or both"), ({"interval": 3}, "unknown: interval"),
                            ({"interval_seconds": "30"}, "interval_seconds must be a number"),
                            ({"interval_seconds": 90000}, "0-86400"), ({"interval_seconds": True}, "must be a number"),
                            ({"read_limit_bps": -1}, "read_limit_bps must be a whole number"),
                            ({"read_limit_bps": 2.5}, "read_limit_bps must be a whole number")]:
            with pytest.raises(UsageError, match=words):
                await client.request("POST", "/v1/rounds", body)
        assert len(backend.calls) == 3, "nothing applied from a refused body"
