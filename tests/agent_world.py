"""Helpers for the agent's end-to-end tests: a console process, an OpenSSH target, the daemon as a
subprocess, a source disk image, and small clients for the console API and migratectl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from migrated.console.client import ConsoleClient
from tests.conftest import cli, repo_env
from tests.console_proc import ConsoleProcess, run_cli
from tests.console_proc import write_config as write_console_config


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 60.0, step: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """``migrated run`` as a subprocess (logs appended to ``log``)."""

    def __init__(self, config: Path, log: Path, prefix: tuple[str, ...] = (), **env: str) -> None:
        self.config, self.log, self.env, self.prefix = config, log, env, prefix
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*self.prefix, *cli("migrated"), "run", "--config", str(self.config),
                                          "--log-level", "debug"], stdout=log, stderr=log,
                                         env=repo_env(MIGRATED_RECV_COMMAND="upload", **self.env),
                                         start_new_session=True)
        return self

    # Signals go to the daemon's whole process group, as systemd signals the unit's cgroup: a
    # ``prefix`` such as faketime forks the daemon as its child, and signalling only the wrapper
    # would leave the daemon running after the test.
    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):  # nothing of the group may outlive the test
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


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


@dataclass
class World:
    tmp: Path
    console: ConsoleProcess
    console_config: Path
    admin: dict[str, str]
    sshd: Any
    agent_key: dict[str, str]
    config: Path
    socket: Path
    source: Path
    target: Path

    @property
    def url(self) -> str:
        return self.console.url

    def admin_call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return call(self.url, self.admin, action, params)

    def register(self) -> str:
        r = subprocess.run([*cli("migrated"), "register", "--config", str(self.config), "--console", self.url],
                           env=repo_env(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "Import source server successfully (source src-" in r.stdout
        assert self.agent_key["SecretKey"] not in r.stdout + r.stderr
        return r.stdout.split("(source ")[1].split(")")[0]

    def daemon(self, prefix: tuple[str, ...] = (), **env: str) -> Daemon:
        return Daemon(self.config, self.tmp / "daemon.log", prefix, **env).start()

    def wait_daemon_online(self) -> None:
        wait_for(lambda: (ctl_status(self.socket, allow_down=True).get("console") or {}).get("online"),
                 "the daemon to be up and its heartbeat answered")

    def create_task(self, source_id: str, limit_kbps: int, checksum: bool = True) -> str:
        task = self.admin_call("CreateTask", {
            "SourceId": source_id, "TaskName": "e2e", "Region": "ap-guangzhou",
            "TargetType": "image", "ImageName": "e2e-image",
            "TargetSsh": f"{self.sshd.user}@127.0.0.1:{self.sshd.port}", "TargetHostKey": self.sshd.host_key_line,
            "BandwidthLimitKBps": limit_kbps, "Checksum": checksum,
            "DiskMapping": [{"Source": str(self.source), "Target": str(self.target)}],
        })
        return task["TaskId"]

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.console.stop()

    def create_continuous_task(self, source_id: str, name: str, **extra: Any) -> str:
        """A ContinuousSync task of this world's disk onto its target, rounds 1 s apart unless
        ``extra`` says otherwise (any CreateTask parameter)."""
        return self.admin_call("CreateTask", {
            "SourceId": source_id, "TaskName": name, "Region": "ap-guangzhou", "TargetType": "image",
            "ImageName": f"{name}-image", "TargetSsh": f"{self.sshd.user}@127.0.0.1:{self.sshd.port}",
            "TargetHostKey": self.sshd.host_key_line, "ContinuousSync": True, "RoundIntervalSeconds": 1,
            "DiskMapping": [{"Source": str(self.source), "Target": str(self.target)}], **extra,
        })["TaskId"]

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``migratectl --socket SOCKET ARGS`` as a subprocess."""
        return subprocess.run([*cli("migratectl"), "--socket", str(self.socket), *args],
                              env=repo_env(COLUMNS="200"), capture_output=True, text=True, timeout=60)

    def events(self, task_id: str) -> list[str]:
        """The task's event messages as the console shows them."""
        return [e["Message"] for e in
                self.admin_call("DescribeTaskEvents", {"TaskId": task_id, "Limit": 1000})["EventSet"]]

    def task(self, task_id: str) -> dict[str, Any]:
        return self.admin_call("DescribeTasks", {"TaskIds": [task_id]})["TaskSet"][0]

    def daemon_log(self) -> str:
        p = self.tmp / "daemon.log"
        return p.read_text(errors="replace") if p.exists() else ""


def make_world(tmp: Path, sshd: Any, disk_mib: int, console_port: int = 0,
               agent_config: dict[str, Any] | None = None, *, source: Path | None = None) -> World:
    """A console process, an agent key and the daemon's config (the daemon is not started).
    ``source``: an existing disk to migrate (a loop device); by default a ``disk_mib`` MiB image of
    random data with a zero hole. ``agent_config``: keys that replace the daemon config's."""
    db = tmp / "console.db"
    ccfg = write_console_config(tmp, db, listen={"host": "127.0.0.1", "port": console_port},
                                agents={"heartbeat_interval_seconds": 1, "offline_after_missed": 3,
                                        "command_visibility_seconds": 5})
    console = ConsoleProcess(ccfg, tmp / "console.log").start()
    r = run_cli("keys", "create", "--local", "--config", str(ccfg), "--role", "admin", "--name", "e2e", "--json")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    admin = json.loads(out if out.startswith("{") else out[out.index("\n{") + 1:])
    agent_key = call(console.url, admin, "CreateKey", {"Role": "agent", "Name": "fleet"})

    src = source
    if src is None:  # the source disk: incompressible data with a zero hole
        src = tmp / "source.img"
        data = bytearray(os.urandom(disk_mib << 20))
        data[len(data) // 3:len(data) // 3 + (2 << 20)] = bytes(2 << 20)
        src.write_bytes(data)
    dst = tmp / "target" / "disk.img"
    dst.parent.mkdir()

    creds = tmp / "credentials"
    creds.write_text(yaml.safe_dump({"secret_id": agent_key["SecretId"], "secret_key": agent_key["SecretKey"]}))
    creds.chmod(0o600)
    sock = tmp / "run" / "control.sock"
    cfg = tmp / "migrated.yaml"
    cfg.write_text(yaml.safe_dump({
        "console": {"endpoint": console.url}, "credentials_file": str(creds),
        "state_dir": str(tmp / "state"),
        "control": {"socket": str(sock), "group": None}, "log": {"format": "json"},
        "heartbeat": {"interval": 1, "first_jitter": 0.2}, "poll": {"wait": 2, "min_cycle": 0.1},
        "backoff": {"initial": 0.2, "max": 2}, "progress": {"interval": 0.5},
        "ignore_checks": ["virtio_drivers"], "ssh_identity": str(sshd.client_key), "disks": [str(src)],
        **(agent_config or {}),
    }))
    return World(tmp, console, ccfg, admin, sshd, agent_key, cfg, sock, src, dst)
