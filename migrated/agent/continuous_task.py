"""The daemon's runner for a continuous task ("incremental sync until cutover").

A task whose spec has ``ContinuousSync`` runs :func:`migrated.engine.continuous.run_continuous_disks`
instead of the one-shot sync: a full pass (state ``transferring``), then incremental rounds
(``syncing``) until a cutover is asked for (the console's ``cutover`` command, ``migratectl
cutover``), then the final pass with the source quiesced (``verifying``), every block verified, and
``success`` with the measured downtime (an event and ``TaskProgress.downtime_seconds``).

Pause / SIGTERM stop it at a checkpoint like the one-shot sync (the steering object
:class:`Steer` stands in for the engine's SyncControl so a stop also ends the wait between rounds).
A cutover asked for before a restart is not lost: a task found in ``verifying`` cuts over right
after its next round.

While the source is frozen (engine events ``freeze`` .. ``thaw``) the daemon's state files are
held in memory (``AgentStore.hold``): the state dir may be on the frozen filesystem, and a write
there would stall the event loop, the final pass with it, until the guardian's budget ran out.

Spec keys read: ``ContinuousSync``, ``RoundIntervalSeconds`` (default 60), ``ReadLimitKBps``;
and, for tests/advanced use, ``Quiesce`` (freeze | hooks | none), ``FreezeBudgetSeconds``,
``PreHook``, ``PostHook``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from migrated.errors import StateError
from migrated.model.states import TaskState as S
from migrated.model.status import DiskProgress, TaskProgress, format_bytes

if TYPE_CHECKING:
    from migrated.agent.daemon import Agent
    from migrated.agent.state import TaskRecord

log = structlog.get_logger(__name__)

# TaskProgress fields this runner keeps in the task record between progress updates
KEYS = ("phase", "round", "round_changed_bytes", "forecast_seconds", "convergence", "advice",
        "downtime_seconds", "lag_since")


class Steer:
    """What the daemon holds as ``Agent._control`` during a continuous run: a stop (pause, delete,
    SIGTERM) goes to :meth:`ContinuousControl.stop` so the wait between rounds ends too; the
    bandwidth limit goes to the engine's SyncControl."""

    def __init__(self, cc: Any) -> None:
        self.cc = cc

    def request_stop(self, reason: str) -> None:
        self.cc.stop(reason)

    def set_bwlimit(self, bps: int | None) -> None:
        self.cc.sync.set_bwlimit(bps)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cc.sync, name)


def is_continuous(spec: dict[str, Any]) -> bool:
    return bool(spec.get("ContinuousSync"))


