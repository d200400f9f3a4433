"""Request parameters of every console API action, as strict pydantic models.

Strict: a string is not a number, a number is not a bool; unknown parameters are
refused (``UnknownParameter``) like Tencent Cloud does. Every integer fits 63 bits and
every float is finite (``InvalidParameterValue`` otherwise), so what is stored can be served
as JSON and rendered. :func:`validation_error`
turns pydantic's errors into the Tencent-style code and a message that names the
parameter path (``Disks.0.SizeBytes``). The web UI builds the same models.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from migrated.cloud.provider import instance_id_regex
from migrated.model.lvmsize import MAX_SNAPSHOT_SIZE_CHARS, SNAPSHOT_SIZE_HINT, snapshot_size_ok
from migrated.model.states import TaskState
from migrated.model.taskspec import CHECKS, OPTION_KEYS, QUIESCE_METHODS, TaskSpec, checks_hint, unknown_checks

ID = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=255)]
Text = Annotated[str, Field(max_length=4096)]

_SSH_RE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?$")
_HOSTKEY_RE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-nistp\d+|sk-[A-Za-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}( \S.*)?$")


MAX_HOOK_CHARS = 1024
MIN_FREEZE_BUDGET, MAX_FREEZE_BUDGET = 1, 600
MAX_HOOK_TIMEOUT = 3600
# CreateTask parameters that only a continuous task takes
CONTINUOUS_PARAMS = tuple(key for key, _ in OPTION_KEYS)
ROUND_PARAMS = ("RoundIntervalSeconds", "ReadLimitKBps")  # the rest is the cutover: ConsistentFinish takes it too


def _one_line(v: str) -> str:
    if "\x00" in v or "\n" in v or "\r" in v:
        raise ValueError("must be one line without NUL, CR or LF characters (put a longer script in a file on "
                         "the source and give its path)")
    if not v.strip():
        raise ValueError("must not be blank")
    return v


# a shell command line the agent runs as root on the source (``/bin/sh -c``) around the cutover
HookCommand = Annotated[str, Field(min_length=1, max_length=MAX_HOOK_CHARS), AfterValidator(_one_line)]


def _check_name(v: str) -> str:
    if unknown_checks([v]):
        raise ValueError(f"unknown check {v[:40]!r}; {checks_hint()}")
    return v


# the name of a pre-migration check (model.taskspec.CHECKS)
CheckName = Annotated[str, Field(max_length=64), AfterValidator(_check_name)]

# every integer the API takes fits 63 bits (SQLite's INTEGER, and what every renderer can format)
MAX_INT = 2**63 - 1


class _P(BaseModel):
    # allow_inf_nan: JSON has no NaN/Infinity, so a stored one would break every strict client's reply
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _int63(cls, v: object) -> object:
        """Every integer parameter of every action (nested ones and lists of them too) fits 63 bits."""
        for x in v if isinstance(v, list) else (v,):
            if isinstance(x, int) and not isinstance(x, bool) and not -MAX_INT <= x <= MAX_INT:
                raise ValueError(f"must be at most {MAX_INT}" if x > 0 else f"must be at least {-MAX_INT}")
        return v


# ---------------------------------------------------------------- agent actions


class DiskParam(_P):
    Name: Name
    SizeBytes: int = Field(ge=0)
    MountPoints: list[Annotated[str, Field(max_length=4096)]] = []
    IsSystem: bool = False


class RegisterSource(_P):
    MachineId: Annotated[str, Field(min_length=1, max_length=128)]
    Hostname: Name
    OsName: Annotated[str, Field(max_length=255)] = ""
    AgentVersion: Annotated[str, Field(max_length=64)] = ""
    Disks: list[DiskParam] = Field(default=[], max_length=64)


class Heartbeat(_P):
    SourceId: ID
    AgentVersion: Annotated[str, Field(max_length=64)] = ""


class PollCommands(_P):
    SourceId: ID
    WaitSeconds: float = Field(0.0, ge=0, le=30)


class AckCommand(_P):
    SourceId: ID
    CommandId: ID
    Result: Literal["ok", "error"]
    Message: Text = ""


class DiskProgressParam(_P):
    Name: Name
    Target: Annotated[str, Field(max_length=255)] = ""
    BytesTotal: int = Field(ge=0)
    BytesDone: int = Field(ge=0)
    BytesSent: int = Field(0, ge=0)


class ReportTaskProgress(_P):
    SourceId: ID
    TaskId: ID
    State: TaskState
    Stage: Annotated[str, Field(max_length=32)] = ""
    Disks: list[DiskProgressParam] = Field(default=[], max_length=64)
    RateBps: float = Field(0.0, ge=0)
    EtaSeconds: float | None = Field(None, ge=0)
    LagSeconds: float | None = Field(None, ge=0)  # incremental rounds: how far the target trails the source
    Message: Text = ""
    # continuous tasks (all optional)
    Phase: Annotated[str, Field(max_length=32)] = ""
    Round: int | None = Field(None, ge=0)
    RoundChangedBytes: int | None = Field(None, ge=0)
    ForecastSeconds: float | None = Field(None, ge=0)
    Convergence: Annotated[str, Field(max_length=512)] = ""
    Advice: Literal["", "keep-going", "cutover", "not-converging"] = ""
    DowntimeSeconds: float | None = Field(None, ge=0)
    RoundIntervalSeconds: float | None = Field(None, ge=0, le=86400)  # in effect on the agent
    ReadLimitKBps: int | None = Field(None, ge=0)  # in effect on the agent, 0 = unlimited

    @field_validator("State", mode="before")
    @classmethod
    def _state(cls, v: object) -> object:
        # strict mode refuses a plain string for an Enum; accept the value spelling
        if isinstance(v, str):
            try:
                return TaskState(v)
            except ValueError:
                raise ValueError(f"must be one of {', '.join(s.value for s in TaskState)}") from None
        return v


class ReportTaskEvent(_P):
    SourceId: ID
    TaskId: ID
    Level: Literal["info", "warning", "error"]
    Stage: Annotated[str, Field(max_length=32)] = ""
    Message: Annotated[str, Field(min_length=1, max_length=4096)]


# ---------------------------------------------------------------- admin actions


class CreateKey(_P):
    Role: Literal["admin", "agent"]
    Name: Annotated[str, Field(min_length=1, max_length=64)]


class DescribeKeys(_P):
    pass


class RevokeKey(_P):
    SecretId: ID


class DescribeSources(_P):
    SourceIds: list[ID] | None = Field(None, max_length=100)


class RemoveSource(_P):
    SourceId: ID


class DiskMappingParam(_P):
    Source: Name
    Target: Name


class CreateTask(_P):
    SourceId: ID
    TaskName: Annotated[str, Field(min_length=1, max_length=128)]
    Description: Annotated[str, Field(max_length=1024)] = ""
    Region: Annotated[str, Field(pattern=r"^[a-z]+(-[a-z]+)+(-\d+)?$", max_length=64)]
    TargetType: Literal["image", "instance"]
    ImageName: Annotated[str, Field(max_length=60, pattern=r"^[\w.\-\u4e00-\u9fff]*$")] = ""
    TargetInstanceId: Annotated[str, Field(max_length=64, pattern=instance_id_regex())] = ""  # any provider's
    ScheduledStartTime: Annotated[str, Field(max_length=64)] = ""  # ISO 8601; no offset means UTC
    BandwidthLimitKBps: int = Field(0, ge=0, le=100 * 1024 * 1024)
    Checksum: bool = False
    ContinuousSync: bool = False  # incremental rounds after the full pass until CutoverTask
    # a one-shot task that ends with a cutover (quiesced final pass, every block verified) right after
    # its full pass; takes the cutover options below, not the round ones
    ConsistentFinish: bool = False
    RoundIntervalSeconds: int | None = Field(None, ge=0, le=86400)  # pause between rounds (default 60)
    ReadLimitKBps: int | None = Field(None, ge=0, le=100 * 1024 * 1024)  # source read limit during the rounds
    # cutover options (continuous tasks only; see docs/consistency.md). Hooks are commands the agent
    # runs as root on the source: only admin keys can create tasks, so only admins can set them.
    Quiesce: Literal["freeze", "hooks", "none", "lvm"] | None = None  # default freeze
    PreHook: HookCommand | None = None
    PostHook: HookCommand | None = None
    FreezeBudgetSeconds: int | None = Field(None, ge=MIN_FREEZE_BUDGET, le=MAX_FREEZE_BUDGET)  # default 30
    # seconds each hook may run before its process group is killed (agent default 300)
    HookTimeoutSeconds: int | None = Field(None, ge=1, le=MAX_HOOK_TIMEOUT)
    # Quiesce lvm only: the snapshot's copy-on-write space, as lvcreate takes it (agent default 10%ORIGIN)
    SnapshotSize: Annotated[str, Field(min_length=1, max_length=MAX_SNAPSHOT_SIZE_CHARS)] | None = None
    TargetSsh: Annotated[str, Field(min_length=3, max_length=300)]
    TargetHostKey: Annotated[str, Field(min_length=10, max_length=8192)]
    DiskMapping: list[DiskMappingParam] | None = Field(None, max_length=64)
    # names of pre-migration checks the agent skips at the start (model.taskspec.CHECKS)
    IgnoreChecks: list[CheckName] = Field([], max_length=len(CHECKS))

    @field_validator("TargetSsh")
    @classmethod
    def _ssh(cls, v: str) -> str:
        m = _SSH_RE.match(v)
        if not m:
            raise ValueError("must be user@host:port (port optional, default 22)")
        if m.group("port") is not None and not 0 < int(m.group("port")) < 65536:
            raise ValueError("port must be 1-65535")
        return v

    @field_validator("TargetHostKey")
    @classmethod
    def _hostkey(cls, v: str) -> str:
        if not _HOSTKEY_RE.match(v.strip()):
            raise ValueError("must be an OpenSSH public key line such as 'ssh-ed25519 AAAA...'")
        return v.strip()


    @field_validator("IgnoreChecks")
    @classmethod
    def _ignore_checks(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each check may be named once")
        return v

    @field_validator("Quiesce", mode="before")
    @classmethod
    def _quiesce(cls, v: object) -> object:
        if isinstance(v, str) and v not in QUIESCE_METHODS:
            raise ValueError(f"unknown quiesce method {v[:40]!r}; choose {', '.join(QUIESCE_METHODS)}")
        return v

    @field_validator("SnapshotSize")
    @classmethod
    def _snapshot_size(cls, v: str | None) -> str | None:
        if v is not None and not snapshot_size_ok(v):
            raise ValueError(f"{v!r} is not a snapshot size: {SNAPSHOT_SIZE_HINT} (as lvcreate takes it)")
        return v

    @model_validator(mode="after")
    def _cutover(self) -> CreateTask:
        if self.ContinuousSync and self.ConsistentFinish:
            raise ValueError("parameter ConsistentFinish: a ContinuousSync task always ends with a cutover; "
                             "give one of the two")
        if not self.ContinuousSync:
            allowed = () if not self.ConsistentFinish else tuple(n for n in CONTINUOUS_PARAMS if n not in ROUND_PARAMS)
            given = [n for n in CONTINUOUS_PARAMS if getattr(self, n) is not None and n not in allowed]
            if given:
                what = "ContinuousSync true" if given[0] in ROUND_PARAMS else "ContinuousSync or ConsistentFinish true"
                raise ValueError(f"parameter {given[0]}: only for a task with {what}")
        if self.SnapshotSize is not None and self.Quiesce != "lvm":
            raise ValueError("parameter SnapshotSize: only with Quiesce lvm (the LVM snapshot's copy-on-write "
                             "space); leave it out, or set Quiesce to lvm")
        if self.HookTimeoutSeconds is not None and not (self.PreHook or self.PostHook):
            raise ValueError("parameter HookTimeoutSeconds: only with PreHook or PostHook")
        if self.Quiesce == "hooks" and not (self.PreHook or self.PostHook):
            raise ValueError("parameter PreHook: required when Quiesce is hooks (give PreHook and/or PostHook)")
        return self

    def spec(self) -> TaskSpec:
        """The task's settings as the agent runs them (the console then fills in the task ID, the
        disk mapping it resolved and the target it chose)."""
        return TaskSpec(
            name=self.TaskName, description=self.Description, region=self.Region, target_type=self.TargetType,
            image_name=self.ImageName, target_instance_id=self.TargetInstanceId,
            target_ssh=self.TargetSsh, target_host_key=self.TargetHostKey,
            disk_mapping=tuple((m.Source, m.Target) for m in self.DiskMapping or ()),
            bandwidth_kbps=self.BandwidthLimitKBps, checksum=self.Checksum,
            continuous_sync=self.ContinuousSync, consistent_finish=self.ConsistentFinish,
            ignore_checks=tuple(self.IgnoreChecks),
            **{attr: getattr(self, key) for key, attr in OPTION_KEYS},
        )


class DescribeTasks(_P):
    TaskIds: list[ID] | None = Field(None, max_length=100)
    SourceId: ID | None = None
    States: list[TaskState] | None = None
    Limit: int = Field(20, ge=1, le=1000)
    Offset: int = Field(0, ge=0)

    @field_validator("States", mode="before")
    @classmethod
    def _states(cls, v: object) -> object:
        if isinstance(v, list):
            out = []
            for x in v:
                if isinstance(x, str):
                    try:
                        out.append(TaskState(x))
                        continue
                    except ValueError:
                        raise ValueError(
                            f"unknown state {x!r}; states are {', '.join(s.value for s in TaskState)}"
                        ) from None
                out.append(x)
            return out
        return v


class TaskIdParam(_P):
    TaskId: ID


class StartTask(TaskIdParam):
    pass


class PauseTask(TaskIdParam):
    pass


class RetryTask(TaskIdParam):
    pass


class DeleteTask(TaskIdParam):
    pass


class CutoverTask(TaskIdParam):
    pass


class ModifyTaskBandwidth(_P):
    TaskId: ID
    BandwidthLimitKBps: int = Field(ge=0, le=100 * 1024 * 1024)


class ModifyTaskRounds(_P):
    """A continuous task's round interval and/or source read limit, also while it runs."""

    TaskId: ID
    RoundIntervalSeconds: int | None = Field(None, ge=0, le=86400)
    ReadLimitKBps: int | None = Field(None, ge=0, le=100 * 1024 * 1024)  # 0 = unlimited

    @model_validator(mode="after")
    def _some(self) -> ModifyTaskRounds:
        if self.RoundIntervalSeconds is None and self.ReadLimitKBps is None:
            raise ValueError("parameter RoundIntervalSeconds: give RoundIntervalSeconds and/or ReadLimitKBps")
        return self


class DescribeTaskEvents(_P):
    TaskId: ID
    AfterEventId: int = Field(0, ge=0)
    Limit: int = Field(100, ge=1, le=1000)


_TYPE_ERRORS = {
    "string_type", "int_type", "bool_type", "float_type", "list_type", "dict_type", "model_type",
    "model_attributes_type", "int_from_float", "enum", "none_required", "is_instance_of",
}


def validation_error(exc: ValidationError) -> tuple[str, str]:
    """(Tencent code, message naming the parameter) for the first problem in ``exc``."""
    e = exc.errors()[0]
    path = ".".join(str(x) for x in e["loc"]) or "(body)"
    kind = e["type"]
    if kind == "missing":
        return "MissingParameter", f"missing parameter {path}"
    if kind == "extra_forbidden":
        return "UnknownParameter", f"unknown parameter {path}"
    msg = e["msg"].removeprefix("Value error, ")
    if not e["loc"] and msg.startswith("parameter "):  # a rule across parameters names its parameter itself
        return "InvalidParameterValue", msg
    if kind in _TYPE_ERRORS:
        return "InvalidParameter", f"parameter {path}: {msg}"
    return "InvalidParameterValue", f"parameter {path}: {msg}"
