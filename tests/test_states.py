import pytest

from migrated.model.states import (
    Action,
    ActionDenied,
    IllegalTransition,
    TaskState,
    allowed_actions,
    check_action,
    transition,
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
