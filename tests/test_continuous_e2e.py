"""Continuous task end to end on loopback: a real console process, the daemon as a subprocess, a real
OpenSSH target, an image-file source that keeps changing.

create --continuous -> start -> full pass (transferring) -> rounds (syncing, the console and
`migratectl status` show the round, the bytes changed and the forecast) -> pause/resume while
syncing -> `migratectl cutover` -> verifying -> success with the downtime reported -> target ==
source as it was at the cutover (nothing writes it after the cutover request here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_world import World, ctl_status, make_world, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DISK_MIB = 8


@pytest.fixture
def world(tmp_path: Path, sshd) -> Iterator[World]:
    with make_world(tmp_path, sshd, DISK_MIB) as w:
        yield w


def scribble(path: Path, offset: int, n: int) -> bytes:
    data = os.urandom(n)
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)
    return data


def test_continuous_rounds_then_cutover(world: World) -> None:
    w = world
    source_id = w.register()
    daemon = w.daemon()
    try:
        w.wait_daemon_online()
        task_id = w.create_continuous_task(source_id, "rounds")
        # not syncing yet: the console refuses a cutover, and so does the daemon (no task yet)
        r = w.ctl("cutover")
        assert r.returncode == 2 and "no task on this agent" in r.stderr

        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "syncing" and (w.task(task_id)["Progress"]["Round"] or 0) >= 1,
                 "the full pass to finish and the rounds to begin")
        view = w.task(task_id)
        assert view["AllowedActions"] == ["pause", "cutover"]

        # the source changes while the rounds run: a round finds and ships it
        scribble(w.source, 3 << 20, 256 << 10)
        def changed_rounds() -> list[str]:
            evs = w.admin_call("DescribeTaskEvents", {"TaskId": task_id})["EventSet"]
            return [e["Message"] for e in evs if e["Message"].startswith("round ")
                    and not e["Message"].startswith("round 1:") and " 0 B changed" not in e["Message"]]
        found = wait_for(changed_rounds, "a round to find the 256 KiB written to the source")
        assert "KiB changed" in found[0], found
        local = ctl_status(w.socket)["task"]
        assert local["state"] == "syncing" and local["round"] >= 2 and local["lag_seconds"] is not None
        assert local["forecast_seconds"] is not None and local["advice"] in ("keep-going", "cutover")
        shown = w.ctl("status")
        assert shown.returncode == 0, shown.stderr
        assert "round " in shown.stdout
        assert "per round" in shown.stdout and "forecast of the final pass" in shown.stdout, shown.stdout
        assert w.task(task_id)["Progress"]["RoundChangedBytes"] is not None

        # pause while syncing -> paused at a checkpoint; start -> rounds again
        w.admin_call("PauseTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "paused", "paused")
        r = w.ctl("cutover")
        assert r.returncode == 2 and "cutover is allowed when syncing" in r.stderr
        w.admin_call("StartTask", {"TaskId": task_id})
        before = w.task(task_id)["Progress"]["Round"]
        scribble(w.source, 5 << 20, 64 << 10)
        wait_for(lambda: w.task(task_id)["State"] == "syncing" and w.task(task_id)["Progress"]["Round"] > before,
                 "the rounds to continue after the pause")

        r = w.ctl("cutover")
        assert r.returncode == 0, r.stderr
        assert "cutover after the round in progress" in r.stdout
        wait_for(lambda: w.task(task_id)["State"] == "success", "success after the cutover", timeout=120)
        final = w.task(task_id)
        assert final["Progress"]["DowntimeSeconds"] is not None and final["Progress"]["DowntimeSeconds"] >= 0
        assert w.target.read_bytes() == w.source.read_bytes()
        events = [e["Message"] for e in w.admin_call("DescribeTaskEvents", {"TaskId": task_id})["EventSet"]]
        assert any("syncing" in m for m in events), events
        assert any(m.startswith("cutover done: downtime") and "blocks verified" in m for m in events), events
        assert any("verifying" in m for m in events), events
        assert final["AllowedActions"] == ["delete"]
    finally:
        rc = daemon.stop()
    assert rc == 0, w.daemon_log()[-3000:]


def test_kill9_while_syncing_then_console_cutover(world: World) -> None:
    """kill -9 of the daemon during the rounds: restarted, it continues from the checkpoint into
    rounds again (no second full copy); the console's CutoverTask then finishes it."""
    w = world
    source_id = w.register()
    daemon = w.daemon()
    try:
        w.wait_daemon_online()
        task_id = w.create_continuous_task(source_id, "kill")
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "syncing" and (w.task(task_id)["Progress"]["Round"] or 0) >= 2,
                 "rounds")
        daemon.kill9()
        scribble(w.source, 1 << 20, 128 << 10)  # changed while the agent was dead
        daemon = w.daemon()
        wait_for(lambda: ((ctl_status(w.socket, allow_down=True).get("task") or {}).get("state") == "syncing"
                          and w.task(task_id)["State"] == "syncing"),
                 "the restarted daemon to be back in the rounds", timeout=90)
        def rounds_after_restart() -> list[str] | None:
            evs = [e["Message"] for e in w.admin_call("DescribeTaskEvents", {"TaskId": task_id})["EventSet"]]
            starts = [i for i, m in enumerate(evs) if "syncing -> starting" in m]
            after = [m for m in evs[starts[-1]:] if m.startswith("round ")] if starts else []
            return after if any("128.0 KiB changed" in m for m in after) else None
        after = wait_for(rounds_after_restart, "a round after the restart to find the 128 KiB written meanwhile")
        # the checkpoint held: the rounds after the restart sent what changed, not the 8 MiB disk again
        assert not any("MiB sent" in m for m in after), after

        cut = w.admin_call("CutoverTask", {"TaskId": task_id})
        assert cut["CommandId"]
        wait_for(lambda: w.task(task_id)["State"] == "success", "success after the console's cutover", timeout=120)
        assert w.target.read_bytes() == w.source.read_bytes()
        assert w.task(task_id)["Progress"]["DowntimeSeconds"] is not None
    finally:
        rc = daemon.stop()
    assert rc == 0, w.daemon_log()[-3000:]
