"""bench/sync_bench.py measures what it claims (a smoke run at 16 MiB; no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

MiB = 1 << 20


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark starts sshd and a network namespace: root only")
def test_bench_counts_wire_bytes_and_verifies_targets(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench/sync_bench.py"), "--size", "16MiB", "--no-sparse", "--json",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["netns"] is True
    rows = {(r["phase"], r["tool"]): r for r in result["rows"]}
    full, cat = rows["full", "rsync --whole-file"], rows["full", "cat | ssh cat"]
    delta = rows["delta", "rsync --inplace"]
    for row in (full, cat, delta):
        assert row["status"] == "ok" and row["verified"], row
        assert row["sender_rss"] > 1 * MiB and row["recv_rss"] > 1 * MiB
    # the whole image crosses the wire for a full copy (zeros included, nothing compresses) ...
    assert 16 * MiB <= full["wire_bytes"] < 18 * MiB
    assert 16 * MiB <= cat["wire_bytes"] < 18 * MiB
    # ... and only about the rewritten 1 % for rsync's delta
    assert delta["wire_bytes"] < 2 * MiB
    assert (tmp_path / "results.md").read_text().startswith("| phase | tool |")
    migrated_rows = [r for r in result["rows"] if r["tool"].startswith("migrated")]
    assert all(r["status"] in ("ok", "not available") for r in migrated_rows), migrated_rows
