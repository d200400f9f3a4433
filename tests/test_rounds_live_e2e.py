"""A continuous task created with the cutover options, its rounds changed live, end to end: a real
console process, the daemon as a subprocess, a real OpenSSH target, an image-file source.

The interval starts at 600 s, so after the full pass no round can happen within this test unless a
live change reaches the running rounds: the assertions count rounds, they never time them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_world import World, ctl_status, make_world, wait_for
from tests.test_continuous_e2e import scribble

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SECRET = "hunter2-do-not-log"


@pytest.fixture
def world(tmp_path: Path, sshd) -> Iterator[World]:
    with make_world(tmp_path, sshd, 8, agent_config={"allow_console_hooks": True}) as w:
        yield w


def rounds(w: World, task_id: str) -> int:
    return int(w.task(task_id)["Progress"]["Round"] or 0)


def test_cutover_options_and_live_round_changes(world: World) -> None:
    w = world
    source_id = w.register()
    daemon = w.daemon()
    pre, post = w.tmp / "pre-hook-ran", w.tmp / "post-hook-ran"
    try:
        w.wait_daemon_online()
        r = w.ctl("set", "--round-interval", "5")
        assert r.returncode == 2 and "no task on this agent" in r.stderr, r.stderr
        task_id = w.create_continuous_task(
            source_id, "live", RoundIntervalSeconds=600, Quiesce="hooks", FreezeBudgetSeconds=60,
            PreHook=f"PASSWORD={SECRET} true && touch {pre}", PostHook=f"touch {post} # {SECRET}")
        view = w.task(task_id)
        assert (view["Quiesce"], view["FreezeBudgetSeconds"], view["RoundIntervalSeconds"]) == ("hooks", 60, 600)
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "syncing" and rounds(w, task_id) >= 1,
                 "the full pass to finish and the rounds to begin")
        # both sides show the interval in effect
        local = ctl_status(w.socket)["task"]
        assert (local["round_interval_seconds"], local["read_limit_bps"]) == (600, None)
        wait_for(lambda: w.task(task_id)["Progress"]["RoundIntervalSeconds"] == 600, "the console to show 600 s")
        assert rounds(w, task_id) == 1, "a 600 s interval: no second round yet"

        # the console shortens the interval while the rounds wait: the wait ends, rounds follow
        res = w.admin_call("ModifyTaskRounds", {"TaskId": task_id, "RoundIntervalSeconds": 1})
        assert res["CommandId"] and res["RoundIntervalSeconds"] == 1
        scribble(w.source, 2 << 20, 64 << 10)
        wait_for(lambda: rounds(w, task_id) >= 3, "rounds at the console's new 1 s interval")
        wait_for(lambda: w.task(task_id)["Progress"]["RoundIntervalSeconds"] == 1, "the console to show 1 s")
        assert any(m.startswith("round interval 600 -> 1 s (by console)") for m in w.events(task_id))

        # migratectl: back to 600 s with a read limit; kept across a daemon restart
        r = w.ctl("set", "--round-interval", "10m", "--read-limit", "20MiB", "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert "round interval 1 -> 600 s" in out["message"] and "20.0 MiB/s" in out["message"], out
        shown = w.ctl("status")
        assert "a round every 600 s, source read limit 20.0 MiB/s" in shown.stdout, shown.stdout
        wait_for(lambda: (w.task(task_id)["Progress"]["RoundIntervalSeconds"],
                          w.task(task_id)["Progress"]["ReadLimitKBps"]) == (600, 20480),
                 "the console to show what migratectl set")
        assert daemon.stop() == 0, w.daemon_log()[-3000:]
        daemon = w.daemon()
        wait_for(lambda: (ctl_status(w.socket, allow_down=True).get("task") or {}).get("state") == "syncing",
                 "the restarted daemon back in the rounds", timeout=90)
        local = ctl_status(w.socket)["task"]
        assert (local["round_interval_seconds"], local["read_limit_bps"]) == (600, 20 << 20)
        before = rounds(w, task_id)

        # migratectl shortens it again: rounds go on
        r = w.ctl("set", "--round-interval", "1", "--read-limit", "unlimited")
        assert r.returncode == 0 and "round interval 600 -> 1 s" in r.stdout, r.stdout + r.stderr
        scribble(w.source, 4 << 20, 64 << 10)
        wait_for(lambda: rounds(w, task_id) >= before + 2, "rounds at migratectl's new 1 s interval")
        wait_for(lambda: (w.task(task_id)["Progress"]["RoundIntervalSeconds"],
                          w.task(task_id)["Progress"]["ReadLimitKBps"]) == (1, 0), "the console to show 1 s")

        w.admin_call("CutoverTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "success", "success after the cutover", timeout=120)
        assert pre.exists() and post.exists(), "both hooks ran on the source"
        assert w.target.read_bytes() == w.source.read_bytes()
        msgs = w.events(task_id)
        assert any(m.startswith("cutover: pre hook exited with status 0") for m in msgs), msgs
        assert any(m.startswith("cutover: post hook exited with status 0") for m in msgs), msgs
        r = w.ctl("set", "--round-interval", "5")
        assert r.returncode == 2 and "is success; nothing to change" in r.stderr, r.stderr
    finally:
        rc = daemon.stop()
    assert rc == 0, w.daemon_log()[-3000:]
    # hooks run as root and may hold passwords: never in the daemon's log or the task's events
    assert SECRET not in w.daemon_log()
    assert SECRET not in (w.tmp / "console.log").read_text(errors="replace")
    assert not any(SECRET in m for m in w.events(task_id))


def test_a_failing_hook_fails_the_cutover_without_telling_its_secret(world: World) -> None:
    """A pre hook that prints a password and fails: the cutover fails with the hook and its exit
    status named, the post hook still ran, and the password is nowhere the console or the log shows."""
    w = world
    source_id = w.register()
    daemon = w.daemon()
    post = w.tmp / "post-hook-ran"
    try:
        w.wait_daemon_online()
        task_id = w.create_continuous_task(
            source_id, "badhook", Quiesce="hooks",
            PreHook=f"echo 'login failed for {SECRET}' >&2; exit 3", PostHook=f"echo {SECRET}; touch {post}; exit 4")
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "syncing", "the rounds")
        w.admin_call("CutoverTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "failed", "the cutover to fail on its pre hook", timeout=120)
        view = w.task(task_id)
        assert view["Message"].startswith("cutover: pre hook exited with status 3 after"), view["Message"]
        assert "; the post hook failed too; the source is running" in view["Message"], view["Message"]
        assert post.exists(), "the post hook runs even when the pre hook failed"
        assert view["AllowedActions"] == ["start", "retry", "delete"]
    finally:
        rc = daemon.stop()
    assert rc == 0, w.daemon_log()[-3000:]
    assert SECRET not in w.daemon_log()
    assert SECRET not in (w.tmp / "console.log").read_text(errors="replace")
    shown = [view["Message"], *w.events(task_id)]
    assert not any(SECRET in m for m in shown), shown


def test_hooks_are_refused_unless_the_agent_allows_them(tmp_path: Path, sshd) -> None:
    """An agent with the default config (allow_console_hooks: false) fails a task that carries hooks
    at start, says how to allow them, and never runs the command."""
    with make_world(tmp_path, sshd, 4) as w:
        ran = w.tmp / "hook-ran"
        source_id = w.register()
        daemon = w.daemon()
        try:
            w.wait_daemon_online()
            task_id = w.create_continuous_task(source_id, "nohooks", Quiesce="hooks", PreHook=f"touch {ran}")
            w.admin_call("StartTask", {"TaskId": task_id})
            wait_for(lambda: w.task(task_id)["State"] == "failed", "the task to be refused")
            msg = w.task(task_id)["Message"]
            assert "does not run hooks from the console" in msg and "allow_console_hooks: true" in msg, msg
            assert not ran.exists()
        finally:
            assert daemon.stop() == 0, w.daemon_log()[-3000:]
