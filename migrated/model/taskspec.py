"""A task's settings as one frozen type, with their defaults defined once. Pure: no I/O, no asyncio.

:class:`TaskSpec` is what the console's ``CreateTask`` parameters validate into
(:meth:`migrated.console.params.CreateTask.spec`), what the console sends the agent with a
start/retry command (:meth:`TaskSpec.to_api`, the "agent task view"), and what the agent reads
(:meth:`TaskSpec.from_api`) instead of looking keys up in a dict. ``from_api`` checks every
setting it knows: a mistyped one (``"Quiesce": "frezee"``, ``"Checksum": "yes"``) raises
:class:`SpecError` naming the key, and the agent refuses the start with that message. Keys it
does not know are ignored (a newer console may send more).

The optional cutover and rounds settings are ``None`` when the operator did not give them: the API
shows ``null`` for them, and the ``effective_*`` properties apply the defaults below (the only place
they are written).

``CHECKS`` names the pre-migration checks (:mod:`migrated.agent.checks` runs them in this order).
The agent's YAML ``ignore_checks``, the API's ``IgnoreChecks``, ``migrate-console tasks create
--ignore-check`` and the web form all take their names from it. To add a check: its name here, its
``evaluate_<name>()`` in ``agent/checks.py``, its tests in ``tests/test_checks.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migrated.model.lvmsize import DEFAULT_SNAPSHOT_SIZE, SNAPSHOT_SIZE_HINT, snapshot_size_ok

# the pre-migration checks, in the order they run and are shown
CHECKS: tuple[str, ...] = (
    "virtio_drivers",
    "selinux",
    "clock_skew",
    "disks",
    "target_ssh",
    "target_capacity",
    "target_receiver",
)

QUIESCE_METHODS: tuple[str, ...] = ("freeze", "hooks", "none", "lvm")

# defaults of the settings an operator may leave out (the agent applies them)
DEFAULT_QUIESCE = "freeze"
DEFAULT_FREEZE_BUDGET_SECONDS = 30
DEFAULT_HOOK_TIMEOUT_SECONDS = 300
DEFAULT_ROUND_INTERVAL_SECONDS = 60
# DEFAULT_SNAPSHOT_SIZE (Quiesce lvm) is in migrated.model.lvmsize, with the size rule

# the optional rounds and cutover settings: (API key, attribute)
OPTION_KEYS: tuple[tuple[str, str], ...] = (
    ("RoundIntervalSeconds", "round_interval_seconds"),
    ("ReadLimitKBps", "read_limit_kbps"),
    ("Quiesce", "quiesce"),
    ("PreHook", "pre_hook"),
    ("PostHook", "post_hook"),
    ("FreezeBudgetSeconds", "freeze_budget_seconds"),
    ("SnapshotSize", "snapshot_size"),
    ("HookTimeoutSeconds", "hook_timeout_seconds"),
)


class SpecError(ValueError):
    """A setting of a task spec has the wrong type or value; ``key`` is its API name."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"setting {key}: {message}")
        self.key = key


def unknown_checks(names: object) -> list[str]:
    """The names in ``names`` that are not in :data:`CHECKS`."""
    return [n for n in names if n not in CHECKS] if isinstance(names, list | tuple) else []


def checks_hint() -> str:
    return f"known checks: {', '.join(CHECKS)}"


