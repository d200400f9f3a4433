"""What the web UI reads from and asks of the console: plain view types and the backend protocol.

The UI renders these types and never reaches into storage rows itself. ``backend.py`` implements
:class:`WebBackend` on top of the console's own storage and API logic, so the UI applies exactly the
rules the signed API applies (task-creation validation, allowed actions per state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from migrated.model.states import Action, TaskState
from migrated.model.status import TaskProgress


@dataclass
class DiskView:
    name: str  # e.g. /dev/vda
    size: int  # bytes
    mountpoints: list[str] = field(default_factory=list)
    system: bool = False
    fs: str = ""

    @property
    def migrate_by_default(self) -> bool:
        """The design's default mapping: the system disk and every disk with a mounted filesystem."""
        return self.system or bool(self.mountpoints)


@dataclass
class SourceView:
    id: str
    name: str
    online: bool
    last_heartbeat: float | None  # unix time
    os: str
    agent_version: str
    disks: list[DiskView] = field(default_factory=list)
    address: str = ""
    current_task: TaskView | None = None  # its unfinished task, if any


@dataclass
class EventView:
    time: float
    level: str  # info | warning | error
    message: str


@dataclass
class DiskMapView:
    source: str
    target: str


@dataclass
class TaskView:
    id: str
    name: str
    source_id: str
    state: TaskState
    description: str = ""
    source_name: str = ""
    region: str = ""
    target_type: str = "image"  # image | instance
    image_name: str = ""
    image_id: str = ""
    target_instance: str = ""
    start_at: float | None = None
    bandwidth_limit_kbps: int = 0  # the API's KB/s (KiB/s), 0 = unlimited; shown as model/bandwidth shows it
    checksum: bool = False
    ssh_endpoint: str = ""  # user@host:port
    host_key: str = ""
    disk_map: list[DiskMapView] = field(default_factory=list)
    created_at: float | None = None
    progress: TaskProgress | None = None
    message: str = ""  # the last thing a person should read (failure reason)
    source_online: bool = True
    continuous: bool = False  # incremental sync until cutover
    consistent_finish: bool = False  # one-shot, ending with a cutover right after the full pass
    round_interval: int | None = None  # seconds between rounds (None: the agent's default, 60)
    read_limit_kbps: int | None = None  # source read limit during the rounds, KiB/s (None/0: unlimited)
    quiesce: str = ""  # cutover: freeze | hooks | none | lvm ("" = the default, freeze)
    snapshot_size: str = ""  # cutover with lvm: the snapshot's copy-on-write space ("" = the default, 10%ORIGIN)
    pre_hook: str = ""  # cutover: shell commands run as root on the source around the final pass
    post_hook: str = ""
    freeze_budget: int | None = None  # cutover: seconds (None: the agent's default, 30)
    hook_timeout: int | None = None  # cutover: seconds each hook may run (None: the agent default, 300)
    ignore_checks: tuple[str, ...] = ()  # pre-migration checks the agent skips (names from model.taskspec.CHECKS)


@dataclass
class TaskForm:
    """The create-task form exactly as typed (strings), so a rejected form comes back with its values."""

    region: str = ""
    name: str = ""
    description: str = ""
    target_type: str = "image"
    image_name: str = ""
    target_instance: str = ""
    start_at: str = ""  # datetime-local value in the operator's time zone, "" = no schedule
    bandwidth_mbps: str = ""  # any unit of model/bandwidth; a bare number is Mbit/s
    checksum: bool = False
    ssh_endpoint: str = ""
    host_key: str = ""
    disks: list[tuple[str, bool, str]] = field(default_factory=list)  # (source disk, migrate?, target device)
    continuous: bool = False  # incremental sync until cutover
    consistent_finish: bool = False  # one-shot, ending with a cutover right after the full pass
    round_interval: str = ""  # seconds between rounds, "" = default (60)
    read_limit_mib: str = ""  # source read limit during the rounds, any unit (bare: MiB/s), "" = unlimited
    # "Advanced: cutover" (continuous only)
    quiesce: str = ""  # "" = default (freeze) | freeze | hooks | none | lvm
    snapshot_size: str = ""  # quiesce lvm only: e.g. 2G or 20%ORIGIN, "" = default (10%ORIGIN)
    pre_hook: str = ""
    post_hook: str = ""
    freeze_budget: str = ""  # seconds, "" = default (30)
    hook_timeout: str = ""  # seconds each hook may run, "" = default (300)
    ignore_checks: list[str] = field(default_factory=list)  # pre-migration checks to skip (model.taskspec.CHECKS)


class FormErrors(Exception):
    """A form was refused. ``fields`` maps a form field name to the message shown beside it;
    ``general`` is shown above the form when no single field is to blame."""

    def __init__(self, fields: dict[str, str], general: str = "") -> None:
        super().__init__("; ".join([*(f"{k}: {v}" for k, v in fields.items()), general]).strip("; "))
        self.fields = fields
        self.general = general


class WebBackend(Protocol):
    @property
    def min_lead_seconds(self) -> float:
        """How far ahead a scheduled start must be (the console's ``scheduler.min_lead_seconds``)."""

    async def verify_admin(self, secret_id: str, secret_key: str) -> bool:
        """True iff the pair is an active admin key of this console (constant-time compare)."""

    async def admin_active(self, secret_id: str) -> bool:
        """True iff the key is still an active admin key (a revoked key ends its web sessions)."""

    async def list_sources(self) -> list[SourceView]: ...

    async def get_source(self, source_id: str) -> SourceView | None: ...

    async def list_tasks(self) -> list[TaskView]:
        """Tasks that are not deleted, newest first."""

    async def get_task(self, task_id: str) -> TaskView | None: ...

    async def task_events(self, task_id: str) -> list[EventView]:
        """The task's event log, oldest first."""

    async def create_task(self, source_id: str, form: TaskForm, tz: str, *, actor: str) -> str:
        """Validate with the console's own rules and create as ``actor``; the task ID, or FormErrors."""

    async def set_bandwidth(self, task_id: str, mbps: str, *, actor: str) -> None:
        """Change the limit (any unit of model/bandwidth, a bare number is Mbit/s; empty/0 = none), also
        while running; FormErrors/StateError."""

    async def set_rounds(self, task_id: str, round_interval: str, read_limit_mib: str, *, actor: str) -> None:
        """Continuous task: change the round interval (s) and/or the source read limit (bare: MiB/s, 0 = none);
        an empty field is left as it is. FormErrors (keyed round_interval / read_limit_mib) or StateError."""

    async def act(self, task_id: str, action: Action, *, actor: str) -> None:
        """Apply an action as ``actor`` (a SecretId) through the console's own logic; StateError if refused."""
