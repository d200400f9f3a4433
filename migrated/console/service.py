"""The console's rules, apart from HTTP: what each API action does.

:class:`ConsoleService` is called by the signed API (``app.py``), by the
scheduler, and by the web UI; all of them get the same refusals with the same
words. It holds no state of its own beyond the long-polls it is serving: every
fact lives in :class:`~migrated.console.storage.Storage`.

Errors are the classes of :mod:`migrated.errors`; each carries its API code (``app.py``
``error_reply`` answers with it). Codes used here:

==========================================  ==============================================
``AuthFailure.UnauthorizedOperation``       the key's role, or the source is not the key's
``ResourceNotFound.Source`` / ``.Task`` /   no such source, task, command, key
``.Command`` / ``.Key``
``ResourceInUse.Source``                    the source has an unfinished task
``FailedOperation.ActionDenied``            the task's state does not allow the action
                                            (message says which states allow it)
``FailedOperation.IllegalStateTransition``  a progress report moves the task along an edge
                                            that does not exist
``FailedOperation.SourceOffline``           start/retry while the source is offline
``FailedOperation.LastAdminKey``            revoking the last active admin key
``FailedOperation.MachineOwnedByOtherKey``  RegisterSource of a machine another live key owns
``FailedOperation.NotContinuous``           ModifyTaskRounds of a task without rounds
``InvalidParameterValue``                   a value that parses but is not acceptable
``InvalidParameter.TargetInstance``         (cloud on) TargetInstanceId names no instance in
                                            the task's Region
``FailedOperation.TargetInstance``          (cloud on) the instance is not RUNNING, runs
                                            Windows, or its disks are too small
``FailedOperation.CloudApi``                (cloud on) Tencent Cloud refused a call; the
                                            message has Tencent's code and RequestId
``InternalError.Busy``                      the task kept changing under five attempts
==========================================  ==============================================

With a ``cloud:`` config section (docs/cloud.md) the service also talks to a cloud through the
:class:`~migrated.cloud.provider.CloudProvider` it is given: CreateTask validates the target instance and takes
an image name no image of the account has; an image task that reaches ``success`` gets its image
made (CreateImage, polled to NORMAL) in a background job whose progress is the task's
``ImageId`` / ``ImageState`` and its events. Without the section nothing here calls out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from migrated.cloud.provider import CloudProvider, DiskSpec, InstanceInvalid, unique_name
from migrated.console import params as P
from migrated.console.config import ConsoleConfig
from migrated.console.storage import (
    CommandRecord,
    DiskInfo,
    EventRecord,
    KeyRecord,
    NewCommand,
    SourceRecord,
    Storage,
    StorageConflict,
    TaskRecord,
    new_id,
)
from migrated.errors import (
    Busy,
    CloudError,
    IllegalStateTransition,
    InvalidParameter,
    InvalidParameterValue,
    MissingParameter,
    Refused,
    ResourceInUse,
    ResourceNotFound,
    SourceOffline,
    StateError,
    TargetError,
    TargetInstanceUnusable,
    UnauthorizedOperation,
)
from migrated.model.bandwidth import format_kbps
from migrated.model.states import (
    AGENT_HOLDS,
    AGENT_KEEPS,
    NOT_STARTED,
    UNFINISHED,
    Action,
    ActionDenied,
    IllegalTransition,
    TaskState,
    allowed_actions,
    check_action,
    denied_actions,
    transition,
    values,
)
from migrated.model.status import TaskProgress
from migrated.model.taskspec import OPTION_KEYS, TaskSpec

log = structlog.get_logger(__name__)

UNFINISHED_STATES = values(UNFINISHED)

# command actions the agent understands (Action values plus set-bandwidth)
CMD_START, CMD_PAUSE, CMD_RETRY, CMD_DELETE, CMD_SET_BANDWIDTH = "start", "pause", "retry", "delete", "set-bandwidth"
CMD_CUTOVER = "cutover"
CMD_SET_ROUNDS = "set-rounds"  # Params: {RoundIntervalSeconds?, ReadLimitKBps?}



def is_continuous(t: TaskRecord) -> bool:
    """A ContinuousSync task (rounds until CutoverTask). Its options live in ``t.continuous``."""
    return t.continuous is not None and not t.continuous.get("ConsistentFinish")


def consistent_finish(t: TaskRecord) -> bool:
    """A one-shot task that ends with a cutover right after its full pass (CreateTask ConsistentFinish);
    its cutover options live in ``t.continuous`` too, with ``ConsistentFinish: true``."""
    return bool(t.continuous and t.continuous.get("ConsistentFinish"))


def task_spec(t: TaskRecord) -> TaskSpec:
    """The settings of a stored task, as the agent runs them."""
    c = t.continuous or {}
    return TaskSpec(
        task_id=t.task_id, name=t.name, description=t.description, region=t.region, target_type=t.target_type,
        image_name=t.image_name, target_instance_id=t.target_instance_id, state=t.state,
        target_ssh=t.target_ssh, target_host_key=t.target_host_key, disk_mapping=t.disk_mapping,
        bandwidth_kbps=t.bandwidth_limit_kbps, checksum=t.checksum, continuous_sync=is_continuous(t),
        consistent_finish=consistent_finish(t), ignore_checks=t.ignore_checks,
        **{attr: c.get(key) for key, attr in OPTION_KEYS},
    )


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str, name: str) -> float:
    """ISO 8601 (``2026-12-01T02:00``, ``...Z``, ``...+08:00``); no offset means UTC."""
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameterValue(f"parameter {name}: not an ISO 8601 time: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass
class Principal:
    """Who signed the request."""

    key: KeyRecord

    @property
    def secret_id(self) -> str:
        return self.key.secret_id


class ConsoleService:
    def __init__(self, storage: Storage, config: ConsoleConfig, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, cloud: CloudProvider | None = None) -> None:
        self.storage = storage
        self.config = config
        self.cloud = cloud  # None: cloud features off
        self._image_jobs: dict[str, asyncio.Task[None]] = {}
        self.clock = clock
        self.rng = rng or random.Random()
        self.polls_held = 0  # long-polls waiting right now (for /metrics)
        self._closing = asyncio.Event()

    def shutdown(self) -> None:
        """End every held long-poll now (with no commands); used on server shutdown."""
        self._closing.set()
        self.storage.wake_all()

    async def aclose(self) -> None:
        """Stop the image jobs (they resume at the next start: :meth:`resume_image_jobs`) and close
        the cloud client. Call before closing storage."""
        jobs = list(self._image_jobs.values())
        for j in jobs:
            j.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        if self.cloud is not None:
            await self.cloud.close()

    # ------------------------------------------------------------ views

    def is_online(self, s: SourceRecord, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        a = self.config.agents
        limit = a.heartbeat_interval_seconds * a.offline_after_missed
        return s.last_heartbeat is not None and now - s.last_heartbeat <= limit

    def source_view(self, s: SourceRecord, now: float | None = None) -> dict[str, Any]:
        return {
            "SourceId": s.source_id,
            "MachineId": s.machine_id,
            "Hostname": s.hostname,
            "OsName": s.os_name,
            "AgentVersion": s.agent_version,
            "Disks": [{"Name": d.name, "SizeBytes": d.size_bytes, "MountPoints": list(d.mount_points),
                       "IsSystem": d.is_system} for d in s.disks],
            "Status": "online" if self.is_online(s, now) else "offline",
            "LastHeartbeatTime": iso(s.last_heartbeat),
            "RegisteredTime": iso(s.registered_at),
            "RegisteredBy": s.registered_by,
        }

    @staticmethod
    def agent_task_view(t: TaskRecord) -> dict[str, Any]:
        """The task as the agent receives it with a command (the rounds and cutover options are null
        where not given, and for a one-shot task: docs/consistency.md)."""
        return task_spec(t).to_api()

    @classmethod
    def task_view(cls, t: TaskRecord) -> dict[str, Any]:
        """The task as an operator sees it (DescribeTasks, the web UI)."""
        state = TaskState(t.state)
        p = t.progress or {}
        v = cls.agent_task_view(t)
        v.update({
            "SourceId": t.source_id,
            "ScheduledStartTime": iso(t.scheduled_at),
            "Stage": t.stage,
            "Message": t.message,
            "Progress": {**TaskProgress.from_api(p).to_view(), "UpdatedTime": iso(p.get("UpdatedAt"))},
            "CreatedTime": iso(t.created_at),
            "UpdatedTime": iso(t.updated_at),
            "ImageId": t.image_id,
            "ImageState": t.image_state,
            "AllowedActions": [a.value for a in allowed_actions(state)],
            "DeniedActions": [a.value for a in denied_actions(state)],
        })
        return v

    @staticmethod
    def command_view(c: CommandRecord) -> dict[str, Any]:
        return {"CommandId": c.command_id, "TaskId": c.task_id, "Action": c.action, "Params": c.params}

    @staticmethod
    def event_view(e: EventRecord) -> dict[str, Any]:
        return {"EventId": e.event_id, "Time": iso(e.time), "Level": e.level, "Stage": e.stage, "Message": e.message}

    # ------------------------------------------------------------ helpers

    async def _own_source(self, caller: Principal, source_id: str) -> SourceRecord:
        s = await self.storage.get_source(source_id)
        if s is None:
            raise ResourceNotFound(f"source {source_id} does not exist; register again", detail="Source")
        if s.registered_by != caller.secret_id:
            raise UnauthorizedOperation(
                f"source {source_id} was registered with another key; this key cannot act on it")
        return s

    async def _task(self, task_id: str) -> TaskRecord:
        t = await self.storage.get_task(task_id)
        if t is None:
            raise ResourceNotFound(f"task {task_id} does not exist", detail="Task")
        return t

    async def _own_task(self, caller: Principal, source_id: str, task_id: str) -> TaskRecord:
        await self._own_source(caller, source_id)
        t = await self.storage.get_task(task_id)
        if t is None or t.source_id != source_id:
            raise ResourceNotFound(f"task {task_id} does not exist on source {source_id}", detail="Task")
        return t

    # ------------------------------------------------------------ agent actions

    async def register_source(self, caller: Principal, p: P.RegisterSource) -> dict[str, Any]:
        disks = tuple(DiskInfo(d.Name, d.SizeBytes, tuple(d.MountPoints), d.IsSystem) for d in p.Disks)
        names = [d.name for d in disks]
        if len(set(names)) != len(names):
            raise InvalidParameterValue("parameter Disks: disk names must be unique")
        try:
            s, created = await self.storage.register_source(
                machine_id=p.MachineId, hostname=p.Hostname, os_name=p.OsName, agent_version=p.AgentVersion,
                disks=disks, registered_by=caller.secret_id, now=self.clock(),
            )
        except StorageConflict as exc:
            raise Refused(str(exc), detail="MachineOwnedByOtherKey") from None
        log.info("source registered" if created else "source re-registered", source_id=s.source_id,
                 hostname=s.hostname)
        return {"SourceId": s.source_id, "HeartbeatIntervalSeconds": self.config.agents.heartbeat_interval_seconds}

    async def heartbeat(self, caller: Principal, p: P.Heartbeat) -> dict[str, Any]:
        s = await self._own_source(caller, p.SourceId)
        now = self.clock()
        await self.storage.record_heartbeat(s.source_id, p.AgentVersion or s.agent_version, now)
        return {"HeartbeatIntervalSeconds": self.config.agents.heartbeat_interval_seconds, "ServerTime": now}

    async def poll_commands(self, caller: Principal, p: P.PollCommands) -> dict[str, Any]:
        s = await self._own_source(caller, p.SourceId)
        a = self.config.agents
        loop = asyncio.get_running_loop()
        wait = min(p.WaitSeconds, a.max_wait_seconds)
        if wait >= 5:
            # answer an idle poll a little early, at random, so that a fleet whose polls happen to
            # line up (all agents restarted together, a console restart) spreads out again
            wait *= self.rng.uniform(0.75, 1.0)
        deadline = loop.time() + wait
        await self.storage.record_heartbeat(s.source_id, s.agent_version, self.clock())
        self.polls_held += 1
        try:
            while True:
                waiter = self.storage.command_waiter(s.source_id)  # before looking: no lost wake-up
                cmds, next_due = await self.storage.take_commands(
                    s.source_id, self.clock(), a.command_visibility_seconds)
                if cmds:
                    return {"Commands": [await self._command_for_agent(c) for c in cmds]}
                remaining = deadline - loop.time()
                if remaining <= 0 or self._closing.is_set():
                    return {"Commands": []}
                if next_due is not None:
                    remaining = min(remaining, max(0.05, next_due - self.clock()))
                await waiter.wait(remaining)  # no extra tasks per held poll: shutdown wakes it too
        finally:
            self.polls_held -= 1

    async def _command_for_agent(self, c: CommandRecord) -> dict[str, Any]:
        v = self.command_view(c)
        t = await self.storage.get_task(c.task_id)
        v["Task"] = self.agent_task_view(t) if t is not None else None
        return v

    async def ack_command(self, caller: Principal, p: P.AckCommand) -> dict[str, Any]:
        await self._own_source(caller, p.SourceId)
        rec, first = await self.storage.ack_command(p.SourceId, p.CommandId, p.Result, p.Message, self.clock())
        if rec is None:
            raise ResourceNotFound(f"command {p.CommandId} does not exist on source {p.SourceId}", detail="Command")
        if first and p.Result == "error":
            await self.storage.add_event(rec.task_id, rec.source_id, "error", "",
                                         f"command {rec.action} failed on the agent: {p.Message}", self.clock())
        return {"CommandId": rec.command_id, "Result": rec.result}

    async def report_task_progress(self, caller: Principal, p: P.ReportTaskProgress) -> dict[str, Any]:
        now = self.clock()
        for _attempt in range(5):
            t = await self._own_task(caller, p.SourceId, p.TaskId)
            old, new = TaskState(t.state), p.State
            event = None
            if old != new:
                try:
                    why = transition(old, new)
                except IllegalTransition as exc:
                    raise IllegalStateTransition(f"task {t.task_id}: {exc}") from None
                text = f"{old.value} -> {new.value}: {why}" + (f" ({p.Message})" if p.Message else "")
                event = ("error" if new == TaskState.FAILED else "info", p.Stage, text)
            # kept in the API form; the task's state, stage and message are columns of their own
            progress = TaskProgress.from_api(p.model_dump(mode="json")).to_api()
            for column in ("TaskId", "State", "Stage", "Message"):
                del progress[column]
            progress["UpdatedAt"] = now
            changes: dict[str, Any] = {"state": new.value, "stage": p.Stage, "progress": progress}
            if p.Message or old != new:
                changes["message"] = p.Message
            make_image = (self.cloud is not None and new == TaskState.SUCCESS and old != new
                          and t.target_type == "image")
            if make_image:
                changes["image_state"] = "PENDING"  # durable with the success: a restart resumes the job
            try:
                t, _ = await self.storage.update_task(t.task_id, expect_state=old.value, changes=changes,
                                                      event=event, now=now)
            except StorageConflict:
                continue  # an operator changed the task meanwhile: check again against its new state
            if event:
                log.info("task state", task_id=t.task_id, old=old.value, new=new.value)
            if make_image:
                self._start_image_job(t.task_id)
            return {"TaskId": t.task_id, "State": t.state}
        raise Busy("the task keeps changing; report again")

    async def report_task_event(self, caller: Principal, p: P.ReportTaskEvent) -> dict[str, Any]:
        t = await self._own_task(caller, p.SourceId, p.TaskId)
        e = await self.storage.add_event(t.task_id, t.source_id, p.Level, p.Stage, p.Message, self.clock())
        return {"EventId": e.event_id}

    # ------------------------------------------------------------ keys

    async def create_key(self, caller: Principal | None, p: P.CreateKey) -> dict[str, Any]:
        k = await self.storage.create_key(p.Role, p.Name, self.clock())
        log.info("key created", key_id=k.secret_id, role=k.role, name=k.name,
                 by=caller.secret_id if caller else "local")
        return {"SecretId": k.secret_id, "SecretKey": k.secret_key, "Role": k.role, "Name": k.name}

    @staticmethod
    def key_view(k: KeyRecord) -> dict[str, Any]:
        return {"SecretId": k.secret_id, "Role": k.role, "Name": k.name, "CreatedTime": iso(k.created_at),
                "RevokedTime": iso(k.revoked_at), "Status": "active" if k.active else "revoked"}

    async def describe_keys(self, caller: Principal, p: P.DescribeKeys) -> dict[str, Any]:
        keys = await self.storage.list_keys()
        return {"KeySet": [self.key_view(k) for k in keys], "TotalCount": len(keys)}

    async def revoke_key(self, caller: Principal, p: P.RevokeKey) -> dict[str, Any]:
        k = await self.storage.get_key(p.SecretId)
        if k is None:
            raise ResourceNotFound(f"key {p.SecretId} does not exist", detail="Key")
        if k.active and k.role == "admin":
            admins = [x for x in await self.storage.list_keys() if x.active and x.role == "admin"]
            if len(admins) <= 1:
                raise Refused("this is the last active admin key; create another admin key first",
                              detail="LastAdminKey")
        k = await self.storage.revoke_key(p.SecretId, self.clock())
        assert k is not None
        log.info("key revoked", key_id=k.secret_id, by=caller.secret_id)
        return self.key_view(k)

    # ------------------------------------------------------------ sources

    async def describe_sources(self, caller: Principal, p: P.DescribeSources) -> dict[str, Any]:
        srcs = await self.storage.list_sources()
        if p.SourceIds is not None:
            wanted = set(p.SourceIds)
            srcs = [s for s in srcs if s.source_id in wanted]
        now = self.clock()
        unfinished, _ = await self.storage.list_tasks(states=UNFINISHED_STATES, limit=1_000_000)
        current = {t.source_id: t.task_id for t in unfinished}
        out = []
        for s in srcs:
            v = self.source_view(s, now)
            v["CurrentTaskId"] = current.get(s.source_id)
            out.append(v)
        return {"SourceSet": out, "TotalCount": len(out)}

    async def remove_source(self, caller: Principal, p: P.RemoveSource) -> dict[str, Any]:
        s = await self.storage.get_source(p.SourceId)
        if s is None:
            raise ResourceNotFound(f"source {p.SourceId} does not exist", detail="Source")
        tasks, _ = await self.storage.list_tasks(source_id=s.source_id, states=UNFINISHED_STATES, limit=1)
        if tasks:
            raise ResourceInUse(f"source {s.source_id} has unfinished task {tasks[0].task_id} ({tasks[0].state}); "
                                "delete it first", detail="Source")
        await self.storage.remove_source(s.source_id)
        log.info("source removed", source_id=s.source_id, by=caller.secret_id)
        return {"SourceId": s.source_id}

    # ------------------------------------------------------------ tasks

    async def create_task(self, caller: Principal, p: P.CreateTask) -> dict[str, Any]:
        s = await self.storage.get_source(p.SourceId)
        if s is None:
            raise ResourceNotFound(f"source {p.SourceId} does not exist", detail="Source")
        if p.TargetType == "image" and not p.ImageName:
            raise MissingParameter("missing parameter ImageName (required when TargetType is image)")
        if p.TargetType == "instance" and not p.TargetInstanceId:
            raise MissingParameter("missing parameter TargetInstanceId (required when TargetType is instance)")
        now = self.clock()
        scheduled_at = None
        if p.ScheduledStartTime:
            scheduled_at = parse_time(p.ScheduledStartTime, "ScheduledStartTime")
            lead = self.config.scheduler.min_lead_seconds
            if scheduled_at < now + lead:
                raise InvalidParameterValue(
                    f"parameter ScheduledStartTime: must be at least {lead / 60:g} minutes from now "
                    f"(server time {iso(now)})")
        disk_names = {d.name for d in s.disks}
        if p.DiskMapping is not None:
            mapping = tuple((m.Source, m.Target) for m in p.DiskMapping)
            for i, (src, _) in enumerate(mapping):
                if src not in disk_names:
                    raise InvalidParameterValue(
                        f"parameter DiskMapping.{i}.Source: source {s.source_id} has no disk {src!r} "
                        f"(it has {', '.join(sorted(disk_names)) or 'none'})")
            if len({a for a, _ in mapping}) != len(mapping) or len({b for _, b in mapping}) != len(mapping):
                raise InvalidParameterValue("parameter DiskMapping: each disk may appear once per side")
            if not mapping:
                raise InvalidParameterValue("parameter DiskMapping: map at least one disk")
        else:
            chosen = [d for d in s.disks if d.is_system or d.mount_points] or list(s.disks)
            mapping = tuple((d.name, d.name) for d in chosen)
            if not mapping:
                raise InvalidParameterValue(
                    f"parameter DiskMapping: source {s.source_id} reported no disks; give DiskMapping")
        task_id = new_id("task-")
        state = TaskState.SCHEDULED if scheduled_at is not None else TaskState.CREATED
        image_name = p.ImageName if p.TargetType == "image" else ""
        instance_id = p.TargetInstanceId if p.TargetType == "instance" else ""
        warnings: list[str] = []
        if self.cloud is not None:
            # image tasks: TargetInstanceId is the relay instance the image is made from
            instance_id = p.TargetInstanceId
            sizes = {d.name: d for d in s.disks}
            disks = [DiskSpec(a, sizes[a].size_bytes, sizes[a].is_system) for a, _ in mapping if a in sizes]
            warnings, image_name = await self._cloud_checks(p, task_id, disks, image_name)
        spec = p.spec()
        # the options of a continuous task, or of a one-shot one with a consistent finish (flagged)
        continuous = spec.options() if spec.has_cutover else None
        if spec.consistent_finish and continuous is not None:  # (ContinuousSync with it was refused)
            continuous["ConsistentFinish"] = True
        rec = TaskRecord(
            task_id=task_id, source_id=s.source_id, name=p.TaskName, description=p.Description, region=p.Region,
            target_type=p.TargetType, image_name=image_name, target_instance_id=instance_id,
            target_ssh=spec.target_ssh, target_host_key=spec.target_host_key,
            bandwidth_limit_kbps=spec.bandwidth_kbps, checksum=spec.checksum, disk_mapping=mapping,
            scheduled_at=scheduled_at, state=state.value, created_at=now, updated_at=now,
            continuous=continuous, ignore_checks=spec.ignore_checks,
        )
        try:
            rec = await self.storage.create_task(rec, unfinished_states=UNFINISHED_STATES)
        except StorageConflict as exc:
            raise ResourceInUse(str(exc), detail="Source") from None
        await self.storage.add_event(task_id, s.source_id, "info", "", f"task created ({state.value})", now)
        for w in warnings:
            await self.storage.add_event(task_id, s.source_id, "warning", "check", w, now)
        log.info("task created", task_id=task_id, source_id=s.source_id, state=state.value)
        return {"TaskId": rec.task_id, "ImageName": rec.image_name, "State": rec.state}

    async def describe_tasks(self, caller: Principal, p: P.DescribeTasks) -> dict[str, Any]:
        tasks, total = await self.storage.list_tasks(
            source_id=p.SourceId, states=[s.value for s in p.States] if p.States is not None else None,
            task_ids=p.TaskIds, limit=p.Limit, offset=p.Offset)
        return {"TaskSet": [self.task_view(t) for t in tasks], "TotalCount": total}

    async def _act(self, task_id: str, action: Action, *, by: str) -> dict[str, Any]:
        """Apply a person's (or the scheduler's) action to a task: check, change state, queue the command."""
        for _attempt in range(5):
            t = await self._task(task_id)
            state = TaskState(t.state)
            try:
                check_action(action, state)
            except ActionDenied as exc:
                raise StateError(f"task {task_id}: {exc}") from None
            changes: dict[str, Any] = {}
            command: NewCommand | None = None
            if action in (Action.START, Action.RETRY):
                if by != "scheduler":
                    s = await self.storage.get_source(t.source_id)
                    if s is None or not self.is_online(s):
                        raise SourceOffline(f"source {t.source_id} is offline; start the agent on it and try again")
                new = TaskState.STARTING
                command = NewCommand(CMD_RETRY if action == Action.RETRY else CMD_START)
            elif action == Action.PAUSE:
                new = state  # the agent reports paused once it has flushed and checkpointed
                command = NewCommand(CMD_PAUSE)
            elif action == Action.CUTOVER:
                new = state  # the agent reports verifying once the source is quiesced for the final pass
                command = NewCommand(CMD_CUTOVER)
            else:  # delete
                new = TaskState.DELETED
                if state not in NOT_STARTED:
                    command = NewCommand(CMD_DELETE)  # the agent holds a checkpoint / target to release
            if new != state:
                why = transition(state, new)
                changes["state"] = new.value
                event = ("info", "", f"{action.value} by {by}: {state.value} -> {new.value}: {why}")
            else:
                event = ("info", "", f"{action.value} requested by {by}")
            try:
                t, cmd = await self.storage.update_task(task_id, expect_state=state.value, changes=changes,
                                                        command=command, event=event, now=self.clock())
            except StorageConflict:
                continue
            log.info("task action", task_id=task_id, action=action.value, by=by, state=t.state)
            return {"TaskId": t.task_id, "State": t.state, "CommandId": cmd.command_id if cmd else None}
        raise Busy(f"task {task_id} keeps changing; try again")

    async def start_task(self, caller: Principal, p: P.StartTask) -> dict[str, Any]:
        return await self._act(p.TaskId, Action.START, by=caller.key.name or caller.secret_id)

    async def pause_task(self, caller: Principal, p: P.PauseTask) -> dict[str, Any]:
        return await self._act(p.TaskId, Action.PAUSE, by=caller.key.name or caller.secret_id)

    async def retry_task(self, caller: Principal, p: P.RetryTask) -> dict[str, Any]:
        return await self._act(p.TaskId, Action.RETRY, by=caller.key.name or caller.secret_id)

    async def delete_task(self, caller: Principal, p: P.DeleteTask) -> dict[str, Any]:
        return await self._act(p.TaskId, Action.DELETE, by=caller.key.name or caller.secret_id)

    async def cutover_task(self, caller: Principal, p: P.CutoverTask) -> dict[str, Any]:
        """Continuous tasks in ``syncing``: the agent cuts over after the round in progress."""
        return await self._act(p.TaskId, Action.CUTOVER, by=caller.key.name or caller.secret_id)

    async def modify_task_bandwidth(self, caller: Principal, p: P.ModifyTaskBandwidth) -> dict[str, Any]:
        for _attempt in range(5):
            t = await self._task(p.TaskId)
            state = TaskState(t.state)
            if state.finished:
                raise StateError(f"task {t.task_id}: cannot change the bandwidth of a task that is {state.value}; "
                                 "allowed while it is not success or deleted")
            command = (NewCommand(CMD_SET_BANDWIDTH, {"BandwidthLimitKBps": p.BandwidthLimitKBps})
                       if state in AGENT_HOLDS else None)
            event = ("info", "", f"bandwidth limit {format_kbps(t.bandwidth_limit_kbps)} -> "
                                 f"{format_kbps(p.BandwidthLimitKBps)}")
            try:
                t, cmd = await self.storage.update_task(
                    t.task_id, expect_state=state.value, changes={"bandwidth_limit_kbps": p.BandwidthLimitKBps},
                    command=command, event=event, now=self.clock())
            except StorageConflict:
                continue
            return {"TaskId": t.task_id, "BandwidthLimitKBps": t.bandwidth_limit_kbps,
                    "CommandId": cmd.command_id if cmd else None}
        raise Busy(f"task {p.TaskId} keeps changing; try again")

    async def modify_task_rounds(self, caller: Principal, p: P.ModifyTaskRounds) -> dict[str, Any]:
        """A continuous task's round interval and/or source read limit: stored (a restart and a retry
        keep it), and sent to the agent at once while it holds the task (``set-rounds`` command)."""
        for _attempt in range(5):
            t = await self._task(p.TaskId)
            state = TaskState(t.state)
            if not is_continuous(t):
                raise Refused(f"task {t.task_id} is not a continuous task (created without ContinuousSync): the "
                              "round interval and the source read limit apply only to continuous tasks",
                              detail="NotContinuous")
            if state.finished:
                raise StateError(f"task {t.task_id}: cannot change the rounds of a task that is {state.value}; "
                                 "allowed while it is not success or deleted")
            change = {k: v for k, v in (("RoundIntervalSeconds", p.RoundIntervalSeconds),
                                        ("ReadLimitKBps", p.ReadLimitKBps)) if v is not None}
            command = (NewCommand(CMD_SET_ROUNDS, change)
                       if state in AGENT_KEEPS else None)
            by = caller.key.name or caller.secret_id
            what = ", ".join(f"{k} {t.continuous.get(k)} -> {v}" for k, v in change.items())
            try:
                t, cmd = await self.storage.update_task(
                    t.task_id, expect_state=state.value, changes={"continuous": {**t.continuous, **change}},
                    command=command, event=("info", "", f"{what} by {by}"), now=self.clock())
            except StorageConflict:
                continue
            log.info("task rounds changed", task_id=t.task_id, by=by, **change)
            c = t.continuous or {}
            return {"TaskId": t.task_id, "RoundIntervalSeconds": c.get("RoundIntervalSeconds"),
                    "ReadLimitKBps": c.get("ReadLimitKBps"), "CommandId": cmd.command_id if cmd else None}
        raise Busy(f"task {p.TaskId} keeps changing; try again")

    async def describe_task_events(self, caller: Principal, p: P.DescribeTaskEvents) -> dict[str, Any]:
        await self._task(p.TaskId)
        events = await self.storage.list_events(p.TaskId, after_id=p.AfterEventId, limit=p.Limit)
        return {"EventSet": [self.event_view(e) for e in events]}

    # ------------------------------------------------------------ the cloud (migrated/cloud/provider.py)

    async def _cloud_checks(self, p: P.CreateTask, task_id: str, disks: list[DiskSpec], image_name: str
                            ) -> tuple[list[str], str]:
        """CreateTask's cloud side: validate the target (or relay) instance, warn about its SSH port,
        pick an image name no image of the account has. Returns (warnings, image name)."""
        assert self.cloud is not None
        traits = self.cloud.traits
        warnings: list[str] = []
        try:
            if p.TargetInstanceId:
                try:
                    info = await self.cloud.validate_instance(p.Region, p.TargetInstanceId, disks)
                except InstanceInvalid as exc:
                    text = f"parameter TargetInstanceId: {exc}"
                    if exc.kind == "not_found":
                        raise InvalidParameter(text, detail="TargetInstance") from None
                    raise TargetInstanceUnusable(text) from None
                cfg = self.config.cloud
                if cfg is not None and cfg.check_security_groups:
                    m = P._SSH_RE.match(p.TargetSsh)
                    port = int(m.group("port")) if m and m.group("port") else 22
                    warnings = await self.cloud.ssh_port_warnings(p.Region, info, port)
            elif p.TargetType == "image":
                warnings.append("no TargetInstanceId (relay instance) given: the console will not be able to make "
                                f"image {image_name} when the task succeeds")
            if p.TargetType == "image" and image_name:
                image_name = await self.cloud.unique_image_name(p.Region, image_name, task_id)
        except CloudError as exc:  # answered as FailedOperation.CloudApi, with what the console was doing
            again = " (temporary: try again)" if exc.retryable else ""
            exc.message = f"cannot check the target on {traits.title}: {exc.message}{again}"
            raise exc from None
        return warnings, image_name

    def _start_image_job(self, task_id: str) -> None:
        if task_id in self._image_jobs or self.cloud is None:
            return
        job = asyncio.create_task(self._make_image(task_id), name=f"image-{task_id}")
        self._image_jobs[task_id] = job
        job.add_done_callback(lambda _j: self._image_jobs.pop(task_id, None))

    async def resume_image_jobs(self) -> int:
        """At start: carry on with the images of successful tasks that were still being made."""
        if self.cloud is None:
            return 0
        tasks, _ = await self.storage.list_tasks(states=[TaskState.SUCCESS.value], limit=1_000_000)
        todo = [t for t in tasks if t.target_type == "image" and t.image_state in ("PENDING", "CREATING")]
        for t in todo:
            self._start_image_job(t.task_id)
        return len(todo)

    async def _set_image(self, task_id: str, *, event: tuple[str, str, str] | None = None, **changes: str) -> None:
        try:
            await self.storage.update_task(task_id, expect_state=TaskState.SUCCESS.value, changes=changes,
                                           event=event, now=self.clock())
        except StorageConflict:
            log.warning("task left success while its image was made", task_id=task_id)

    async def _make_image(self, task_id: str) -> None:
        """CreateImage from the task's relay/target instance and follow it to NORMAL or failure.
        Idempotent across restarts: a recorded ImageId is followed, not made again, and an image
        whose description names this task is taken as ours (a crash between CreateImage and the record)."""
        cloud, cfg = self.cloud, self.config.cloud
        assert cloud is not None and cfg is not None
        t = await self.storage.get_task(task_id)
        if t is None:
            return
        if not t.target_instance_id:
            await self._set_image(task_id, image_state="SKIPPED", event=(
                "warning", "image", f"image {t.image_name} not made: the task names no relay instance "
                                    f"(TargetInstanceId); make it in the {cloud.traits.title} console"))
            return
        marker = f"migrated {task_id}"
        try:
            image_id = t.image_id
            if not image_id:
                name = t.image_name or unique_name(t.name, task_id, cloud.traits.image_name_max)
                same = await cloud.find_images(t.region, name=name)
                ours = [i for i in same if i.description == marker]
                if ours:
                    image_id = ours[0].image_id
                    with_disks = " (found from an earlier attempt)"
                else:
                    if same:  # someone took the name since CreateTask
                        name = unique_name(name, task_id, cloud.traits.image_name_max)
                    data_disks: tuple[str, ...] = ()
                    if len(t.disk_mapping) > 1:  # data disks were migrated too: a full image
                        info = await cloud.describe_instance(t.region, t.target_instance_id)
                        data_disks = info.data_disk_ids if info is not None else ()
                    image_id = await cloud.create_image(t.region, t.target_instance_id, name, marker, data_disks)
                    with_disks = f" with data disks {', '.join(data_disks)}" if data_disks else ""
                await self._set_image(task_id, image_id=image_id, image_state="CREATING", event=(
                    "info", "image", f"CreateImage from {t.target_instance_id}{with_disks}: image {image_id} ({name})"))

            async def on_state(state: str) -> None:
                await self._set_image(task_id, image_state=state)

            img = await cloud.wait_image(t.region, image_id, timeout=cfg.image_timeout_seconds,
                                         interval=cfg.image_poll_seconds, on_state=on_state)
            await self._set_image(task_id, image_state=img.state, event=(
                "info", "image", f"image {image_id} ({img.name}) is {img.state}"))
            log.info("image made", task_id=task_id, image_id=image_id)
            if cfg.terminate_relay:
                await self._terminate_relay(t)
        except CloudError as exc:
            log.warning("image creation failed", task_id=task_id, code=exc.code, request_id=exc.request_id)
            await self._set_image(task_id, image_state="FAILED", event=(
                "error", "image", f"image creation failed: {exc}"))
        except Exception:  # a bug must not vanish inside a background task; the job resumes at restart
            log.exception("image job crashed", task_id=task_id)

    async def _terminate_relay(self, t: TaskRecord) -> None:
        """After the image is made: remove the relay (only an instance named RELAY_NAME; anything
        else is left alone with a warning event)."""
        assert self.cloud is not None
        try:
            gone = await self.cloud.terminate_relay(t.region, t.target_instance_id)
            text = (f"relay instance {t.target_instance_id} terminated" if gone
                    else f"relay instance {t.target_instance_id} was already gone")
            await self.storage.add_event(t.task_id, t.source_id, "info", "image", text, self.clock())
        except TargetError as exc:  # not our relay: never terminated
            await self.storage.add_event(t.task_id, t.source_id, "warning", "image", f"{exc}; left running",
                                         self.clock())
        except CloudError as exc:
            await self.storage.add_event(t.task_id, t.source_id, "error", "image",
                                         f"could not terminate relay instance {t.target_instance_id}: {exc}",
                                         self.clock())
