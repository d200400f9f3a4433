"""Shared test helpers. Subprocesses run this checkout's code (not an installed copy)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def repo_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that must import this checkout's ``migrated``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def cli(program: str) -> list[str]:
    """argv prefix for one of our programs, run from this checkout: cli("migrated") + ["sync", ...]."""
    modules = {
        "migrated": "migrated.cli.main",
        "migratectl": "migrated.cli.ctl",
        "migrate-console": "migrated.console.cli",
        "migrated-recv": "migrated.transport.recv",
    }
    return [sys.executable, "-m", modules[program]]


@pytest.fixture
def env() -> dict[str, str]:
    return repo_env()
pytest_plugins = ["tests.sshd"]
