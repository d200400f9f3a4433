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

Settings read (``TaskRecord.settings``, a :class:`~migrated.model.taskspec.TaskSpec`, where the
defaults are): ``ContinuousSync``, ``RoundIntervalSeconds`` (default 60), ``ReadLimitKBps``,
``Quiesce`` (freeze | lvm | hooks | none; default freeze), ``FreezeBudgetSeconds`` (default 30),
``PreHook``, ``PostHook`` (the console's CreateTask parameters of the same names), ``SnapshotSize``
(``Quiesce: lvm``: copy-on-write space, e.g. ``2G`` or ``20%ORIGIN``; default ``10%ORIGIN``). With
``lvm`` the downtime reported is the snapshot window (pre hook start to post hook end, see
docs/consistency.md), not the final pass.

Live changes (:func:`set_rounds`: the console's ``set-rounds`` command, ``migratectl set``) go to the
running :class:`ContinuousControl` at once and are kept in ``TaskRecord.rounds``, which wins over
the spec: a daemon restart, and a later start/retry from the console, use the latest change.

Hooks are shell commands run as root on this server, possibly holding passwords: the daemon never
logs them or sends them to the console. Events and errors say only which hook ran and its exit status.

While the source is frozen (engine events ``freeze`` .. ``thaw``) the daemon's state files are
held in memory (``AgentStore.hold``): the state dir may be on the frozen filesystem, and a write
there would stall the event loop, the final pass with it, until the guardian's budget ran out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from migrated.agent.runners import progress
from migrated.errors import QuiesceError, StateError, UsageError
from migrated.model.states import COPYING
from migrated.model.states import TaskState as S
from migrated.model.status import DiskProgress, TaskProgress, format_bytes
from migrated.source.hooks import HookFailed

if TYPE_CHECKING:
    from migrated.agent.runners.host import RunControl, RunnerHost
    from migrated.agent.state import TaskRecord
    from migrated.engine.continuous import ContinuousControl

log = structlog.get_logger(__name__)


class Steer:
    """What the daemon holds as ``RunControl.control`` during a continuous run: a stop (pause, delete,
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


def cutover(t: TaskRecord | None, cc: ContinuousControl | None) -> str:
    """The console's ``cutover`` command and ``migratectl cutover`` for the agent's task ``t``, whose
    rounds run under ``cc`` (None: between attempts)."""
    if t is None:
        raise StateError("no task on this agent")
    spec = t.settings
    if not spec.continuous_sync:
        raise StateError(f"task {t.task_id} is not a continuous task (create it with ContinuousSync)"
                         + ("; it cuts over by itself when its full pass is done" if spec.finishes_at_once else ""))
    if S(t.state) is not S.SYNCING:
        raise StateError(f"cannot cutover a task that is {t.state}; cutover is allowed when syncing")
    if cc is None:
        raise StateError(f"task {t.task_id} is between attempts; try again in a moment")
    cc.request_cutover()
    log.info("cutover requested", task_id=t.task_id)
    return f"task {t.task_id}: cutover after the round in progress"


def settings(t: TaskRecord) -> tuple[float, int | None]:
    """(round interval in seconds, source read limit in bytes/s or None) in effect for ``t``: the
    latest live change (``t.rounds``, written by :func:`set_rounds` only), else the spec, else the defaults."""
    spec = t.settings
    live = t.rounds or {}
    interval = live.get("RoundIntervalSeconds", spec.round_interval_seconds)
    kbps = live.get("ReadLimitKBps", spec.read_limit_kbps)
    return (float(interval) if isinstance(interval, int | float) and not isinstance(interval, bool)
            else spec.effective_round_interval,
            kbps * 1024 if isinstance(kbps, int) and not isinstance(kbps, bool) and kbps > 0 else None)


def fill_settings(p: TaskProgress, t: TaskRecord) -> None:
    """Show the interval and the read limit in effect with a continuous task's progress (nothing for
    a task.json whose spec no longer reads: its run fails naming the key, the status still shows)."""
    try:
        rounds = t.settings.continuous_sync
    except UsageError:
        return
    if rounds:
        p.round_interval_seconds, p.read_limit_bps = settings(t)


def set_rounds(t: TaskRecord | None, cc: ContinuousControl | None, interval: float | None,
               read_limit_kbps: int | None, by: str, event: Callable[[str, str], None]) -> str:
    """Change the round interval (seconds) and/or the source read limit (KiB/s, 0 = none) of the
    continuous task ``t``: live when it runs (under ``cc``), and kept for a restart (``event``, the
    host's, saves the task record). StateError for a task that is not continuous or is finished;
    UsageError for a bad value."""
    if t is None:
        raise StateError("no task on this agent")
    if not t.settings.continuous_sync:
        raise StateError(f"task {t.task_id} is not a continuous task (created without ContinuousSync): the round "
                         "interval and the source read limit apply only to continuous tasks")
    if S(t.state).finished:
        raise StateError(f"task {t.task_id} is {t.state}; nothing to change")
    if interval is None and read_limit_kbps is None:
        raise UsageError("give a round interval and/or a read limit")
    if interval is not None and not (0 <= interval <= 86400):
        raise UsageError(f"round interval must be 0-86400 seconds, got {interval!r}")
    if read_limit_kbps is not None and not (0 <= read_limit_kbps <= 100 * 1024 * 1024):
        raise UsageError(f"read limit must be 0-{100 * 1024 * 1024} KiB/s, got {read_limit_kbps!r}")
    old_interval, old_limit = settings(t)
    t.rounds = dict(t.rounds or {})
    if interval is not None:
        t.rounds["RoundIntervalSeconds"] = int(interval) if float(interval).is_integer() else float(interval)
    if read_limit_kbps is not None:
        t.rounds["ReadLimitKBps"] = int(read_limit_kbps)
    new_interval, new_limit = settings(t)
    if cc is not None:
        if interval is not None:
            cc.set_interval(new_interval)
        # the final pass runs unlimited (the source is quiesced): a new limit applies from the next round
        if read_limit_kbps is not None and S(t.state) is not S.VERIFYING:
            cc.set_read_limit(new_limit)
    parts = []
    if interval is not None:
        parts.append(f"round interval {old_interval:g} -> {new_interval:g} s")
    if read_limit_kbps is not None:
        parts.append(f"source read limit {_rate(old_limit)} -> {_rate(new_limit)}")
    text = f"{', '.join(parts)} (by {by})"
    log.info("rounds settings changed", task_id=t.task_id, interval=new_interval, read_limit_bps=new_limit, by=by)
    event("info", text)  # saves the task record and wakes the reporter
    return f"task {t.task_id}: {text}" + ("" if cc is not None else "; applies when the rounds run")


def hook_summary(h: Any) -> str:
    """Which hook ran and how it ended, without its command or output (a HookResult or its asdict)."""
    get = h.get if isinstance(h, dict) else (lambda k: getattr(h, k))
    rc, seconds = get("returncode"), float(get("duration") or 0.0)
    if get("timed_out"):
        how = f"timed out after {seconds:.1f} s and was killed"
    elif rc is not None and rc < 0:
        how = f"was killed by signal {-rc} after {seconds:.1f} s"
    else:
        how = f"exited with status {rc} after {seconds:.1f} s"
    return f"{get('name')} hook {how}"


def _scrub_notes(e: BaseException, copts: Any) -> None:
    """A post hook that failed after another error is attached to it as a note naming the command:
    replace such notes, so a traceback in the log holds no hook command."""
    hooks = [h for h in (copts.pre_hook, copts.post_hook) if h]
    notes = getattr(e, "__notes__", None)
    if hooks and notes:
        e.__notes__ = [("a hook failed too (command and output not shown)" if any(h in n for h in hooks) else n)
                       for n in notes]


def _rate(bps: int | None) -> str:
    return f"{format_bytes(bps)}/s" if bps else "unlimited"


def _options(t: TaskRecord) -> Any:
    from migrated.engine.continuous import ContinuousOptions

    spec = t.settings
    interval, read_limit = settings(t)
    return ContinuousOptions(
        interval=interval,
        read_limit=read_limit,
        quiesce=spec.effective_quiesce,
        pre_hook=spec.pre_hook,
        post_hook=spec.post_hook,
        snapshot_size=spec.effective_snapshot_size,
        freeze_budget=spec.effective_freeze_budget,
        hook_timeout=spec.effective_hook_timeout,
    )


async def run(host: RunnerHost, rc: RunControl, t: TaskRecord, session: Any, mapping: list[tuple[str, str]],
              control: Any, options: Any, disks: list[DiskProgress]) -> None:
    """Rounds and cutover of task ``t`` over ``session`` (the driver's ``attempt`` has opened it and
    moved the task to transferring); ``rc`` steers it while it runs. Returns once the task is
    successful; raises like the engine."""
    from migrated.engine.continuous import ContinuousControl, run_continuous_disks

    copts = _options(t)
    copts.freeze_record = host.freeze_record
    cc = ContinuousControl(control)
    if getattr(control, "stop_requested", False):
        cc.stop(getattr(control, "stop_reason", "") or "stop requested")
    at_once = t.settings.finishes_at_once
    if S(t.state) is S.VERIFYING or at_once:
        cc.request_cutover()  # asked for before a restart or a failed attempt (not lost), or a consistent finish
    rc.continuous = cc
    rc.control = Steer(cc)
    index = {src: i for i, (src, _) in enumerate(mapping)}
    base = int((t.progress or {}).get("round") or 0)  # rounds of earlier runs: the numbering goes on

    def on_progress(dp: DiskProgress) -> None:
        progress.on_progress(host, t, disks, index[dp.name], dp)

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
            if S(t.state) is S.TRANSFERRING and at_once:
                host.event("info", f"full pass: {format_bytes(e['bytes_changed'])} changed, "
                                    f"{format_bytes(e['bytes_sent'])} sent in {e['seconds']:.1f} s; cutting over now "
                                    "(consistent finish)")
                return
            if S(t.state) is S.TRANSFERRING:
                host.set_state(S.SYNCING, "rounds", ("rounds resumed from the checkpoint; " if base
                                                      else "full pass done; ") + text)
            else:
                host.save_task()
                host.wake_reporter()
            host.event("warning" if e.get("advice") == "not-converging" else "info", text)
        elif kind == "cutover":
            keep(phase="final-pass")
            what = ", ".join(e.get("mountpoints") or e.get("volumes") or []) or "nothing mounted"
            msg = f"cutover: final pass with the source quiesced ({e.get('quiesce')}: {what})"
            if S(t.state) in COPYING:
                host.set_state(S.VERIFYING, "cutover", msg)
            else:
                host.event("info", msg)
        elif kind == "snapshot":
            names = ", ".join(str(s.get("name")) for s in e.get("snapshots") or [])
            host.event("info", f"cutover point: LVM snapshot {names} taken, source running again "
                                f"(downtime {float(e.get('downtime') or 0.0):.2f} s); final pass from the snapshot")
        elif kind == "snapshot-leftover-removed":
            host.event("warning", f"removed the LVM snapshot {e.get('snapshot')} a killed earlier run left behind")
        elif kind == "freeze":
            host.store.hold()  # nothing to the state dir until the thaw: it may be on a frozen fs
        elif kind == "thaw":
            host.store.release()
        elif kind == "freeze-budget-exceeded":
            host.event("warning", str(e.get("message", "the final pass did not fit the freeze budget")))
        elif kind == "thawed":
            keep(phase="verifying", downtime_seconds=float(e.get("downtime") or 0.0))
            host.save_task()
        elif kind == "verified":
            keep(phase="done")

    try:
        result = await run_continuous_disks(session, mapping, options, copts, cc, on_event, on_progress)
    except HookFailed as e:
        post_too = e.result.name == "pre" and any(n.startswith("post hook") for n in getattr(e, "__notes__", ()))
        raise QuiesceError(f"cutover: {hook_summary(e.result)}" + ("; the post hook failed too" if post_too else "")
                           + "; the source is running. Run the hook by hand on the source to see its output (the "
                           "agent does not report a hook's command or output: they may hold secrets)") from None
    except BaseException as e:
        _scrub_notes(e, copts)
        raise
    finally:
        rc.continuous = None
        host.store.release()  # no-op unless a freeze ended without its thaw event
    for h in (result.cutover.hooks if result.cutover else []):
        host.event("info", f"cutover: {hook_summary(h)}")
    for i, d in enumerate(disks):
        d.bytes_done = d.bytes_total = max(d.bytes_total, d.bytes_done)
        disks[i] = d
    progress.store_progress(host, t, disks, {src for src, _ in mapping})
    rep = result.cutover
    downtime = rep.downtime if rep else 0.0
    keep(phase="done", downtime_seconds=downtime)
    host.event("info", f"cutover done: downtime {downtime:.2f} s ({rep.quiesce if rep else '?'}), "
                f"final pass {format_bytes(rep.final_changed if rep else 0)} changed, "
                f"{rep.blocks_verified if rep else 0} blocks verified after {len(result.rounds)} round(s)")
    host.set_state(S.SUCCESS, "release", f"{len(mapping)} disk(s) migrated with a cutover; downtime "
                    f"{downtime:.2f} s, every block verified")
