"""``migrated check-config`` (the unit's ExecStartPre) refuses what ``migrated run`` would refuse at
start: a registered source without its credentials file, a control-socket group that does not exist.
Both programs run as real subprocesses on configs in a temporary directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from migrated.agent.state import AgentStore, SourceRecord
from tests.conftest import cli, repo_env

NO_GROUP = "migrated-test-no-such-group"


def write_config(tmp_path: Path, *, group: str | None, registered: bool, credentials: bool) -> Path:
    state = tmp_path / "state"
    if registered:
        AgentStore(state).save_source(SourceRecord("src-1", "http://127.0.0.1:1"))
    creds = tmp_path / "credentials"
    if credentials:
        creds.write_text("secret_id: AKID1\nsecret_key: k\n")
        creds.chmod(0o600)
    cfg = tmp_path / "migrated.yaml"
    cfg.write_text(f"state_dir: {state}\ncredentials_file: {creds}\n"
                   f"control:\n  socket: {tmp_path / 'run' / 'control.sock'}\n"
                   f"  group: {group if group is not None else 'null'}\n")
    return cfg


def migrated(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli("migrated"), *args], capture_output=True, text=True, env=repo_env(), timeout=60)


@pytest.mark.parametrize("setup, words", [
    ({"group": NO_GROUP, "registered": False, "credentials": False},
     [f"control.group: group '{NO_GROUP}' does not exist; create it (groupadd {NO_GROUP})",
      "set control.group: null"]),
    ({"group": None, "registered": True, "credentials": False},
     ["credentials file", "not found: run migrated register"]),
])
def test_check_config_refuses_what_run_refuses(tmp_path: Path, setup: dict, words: list[str]) -> None:
    cfg = write_config(tmp_path, **setup)
    check = migrated("check-config", "--config", str(cfg))
    assert check.returncode == 2, (check.stdout, check.stderr)
    assert all(w in check.stderr for w in words), check.stderr
    assert "OK" not in check.stdout
    # `run` refuses the same config at start with the same words (and serves nothing)
    run = migrated("run", "--config", str(cfg), "--log-format", "console")
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert all(w in run.stderr for w in words), run.stderr
    assert not (tmp_path / "run" / "control.sock").exists()


@pytest.mark.parametrize("registered", [False, True])
def test_check_config_passes_a_config_run_would_start_with(tmp_path: Path, registered: bool) -> None:
    cfg = write_config(tmp_path, group=None, registered=registered, credentials=registered)
    check = migrated("check-config", "--config", str(cfg))
    assert check.returncode == 0, check.stderr
    assert "OK" in check.stdout
    assert ("registered as src-1" if registered else "not registered yet") in check.stdout
