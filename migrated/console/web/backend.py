""":class:`WebBackend` on the console's own :class:`~migrated.console.service.ConsoleService`.

The web UI goes through the same service methods as the signed API, with the logged-in admin's
key as the caller, so it gets the same checks and the same refusal messages: the ``CreateTask``
pydantic model, the service's create rules (source exists, schedule lead time, disk mapping,
one unfinished task per source), and ``check_action`` for start/pause/retry/delete.
"""

from __future__ import annotations

import hmac
from typing import Any

from pydantic import ValidationError

from migrated.console import params as P
from migrated.console.service import (
    UNFINISHED_STATES,
    ConsoleService,
    Principal,
    task_spec,
)
from migrated.console.storage import KeyRecord, SourceRecord, TaskRecord
from migrated.errors import MigratedError, StateError
from migrated.model.states import NOT_DELETED, Action, TaskState, values
from migrated.model.status import TaskProgress

from .forms import form_to_params, message_field, parse_bandwidth, parse_mib, pydantic_errors
from .model import DiskMapView, DiskView, EventView, FormErrors, SourceView, TaskForm, TaskView

_ACTION_CALL = {
    Action.START: ("start_task", P.StartTask),
    Action.PAUSE: ("pause_task", P.PauseTask),
    Action.RETRY: ("retry_task", P.RetryTask),
    Action.DELETE: ("delete_task", P.DeleteTask),
    Action.CUTOVER: ("cutover_task", P.CutoverTask),
}


def _progress(t: TaskRecord) -> TaskProgress | None:
    if not t.progress:
        return None
    return TaskProgress.from_api(t.progress, task_id=t.task_id, state=t.state, stage=t.stage, message=t.message)


