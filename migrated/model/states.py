"""Task states and the actions a person may take in each. Pure: imports nothing of ours.

The console and the agent both check every transition here, so a task can
only move along the edges listed in ``_EDGES``; anything else is a bug or a
stale command and raises :class:`IllegalTransition`.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    CREATED = "created"
    SCHEDULED = "scheduled"
    STARTING = "starting"
    TRANSFERRING = "transferring"
    SYNCING = "syncing"  # continuous tasks: full pass done, incremental rounds until a cutover
    PAUSED = "paused"
    VERIFYING = "verifying"
    SUCCESS = "success"
    FAILED = "failed"
    DELETED = "deleted"

    @property
    def finished(self) -> bool:
        """No agent work remains (the task may still be deleted)."""
        return self in FINISHED

    @property
    def active(self) -> bool:
        """An agent is (or should be) working on it right now."""
        return self in ACTIVE


class Action(StrEnum):
    START = "start"
    PAUSE = "pause"
    RETRY = "retry"
    DELETE = "delete"
    CUTOVER = "cutover"  # continuous tasks: quiesce the source for the final pass, verify, finish


S = TaskState

# ---- named sets of states (use these instead of spelling a tuple of states at the call site)

FINISHED: frozenset[TaskState] = frozenset({S.SUCCESS, S.DELETED})  # no agent work remains
UNFINISHED: frozenset[TaskState] = frozenset(TaskState) - FINISHED  # at most one per source
ACTIVE: frozenset[TaskState] = frozenset({S.STARTING, S.TRANSFERRING, S.SYNCING, S.VERIFYING})  # an agent works on it
NOT_STARTED: frozenset[TaskState] = frozenset({S.CREATED, S.SCHEDULED})  # nothing on the source or target touched
# the agent holds the task (running or paused): a live setting change (bandwidth) is sent to it at once
AGENT_HOLDS: frozenset[TaskState] = ACTIVE | {S.PAUSED}
# ... or keeps its record for a retry: a setting the agent must keep across a retry (rounds) is sent too
AGENT_KEEPS: frozenset[TaskState] = AGENT_HOLDS | {S.FAILED}
NOT_DELETED: frozenset[TaskState] = frozenset(TaskState) - {S.DELETED}  # what the task lists show
# the agent's side:
# the engine is copying blocks: a pause stops it at a checkpoint, an agent restart re-initialises (-> starting)
COPYING: frozenset[TaskState] = frozenset({S.TRANSFERRING, S.SYNCING})
# the agent's runner (re)runs a task it holds in these (verifying: a cutover asked for before a restart)
RUNNABLE: frozenset[TaskState] = frozenset({S.STARTING, S.VERIFYING})
# the agent holds it and would lose it: a start of another task is refused (a failed one may be replaced)
AGENT_BUSY: frozenset[TaskState] = UNFINISHED - {S.FAILED}


def values(states: frozenset[TaskState]) -> tuple[str, ...]:
    """The states' values in the order of :class:`TaskState` (for storage filters and messages)."""
    return tuple(s.value for s in TaskState if s in states)


# (from, to) -> why the edge exists
_EDGES: dict[tuple[TaskState, TaskState], str] = {
    (S.CREATED, S.SCHEDULED): "a start time was set; the scheduler will start it",
    (S.SCHEDULED, S.CREATED): "the schedule was cleared",
    (S.CREATED, S.STARTING): "start by a person",
    (S.SCHEDULED, S.STARTING): "the scheduled time came, or a person started it early",
    (S.PAUSED, S.STARTING): "start/resume after a pause: continues from the checkpoint",
    (S.FAILED, S.STARTING): "retry after a failure: continues from the checkpoint",
    (S.STARTING, S.TRANSFERRING): "target initialised, receiver running, capacity checked",
    (S.TRANSFERRING, S.PAUSED): "pause: flushed and checkpointed",
    (S.TRANSFERRING, S.STARTING): "the agent restarted or reconnected mid-transfer and re-initialises",
    (S.TRANSFERRING, S.VERIFYING): "all blocks durable; checksum verification asked for",
    (S.TRANSFERRING, S.SUCCESS): "all blocks durable; no verification asked for",
    (S.VERIFYING, S.SUCCESS): "every target block matches the source",
    (S.TRANSFERRING, S.SYNCING): "full pass done; incremental rounds until a cutover is asked for",
    (S.SYNCING, S.PAUSED): "pause during the rounds: flushed and checkpointed",
    (S.SYNCING, S.STARTING): "the agent restarted or reconnected during the rounds and re-initialises",
    (S.SYNCING, S.VERIFYING): "cutover: source quiesced for the final pass; every target block is verified",
    (S.SYNCING, S.FAILED): "a permanent error during the rounds, or temporary ones past their deadline",
    (S.STARTING, S.FAILED): "initialisation failed (unreachable target, too small, checks)",
    (S.TRANSFERRING, S.FAILED): "a permanent error, or temporary ones past their deadline",
    (S.VERIFYING, S.FAILED): "blocks still differ after re-sending",
    (S.PAUSED, S.FAILED): "the paused task can no longer continue (source gone)",
    (S.CREATED, S.DELETED): "deleted before it ever started",
    (S.SCHEDULED, S.DELETED): "deleted before its start time",
    (S.PAUSED, S.DELETED): "deleted after a pause: checkpoint dropped, target released",
    (S.FAILED, S.DELETED): "deleted after a failure: checkpoint dropped, target released",
    (S.SUCCESS, S.DELETED): "the finished task is removed from the list",
}

# which states allow each action (what the console's DeniedActions are computed from)
_ALLOWED: dict[Action, frozenset[TaskState]] = {
    Action.START: frozenset({S.CREATED, S.SCHEDULED, S.PAUSED, S.FAILED}),
    Action.RETRY: frozenset({S.PAUSED, S.FAILED}),
    Action.PAUSE: frozenset({S.TRANSFERRING, S.SYNCING}),
    Action.DELETE: frozenset({S.CREATED, S.SCHEDULED, S.PAUSED, S.FAILED, S.SUCCESS}),
    Action.CUTOVER: frozenset({S.SYNCING}),
}


class IllegalTransition(ValueError):
    def __init__(self, old: TaskState, new: TaskState) -> None:
        super().__init__(f"task state cannot go from {old.value} to {new.value}")
        self.old, self.new = old, new


class ActionDenied(ValueError):
    def __init__(self, action: Action, state: TaskState) -> None:
        allowed = ", ".join(sorted(s.value for s in _ALLOWED[action]))
        super().__init__(
            f"cannot {action.value} a task that is {state.value}; {action.value} is allowed when {allowed}"
        )
        self.action, self.state = action, state


def transition(old: TaskState, new: TaskState) -> str:
    """Check the edge ``old -> new``; return why it exists (for the log line)."""
    try:
        return _EDGES[(old, new)]
    except KeyError:
        raise IllegalTransition(old, new) from None


def allowed_actions(state: TaskState) -> list[Action]:
    return [a for a in Action if state in _ALLOWED[a]]


def denied_actions(state: TaskState) -> list[Action]:
    return [a for a in Action if state not in _ALLOWED[a]]


def check_action(action: Action, state: TaskState) -> None:
    if state not in _ALLOWED[action]:
        raise ActionDenied(action, state)
