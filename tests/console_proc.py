"""A console run as a real subprocess (``migrate-console serve``) that tests can kill -9."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import cli, repo_env


def write_config(tmp_path: Path, db: Path, **sections: dict[str, Any]) -> Path:
    data: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "storage": {"path": str(db), "heartbeat_flush_seconds": 0.2},
        "log": {"format": "json"},
    }
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    p = tmp_path / "console.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


class ConsoleProcess:
    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 20) -> ConsoleProcess:
        log = open(self.log_path, "a")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen([*cli("migrate-console"), "serve", "--config", str(self.config)],
                                     stdout=subprocess.PIPE, stderr=log, text=True, env=repo_env())
        log.close()
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening on (https?://\S+)", line)
            if m:
                self.url = m.group(1)
                return self
        self.proc.kill()
        self.proc.wait(5)
        raise AssertionError(f"console did not start: {self.log_path.read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli("migrate-console"), *args], capture_output=True, text=True,
                          env=env or repo_env(), input=input, timeout=60)


def local_admin_key(config: Path, save: Path) -> dict[str, Any]:
    """``migrate-console keys create --local --role admin --save SAVE``: the admin credentials file it
    wrote (endpoint, secret_id, secret_key), for a console that is not running yet."""
    r = run_cli("keys", "create", "--local", "--config", str(config), "--role", "admin", "--name", "ops",
                "--save", str(save))
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(save.read_text())
