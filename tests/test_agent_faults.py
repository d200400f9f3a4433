"""The daemon under faults: SIGTERM mid-transfer (checkpoint, STOPPING=1, exit within 10 s, resume),
systemd notify/watchdog, and a console that goes away while a transfer runs."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.agent_world import World, ctl_status, free_port, make_world, wait_for
from tests.conftest import cli, repo_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DISK_MIB = 16


@pytest.fixture
def world(tmp_path: Path, sshd) -> Iterator[World]:
    with make_world(tmp_path, sshd, DISK_MIB, console_port=free_port()) as w:
        yield w


def notify_messages(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    return out


def test_sigterm_checkpoints_notifies_and_resumes(world: World, tmp_path: Path) -> None:
    w = world
    source_id = w.register()
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    daemon = w.daemon(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000")
    try:
        w.wait_daemon_online()
        seen = notify_messages(notify)
        assert any(m.startswith("READY=1") for m in seen), seen
        task_id = w.create_task(source_id, 2048)
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: ctl_status(w.socket)["task"]["bytes_done"] > (2 << 20), "transfer progress")
        seen += notify_messages(notify)
        assert "WATCHDOG=1" in seen
        assert any(m.startswith("STATUS=") and task_id in m and "transferring" in m for m in seen), seen

        started = time.monotonic()
        assert daemon.stop(timeout=10) == 0
        assert time.monotonic() - started < 10
        seen = notify_messages(notify)
        assert any(m.startswith("STOPPING=1") for m in seen), seen
        assert not w.socket.exists()  # the socket is removed on a clean stop
        stopped_at = w.task(task_id)["Progress"]["BytesDone"]
        assert 0 < stopped_at < DISK_MIB << 20

        daemon = w.daemon()
        wait_for(lambda: w.task(task_id)["State"] == "success", "success after restart", timeout=120)
        assert w.target.read_bytes() == w.source.read_bytes()
        assert w.task(task_id)["Progress"]["Disks"][0]["BytesSent"] < DISK_MIB << 20
    finally:
        daemon.stop()
        notify.close()


def ctl(w: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli("migratectl"), "--socket", str(w.socket), *args], env=repo_env(),
                          capture_output=True, text=True, timeout=60)


def test_transfer_continues_while_the_console_is_away(world: World) -> None:
    w = world
    source_id = w.register()
    daemon = w.daemon()
    try:
        w.wait_daemon_online()
        task_id = w.create_task(source_id, 1024)
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "transferring", "transferring")
        w.console.kill9()

        # the daemon says why the console is away and keeps going
        status = wait_for(lambda: (s := ctl_status(w.socket))["console"]["online"] is False and s, "offline")
        assert status["console"]["last_error"]
        assert status["task"]["state"] == "transferring"
        # migratectl works without the console: pause, resume, a live bandwidth change
        r = ctl(w, "pause")
        assert r.returncode == 0 and "paused at" in r.stdout, r.stderr
        assert ctl_status(w.socket)["task"]["state"] == "paused"
        r = ctl(w, "pause")
        assert r.returncode == 2 and "cannot pause a task that is paused" in r.stderr
        r = ctl(w, "resume")
        assert r.returncode == 0, r.stderr
        assert ctl(w, "bandwidth", "unlimited").returncode == 0
        wait_for(lambda: ctl_status(w.socket)["task"]["state"] == "success", "local success", timeout=120)
        assert w.target.read_bytes() == w.source.read_bytes()
        assert "console heartbeat failed; retrying" in w.daemon_log()

        # the console comes back (same port, same database): it receives every state change in order
        w.console.start()
        wait_for(lambda: w.task(task_id)["State"] == "success", "the console to learn of the success")
        final = w.task(task_id)
        assert final["Progress"]["BytesDone"] == DISK_MIB << 20
        events = [e["Message"] for e in w.admin_call("DescribeTaskEvents", {"TaskId": task_id})["EventSet"]]
        changes = [m.split(":")[0] for m in events if " -> " in m]
        # every change the console missed arrives, in order
        order = ["transferring -> paused", "paused -> starting", "starting -> transferring",
                 "transferring -> verifying", "verifying -> success"]
        found = [c for c in changes if c in order]
        assert found[-5:] == order, changes
        wait_for(lambda: ctl_status(w.socket)["console"]["online"], "back online")
    finally:
        daemon.stop()


def test_wrong_pinned_host_key_fails_the_start_with_the_check(world: World) -> None:
    w = world
    # register asks for the credentials when there is no credentials file (stdin when not a terminal)
    creds = yaml.safe_load((w.tmp / "credentials").read_text())
    (w.tmp / "credentials").unlink()
    r = subprocess.run([*cli("migrated"), "register", "--config", str(w.config), "--console", w.url],
                       input=f"{creds['secret_id']}\n{creds['secret_key']}\n", env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((w.tmp / "credentials").stat().st_mode) == 0o600
    assert yaml.safe_load((w.tmp / "credentials").read_text()) == creds
    source_id = r.stdout.split("(source ")[1].split(")")[0]

    # `migrated check` compares the clock with the console's
    r = subprocess.run([*cli("migrated"), "check", "--json", "--config", str(w.config)], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["clock_skew"]["result"] == "pass", checks["clock_skew"]

    daemon = w.daemon()
    try:
        w.wait_daemon_online()
        # a second daemon on the same socket refuses to start
        second = subprocess.run([*cli("migrated"), "run", "--config", str(w.config)], env=repo_env(),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "another migrated daemon is running" in second.stderr
        task_id = w.admin_call("CreateTask", {
            "SourceId": source_id, "TaskName": "bad-key", "Region": "ap-guangzhou", "TargetType": "image",
            "ImageName": "x", "TargetSsh": f"{w.sshd.user}@127.0.0.1:{w.sshd.port}",
            "TargetHostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            "DiskMapping": [{"Source": str(w.source), "Target": str(w.target)}],
        })["TaskId"]
        w.admin_call("StartTask", {"TaskId": task_id})
        t = wait_for(lambda: (t := w.task(task_id))["State"] == "failed" and t, "the start to fail")
        assert "target_ssh" in t["Message"] and "host key" in t["Message"], t["Message"]
        assert not w.target.exists()
        local = ctl_status(w.socket)["task"]
        assert local["state"] == "failed" and "host key" in local["message"]
    finally:
        daemon.stop()


def test_a_dropped_ssh_connection_is_retried_from_the_checkpoint(world: World) -> None:
    w = world
    source_id = w.register()
    daemon = w.daemon()
    try:
        w.wait_daemon_online()
        task_id = w.create_task(source_id, 2048)
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: ctl_status(w.socket)["task"]["bytes_done"] > (3 << 20), "transfer progress")
        assert w.sshd.drop_connections() > 0  # the target's sshd kills our session mid-transfer
        wait_for(lambda: w.task(task_id)["State"] == "success", "success after the retry", timeout=120)
        assert w.target.read_bytes() == w.source.read_bytes()
        events = [e["Message"] for e in w.admin_call("DescribeTaskEvents", {"TaskId": task_id})["EventSet"]]
        assert any("retrying from the checkpoint" in m for m in events), events
        assert not any("-> failed" in m for m in events), events
    finally:
        daemon.stop()


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime not installed (apt-get install faketime)")
def test_a_skewed_clock_is_measured_named_and_survived(world: World) -> None:
    w = world
    source_id = w.register()
    # the daemon's clock runs 400 s ahead: past the console's signature window
    daemon = w.daemon(prefix=("faketime", "-f", "+400s"), FAKETIME_DONT_FAKE_MONOTONIC="1")
    try:
        status = wait_for(lambda: (s := ctl_status(w.socket, allow_down=True)).get("console", {}).get("online")
                          and s, "the heartbeat to be answered")
        assert -405 < status["console"]["clock_skew"] < -395
        wait_for(lambda: "clock differs from the console" in w.daemon_log(), "the reason in the log")
        r = subprocess.run([*cli("migratectl"), "--socket", str(w.socket), "check", "--json"], env=repo_env(),
                           capture_output=True, text=True, timeout=60)
        skew = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "clock_skew")
        assert skew["result"] == "warn" and "ahead of the console" in skew["message"], skew
        # and it still works: a task runs
        task_id = w.create_task(source_id, 0)
        w.admin_call("StartTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "success", "success", timeout=120)
    finally:
        daemon.stop()


def test_failed_then_retried_from_the_console(world: World) -> None:
    w = world
    source_id = w.register()
    daemon = w.daemon()
    try:
        w.wait_daemon_online()
        task_id = w.create_task(source_id, 0)
        hidden = w.source.with_suffix(".away")
        w.source.rename(hidden)  # the source disk is gone when the task starts
        w.admin_call("StartTask", {"TaskId": task_id})
        t = wait_for(lambda: (t := w.task(task_id))["State"] == "failed" and t, "the start to fail")
        assert "cannot open source disk" in t["Message"] and str(w.source) in t["Message"]
        assert "retry" in t["AllowedActions"]

        hidden.rename(w.source)
        w.admin_call("RetryTask", {"TaskId": task_id})
        wait_for(lambda: w.task(task_id)["State"] == "success", "success after the retry", timeout=120)
        assert w.target.read_bytes() == w.source.read_bytes()
        assert ctl_status(w.socket)["task"]["state"] == "success"
    finally:
        daemon.stop()