@dataclass(frozen=True)
class TaskSpec:
    """One migration task's settings, as the console keeps them and the agent runs them."""

    task_id: str = ""
    name: str = ""
    description: str = ""
    region: str = ""
    target_type: str = ""  # image | instance
    image_name: str = ""
    target_instance_id: str = ""
    state: str = ""  # the task's state when the console sent the spec
    target_ssh: str = ""  # user@host[:port]
    target_host_key: str = ""  # OpenSSH public key line of the target
    disk_mapping: tuple[tuple[str, str], ...] = ()  # (source, target); empty: the agent picks the disks
    bandwidth_kbps: int = 0  # 0: unlimited
    checksum: bool = False  # compare every target block with the source after the copy
    continuous_sync: bool = False  # incremental rounds after the full pass until a cutover
    consistent_finish: bool = False  # one-shot, with a cutover right after the full pass
    ignore_checks: tuple[str, ...] = ()  # names from CHECKS to skip at the start
    # the rounds (continuous_sync) and the cutover (continuous_sync or consistent_finish); None: default
    round_interval_seconds: int | None = None
    read_limit_kbps: int | None = None  # 0 or None: unlimited
    quiesce: str | None = None
    pre_hook: str | None = None
    post_hook: str | None = None
    freeze_budget_seconds: int | None = None
    snapshot_size: str | None = None  # Quiesce lvm only
    hook_timeout_seconds: int | None = None

    # -------------------------------------------------------- what the task does

    @property
    def has_cutover(self) -> bool:
        """Runs through the rounds-and-cutover engine: a continuous task, or a consistent finish."""
        return self.continuous_sync or self.consistent_finish

    @property
    def finishes_at_once(self) -> bool:
        """A consistent finish without rounds: the cutover as soon as the full pass is done."""
        return self.consistent_finish and not self.continuous_sync

    @property
    def effective_quiesce(self) -> str:
        return self.quiesce or DEFAULT_QUIESCE

    @property
    def effective_freeze_budget(self) -> float:
        return float(self.freeze_budget_seconds or DEFAULT_FREEZE_BUDGET_SECONDS)

    @property
    def effective_hook_timeout(self) -> float:
        return float(self.hook_timeout_seconds or DEFAULT_HOOK_TIMEOUT_SECONDS)

    @property
    def effective_snapshot_size(self) -> str:
        return self.snapshot_size or DEFAULT_SNAPSHOT_SIZE

    @property
    def effective_round_interval(self) -> float:
        v = self.round_interval_seconds
        return float(DEFAULT_ROUND_INTERVAL_SECONDS if v is None else v)

    @property
    def read_limit_bps(self) -> int | None:
        return self.read_limit_kbps * 1024 if self.read_limit_kbps else None

    @property
    def bandwidth_bps(self) -> int | None:
        return self.bandwidth_kbps * 1024 if self.bandwidth_kbps > 0 else None

    @property
    def hooks(self) -> tuple[str, ...]:
        """The API names of the hooks this task carries (``PreHook``, ``PostHook``)."""
        return tuple(k for k, v in (("PreHook", self.pre_hook), ("PostHook", self.post_hook)) if v)

    @property
    def skips_every_check(self) -> bool:
        return set(CHECKS) <= set(self.ignore_checks)

    def options(self) -> dict[str, Any]:
        """The optional rounds and cutover settings by API name (``None`` where not given)."""
        return {key: getattr(self, attr) for key, attr in OPTION_KEYS}

    # -------------------------------------------------------- the API form

    def to_api(self) -> dict[str, Any]:
        """The task as the agent receives it with a command (the console's agent task view)."""
        return {
            "TaskId": self.task_id,
            "TaskName": self.name,
            "Description": self.description,
            "Region": self.region,
            "TargetType": self.target_type,
            "ImageName": self.image_name,
            "TargetInstanceId": self.target_instance_id,
            "TargetSsh": self.target_ssh,
            "TargetHostKey": self.target_host_key,
            "BandwidthLimitKBps": self.bandwidth_kbps,
            "Checksum": self.checksum,
            "DiskMapping": [{"Source": a, "Target": b} for a, b in self.disk_mapping],
            "State": self.state,
            "ContinuousSync": self.continuous_sync,
            "ConsistentFinish": self.consistent_finish,
            "IgnoreChecks": list(self.ignore_checks),
            **self.options(),
        }

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> TaskSpec:
        """Read an agent task view. :class:`SpecError` names the first setting of the wrong type or
        value; absent keys and ``null`` take the defaults; unknown keys are ignored."""
        if not isinstance(d, Mapping):
            raise SpecError("Task", f"must be an object, got {type(d).__name__}")
        r = _Reader(d)
        return cls(
            task_id=r.text("TaskId"), name=r.text("TaskName"), description=r.text("Description"),
            region=r.text("Region"), target_type=r.text("TargetType"), image_name=r.text("ImageName"),
            target_instance_id=r.text("TargetInstanceId"), state=r.text("State"),
            target_ssh=r.text("TargetSsh"), target_host_key=r.text("TargetHostKey"),
            disk_mapping=r.mapping("DiskMapping"),
            bandwidth_kbps=r.whole("BandwidthLimitKBps") or 0,
            checksum=r.flag("Checksum"), continuous_sync=r.flag("ContinuousSync"),
            consistent_finish=r.flag("ConsistentFinish"), ignore_checks=r.checks("IgnoreChecks"),
            round_interval_seconds=r.seconds("RoundIntervalSeconds", minimum=0),
            read_limit_kbps=r.whole("ReadLimitKBps"),
            quiesce=r.choice("Quiesce", QUIESCE_METHODS),
            pre_hook=r.text("PreHook", None) or None, post_hook=r.text("PostHook", None) or None,
            freeze_budget_seconds=r.seconds("FreezeBudgetSeconds", minimum=1),
            snapshot_size=r.snapshot_size("SnapshotSize"),
            hook_timeout_seconds=r.seconds("HookTimeoutSeconds", minimum=1),
        )