class ServiceBackend:
    def __init__(self, service: ConsoleService) -> None:
        self.service = service
        self.storage = service.storage

    @property
    def min_lead_seconds(self) -> float:
        return self.service.config.scheduler.min_lead_seconds

    # -------------------------------------------------------------- keys

    async def _admin_key(self, secret_id: str) -> KeyRecord | None:
        k = await self.storage.get_key(secret_id)
        return k if (k is not None and k.active and k.role == "admin") else None

    async def verify_admin(self, secret_id: str, secret_key: str) -> bool:
        k = await self._admin_key(secret_id)
        if k is None:
            hmac.compare_digest(secret_key.encode(), secret_key.encode())  # same work either way
            return False
        return hmac.compare_digest(k.secret_key.encode(), secret_key.encode())

    async def admin_active(self, secret_id: str) -> bool:
        return await self._admin_key(secret_id) is not None

    async def _caller(self, secret_id: str) -> Principal:
        k = await self._admin_key(secret_id)
        if k is None:
            raise StateError(f"the admin key {secret_id} was revoked; log in with another admin key")
        return Principal(k)

    # -------------------------------------------------------------- sources

    def _source(self, s: SourceRecord, now: float) -> SourceView:
        return SourceView(
            id=s.source_id, name=s.hostname, online=self.service.is_online(s, now), last_heartbeat=s.last_heartbeat,
            os=s.os_name, agent_version=s.agent_version,
            disks=[DiskView(d.name, d.size_bytes, list(d.mount_points), d.is_system) for d in s.disks],
        )

    async def list_sources(self) -> list[SourceView]:
        now = self.service.clock()
        sources = [self._source(s, now) for s in await self.storage.list_sources()]
        unfinished, _ = await self.storage.list_tasks(states=UNFINISHED_STATES, limit=10_000)
        current: dict[str, TaskRecord] = {}
        for t in unfinished:  # newest first: keep the newest per source
            current.setdefault(t.source_id, t)
        for v in sources:
            t = current.get(v.id)
            v.current_task = self._task(t, v.name, v.online) if t else None
        return sources

    async def get_source(self, source_id: str) -> SourceView | None:
        s = await self.storage.get_source(source_id)
        return None if s is None else self._source(s, self.service.clock())

    # -------------------------------------------------------------- tasks

    @staticmethod
    def _task(t: TaskRecord, source_name: str = "", source_online: bool = True) -> TaskView:
        p = t.progress or {}
        s = task_spec(t)
        return TaskView(
            id=t.task_id, name=t.name, source_id=t.source_id, state=TaskState(t.state), description=t.description,
            source_name=source_name, region=t.region, target_type=t.target_type, image_name=t.image_name,
            image_id=str(getattr(t, "image_id", "") or p.get("ImageId", "")),  # once the console records one
            target_instance=t.target_instance_id, start_at=t.scheduled_at,
            bandwidth_limit_kbps=t.bandwidth_limit_kbps,
            checksum=t.checksum, ssh_endpoint=t.target_ssh, host_key=t.target_host_key,
            disk_map=[DiskMapView(a, b) for a, b in t.disk_mapping], created_at=t.created_at,
            progress=_progress(t), message=t.message, source_online=source_online,
            continuous=s.continuous_sync, consistent_finish=s.consistent_finish,
            round_interval=s.round_interval_seconds, read_limit_kbps=s.read_limit_kbps, quiesce=s.quiesce or "",
            pre_hook=s.pre_hook or "", post_hook=s.post_hook or "", freeze_budget=s.freeze_budget_seconds,
            snapshot_size=s.snapshot_size or "", hook_timeout=s.hook_timeout_seconds, ignore_checks=s.ignore_checks,
        )

    async def list_tasks(self) -> list[TaskView]:
        live = values(NOT_DELETED)
        tasks, _ = await self.storage.list_tasks(states=live, limit=500)
        now = self.service.clock()
        sources = {s.source_id: s for s in await self.storage.list_sources()}
        out = []
        for t in tasks:
            s = sources.get(t.source_id)
            out.append(self._task(t, s.hostname if s else "", s is not None and self.service.is_online(s, now)))
        return out

    async def get_task(self, task_id: str) -> TaskView | None:
        t = await self.storage.get_task(task_id)
        if t is None:
            return None
        s = await self.storage.get_source(t.source_id)
        return self._task(t, s.hostname if s else "", s is not None and self.service.is_online(s))

    async def task_events(self, task_id: str) -> list[EventView]:
        events = await self.storage.list_events(task_id, limit=1000)
        return [EventView(e.time, e.level, e.message) for e in events]

    async def create_task(self, source_id: str, form: TaskForm, tz: str, *, actor: str) -> str:
        caller = await self._caller(actor)
        raw, errors = form_to_params(source_id, form, tz)
        params: Any = None
        try:
            params = P.CreateTask.model_validate(raw)
        except ValidationError as exc:
            fields, general = pydantic_errors(exc, form)
            for k, v in fields.items():
                errors.setdefault(k, v)
            if general:
                raise FormErrors(errors, general) from None
        if errors:
            raise FormErrors(errors)
        try:
            result = await self.service.create_task(caller, params)
        except MigratedError as exc:
            name = message_field(exc.message, form)
            if name is None:
                raise FormErrors({}, exc.message) from None
            msg = exc.message.split(": ", 1)[1] if exc.message.startswith("parameter ") else exc.message
            raise FormErrors({name: msg}) from None
        return str(result["TaskId"])

    async def set_bandwidth(self, task_id: str, mbps: str, *, actor: str) -> None:
        caller = await self._caller(actor)
        kbps = parse_bandwidth(mbps)
        try:
            params = P.ModifyTaskBandwidth.model_validate({"TaskId": task_id, "BandwidthLimitKBps": kbps})
        except ValidationError as exc:
            raise FormErrors({"bandwidth_mbps": P.validation_error(exc)[1]}) from None
        try:
            await self.service.modify_task_bandwidth(caller, params)
        except MigratedError as exc:
            raise StateError(exc.message) from None

    async def set_rounds(self, task_id: str, round_interval: str, read_limit_mib: str, *, actor: str) -> None:
        caller = await self._caller(actor)
        raw: dict[str, Any] = {"TaskId": task_id}
        errors: dict[str, str] = {}
        if round_interval.strip():
            try:
                raw["RoundIntervalSeconds"] = int(round_interval)
            except ValueError:
                errors["round_interval"] = "must be a whole number of seconds"
        if read_limit_mib.strip():
            try:
                raw["ReadLimitKBps"] = parse_mib(read_limit_mib)
            except FormErrors as e:
                errors.update(e.fields)
        if errors:
            raise FormErrors(errors)
        if len(raw) == 1:
            raise FormErrors({}, "enter seconds between rounds and/or a read limit")
        try:
            params = P.ModifyTaskRounds.model_validate(raw)
        except ValidationError as exc:
            code_msg = P.validation_error(exc)[1]
            name = "read_limit_mib" if "ReadLimitKBps" in code_msg else "round_interval"
            raise FormErrors({name: code_msg.split(": ", 1)[-1]}) from None
        try:
            await self.service.modify_task_rounds(caller, params)
        except MigratedError as exc:
            raise StateError(exc.message) from None

    async def act(self, task_id: str, action: Action, *, actor: str) -> None:
        caller = await self._caller(actor)
        method, model = _ACTION_CALL[action]
        try:
            await getattr(self.service, method)(caller, model(TaskId=task_id))
        except MigratedError as exc:
            raise StateError(exc.message) from None
