"""Continuous sync: a full pass, incremental rounds while the source runs, then a cutover
with the source quiesced for one short final pass, verified, with the downtime measured.

::

    control = ContinuousControl(SyncControl(bwlimit))
    async with open_session(endpoint) as session:
        result = await run_continuous(session, "/dev/vdb", "/dev/vdb", SyncOptions(...),
                                      ContinuousOptions(interval=30, cutover_after=None), control, on_event)
    # elsewhere (signal handler, daemon command): control.request_cutover()

Built on the engine's library API only (``Session``: ``sync_disk``, ``verify_disk``,
``state_files``): every round is ``session.sync_disk`` with the same checkpoint (the engine
re-reads the source and sends what changed). The pieces:

* **Rounds** (``migrated.model.rounds``): after each round its numbers are summarised
  (change rate, send rate, forecast of the final pass, advice) and passed to
  ``on_event``; "not converging: 80 MB/s changing, 40 MB/s sent" is said as soon as it
  is true. The interval and the source read-rate limit can change while running
  (``ContinuousControl.set_interval`` / ``set_read_limit``).
* **Cutover** (:func:`cutover`): pre hook -> quiesce -> final pass -> make durable ->
  un-quiesce -> post hook -> verify every target block against the hashes the final pass
  recorded (the source has moved on after the thaw, so it cannot be re-read for that).
  Quiesce methods: ``freeze`` (FIFREEZE of every mounted filesystem of the disks, through
  the guardian process, within ``freeze_budget``; the final pass reads only the writes
  traced since the last round, ``migrated.source.tracker``), ``hooks`` (only the pre/post
  commands), ``none`` (crash-consistent only), ``lvm`` (:func:`_cutover_lvm`: pre hook ->
  ``lvcreate --snapshot`` of each disk's volume, the cutover point -> post hook right away, the
  source runs again; the final pass reads the *snapshot* (``SyncOptions.read_from``) into the
  *origin's* checkpoint, every target block is verified against the snapshot, and the snapshot is
  removed whatever happens; snapshots a killed run left are removed when the next run starts).
* **Several disks** (:func:`run_continuous_disks`): a round syncs each once; the cutover
  freezes the filesystems of all of them at once, so the target is consistent across them.
* **Nothing is written to a frozen filesystem** by this process during the freeze: the
  engine's state dir is staged in tmpfs (``StagedDir``) and written back after the
  thaw; log events are held in memory and printed after the thaw; no bytecode is
  written. The caller is told too: ``on_event`` gets ``freeze`` before the first
  FIFREEZE and ``thaw`` after the thaw (each attempt), so it can hold its own writes
  (the daemon's ``task.json``). A final pass that runs out of budget is cancelled before the guardian's
  deadline; the source is thawed, the staged state written back (the engine's
  checkpoint invariant holds inside it), and the cutover is tried again after one more
  round (``final_attempts``).
* The task is successful only when the target verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from migrated.engine.session import Session
from migrated.engine.sync import SyncControl, SyncOptions, SyncResult, default_state_dir
from migrated.errors import MigratedError, UsageError
from migrated.model.lvmsize import DEFAULT_SNAPSHOT_SIZE
from migrated.model.rounds import Advice, Policy, RoundStats, Summary, summarize
from migrated.model.taskspec import (
    DEFAULT_FREEZE_BUDGET_SECONDS,
    DEFAULT_HOOK_TIMEOUT_SECONDS,
    DEFAULT_QUIESCE,
    DEFAULT_ROUND_INTERVAL_SECONDS,
)
from migrated.source.freeze import (
    FreezeBudgetExceeded,
    FreezeError,
    GuardedFreeze,
    MountedFs,
    StagedDir,
    mounted_filesystems,
    path_on_filesystems,
)
from migrated.source.hooks import HookResult, hooks_around
from migrated.source.snapshot import Snapshot, check_size, lvm_snapshot, remove_leftover_snapshots
from migrated.source.tracker import TrackerUnavailable, WriteTracker

log = structlog.get_logger(__name__)

QUIESCE_METHODS = ("freeze", "lvm", "hooks", "none")


class Phase(StrEnum):
    FULL_PASS = "full-pass"
    ROUND = "round"
    WAITING = "waiting"
    CUTOVER = "cutover"
    FINAL_PASS = "final-pass"
    VERIFYING = "verifying"
    DONE = "done"


@dataclass
class ContinuousOptions:
    """Settings of a continuous sync. ``interval``: seconds between the end of a round and the start
    of the next. ``read_limit``: source bytes/s during the full pass and the rounds (None: unlimited;
    the final pass is never read-limited: it runs while the server is quiesced).
    ``cutover_after``: cut over after this many incremental rounds (scripts, tests).
    ``auto_cutover``: cut over as soon as the advice says so. Otherwise: rounds until
    ``ContinuousControl.request_cutover()``."""

    interval: float = float(DEFAULT_ROUND_INTERVAL_SECONDS)
    read_limit: int | None = None
    cutover_after: int | None = None
    auto_cutover: bool = False
    quiesce: str = DEFAULT_QUIESCE
    freeze_budget: float = float(DEFAULT_FREEZE_BUDGET_SECONDS)
    downtime_target: float = 2.0
    pre_hook: str | None = None
    post_hook: str | None = None
    hook_timeout: float = float(DEFAULT_HOOK_TIMEOUT_SECONDS)
    final_attempts: int = 2
    track_writes: bool = True  # trace writes so the final pass reads only them (migrated.source.tracker)
    snapshot_size: str = DEFAULT_SNAPSHOT_SIZE  # --quiesce lvm: copy-on-write space of each snapshot (lvcreate size)
    verify: bool = True
    # where the freeze guardian records what it froze while it is frozen (tmpfs; migrated.source.guardian);
    # None: $RUNTIME_DIRECTORY/frozen.json under systemd, else no record
    freeze_record: str | None = None

    def validate(self) -> None:
        if self.quiesce not in QUIESCE_METHODS:
            raise UsageError(f"--quiesce {self.quiesce!r}: choose one of {', '.join(QUIESCE_METHODS)}")
        if self.quiesce == "lvm":
            try:
                check_size(self.snapshot_size)
            except MigratedError as e:
                raise UsageError(str(e)) from None
        if self.interval < 0:
            raise UsageError("--interval must be zero or more seconds")
        if self.freeze_budget <= 0 or self.downtime_target <= 0:
            raise UsageError("--freeze-budget and --downtime-target must be positive seconds")
        if self.cutover_after is not None and self.cutover_after < 0:
            raise UsageError("--cutover-after must be zero or more rounds")
        if self.final_attempts < 1:
            raise UsageError("final_attempts must be at least 1")
        if self.quiesce == "hooks" and not (self.pre_hook or self.post_hook):
            raise UsageError("--quiesce hooks needs --pre-hook and/or --post-hook")
        if self.hook_timeout <= 0:
            raise UsageError("--hook-timeout must be positive seconds")


class ContinuousControl:
    """Steer a continuous sync from outside (signal handler, daemon command). Every method may be
    called from the event loop's thread at any time."""

    def __init__(self, sync: SyncControl | None = None, *, interval: float | None = None,
                 read_limit: int | None = None) -> None:
        self.sync = sync or SyncControl()
        self.interval = interval
        self.read_limit = read_limit
        self.cutover_requested = False
        self.phase = Phase.FULL_PASS
        self.rounds: list[RoundStats] = []
        self.summary: Summary | None = None
        self._wake: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    def request_cutover(self) -> None:
        """Cut over after the round in progress (or right away when waiting between rounds)."""
        self.cutover_requested = True
        self._event().set()

    def set_interval(self, seconds: float) -> None:
        if seconds < 0:
            raise UsageError("interval must be zero or more seconds")
        self.interval = seconds
        self._event().set()

    def set_read_limit(self, bytes_per_s: int | None) -> None:
        """Source read-rate limit for the rounds; applies from the next chunk read."""
        self.read_limit = bytes_per_s or None
        self.sync.set_read_limit(self.read_limit)

    def stop(self, reason: str = "stop requested") -> None:
        """Flush, checkpoint and raise Interrupted (resumable), whatever the phase except the final pass."""
        self.sync.request_stop(reason)
        self._event().set()

    def status(self) -> dict[str, Any]:
        """What ``migratectl status`` shows: phase, rounds, lag and forecast."""
        return {
            "phase": self.phase.value,
            "round": len(self.rounds),
            "rounds": [dataclasses.asdict(r) for r in self.rounds[-20:]],
            "summary": self.summary.to_dict() if self.summary else None,
            "interval": self.interval,
            "read_limit": self.read_limit,
            "cutover_requested": self.cutover_requested,
        }