def carry(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Keep the continuous fields of ``old`` in a freshly built progress dict ``new``."""
    for k in KEYS:
        if old and old.get(k) is not None and new.get(k) in (None, ""):
            new[k] = old[k]
    return new


def fill(p: TaskProgress, stored: dict[str, Any] | None, now: float) -> None:
    """Complete a TaskProgress built from the task record: the lag is live (now - start of the last round)."""
    since = (stored or {}).get("lag_since")
    if since is not None and p.state in (S.SYNCING.value, S.TRANSFERRING.value) and p.downtime_seconds is None:
        p.lag_seconds = max(0.0, now - float(since))


def cutover(agent: Agent) -> str:
    """The console's ``cutover`` command and ``migratectl cutover``."""
    t = agent.task
    if t is None:
        raise StateError("no task on this agent")
    if not is_continuous(t.spec):
        raise StateError(f"task {t.task_id} is not a continuous task (create it with ContinuousSync)")
    if S(t.state) is not S.SYNCING:
        raise StateError(f"cannot cutover a task that is {t.state}; cutover is allowed when syncing")
    cc = getattr(agent, "_continuous", None)
    if cc is None:
        raise StateError(f"task {t.task_id} is between attempts; try again in a moment")
    cc.request_cutover()
    log.info("cutover requested", task_id=t.task_id)
    return f"task {t.task_id}: cutover after the round in progress"


def _options(spec: dict[str, Any]) -> Any:
    from migrated.engine.continuous import ContinuousOptions

    interval = spec.get("RoundIntervalSeconds")
    kbps = spec.get("ReadLimitKBps")
    copts = ContinuousOptions(
        interval=float(interval) if isinstance(interval, int | float) else 60.0,
        read_limit=kbps * 1024 if isinstance(kbps, int) and kbps > 0 else None,
        quiesce=str(spec.get("Quiesce") or "freeze"),
        pre_hook=spec.get("PreHook") or None,
        post_hook=spec.get("PostHook") or None,
    )
    budget = spec.get("FreezeBudgetSeconds")
    if isinstance(budget, int | float) and budget > 0:
        copts.freeze_budget = float(budget)
    return copts


async def run(agent: Agent, t: TaskRecord, session: Any, mapping: list[tuple[str, str]], control: Any,
              options: Any, disks: list[DiskProgress]) -> None:
    """Rounds and cutover of task ``t`` over ``session`` (the daemon's ``_attempt`` has opened it and
    moved the task to transferring). Returns once the task is successful; raises like the engine."""
    from migrated.engine.continuous import ContinuousControl, run_continuous_disks

    copts = _options(t.spec)
    cc = ContinuousControl(control)
    if getattr(control, "stop_requested", False):
        cc.stop(getattr(control, "stop_reason", "") or "stop requested")
    if S(t.state) is S.VERIFYING:
        cc.request_cutover()  # asked for before a restart or a failed attempt: not lost
    agent._continuous = cc
    agent._control = Steer(cc)
    index = {src: i for i, (src, _) in enumerate(mapping)}
    base = int((t.progress or {}).get("round") or 0)  # rounds of earlier runs: the numbering goes on

    def on_progress(dp: DiskProgress) -> None:
        agent._on_progress(t, disks, index[dp.name], dp)

    def keep(**values: Any) -> None:
        t.progress = t.progress or {}
        t.progress.update(values)

    def on_event(e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "round":
            n = base + int(e["round"]) + 1  # rounds finished, the full pass included
            keep(phase="waiting", round=n, round_changed_bytes=int(e["bytes_changed"]),
                 forecast_seconds=e.get("forecast_final"), convergence=str(e.get("message") or ""),
                 advice=str(e.get("advice") or ""), lag_since=time.time() - float(e["seconds"]))
            text = (f"round {n}: {format_bytes(e['bytes_changed'])} changed, {format_bytes(e['bytes_sent'])} sent "
                    f"in {e['seconds']:.1f} s" + (f"; {e['message']}" if e.get("message") else ""))
            log.info("round done", task_id=t.task_id, round=n, changed=e["bytes_changed"], advice=e.get("advice"))
            if S(t.state) is S.TRANSFERRING:
                agent.set_state(S.SYNCING, "rounds", ("rounds resumed from the checkpoint; " if base
                                                      else "full pass done; ") + text)
            else:
                agent._save_task()
                agent._wake_reporter.set()
            agent.event("warning" if e.get("advice") == "not-converging" else "info", text)
        elif kind == "cutover":
            keep(phase="final-pass")
            what = ", ".join(e.get("mountpoints") or []) or "nothing mounted"
            msg = f"cutover: final pass with the source quiesced ({e.get('quiesce')}: {what})"
            if S(t.state) in (S.SYNCING, S.TRANSFERRING):
                agent.set_state(S.VERIFYING, "cutover", msg)
            else:
                agent.event("info", msg)
        elif kind == "freeze":
            agent.store.hold()  # nothing to the state dir until the thaw: it may be on a frozen fs
        elif kind == "thaw":
            agent.store.release()
        elif kind == "freeze-budget-exceeded":
            agent.event("warning", str(e.get("message", "the final pass did not fit the freeze budget")))
        elif kind == "thawed":
            keep(phase="verifying", downtime_seconds=float(e.get("downtime") or 0.0))
            agent._save_task()
        elif kind == "verified":
            keep(phase="done")

    try:
        result = await run_continuous_disks(session, mapping, options, copts, cc, on_event, on_progress)
    finally:
        agent._continuous = None
        agent.store.release()  # no-op unless a freeze ended without its thaw event
    for i, d in enumerate(disks):
        d.bytes_done = d.bytes_total = max(d.bytes_total, d.bytes_done)
        disks[i] = d
    agent._store_progress(t, disks, {src for src, _ in mapping})
    rep = result.cutover
    downtime = rep.downtime if rep else 0.0
    keep(phase="done", downtime_seconds=downtime)
    agent.event("info", f"cutover done: downtime {downtime:.2f} s ({rep.quiesce if rep else '?'}), "
                f"final pass {format_bytes(rep.final_changed if rep else 0)} changed, "
                f"{rep.blocks_verified if rep else 0} blocks verified after {len(result.rounds)} round(s)")
    agent.set_state(S.SUCCESS, "release", f"{len(mapping)} disk(s) migrated with a cutover; downtime "
                    f"{downtime:.2f} s, every block verified")