class _Reader:
    """Typed look-ups in an API object; each failure is a :class:`SpecError` naming the key."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        self.d = d

    def _get(self, key: str) -> Any:
        return self.d.get(key)

    def text(self, key: str, default: str | None = "") -> Any:
        v = self._get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise SpecError(key, f"must be a string, got {_kind(v)}")
        return v

    def flag(self, key: str) -> bool:
        v = self._get(key)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise SpecError(key, f"must be true or false, got {_kind(v)}")
        return v

    def whole(self, key: str) -> int | None:
        v = self._get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(key, f"must be a whole number, got {_kind(v)}")
        if v < 0:
            raise SpecError(key, f"must be 0 or more, got {v}")
        return v

    def seconds(self, key: str, *, minimum: int) -> int | None:
        """A whole number of seconds (``30.0`` reads as 30)."""
        v = self._get(key)
        if v is None:
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(key, f"must be a whole number of seconds, got {_kind(v)}")
        if v < minimum:
            raise SpecError(key, f"must be {minimum} or more, got {v}")
        return v

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        v = self.text(key, None)
        if v is not None and v not in choices:
            raise SpecError(key, f"must be one of {', '.join(choices)}, got {v[:40]!r}")
        return v

    def snapshot_size(self, key: str) -> str | None:
        v = self.text(key, None)
        if v is not None and not snapshot_size_ok(v.strip()):
            raise SpecError(key, f"{v[:40]!r} is not a snapshot size: {SNAPSHOT_SIZE_HINT}")
        return v.strip() if v is not None else None

    def mapping(self, key: str) -> tuple[tuple[str, str], ...]:
        v = self._get(key)
        if v is None:
            return ()
        if not isinstance(v, list):
            raise SpecError(key, f"must be a list of {{Source, Target}}, got {_kind(v)}")
        out = []
        for i, m in enumerate(v):
            if not (isinstance(m, Mapping) and isinstance(m.get("Source"), str) and isinstance(m.get("Target"), str)):
                raise SpecError(f"{key}.{i}", "must be {\"Source\": path, \"Target\": path}")
            out.append((m["Source"], m["Target"]))
        return tuple(out)

    def checks(self, key: str) -> tuple[str, ...]:
        v = self._get(key)
        if v is None:
            return ()
        if v == "all":  # every check (the agent skips the check run)
            return CHECKS
        if not isinstance(v, list | tuple) or not all(isinstance(n, str) for n in v):
            raise SpecError(key, f"must be a list of check names, got {_kind(v)}; {checks_hint()}")
        bad = unknown_checks(v)
        if bad:
            raise SpecError(key, f"unknown check {bad[0][:40]!r}; {checks_hint()}")
        return tuple(dict.fromkeys(v))


def _kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"{str(v).lower()} (a boolean)"
    if isinstance(v, int | float):
        return f"{v!r} (a number)"
    if isinstance(v, str):
        return f"{v[:40]!r} (a string)"
    return f"a {type(v).__name__}"
