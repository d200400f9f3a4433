"""The README's first command, scripts/demo: console + daemon + SSH target on this machine;
the task succeeds and the image matches."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="scripts/demo starts its own sshd, which needs root")
def test_demo_agent_migrates_through_the_console(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = dict(os.environ, DEMO_SIZE="32MiB", DEMO_WORKDIR=str(work))
    run = subprocess.run([str(REPO / "scripts/demo")], env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "Import source server successfully (source src-" in run.stdout
    assert re.search(r"task task-\w+: success; sha256 matches the source: [0-9a-f]{64}", run.stdout), output[-3000:]
    assert (work / "target/disk.img").read_bytes() == (work / "source/disk.img").read_bytes()
    assert not (work / "run/control.sock").exists()  # the daemon was stopped cleanly
    assert not (work / "sshd/sshd.env").exists()