@dataclass
class CutoverReport:
    quiesce: str
    mountpoints: list[str] = field(default_factory=list)
    # seconds the source was frozen; lvm: from the pre hook's start (else lvcreate's) to the post
    # hook's end (else the last lvcreate's); hooks/none: the final pass (with the hooks around it)
    downtime: float = 0.0
    attempts: int = 0
    final_changed: int = 0
    final_sent: int = 0
    final_seconds: float = 0.0
    verified: bool = False
    blocks_verified: int = 0
    hooks: list[dict[str, Any]] = field(default_factory=list)
    held_log_lines: int = 0
    traced_bytes: int | None = None  # bytes the final pass re-read from traced writes (None: whole disk)
    notes: list[str] = field(default_factory=list)
    # lvm: one per disk: origin, volume, name (vg/snapshot), device, created_in, removed
    snapshots: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ContinuousResult:
    source: str
    target: str
    bytes_total: int
    rounds: list[RoundStats]
    summary: Summary | None
    cutover: CutoverReport | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "bytes_total": self.bytes_total,
            "rounds": [dataclasses.asdict(r) for r in self.rounds],
            "summary": self.summary.to_dict() if self.summary else None,
            "cutover": dataclasses.asdict(self.cutover) if self.cutover else None,
            "downtime": self.cutover.downtime if self.cutover else None,
            "verified": self.cutover.verified if self.cutover else False,
        }


