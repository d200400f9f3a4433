"""The agent daemon (``migrated run``): stays online, takes commands, runs the task.

One :class:`asyncio.TaskGroup` holds every loop; each has the same shape (work,
jittered capped backoff on failure, reset on success, clean cancellation: the
:class:`~migrated.aio.retry.Retry` of ``migrated/aio/retry.py``):

* **heartbeat**: first beat after a random delay, then every ``heartbeat.interval``;
  records the console's clock skew; an unreachable console or a skewed clock is
  logged once with its reason and retried for ever.
* **commands**: long-poll; each command is applied once (its ID is written to
  ``commands.json`` before the ack), acked, and re-acked if redelivered.
* **runner**: runs the task with the runners of ``migrated/agent/runners/`` (one SSH session, disk by disk);
  pause/SIGTERM ask the engine to flush and checkpoint; temporary errors are
  retried until ``transfer_retry_deadline``; the console being away never stops it.
* **reporter**: sends every state change in order (kept on disk until the console
  took it) and the latest progress every ``progress.interval``.
* **watchdog**: ``WATCHDOG=1`` from the event loop itself.

Restart safety: ``task.json`` keeps the task's state; a task that was starting or
transferring when the daemon stopped (SIGTERM or kill -9) is continued from its
checkpoint on start (transferring -> starting -> transferring).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from migrated.agent.checks import SystemProbe, results_to_dict, run_checks
from migrated.agent.console_api import AgentConsole
from migrated.agent.notify import Notifier
from migrated.agent.runners import continuous, driver, progress
from migrated.agent.runners.host import RunControl
from migrated.agent.runners.progress import RateMeter
from migrated.agent.state import MAX_REMEMBERED_COMMANDS, AgentStore, SourceRecord, TaskRecord, read_spec
from migrated.aio.retry import Retry, sleep_or_wake
from migrated.config import Config
from migrated.control.server import ControlServer
from migrated.errors import ConsoleError, MigratedError, StateError, UsageError
from migrated.model.backoff import Backoff
from migrated.model.states import (
    AGENT_BUSY,
    COPYING,
    NOT_STARTED,
    RUNNABLE,
    Action,
    ActionDenied,
    TaskState,
    check_action,
    transition,
)
from migrated.model.status import TaskProgress, continuous_line, format_bytes, format_duration

log = structlog.get_logger(__name__)

S = TaskState


class _Stop(Exception):
    """Raised inside the TaskGroup to end every loop after a clean shutdown."""


@dataclass
class ConsoleLink:
    endpoint: str | None
    online: bool = False
    last_heartbeat: float | None = None
    last_error: str = ""
    clock_skew: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "online": self.online, "last_heartbeat": self.last_heartbeat,
                "last_error": self.last_error, "clock_skew": self.clock_skew}


class Agent:
    """The daemon. Collaborators are passed in (console, store, notifier, engine session opener,
    system probe, random source, clocks) so tests can run it against real or small fake parts.
    It is the :class:`~migrated.agent.runners.host.RunnerHost` of the task runners."""

    def __init__(
        self,
        cfg: Config,
        console: AgentConsole | None,
        store: AgentStore,
        notifier: Notifier | None = None,
        *,
        session_opener: Callable[..., Any] | None = None,
        probe: SystemProbe | None = None,
        rng: random.Random | None = None,
        ssh_identity: str | None = None,
        recv_command: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.console = console
        self.store = store
        self.notifier = notifier or Notifier(None)
        self.session_opener = session_opener
        self.probe = probe or SystemProbe()
        self.rng = rng or random.Random()
        self.ssh_identity = ssh_identity
        self.recv_command = recv_command
        self.source: SourceRecord | None = None
        self.link = ConsoleLink(endpoint=cfg.console.endpoint)
        self.task: TaskRecord | None = None
        self.applied: list[list[Any]] = []  # [command_id, ok, message]
        self.bandwidth_bps: int | None = None
        self.started_at = time.time()
        self.run_control = RunControl()  # steers the task run in progress
        self._running = False
        self._runner_idle = asyncio.Event()
        self._runner_idle.set()
        self._wake_runner = asyncio.Event()
        self._wake_reporter = asyncio.Event()
        self._stopping = asyncio.Event()
        self._rate = RateMeter()
        self._last_reported: dict[str, Any] | None = None
        self._last_refusal = ""

    # ------------------------------------------------------------------ state

    def load(self) -> None:
        self.source = self.store.load_source()
        if self.source and not self.link.endpoint:
            self.link.endpoint = self.source.console
        self.applied = self.store.load_applied()
        self.task = self.store.load_task()
        if self.task is not None:
            self.bandwidth_bps = self.task.bandwidth_bps
            state = S(self.task.state)
            if state in COPYING:
                self.set_state(S.STARTING, "init", "the agent restarted; continuing from the checkpoint")
            if S(self.task.state) in RUNNABLE:
                log.info("continuing task after restart", task_id=self.task.task_id, state=self.task.state)
                self._wake_runner.set()

    # ------------------------------------------------------------------ RunnerHost

    def save_task(self) -> None:
        self.store.save_task(self.task)

    def wake_reporter(self) -> None:
        self._wake_reporter.set()

    def note_bytes_done(self, done: int) -> None:
        self._rate.add(time.monotonic(), done)

    @property
    def clock_skew(self) -> float | None:
        return self.link.clock_skew

    def set_state(self, new: TaskState, stage: str | None = None, message: str | None = None) -> None:
        """Move the task along one edge of the state table (checked), persist, queue the report."""
        t = self.task
        assert t is not None
        old = S(t.state)
        if old is not new:
            why = transition(old, new)
            log.info("task state", task_id=t.task_id, old=old.value, new=new.value, why=why,
                     stage=stage or t.stage, reason=message or "")
        t.state = new.value
        if stage is not None:
            t.stage = stage
        if message is not None:
            t.message = message
        if old is not new:
            t.unreported.append({"state": t.state, "stage": t.stage, "message": t.message})
        self.save_task()
        self._wake_reporter.set()
        self._notify_status()

    def event(self, level: str, message: str) -> None:
        """Queue a task event for the console, in order with the state changes (durable with the task)."""
        t = self.task
        if t is None:
            return
        t.unreported.append({"kind": "event", "level": level, "stage": t.stage, "message": message[:4000]})
        self.save_task()
        self._wake_reporter.set()

    def progress(self) -> TaskProgress | None:
        if self.task is None:
            return None
        p = self.task.progress_obj()
        p.updated_at = time.time()
        progress.fill(p, self.task.progress, p.updated_at)
        continuous.fill_settings(p, self.task)
        if S(self.task.state) is S.TRANSFERRING:
            p.rate_bps = self._rate.rate()
            remaining = p.bytes_total - p.bytes_done
            p.eta_seconds = remaining / p.rate_bps if p.rate_bps > 0 else None
        else:
            p.rate_bps, p.eta_seconds = 0.0, None
        return p

    def status(self) -> dict[str, Any]:
        p = self.progress()
        return {
            "source_id": self.source.source_id if self.source else None,
            "console": self.link.to_dict(),
            "task": p.to_dict() if p else None,
            "bandwidth_bps": self.bandwidth_bps,
            "daemon": {"started_at": self.started_at, "stopping": self._stopping.is_set()},
        }

    def status_line(self) -> str:
        link = "console online" if self.link.online else "console OFFLINE"
        p = self.progress()
        if p is None:
            return f"idle, {link}"
        pct = 100.0 * p.bytes_done / p.bytes_total if p.bytes_total else 0.0
        line = f"{p.task_id} {p.state} {pct:.1f}%"
        if p.state == S.TRANSFERRING:
            line += f" {format_bytes(p.rate_bps)}/s ETA {format_duration(p.eta_seconds)}"
        elif p.state == S.SYNCING:
            line = f"{p.task_id} syncing, {continuous_line(p)}"
        return f"{line}, {link}"

    def _notify_status(self) -> None:
        self.notifier.status(self.status_line())

    # ------------------------------------------------------------------ main

    async def run(self) -> None:
        """Serve until :meth:`stop`; READY=1 once the socket is bound and the state loaded."""
        self._thaw_leftovers()
        self.load()
        if self.source is not None:
            structlog.contextvars.bind_contextvars(source_id=self.source.source_id)  # SOURCE_ID in the journal
        async with ControlServer(self.cfg.control.socket, self.cfg.control.group, self):
            self.notifier.ready(self.status_line())
            log.info("migrated running", source_id=self.source.source_id if self.source else None,
                     console=self.link.endpoint, socket=self.cfg.control.socket)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._heartbeat_loop(), name="heartbeat")
                    tg.create_task(self._command_loop(), name="commands")
                    tg.create_task(self._runner_loop(), name="runner")
                    tg.create_task(self._reporter_loop(), name="reporter")
                    tg.create_task(self.notifier.watchdog_loop(), name="watchdog")
                    tg.create_task(self._until_stopped(), name="stop")
            except* _Stop:
                pass
        log.info("migrated stopped")

    @property
    def freeze_record(self) -> str:
        """Where this agent's freezes are recorded while they last (the guardian's ``--record``):
        $RUNTIME_DIRECTORY/frozen.json under systemd, else in the control socket's directory."""
        from migrated.source.freeze import default_record

        return default_record() or os.path.join(self.cfg.runtime_dir, "frozen.json")

    def _thaw_leftovers(self) -> None:
        """A freeze record found at start means the agent and its guardian were both killed
        mid-freeze: thaw what it names now (the unit's ExecStopPost does the same at stop)."""
        from migrated.source.freeze import FreezeError, thaw_recorded

        path = self.freeze_record
        try:
            rec = thaw_recorded(path)
        except FreezeError as e:
            log.error("a freeze record of a killed agent could not be thawed", record=path, error=str(e))
            return
        if rec is not None:
            log.warning("thawed filesystems a killed agent and its guardian left frozen",
                        mountpoints=rec["mountpoints"], was_frozen=rec["was_frozen"])

    def stop(self) -> None:
        """Begin a clean shutdown (SIGTERM/SIGINT): checkpoint, STOPPING=1, exit."""
        self._stopping.set()

    async def _until_stopped(self) -> None:
        await self._stopping.wait()
        self.notifier.stopping("checkpointing and stopping")
        log.info("stopping: checkpointing the running task" if self._running else "stopping")
        if self._running:
            self.run_control.request_stop("shutdown", "the daemon is stopping")
        self._wake_runner.set()
        try:
            await asyncio.wait_for(self._runner_idle.wait(), self.cfg.stop_timeout)
        except TimeoutError:
            log.warning("the task did not checkpoint in time; it resumes from its last checkpoint",
                        timeout=self.cfg.stop_timeout)
        if self.task is not None:
            self.save_task()
        raise _Stop

    def _retry(self) -> Retry:
        """A fresh retry loop (``migrated/aio/retry.py``) with the configured backoff."""
        b = self.cfg.backoff
        return Retry(Backoff(initial=b.initial, factor=b.factor, cap=b.max, random=self.rng.random))

    def _console_failed(self, what: str, e: BaseException, delay: float) -> None:
        reason = str(e)
        if isinstance(e, ConsoleError) and e.code == "AuthFailure.SignatureExpire":
            reason = (f"{e}: the console says our request is too old; this server's clock is probably wrong "
                      "(enable NTP: timedatectl set-ntp true)")
        elif isinstance(e, ConsoleError) and e.code.startswith("AuthFailure"):
            reason = f"{e}: check the credentials (migrated register) and that the key is not revoked"
        elif isinstance(e, ConsoleError) and e.code == "ResourceNotFound.Source":
            reason = f"{e}: this source was removed from the console; run migrated register again"
        changed = reason != self.link.last_error or self.link.online
        self.link.online = False
        self.link.last_error = reason
        (log.warning if changed else log.debug)(f"console {what} failed; retrying", reason=reason,
                                                retry_in=round(delay, 1))
        self._notify_status()

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeat_loop(self) -> None:
        if self.console is None or self.source is None:
            log.warning("not registered with a console: run migrated register --console URL; "
                        "serving the control socket only")
            return
        await asyncio.sleep(self.rng.uniform(0, self.cfg.heartbeat.first_jitter))
        console, source_id = self.console, self.source.source_id
        retry = self._retry()
        sent = 0.0

        async def beat() -> dict[str, Any]:
            nonlocal sent
            sent = time.time()
            return await console.heartbeat(source_id)

        while True:
            r = await retry.call(beat, retry_on=MigratedError, max_sleep=self.cfg.heartbeat.interval,
                                 on_retry=functools.partial(self._console_failed, "heartbeat"))
            now = time.time()
            if not self.link.online:
                log.info("console online", console=self.link.endpoint)
            self.link.online, self.link.last_heartbeat, self.link.last_error = True, now, ""
            server_time = r.get("ServerTime")
            if isinstance(server_time, (int, float)):
                skew = float(server_time) - (sent + now) / 2
                limit = self.cfg.heartbeat.max_clock_skew
                was_bad = self.link.clock_skew is not None and abs(self.link.clock_skew) > limit
                self.link.clock_skew = skew
                if abs(skew) > self.cfg.heartbeat.max_clock_skew and not was_bad:
                    log.warning("this server's clock differs from the console's; requests are re-signed with "
                                "the console's time, but fix the clock (timedatectl set-ntp true)",
                                skew_seconds=round(skew, 1))
            self._notify_status()
            interval = r.get("HeartbeatIntervalSeconds")
            wait = self.cfg.heartbeat.interval
            if isinstance(interval, (int, float)) and interval > 0:
                wait = min(wait, float(interval))
            await asyncio.sleep(wait)

    # ------------------------------------------------------------------ commands

    async def _command_loop(self) -> None:
        if self.console is None or self.source is None:
            return
        console, source_id = self.console, self.source.source_id
        retry = self._retry()
        cycle_start = 0.0

        async def poll() -> list[dict[str, Any]]:
            nonlocal cycle_start
            cycle_start = time.monotonic()
            return await console.poll(source_id, self.cfg.poll.wait)

        while True:
            cmds = await retry.call(poll, retry_on=MigratedError,
                                    on_retry=functools.partial(self._console_failed, "command poll"))
            for c in cmds:
                await self._handle_command(c)
            spent = time.monotonic() - cycle_start
            if spent < self.cfg.poll.min_cycle:
                await asyncio.sleep(self.cfg.poll.min_cycle - spent)

    async def _handle_command(self, c: dict[str, Any]) -> None:
        assert self.console is not None and self.source is not None
        cid = str(c.get("CommandId", ""))
        if not cid:
            log.warning("command without CommandId ignored", command=str(c)[:200])
            return
        previous = next((a for a in self.applied if a[0] == cid), None)
        if previous is not None:
            ok, message = bool(previous[1]), str(previous[2])
            log.info("command redelivered; acking again", command_id=cid)
        else:
            action = str(c.get("Action", ""))
            log.info("command received", command_id=cid, action=action, task_id=c.get("TaskId"))
            try:
                message = await self.apply_command(action, c)
                ok = True
            except (MigratedError, ActionDenied) as e:
                ok, message = False, str(e)
                log.warning("command refused", command_id=cid, action=action, reason=message)
            self.applied = [*self.applied, [cid, ok, message]][-MAX_REMEMBERED_COMMANDS:]
            self.store.save_applied(self.applied)
        try:
            await self.console.ack(self.source.source_id, cid, ok, message)
        except MigratedError as e:
            log.warning("ack failed; the console will redeliver and we ack again", command_id=cid, reason=str(e))

    async def apply_command(self, action: str, c: dict[str, Any]) -> str:
        """Apply one console command; return a message for the ack or raise with the reason."""
        task_id = str(c.get("TaskId", ""))
        spec = c.get("Task") if isinstance(c.get("Task"), dict) else None
        if action in ("start", "retry"):
            if spec is None:
                raise UsageError(f"{action} command without its task description")
            return self._start(task_id, spec, Action.RETRY if action == "retry" else Action.START, "console")
        if self.task is None or self.task.task_id != task_id:
            if action == "delete":
                self.store.drop_checkpoints(task_id)
                return f"task {task_id}: nothing held here; checkpoint dropped"
            raise StateError(f"task {task_id} is not on this agent")
        if action == "pause":
            return await self.pause_task("console")
        if action == "delete":
            return await self._delete()
        if action == "set-bandwidth":
            params = c.get("Params") if isinstance(c.get("Params"), dict) else {}
            kbps = params.get("BandwidthLimitKBps")
            if not isinstance(kbps, int) or kbps < 0:
                raise UsageError(f"set-bandwidth: BandwidthLimitKBps must be a whole number >= 0, got {kbps!r}")
            return self._set_bandwidth(kbps * 1024 or None)
        if action == "cutover":
            return continuous.cutover(self.task, self.run_control.continuous)
        if action == "set-rounds":
            params = c.get("Params") if isinstance(c.get("Params"), dict) else {}
            interval, kbps = params.get("RoundIntervalSeconds"), params.get("ReadLimitKBps")
            for name, v in (("RoundIntervalSeconds", interval), ("ReadLimitKBps", kbps)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                    raise UsageError(f"set-rounds: {name} must be a whole number >= 0 or absent, got {v!r}")
            return continuous.set_rounds(self.task, self.run_control.continuous, interval, kbps, "console",
                                         self.event)
        raise UsageError(f"unknown command action {action!r}")

    def _start(self, task_id: str, spec: dict[str, Any], action: Action, by: str) -> str:
        t = self.task
        if t is not None and t.task_id != task_id and S(t.state) in AGENT_BUSY:
            raise StateError(f"this agent is busy with task {t.task_id} ({t.state}); finish or delete it first")
        settings = read_spec(task_id, spec)  # a mistyped setting refuses the start, naming its key
        if t is None or t.task_id != task_id:
            state = settings.state or S.STARTING.value
            bps = settings.bandwidth_bps
            self.task = TaskRecord(task_id=task_id, spec=spec, state=state, bandwidth_bps=bps)
            self.bandwidth_bps = bps
            self._rate.reset()
            self.set_state(S.STARTING, "init", f"{action.value} by {by}")
        else:
            t.spec = spec
            if S(t.state) is not S.STARTING:
                check_action(action, S(t.state))
            self.set_state(S.STARTING, "init", f"{action.value} by {by}")
        self._wake_runner.set()
        return f"task {task_id} starting"

    async def pause_task(self, by: str) -> str:
        t = self.task
        if t is None:
            raise StateError("no task on this agent")
        try:
            check_action(Action.PAUSE, S(t.state))
        except ActionDenied as e:
            raise StateError(str(e)) from None
        self.run_control.request_stop(f"pause by {by}", f"paused by {by}")
        try:
            await asyncio.wait_for(self._runner_idle.wait(), 120)
        except TimeoutError:
            raise StateError(f"task {t.task_id} did not reach a checkpoint within 120 s; try again") from None
        return f"task {t.task_id} paused at {self._percent()}"

    async def _delete(self) -> str:
        t = self.task
        assert t is not None
        if self._running:
            self.run_control.request_stop("delete", "deleted")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._runner_idle.wait(), 60)
        self.store.drop_checkpoints(t.task_id)
        self.task = None
        self.store.save_task(None)
        self._notify_status()
        return f"task {t.task_id}: checkpoint dropped, target released"

    def _set_bandwidth(self, bps: int | None) -> str:
        self.bandwidth_bps = bps
        if self.task is not None:
            self.task.bandwidth_bps = bps
            self.save_task()
        self.run_control.set_bwlimit(bps)
        log.info("bandwidth limit changed", bandwidth_bps=bps)
        return f"bandwidth limit {format_bytes(bps) + '/s' if bps else 'removed'}"

    def _percent(self) -> str:
        return progress.percent(self.progress())

    # ------------------------------------------------------------------ control socket backend

    async def pause(self) -> dict[str, Any]:
        msg = await self.pause_task("migratectl")
        return {"message": msg, "task": self._task_dict()}

    async def resume(self) -> dict[str, Any]:
        return self._local_start(Action.START)

    async def retry(self) -> dict[str, Any]:
        return self._local_start(Action.RETRY)

    def _local_start(self, action: Action) -> dict[str, Any]:
        t = self.task
        if t is None:
            raise StateError("no task on this agent")
        if S(t.state) in NOT_STARTED:
            raise StateError(f"task {t.task_id} is {t.state}; start it from the console")
        try:
            check_action(action, S(t.state))
        except ActionDenied as e:
            raise StateError(str(e)) from None
        msg = self._start(t.task_id, t.spec, action, "migratectl")
        return {"message": msg, "task": self._task_dict()}

    async def check(self) -> dict[str, Any]:
        results = await run_checks(self.cfg, self.probe, clock_skew=self.link.clock_skew)
        return results_to_dict(results)

    async def set_bandwidth(self, bps: int | None) -> dict[str, Any]:
        return {"message": self._set_bandwidth(bps), "bandwidth_bps": bps}

    async def cutover(self) -> dict[str, Any]:
        return {"message": continuous.cutover(self.task, self.run_control.continuous), "task": self._task_dict()}

    async def set_rounds(self, interval: float | None, read_limit_bps: int | None) -> dict[str, Any]:
        """``migratectl set``: the read limit comes in bytes/s (0 = none) and is kept in KiB/s."""
        kbps = None if read_limit_bps is None else (max(1, round(read_limit_bps / 1024)) if read_limit_bps else 0)
        msg = continuous.set_rounds(self.task, self.run_control.continuous, interval, kbps, "migratectl", self.event)
        return {"message": msg, "task": self._task_dict()}

    def _task_dict(self) -> dict[str, Any] | None:
        p = self.progress()
        return p.to_dict() if p else None

    # ------------------------------------------------------------------ reporter

    async def _reporter_loop(self) -> None:
        if self.console is None or self.source is None:
            return
        retry = self._retry()
        on_retry = functools.partial(self._console_failed, "progress report")
        while True:
            await sleep_or_wake(self.cfg.progress.interval, self._wake_reporter)
            t = self.task
            if t is None:
                continue
            if self._running:
                self.save_task()  # progress survives kill -9 (the engine's checkpoint is the truth)
            try:
                while t.unreported:
                    entry = t.unreported[0]
                    if entry.get("kind") == "event":
                        await self.console.report_event(self.source.source_id, t.task_id, entry["level"],
                                                        entry["stage"], entry["message"])
                    else:
                        p = self.progress()
                        assert p is not None
                        p.state, p.stage, p.message = entry["state"], entry["stage"], entry["message"]
                        await self._report(p)
                    t.unreported.pop(0)
                    self.save_task()
                p = self.progress()
                if p is not None and (S(p.state).active or self._last_reported != p.to_dict() | {"updated_at": 0}):
                    await self._report(p)
                    self._last_reported = p.to_dict() | {"updated_at": 0}
                retry.reset()
            except MigratedError as e:
                if isinstance(e, ConsoleError) and e.code.startswith(("FailedOperation.IllegalStateTransition",
                                                                      "ResourceNotFound")):
                    if str(e) != self._last_refusal:  # once per distinct refusal, not every cycle
                        log.warning("the console refused a task report; dropping it", reason=str(e))
                    self._last_refusal = str(e)
                    if t.unreported:
                        t.unreported.pop(0)
                    self.save_task()
                    continue
                await retry.failed(e, on_retry)

    async def _report(self, p: TaskProgress) -> None:
        assert self.console is not None and self.source is not None
        await self.console.report_progress(self.source.source_id, p)

    # ------------------------------------------------------------------ runner

    async def _runner_loop(self) -> None:
        while True:
            await self._wake_runner.wait()
            self._wake_runner.clear()
            if self._stopping.is_set():
                return
            t = self.task
            if t is None or S(t.state) not in RUNNABLE:
                continue
            self._running = True
            self._runner_idle.clear()
            structlog.contextvars.bind_contextvars(task_id=t.task_id)  # this task's context only
            try:
                await self.run_task(t)
            finally:
                self._running = False
                self.run_control.control = None
                self._runner_idle.set()
                self._notify_status()

    async def run_task(self, t: TaskRecord) -> None:
        """Run ``t`` with the runners (:func:`migrated.agent.runners.driver.run_task`) until it
        succeeds, fails or :attr:`run_control` stops it."""
        await driver.run_task(self, self.run_control, t, self._retry())
