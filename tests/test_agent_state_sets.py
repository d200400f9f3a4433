"""The agent's named state sets (``model/states.py``) mean what the state table says, and the agent
spells no tuple of states inline any more (it names a set)."""

from __future__ import annotations

import re

from migrated.model import states
from migrated.model.states import (
    ACTIVE,
    AGENT_BUSY,
    COPYING,
    RUNNABLE,
    UNFINISHED,
    Action,
    TaskState,
    allowed_actions,
    transition,
)
from tests.conftest import REPO

S = TaskState


def test_copying_is_where_a_pause_stops_the_engine_and_a_restart_reinitialises() -> None:
    assert {s for s in TaskState if Action.PAUSE in allowed_actions(s)} == COPYING
    for s in COPYING:
        assert transition(s, S.PAUSED) and transition(s, S.STARTING)  # both edges exist
    assert COPYING <= ACTIVE


def test_runnable_is_what_the_runner_picks_up() -> None:
    assert {S.STARTING, S.VERIFYING} == RUNNABLE and RUNNABLE <= ACTIVE
    assert all(transition(s, S.STARTING) for s in COPYING), "a restart puts a copying task where the runner runs it"


def test_agent_busy_is_the_old_condition() -> None:
    for s in TaskState:
        assert (s in AGENT_BUSY) == (not s.finished and s is not S.FAILED), s
    assert AGENT_BUSY < UNFINISHED


def test_the_sets_take_state_strings_too() -> None:
    assert "syncing" in COPYING and "paused" not in COPYING  # TaskProgress.state is a str


def test_no_inline_state_tuples_in_the_agent() -> None:
    member = r"(?:S|TaskState)\.[A-Z]+(?:\.value)?"
    inline = re.compile(rf"[(\[{{]\s*{member}\s*,\s*{member}")  # two or more states spelled together
    assert inline.search("if S(t.state) in (S.STARTING, S.TRANSFERRING, S.SYNCING, S.VERIFYING):")
    assert inline.search("p.state in (S.SYNCING.value, S.TRANSFERRING.value)")
    assert not inline.search('self.set_state(S.STARTING, "init", message)')
    for p in (REPO / "migrated" / "agent").rglob("*.py"):
        hits = [line.strip() for line in p.read_text().splitlines() if inline.search(line)]
        assert not hits, f"{p.name}: name a set in model/states.py: {hits}"


def test_can_transition_is_gone() -> None:
    assert not hasattr(states, "can_transition")
