"""``migrated sync --bwlimit`` / ``--read-limit`` read the units of migrated.model.bandwidth (a bare
number is still bytes/s) and refuse anything else before any connection is tried."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import cli, repo_env


def sync(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "src.img"
    src.write_bytes(b"\0" * 4096)
    return subprocess.run([*cli("migrated"), "sync", str(src), "root@127.0.0.1:1:/nowhere/x.img",
                           "--known-hosts", str(tmp_path / "no_known_hosts"), *extra],
                          env=repo_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("flag", "value"), [("--bwlimit", "20Q"), ("--bwlimit", "fast"),
                                             ("--read-limit", "1,5M")])
def test_unreadable_limits_are_refused_first(tmp_path: Path, flag: str, value: str) -> None:
    extra = ("--continuous",) if flag == "--read-limit" else ()
    r = sync(tmp_path, flag, value, *extra)
    assert r.returncode == 2, r.stderr
    assert f"{flag}: '{value}' is not a rate" in r.stderr and "160Mbit" in r.stderr


@pytest.mark.parametrize("value", ["160Mbit", "20MiB/s", "20480K", "4194304", "0", "unlimited"])
def test_limits_in_any_unit_get_past_the_option_check(tmp_path: Path, value: str) -> None:
    r = sync(tmp_path, "--bwlimit", value)
    assert r.returncode != 0 and "--bwlimit" not in r.stderr, r.stderr  # it fails later, at the target