Event = dict[str, Any]


# ------------------------------------------------------------ held output


@contextlib.contextmanager
def held_output() -> Iterator[io.StringIO]:
    """While frozen: structlog events go to memory, stdlib logging is muted, no bytecode is
    written. On exit the held events are printed to stderr (which may be a file on the
    filesystem that was frozen: only now may it be written)."""
    buf = io.StringIO()
    cfg = structlog.get_config()
    old_factory = cfg["logger_factory"]
    old_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    logging.disable(logging.CRITICAL)
    try:
        yield buf
    finally:
        logging.disable(logging.NOTSET)
        structlog.configure(logger_factory=old_factory)
        sys.dont_write_bytecode = old_bytecode
        held = buf.getvalue()
        if held:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(held)
                sys.stderr.flush()


# ------------------------------------------------------------ rounds

Disk = tuple[str, str]  # (source path, target path on the target host)


async def run_continuous(session: Session, source: str, target_path: str, options: SyncOptions,
                         copts: ContinuousOptions, control: ContinuousControl,
                         on_event: Callable[[Event], None] | None = None,
                         on_progress: Callable[..., None] | None = None) -> ContinuousResult:
    """One disk: see :func:`run_continuous_disks`."""
    return await run_continuous_disks(session, [(source, target_path)], options, copts, control, on_event,
                                      on_progress)


async def run_continuous_disks(session: Session, disks: list[Disk], options: SyncOptions, copts: ContinuousOptions,
                               control: ContinuousControl, on_event: Callable[[Event], None] | None = None,
                               on_progress: Callable[..., None] | None = None) -> ContinuousResult:
    """Full pass, rounds, cutover (module doc) for the disks of one task, over one session. A round
    syncs every disk once (its numbers are the disks' sums); the cutover freezes the mounted
    filesystems of *all* the disks at once, so the target is consistent across disks (a database on
    one disk and its log on another). ``on_progress`` gets the engine's DiskProgress (``.name`` is
    the source). Raises Interrupted when stopped (resumable: the next run continues from the
    checkpoints), QuiesceError / FreezeBudgetExceeded when the cutover could not be done within its
    limits (the sources are running, thawed), VerificationFailed."""
    copts.validate()
    if not disks:
        raise UsageError("no disk to migrate")
    # rounds never verify by re-reading (the cutover verifies every block against the frozen image)
    options = dataclasses.replace(options, checksum=False)
    emit = on_event or (lambda _e: None)
    if control.interval is None:
        control.interval = copts.interval
    if control.read_limit is None and copts.read_limit:
        control.set_read_limit(copts.read_limit)
    sys.dont_write_bytecode = True  # a lazy import during the freeze must not write next to our code
    notes: list[str] = []
    if copts.quiesce == "lvm":
        # fail before hours of rounds, not at the cutover; and clear what a killed run left behind
        for src, _ in disks:
            for name in await remove_leftover_snapshots(src):
                notes.append(f"removed the snapshot {name} a killed earlier run left behind")
                emit({"event": "snapshot-leftover-removed", "snapshot": name})
    trackers: dict[str, WriteTracker | None] = {}
    # lvm too: the writes traced up to the snapshot tell which blocks of it the final pass must read
    if copts.quiesce in ("freeze", "lvm") and copts.track_writes:
        trackers = {src: _start_tracker(src) for src, _ in disks}
    tracked = bool(trackers) and all(t is not None for t in trackers.values())
    policy = Policy(downtime_target=copts.downtime_target, freeze_budget=copts.freeze_budget, tracked=tracked)
    live = [t for t in trackers.values() if t is not None]
    poller = asyncio.create_task(_poll_trackers(live)) if live else None
    try:
        return await _run_rounds_and_cutover(session, disks, options, copts, control, emit, policy, trackers,
                                             on_progress, notes)
    finally:
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(BaseException):
                await poller
        for t in live:
            t.close()


