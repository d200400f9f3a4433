"""The agent's modules import without a cycle: each one imports first in a fresh interpreter, the
import graph of ``migrated.agent`` (every import: module level, TYPE_CHECKING, inside functions)
has no cycle, and no task runner imports the daemon (the runners see it as a ``RunnerHost``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, repo_env

AGENT = REPO / "migrated" / "agent"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in AGENT.rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """Every ``migrated.agent`` module ``path`` imports, wherever the import statement sits."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in out if m in MODULES}


def test_the_module_list_covers_the_runners() -> None:
    assert {"migrated.agent.daemon", "migrated.agent.runners.driver", "migrated.agent.runners.oneshot",
            "migrated.agent.runners.continuous", "migrated.agent.runners.progress",
            "migrated.agent.runners.host"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_agent_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                       env=repo_env(), timeout=60)
    assert r.returncode == 0, r.stderr


def test_no_import_cycle_in_the_agent() -> None:
    graph = {module_name(p): imports_of(p) for p in AGENT.rglob("*.py")}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(m):], m]))
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, [*path, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_no_runner_imports_the_daemon() -> None:
    for p in (AGENT / "runners").rglob("*.py"):
        assert "migrated.agent.daemon" not in imports_of(p), f"{p.name} imports the daemon"


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The checker itself: a runner importing the daemon (which imports the runners) is a cycle."""
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from migrated.agent.daemon import Agent\n")
    assert imports_of(bad) == {"migrated.agent.daemon"}
    assert "migrated.agent.runners.driver" in imports_of(AGENT / "daemon.py")


def test_the_daemon_implements_the_runner_host(tmp_path: Path) -> None:
    """Every member of RunnerHost is a public member of the daemon's Agent."""
    from migrated.agent.daemon import Agent
    from migrated.agent.runners.host import RunnerHost
    from migrated.agent.state import AgentStore
    from migrated.config import Config

    members = {n for n in vars(RunnerHost) if not n.startswith("_")} | set(RunnerHost.__annotations__)
    assert {"cfg", "store", "set_state", "event", "save_task", "freeze_record", "clock_skew"} <= members
    agent = Agent(Config(state_dir=str(tmp_path)), None, AgentStore(tmp_path))
    assert [n for n in sorted(members) if not hasattr(agent, n)] == []
