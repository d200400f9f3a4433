"""The tool-mode demo works: scripts/demo-sync migrates a generated disk over a real sshd."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="scripts/demo-sync starts its own sshd, which needs root")
def test_demo_migrates_and_the_image_matches(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = dict(os.environ, DEMO_SIZE="64MiB", DEMO_WORKDIR=str(work))
    run = subprocess.run([str(REPO / "scripts/demo-sync")], env=env, capture_output=True, text=True, timeout=600,
                         check=False)  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    match = re.search(r"sha256 matches the source: ([0-9a-f]{64})", run.stdout)
    assert match, output[-3000:]
    source, target = work / "source/disk.img", work / "target/disk.img"
    assert f"migrated image:  {target}" in run.stdout
    # check it ourselves too: the target exists, equals the (modified) source, and sshd is gone
    assert target.read_bytes() == source.read_bytes()
    assert not (work / "sshd/sshd.env").exists()
    assert "full copy" in run.stdout and "only the changed blocks move" in run.stdout