def _start_tracker(source: str) -> WriteTracker | None:
    try:
        return WriteTracker(source).start()
    except TrackerUnavailable as e:
        log.info("write_tracking_off", disk=source, reason=str(e))
        return None


async def _poll_trackers(trackers: list[WriteTracker]) -> None:
    while True:
        for t in trackers:
            await asyncio.to_thread(t.poll)
        await asyncio.sleep(0.5)


async def _run_rounds_and_cutover(session: Session, disks: list[Disk], options: SyncOptions,
                                  copts: ContinuousOptions, control: ContinuousControl,
                                  emit: Callable[[Event], None], policy: Policy,
                                  trackers: dict[str, WriteTracker | None],
                                  on_progress: Callable[..., None] | None,
                                  notes: list[str] | None = None) -> ContinuousResult:
    rounds = control.rounds
    bytes_total = 0
    said_not_converging = False
    names = ", ".join(src for src, _ in disks)

    async def one_round() -> None:
        nonlocal bytes_total, said_not_converging
        control.phase = Phase.FULL_PASS if not rounds else Phase.ROUND
        for t in trackers.values():
            if t is not None:
                t.reset()  # the final pass re-reads what is written from now on
        started = time.monotonic()
        results = [await session.sync_disk(src, dst, options, control.sync, on_progress) for src, dst in disks]
        for (src, _), r in zip(disks, results, strict=True):
            t = trackers.get(src)
            if t is not None and r.resumed:
                # blocks before the resume point were read before the reset: their later writes are unknown
                t.invalidate("the last round resumed from a checkpoint and did not read the whole disk")
        bytes_total = sum(r.bytes_total for r in results)
        stats = RoundStats(index=len(rounds), started_at=started, duration=time.monotonic() - started,
                           bytes_scanned=sum(r.bytes_read for r in results),
                           bytes_changed=sum(r.bytes_changed for r in results),
                           bytes_sent=sum(r.bytes_sent for r in results))
        rounds.append(stats)
        control.summary = summarize(rounds, bytes_total, policy)
        s = control.summary
        emit({"event": "round", "round": stats.index, "seconds": stats.duration, "bytes_read": stats.bytes_scanned,
              "bytes_changed": stats.bytes_changed, "bytes_sent": stats.bytes_sent, "advice": s.advice.value,
              "message": s.message, "forecast_final": s.forecast_final, "change_rate": s.change_rate,
              "send_rate": s.send_rate,
              "disks": [{"source": r.source, "seconds": r.seconds, "bytes_changed": r.bytes_changed,
                         "bytes_sent": r.bytes_sent} for r in results]})
        if s.advice is Advice.NOT_CONVERGING:
            if not said_not_converging:
                log.warning("not_converging", disks=names, message=s.message)
            said_not_converging = True
        else:
            said_not_converging = False

    def cutover_due() -> bool:
        if control.cutover_requested:
            return True
        incremental = len(rounds) - 1
        if copts.cutover_after is not None and incremental >= copts.cutover_after:
            return True
        return bool(copts.auto_cutover and control.summary and control.summary.advice is Advice.CUTOVER)

    await one_round()  # the full pass (or its resumption)
    while not cutover_due():
        control.phase = Phase.WAITING
        ev = control._event()
        ev.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout=control.interval or 0.0)
        if control.sync.stop_requested:
            from migrated.errors import Interrupted

            raise Interrupted(f"{control.sync.stop_reason}: {names} synced up to round {len(rounds) - 1}; "
                              "run again to continue")
        if cutover_due():
            break
        if ev.is_set() and not control.cutover_requested:
            continue  # the interval changed: wait again with the new one
        await one_round()

    report = await cutover(session, disks, options, copts, control, emit, one_round, trackers, notes)
    control.phase = Phase.DONE
    targets = ", ".join(f"{session.endpoint.label}:{dst}" for _, dst in disks)
    return ContinuousResult(source=names, target=targets, bytes_total=bytes_total, rounds=list(rounds),
                            summary=control.summary, cutover=report)


