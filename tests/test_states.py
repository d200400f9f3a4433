import re
from pathlib import Path

import pytest

from migrated.model.states import (
    ACTIVE,
    AGENT_HOLDS,
    AGENT_KEEPS,
    FINISHED,
    NOT_DELETED,
    NOT_STARTED,
    UNFINISHED,
    Action,
    ActionDenied,
    IllegalTransition,
    TaskState,
    allowed_actions,
    check_action,
    transition,
    values,
)

S = TaskState


@pytest.mark.parametrize(
    ("old", "new"),
    [(S.CREATED, S.STARTING), (S.TRANSFERRING, S.PAUSED), (S.PAUSED, S.STARTING), (S.FAILED, S.STARTING),
     (S.VERIFYING, S.SUCCESS), (S.FAILED, S.DELETED)],
)
def test_legal_edges(old, new):
    assert transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [(S.SUCCESS, S.STARTING), (S.DELETED, S.STARTING), (S.CREATED, S.SUCCESS), (S.TRANSFERRING, S.DELETED)],
)
def test_illegal_edges(old, new):
    with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value}"):
        transition(old, new)


def test_pause_only_while_transferring_or_syncing():
    assert allowed_actions(S.TRANSFERRING) == [Action.PAUSE]
    assert allowed_actions(S.SYNCING) == [Action.PAUSE, Action.CUTOVER]
    with pytest.raises(ActionDenied, match="pause is allowed when syncing, transferring"):
        check_action(Action.PAUSE, S.PAUSED)


@pytest.mark.parametrize("state", [s for s in S if s is not S.SYNCING])
def test_cutover_only_while_syncing(state):
    with pytest.raises(ActionDenied, match="cutover is allowed when syncing"):
        check_action(Action.CUTOVER, state)


def test_continuous_path():
    for old, new in [(S.STARTING, S.TRANSFERRING), (S.TRANSFERRING, S.SYNCING), (S.SYNCING, S.VERIFYING),
                     (S.VERIFYING, S.SUCCESS), (S.SYNCING, S.PAUSED), (S.PAUSED, S.STARTING)]:
        assert transition(old, new)


def test_delete_refused_while_running_names_allowed_states():
    with pytest.raises(ActionDenied) as e:
        check_action(Action.DELETE, S.TRANSFERRING)
    assert "created, failed, paused, scheduled, success" in str(e.value)


# ---------------------------------------------------------------- the docs' tables match the state table

_DOC = Path(__file__).resolve().parent.parent / "docs" / "console-api.md"
_API_ACTION = {"StartTask": Action.START, "RetryTask": Action.RETRY, "PauseTask": Action.PAUSE,
               "DeleteTask": Action.DELETE, "CutoverTask": Action.CUTOVER}


def _state_list(text: str) -> frozenset[TaskState]:
    return frozenset(TaskState(w) for w in re.findall(r"[a-z]+", text.replace("*", "")))


def _doc_rows() -> list[tuple[str, str, str]]:
    """Every ``| `Action...` | allowed when | effect |`` row of docs/console-api.md."""
    rows = []
    for line in _DOC.read_text().splitlines():
        m = re.match(r"\|\s*`(\w+)`[^|]*\|([^|]*)\|(.*)\|\s*$", line)
        if m:
            rows.append((m.group(1), m.group(2).strip(), m.group(3).strip()))
    return rows


def test_docs_action_table_matches_the_state_table():
    """docs/console-api.md said PauseTask needs *transferring*; the server also allows *syncing*."""
    seen = set()
    for name, allowed, _ in _doc_rows():
        if name in _API_ACTION:
            action = _API_ACTION[name]
            want = frozenset(s for s in TaskState if action in allowed_actions(s))
            assert _state_list(allowed) == want, f"docs/console-api.md: {name} allowed when {allowed!r}"
            seen.add(name)
    assert seen == set(_API_ACTION), "every action has a row"


def test_docs_setting_changes_match_the_named_sets():
    rows = {name: (allowed, effect) for name, allowed, effect in _doc_rows()}
    allowed, effect = rows["ModifyTaskBandwidth"]
    assert allowed == "any state but " + ", ".join(values(FINISHED))
    sent_while = re.search(r"\(([^)]*)\)", effect)
    assert sent_while is not None and _state_list(sent_while.group(1)) == AGENT_HOLDS
    rounds = re.search(r"while an agent holds the task \(([^)]*)\)", " ".join(_DOC.read_text().split()))
    assert rounds is not None and _state_list(rounds.group(1)) == AGENT_KEEPS
    deleted = re.search(r"\(([^)]*)\)", rows["DeleteTask"][1])
    deletable = {s for s in TaskState if Action.DELETE in allowed_actions(s)}
    assert deleted is not None and _state_list(deleted.group(1)) == deletable - NOT_STARTED


def test_named_sets():
    assert {s for s in TaskState if s.finished} == FINISHED
    assert {s for s in TaskState if s.active} == ACTIVE
    assert set(TaskState) == UNFINISHED | FINISHED and not UNFINISHED & FINISHED
    assert ACTIVE < AGENT_HOLDS < AGENT_KEEPS < UNFINISHED
    assert NOT_STARTED | {S.DELETED} == set(TaskState) - AGENT_KEEPS - {S.SUCCESS}
    assert set(TaskState) - {S.DELETED} == NOT_DELETED
    assert values(FINISHED) == ("success", "deleted"), "in TaskState's order"
