"""Runs a task's attempts: the checks before a fresh start, one SSH session per attempt, the one-shot
or the continuous runner, and retries from the checkpoint after a temporary error until
``transfer_retry_deadline`` (the timer restarts whenever an attempt made progress). The daemon
steers the run in progress through :class:`~migrated.agent.runners.host.RunControl`.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import structlog

from migrated.agent.checks import any_failed, migratable_disks, run_checks
from migrated.agent.runners import continuous, oneshot, progress
from migrated.errors import Interrupted, MigratedError, SourceError, UsageError
from migrated.model.states import ACTIVE, COPYING
from migrated.model.states import TaskState as S

if TYPE_CHECKING:
    from migrated.agent.runners.host import RunControl, RunnerHost
    from migrated.agent.state import TaskRecord
    from migrated.aio.retry import Retry

log = structlog.get_logger(__name__)


def parse_ssh(spec: str) -> tuple[str | None, str, int]:
    """``user@host[:port]`` -> (user, host, port)."""
    user, _, rest = spec.rpartition("@")
    host, port = rest, 22
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, p = rest.split(":")
        port = int(p)
    return user or None, host, port


def disk_mapping(host: RunnerHost, t: TaskRecord) -> list[tuple[str, str]]:
    mapping = t.settings.disk_mapping
    if mapping:
        return list(mapping)
    disks = host.probe.disks() or []
    return [(d.path, d.path) for d in migratable_disks(disks)]


def endpoint(host: RunnerHost, t: TaskRecord) -> Any:
    from migrated.transport.ssh import SshEndpoint

    settings = t.settings
    user, hostname, port = parse_ssh(settings.target_ssh)
    identity = host.ssh_identity or str(host.store.ssh_identity)
    return SshEndpoint(host=hostname, port=port, username=user, identity_files=(identity,),
                       host_keys=(settings.target_host_key,), recv_command=host.recv_command)


def _bytes_done(host: RunnerHost) -> int:
    p = host.progress()
    return p.bytes_done if p else 0


async def run_task(host: RunnerHost, rc: RunControl, t: TaskRecord, retry: Retry) -> None:
    """Run ``t`` until it succeeds, fails for good, or ``rc`` stops it (then it is paused or left
    at its checkpoint). Every error ends here: a permanent one fails the task. ``retry``'s backoff
    restarts whenever an attempt made progress; a stop ends its wait at once."""
    from migrated.engine.sync import SyncControl, SyncOptions

    opener = host.session_opener
    if opener is None:
        from migrated.engine.session import open_session as opener
    first_failure: float | None = None
    rc.stop_reason = None
    rc.interrupt.clear()
    while True:
        control = SyncControl(bwlimit=host.bandwidth_bps)
        rc.control = control
        done_before = _bytes_done(host)
        try:
            if rc.stop_reason:
                raise Interrupted(rc.stop_reason)
            await attempt(host, rc, t, opener, control, SyncOptions)
            return
        except Interrupted:
            interrupted(host, rc, t)
            return
        except MigratedError as e:
            if rc.stop_reason:
                interrupted(host, rc, t)
                return
            now = time.monotonic()
            progressed = _bytes_done(host) > done_before
            if progressed or first_failure is None:
                first_failure = now
                if progressed:
                    retry.reset()
            if e.retryable and now - first_failure < host.cfg.transfer_retry_deadline:

                def retrying(e: BaseException, delay: float) -> None:
                    log.warning("task attempt failed; retrying from the checkpoint", task_id=t.task_id,
                                reason=str(e), retry_in=round(delay, 1))
                    t.message = f"retrying: {e}"
                    host.event("warning", f"attempt failed, retrying from the checkpoint in {delay:.0f} s: {e}")

                await retry.failed(e, retrying, wake=rc.interrupt)
                continue
            if S(t.state) in ACTIVE:
                host.set_state(S.FAILED, t.stage, str(e))
            return
        except Exception as e:
            log.exception("task failed with an internal error", task_id=t.task_id)
            if S(t.state) in ACTIVE:
                host.set_state(S.FAILED, t.stage, f"internal error: {type(e).__name__}: {e}")
            return


def interrupted(host: RunnerHost, rc: RunControl, t: TaskRecord) -> None:
    reason = rc.stop_reason or "stopped"
    if reason.startswith("pause") and S(t.state) in COPYING:
        host.set_state(S.PAUSED, "transfer", f"{reason} at {progress.percent(host.progress())}")
    else:
        log.info("task stopped at a checkpoint", task_id=t.task_id, reason=reason)
        host.save_task()


async def attempt(host: RunnerHost, rc: RunControl, t: TaskRecord, opener: Any, control: Any,
                  options_cls: Any) -> None:
    """One attempt: refuse what this agent does not run, check, open the session, run the disks."""
    settings = t.settings  # UsageError naming the key of a mistyped setting
    hooks = settings.hooks
    if hooks and not host.cfg.allow_console_hooks:
        raise UsageError(f"task {t.task_id} asks this server to run {' and '.join(hooks)} commands as root at "
                         "cutover, and this agent does not run hooks from the console: set "
                         "`allow_console_hooks: true` in migrated.yaml and restart it, or create the task "
                         "without hooks")
    mapping = disk_mapping(host, t)
    if not mapping:
        raise UsageError("no disks to migrate: the task has no disk mapping and no mounted disk was found")
    if settings.has_cutover:
        from migrated.source.privileges import check_cutover

        problem = check_cutover(settings.effective_quiesce, [src for src, _ in mapping])
        if problem:
            raise UsageError(f"task {t.task_id}: {problem}")
    target = endpoint(host, t)
    # checks run when a task starts afresh; a resume from a checkpoint already passed them
    if not t.progress and not (host.cfg.ignore_checks == "all" or settings.skips_every_check):
        results = await task_checks(host, t, mapping, target, settings.ignore_checks)
        if any_failed(results):
            from migrated.errors import ChecksFailed

            failed = "; ".join(f"{r.name}: {r.message}" for r in results if r.result.value == "fail")
            raise ChecksFailed(f"pre-migration checks failed: {failed}")
    state_dir = host.store.checkpoint_dir(t.task_id)
    done = set((t.progress or {}).get("done_disks", []))
    disks = progress.initial_disks(t, mapping)
    async with opener(target) as session:
        if S(t.state) is S.STARTING:
            host.set_state(S.TRANSFERRING, "transfer", f"target {target.label} ready")
        if settings.has_cutover:
            # the limit lives on `control` only: the engine re-applies SyncOptions.bwlimit to a
            # control without a limit at every round, which undid `migratectl bandwidth 0`
            options = options_cls(checksum=False, state_dir=str(state_dir), bwlimit=None)
            await continuous.run(host, rc, t, session, mapping, control, options, disks)
            return
        await oneshot.sync_disks(host, t, session, mapping, control, options_cls, disks, done, str(state_dir))
    oneshot.finish(host, t, mapping)


async def task_checks(host: RunnerHost, t: TaskRecord, mapping: list[tuple[str, str]], target: Any,
                      ignore: tuple[str, ...]) -> list[Any]:
    """The checks before a start: local ones, plus the target over SSH (sizes, receiver)."""
    from migrated.agent.checks import TargetPlan
    from migrated.agent.target_probe import SshTargetProbe

    sizes = []
    for src, dst in mapping:
        try:
            fd = os.open(src, os.O_RDONLY)
            try:
                sizes.append((src, os.lseek(fd, 0, os.SEEK_END), dst))
            finally:
                os.close(fd)
        except OSError as e:
            raise SourceError(f"cannot open source disk {src}: {e.strerror}") from None
    skip = tuple(ignore)
    if t.settings.disk_mapping:
        skip += ("disks",)  # the person chose the disks
    results = await run_checks(host.cfg, host.probe, clock_skew=host.clock_skew,
                               target=SshTargetProbe(target), plan=TargetPlan(tuple(sizes)), ignore=skip)
    for r in results:
        if r.result.value in ("warn", "fail"):
            log.warning("pre-migration check", check=r.name, result=r.result.value, detail=r.message)
            host.event("warning" if r.result.value == "warn" else "error",
                       f"check {r.name}: {r.result.value}: {r.message}")
    return results