# ------------------------------------------------------------ cutover


def _mounts_of(disks: list[Disk]) -> list[MountedFs]:
    seen: dict[str, MountedFs] = {}
    for src, _ in disks:
        for m in mounted_filesystems(src):
            seen.setdefault(m.device, m)
    return sorted(seen.values(), key=lambda m: (m.mountpoint.count("/"), m.mountpoint))


async def cutover(session: Session, disks: list[Disk], options: SyncOptions, copts: ContinuousOptions,
                  control: ContinuousControl, emit: Callable[[Event], None],
                  another_round: Callable[[], Awaitable[None]] | None = None,
                  trackers: dict[str, WriteTracker | None] | None = None,
                  notes: list[str] | None = None) -> CutoverReport:
    """Quiesce, final pass of every disk, un-quiesce, verify (module doc). The sources are running when
    this returns or raises."""
    control.phase = Phase.CUTOVER
    report = CutoverReport(quiesce=copts.quiesce, notes=list(notes or []))
    hook_results: list[HookResult] = []
    mounts: list[MountedFs] = []
    if copts.quiesce == "freeze":
        mounts = _mounts_of(disks)
        report.mountpoints = [m.mountpoint for m in mounts]
        if not mounts:
            report.notes.append("no filesystem of the disks is mounted: nothing to freeze")
    state_dir = options.state_dir or default_state_dir()
    final_opts = dataclasses.replace(options, checksum=False)
    emit({"event": "cutover", "quiesce": copts.quiesce, "mountpoints": report.mountpoints,
          "volumes": [src for src, _ in disks] if copts.quiesce == "lvm" else []})
    if copts.quiesce == "lvm":
        hook_results_lvm: list[HookResult] = []
        try:
            await _cutover_lvm(session, disks, final_opts, copts, control, report, emit, trackers or {},
                               hook_results_lvm)
        finally:
            report.hooks = [dataclasses.asdict(h) for h in hook_results_lvm]
        emit({"event": "verified" if report.verified else "done", "blocks": report.blocks_verified})
        return report
    try:
        async with hooks_around(copts.pre_hook, copts.post_hook, copts.hook_timeout, hook_results):
            last_error: MigratedError | None = None
            for attempt in range(1, copts.final_attempts + 1):
                report.attempts = attempt
                try:
                    results = await _final_pass_frozen(session, disks, final_opts, copts, control, report, mounts,
                                                       state_dir, trackers or {}, emit)
                except FreezeBudgetExceeded as e:
                    last_error = e
                    emit({"event": "freeze-budget-exceeded", "attempt": attempt, "message": str(e)})
                    log.warning("freeze_budget_exceeded", attempt=attempt, budget=copts.freeze_budget)
                    if attempt < copts.final_attempts and another_round is not None:
                        await another_round()  # shrink what the next final pass has to send
                    continue
                report.final_changed = sum(r.bytes_changed for r in results)
                report.final_sent = sum(r.bytes_sent for r in results)
                report.final_seconds = sum(r.seconds for r in results)
                last_error = None
                break
            if last_error is not None:
                raise last_error
    finally:
        report.hooks = [dataclasses.asdict(h) for h in hook_results]
    emit({"event": "thawed", "downtime": report.downtime, "final_changed": report.final_changed,
          "traced_bytes": report.traced_bytes})
    if copts.verify:
        control.phase = Phase.VERIFYING
        for src, dst in disks:
            report.blocks_verified += await session.verify_disk(src, dst, final_opts)
        report.verified = True
    emit({"event": "verified" if report.verified else "done", "blocks": report.blocks_verified})
    return report


