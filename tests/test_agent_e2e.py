"""End to end on loopback: a real console process, the daemon as a subprocess, a real OpenSSH target.

register -> online -> create task -> start -> pause (state and bytes stop) -> resume ->
kill -9 the daemon mid-transfer -> restart (continues from the checkpoint) -> success ->
target byte-identical; the console and `migratectl status --json` agree.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("migrated.console.client")
pytest.importorskip("migrated.engine.session")

from migrated.console.client import ConsoleClient
from tests.console_proc import ConsoleProcess, run_cli
from tests.console_proc import write_config as write_console_config

from tests.conftest import cli, repo_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DISK_MIB = 24
LIMIT_KBPS = 3072  # 3 MiB/s: the transfer takes ~8 s, long enough to pause and to kill


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 60.0, step: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*cli("migrated"), "run", "--config", str(self.config),
                                          "--log-level", "debug"], stdout=log, stderr=log,
                                         env=repo_env(MIGRATED_RECV_COMMAND="upload"))
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


@pytest.fixture
def world(tmp_path: Path, sshd) -> Iterator[dict[str, Any]]:
    db = tmp_path / "console.db"
    ccfg = write_console_config(tmp_path, db, agents={"heartbeat_interval_seconds": 1, "offline_after_missed": 3,
                                                      "command_visibility_seconds": 5})
    console = ConsoleProcess(ccfg, tmp_path / "console.log").start()
    try:
        r = run_cli("keys", "create", "--local", "--config", str(ccfg), "--role", "admin", "--name", "e2e",
                    "--json")
        assert r.returncode == 0, r.stderr
        admin = json.loads(r.stdout[r.stdout.index("\n{") + 1:] if not r.stdout.startswith("{") else r.stdout)
        yield {"tmp": tmp_path, "console": console, "admin": admin, "sshd": sshd}
    finally:
        console.stop()


def call(url: str, key: dict[str, str], action: str, params: dict[str, Any]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with ConsoleClient(url, key["SecretId"], key["SecretKey"]) as c:
            return await c.call(action, params)
    return asyncio.run(go())


def ctl_status(socket_path: Path, *, allow_down: bool = False) -> dict[str, Any]:
    r = subprocess.run([*cli("migratectl"), "--socket", str(socket_path), "status", "--json"], env=repo_env(),
                       capture_output=True, text=True, timeout=30)
    if allow_down and r.returncode == 7:
        return {}
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_register_run_pause_resume_kill9_success(world: dict[str, Any]) -> None:
    tmp: Path = world["tmp"]
    url = world["console"].url
    admin = world["admin"]
    sshd = world["sshd"]

    # the source disk: incompressible data with a zero hole in the middle
    src = tmp / "source.img"
    data = bytearray(os.urandom(DISK_MIB << 20))
    data[8 << 20:10 << 20] = bytes(2 << 20)
    src.write_bytes(data)
    dst = tmp / "target" / "disk.img"
    dst.parent.mkdir()

    agent_key = call(url, admin, "CreateKey", {"Role": "agent", "Name": "fleet"})
    creds = tmp / "credentials"
    creds.write_text(yaml.safe_dump({"secret_id": agent_key["SecretId"], "secret_key": agent_key["SecretKey"]}))
    creds.chmod(0o600)
    sock = tmp / "run" / "control.sock"
    cfg = tmp / "migrated.yaml"
    cfg.write_text(yaml.safe_dump({
        "console": {"endpoint": url}, "credentials_file": str(creds), "state_dir": str(tmp / "state"),
        "control": {"socket": str(sock), "group": None}, "log": {"format": "json"},
        "heartbeat": {"interval": 1, "first_jitter": 0.2}, "poll": {"wait": 2, "min_cycle": 0.1},
        "backoff": {"initial": 0.2, "max": 2}, "progress": {"interval": 0.5},
        "ignore_checks": ["virtio_drivers"], "ssh_identity": str(sshd.client_key), "disks": [str(src)],
    }))

    # register: reads the credentials file, prints the source ID
    r = subprocess.run([*cli("migrated"), "register", "--config", str(cfg), "--console", url], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Import source server successfully (source src-" in r.stdout
    source_id = r.stdout.split("(source ")[1].split(")")[0]
    assert agent_key["SecretKey"] not in r.stdout + r.stderr

    daemon = Daemon(cfg, tmp / "daemon.log").start()
    try:
        def source_status() -> str:
            rows = call(url, admin, "DescribeSources", {})["SourceSet"]
            return next(s["Status"] for s in rows if s["SourceId"] == source_id)
        wait_for(lambda: (ctl_status(sock, allow_down=True).get("console") or {}).get("online"),
                 "the daemon to be up and its heartbeat answered")
        assert source_status() == "online"

        task = call(url, admin, "CreateTask", {
            "SourceId": source_id, "TaskName": "e2e", "Region": "ap-guangzhou",
            "TargetType": "image", "ImageName": "e2e-image",
            "TargetSsh": f"{sshd.user}@127.0.0.1:{sshd.port}", "TargetHostKey": sshd.host_key_line,
            "BandwidthLimitKBps": LIMIT_KBPS, "Checksum": True,
            "DiskMapping": [{"Source": str(src), "Target": str(dst)}],
        })
        task_id = task["TaskId"]

        def console_task() -> dict[str, Any]:
            return call(url, admin, "DescribeTasks", {"TaskIds": [task_id]})["TaskSet"][0]

        call(url, admin, "StartTask", {"TaskId": task_id})
        wait_for(lambda: console_task()["State"] == "transferring"
                 and console_task()["Progress"]["BytesDone"] > 0, "the transfer to start")

        # pause: the console shows paused, and neither the console nor migratectl see bytes move
        call(url, admin, "PauseTask", {"TaskId": task_id})
        wait_for(lambda: console_task()["State"] == "paused", "paused")
        paused_at = console_task()["Progress"]["BytesDone"]
        target_size = dst.stat().st_size if dst.exists() else 0
        local = ctl_status(sock)["task"]
        assert local["state"] == "paused"
        time.sleep(2)
        assert console_task()["Progress"]["BytesDone"] == paused_at
        assert ctl_status(sock)["task"]["bytes_done"] == local["bytes_done"]
        assert (dst.stat().st_size if dst.exists() else 0) == target_size
        assert 0 < paused_at < DISK_MIB << 20

        # resume, then kill -9 mid-transfer
        call(url, admin, "StartTask", {"TaskId": task_id})
        wait_for(lambda: console_task()["State"] == "transferring"
                 and console_task()["Progress"]["BytesDone"] > paused_at, "the transfer to resume")
        wait_for(lambda: ctl_status(sock)["task"]["bytes_done"] > paused_at + (2 << 20), "more progress")
        before_kill = ctl_status(sock)["task"]["bytes_done"]
        assert before_kill < DISK_MIB << 20, "the transfer finished before the kill; slow it down"
        daemon.kill9()

        # restart: continues from the checkpoint, ends in success
        daemon = Daemon(cfg, tmp / "daemon.log").start()
        wait_for(lambda: console_task()["State"] == "success", "success", timeout=120)
        final = console_task()
        assert final["Progress"]["BytesDone"] == final["Progress"]["BytesTotal"] == DISK_MIB << 20
        # the last run sent only what the checkpoint did not hold
        assert final["Progress"]["Disks"][0]["BytesSent"] < (DISK_MIB << 20) - (4 << 20)
        assert dst.read_bytes() == src.read_bytes()

        local = wait_for(lambda: (s := ctl_status(sock))["task"] and s["task"]["state"] == "success" and s,
                         "migratectl to show success")
        assert local["task"]["bytes_done"] == final["Progress"]["BytesDone"]
        assert local["task"]["task_id"] == task_id and local["source_id"] == source_id
        events = call(url, admin, "DescribeTaskEvents", {"TaskId": task_id})["EventSet"]
        assert any("restarted" in e["Message"] for e in events), events
        assert daemon.stop() == 0
    finally:
        daemon.stop()
        log = (tmp / "daemon.log").read_text(errors="replace")
        assert agent_key["SecretKey"] not in log