async def _final_pass_frozen(session: Session, disks: list[Disk], final_opts: SyncOptions, copts: ContinuousOptions,
                             control: ContinuousControl, report: CutoverReport, mounts: list[MountedFs],
                             state_dir: str | os.PathLike[str], trackers: dict[str, WriteTracker | None],
                             emit: Callable[[Event], None] = lambda _e: None) -> list[SyncResult]:
    """One final pass of every disk with ``mounts`` frozen (or nothing frozen: quiesce hooks/none).

    ``emit`` gets ``{"event": "freeze", "mountpoints"}`` right before the first FIFREEZE and
    ``{"event": "thaw", "downtime"}`` once the guardian has thawed (or the freeze failed), on every
    attempt: between the two, the caller must write nothing that could land on those filesystems
    (the daemon holds its state files in memory, ``AgentStore.hold``). The callback runs on the
    event loop thread and must not block."""
    from migrated.source.freeze import drop_block_cache

    staged: StagedDir | None = None
    if mounts and path_on_filesystems(state_dir, mounts):
        files: set[str] = set()
        for src, dst in disks:
            files |= session.state_files(src, dst)
        staged = StagedDir(state_dir, mounts, files)
        final_opts = dataclasses.replace(final_opts, state_dir=str(await asyncio.to_thread(staged.stage)))
    control.phase = Phase.FINAL_PASS
    saved_limit = control.read_limit
    control.set_read_limit(None)  # the server is waiting: read as fast as we can
    fz = (GuardedFreeze([m.mountpoint for m in mounts], copts.freeze_budget, record=copts.freeze_record)
          if mounts else None)
    started = time.monotonic()
    results: list[SyncResult] = []
    try:
        with held_output() as held:
            if fz is not None:
                emit({"event": "freeze", "mountpoints": list(fz.mountpoints)})
                try:
                    await asyncio.to_thread(fz.freeze)
                except BaseException:
                    emit({"event": "thaw", "downtime": fz.report.downtime})  # it thawed what it had frozen
                    raise
            try:
                # stop before the guardian's deadline: what we read after a thaw is not consistent
                deadline = None if fz is None else time.monotonic() + fz.remaining() - 0.5
                traced: list[int] = []
                for src, dst in disks:
                    drop_block_cache(src)
                    opts = final_opts
                    tracker = trackers.get(src)
                    ranges = None
                    if tracker is not None and fz is not None:
                        # frozen: every write the filesystems made is queued, so its event is in the buffer
                        await asyncio.to_thread(tracker.drain)
                        ranges = tracker.dirty()
                    if ranges is not None:
                        opts = dataclasses.replace(final_opts, only_ranges=ranges)
                        traced.append(sum(e - s for s, e in ranges))
                    elif fz is not None:
                        report.notes.append(f"{src}: no complete write record; the final pass read the whole disk")
                    timeout = None if deadline is None else max(0.1, deadline - time.monotonic())
                    results.append(await asyncio.wait_for(
                        session.sync_disk(src, dst, opts, control.sync, None), timeout))
                if traced and len(traced) == len(disks):
                    report.traced_bytes = sum(traced)
            except TimeoutError:
                raise FreezeBudgetExceeded(
                    f"the final pass did not finish within the freeze budget of {copts.freeze_budget:g} s; "
                    f"{', '.join(m.mountpoint for m in mounts)} thawed; run more rounds first or raise "
                    "--freeze-budget") from None
            finally:
                if fz is not None:
                    try:
                        await asyncio.to_thread(fz.thaw)
                    finally:
                        report.downtime = fz.report.downtime
                        emit({"event": "thaw", "downtime": report.downtime})
                else:
                    report.downtime = time.monotonic() - started
        report.held_log_lines = held.getvalue().count("\n")
        if fz is not None and fz.report.reason != "told":
            # the guardian thawed on its own (a signal, an error) while we were still reading: what was
            # read after that is a mix of before and after the thaw, and verifying it proves nothing
            raise FreezeError(f"{', '.join(fz.mountpoints)} thawed before the final pass ended "
                              f"({fz.report.reason}); what it read may be inconsistent, so it is not trusted; "
                              "the source is running: cut over again")
    finally:
        control.set_read_limit(saved_limit)
        if staged is not None:
            # always: the engine kept its checkpoint invariant inside the staged dir, so writing it
            # back is safe even after a failed pass, and forgetting it would not be
            written = await asyncio.to_thread(staged.unstage)
            log.info("state_written_after_thaw", files=written)
    return results


async def _cutover_lvm(session: Session, disks: list[Disk], final_opts: SyncOptions, copts: ContinuousOptions,
                       control: ContinuousControl, report: CutoverReport, emit: Callable[[Event], None],
                       trackers: dict[str, WriteTracker | None], hook_results: list[HookResult]) -> None:
    """``--quiesce lvm``: pre hook -> ``lvcreate --snapshot`` of every disk (the cutover point) ->
    post hook at once (the source runs again) -> final pass of each disk read from its snapshot
    into the origin's checkpoint -> every target block verified against the snapshot -> the
    snapshots removed, always (``lvm_snapshot``). Nothing is frozen by this process: the only
    stall of the source is device-mapper's own while lvcreate runs.

    Downtime (``report.downtime``): from the start of the pre hook (without one: of the first
    lvcreate) to the end of the post hook (without one: of the last lvcreate). With several disks
    the snapshots are taken one after the other: only a pre hook that stops the writers makes them
    one instant across disks."""
    from migrated.errors import SourceError
    from migrated.source.freeze import drop_block_cache

    async with contextlib.AsyncExitStack() as snapshots:
        snaps: list[Snapshot] = []
        started = time.monotonic()
        async with hooks_around(copts.pre_hook, copts.post_hook, copts.hook_timeout, hook_results):
            for src, _ in disks:
                snaps.append(await snapshots.enter_async_context(lvm_snapshot(src, None, copts.snapshot_size)))
        # the post hook has run: the source's services are up again
        begin = started if copts.pre_hook else snaps[0].started
        end = time.monotonic() if copts.post_hook else snaps[-1].created
        report.downtime = end - begin
        report.snapshots = [{"origin": sn.origin, "volume": sn.volume, "name": sn.name, "device": sn.device,
                             "created_in": round(sn.created_in, 3), "removed": False} for sn in snaps]
        emit({"event": "snapshot", "downtime": report.downtime,
              "snapshots": [{"name": sn.name, "device": sn.device} for sn in snaps]})
        log.info("lvm_cutover_point", snapshots=[sn.name for sn in snaps], downtime=round(report.downtime, 3))

        control.phase = Phase.FINAL_PASS
        saved_limit = control.read_limit
        control.set_read_limit(None)  # the snapshot's copy-on-write space fills while we read: be quick
        results: list[SyncResult] = []
        traced: list[int] = []
        try:
            for (src, dst), sn in zip(disks, snaps, strict=True):
                opts = dataclasses.replace(final_opts, read_from=sn.device)
                tracker = trackers.get(src)
                if tracker is not None:
                    # every write in the snapshot was submitted before lvcreate returned, so its event
                    # is in the buffer; later writes only widen the ranges (harmless)
                    await asyncio.to_thread(tracker.drain)
                    ranges = tracker.dirty()
                    if ranges is not None:
                        opts = dataclasses.replace(opts, only_ranges=ranges)
                        traced.append(sum(e - s for s, e in ranges))
                    else:
                        report.notes.append(f"{src}: no complete write record; the final pass read the whole "
                                            "snapshot")
                drop_block_cache(sn.device)
                try:
                    results.append(await session.sync_disk(src, dst, opts, control.sync, None))
                except SourceError as e:
                    raise SourceError(f"{e} (the final pass read the snapshot {sn.name}; if its copy-on-write "
                                      "space ran out because the origin changed too much, raise --snapshot-size)"
                                      ) from None
            if traced and len(traced) == len(disks):
                report.traced_bytes = sum(traced)
        finally:
            control.set_read_limit(saved_limit)
        report.final_changed = sum(r.bytes_changed for r in results)
        report.final_sent = sum(r.bytes_sent for r in results)
        report.final_seconds = sum(r.seconds for r in results)
        report.attempts = 1
        emit({"event": "thawed", "quiesce": "lvm", "downtime": report.downtime, "final_changed": report.final_changed,
              "traced_bytes": report.traced_bytes})
        if copts.verify:
            control.phase = Phase.VERIFYING
            for (src, dst), sn in zip(disks, snaps, strict=True):
                report.blocks_verified += await session.verify_disk(src, dst, final_opts, read_from=sn.device)
            report.verified = True
    # the snapshots are removed (lvm_snapshot raised otherwise)
    for d, sn in zip(report.snapshots, snaps, strict=True):
        d["removed"] = sn.removed
