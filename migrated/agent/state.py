"""The daemon's durable state in ``state_dir`` (each file replaced atomically, 0600).

``source.json``    the source ID the console gave at registration, and that console's endpoint
``commands.json``  IDs of commands already applied (newest last, bounded): a redelivered command
                   is acked again, never applied twice
``task.json``      the task this agent works on: the console's task view, the local state,
                   the last progress, and the state changes not yet reported to the console
``checkpoints/``   the engine's checkpoints, one directory per task
``ssh/id_ed25519`` the agent's SSH identity for targets (created by ``migrated register``)

During the freeze of a cutover (:meth:`AgentStore.hold` ... :meth:`AgentStore.release`) the
JSON files are kept in memory and written after the thaw: the state dir may be on a frozen
filesystem. ``save_task(None)`` (delete) is never called then: the delete waits for the task's
run, which releases the hold once thawed.

A damaged file is reported with its path and what to do; it never silently resets a task.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migrated.errors import ConfigError, UsageError
from migrated.model.status import TaskProgress
from migrated.model.taskspec import SpecError, TaskSpec
from migrated.source.freeze import HeldWrites

MAX_REMEMBERED_COMMANDS = 1000


@dataclass
class SourceRecord:
    source_id: str
    console: str


@dataclass
class TaskRecord:
    """What the agent knows about its task. ``spec`` is the console's agent task view
    (TaskId, TargetSsh, TargetHostKey, DiskMapping, BandwidthLimitKBps, Checksum, ...)."""

    task_id: str
    spec: dict[str, Any]
    state: str
    stage: str = ""
    message: str = ""
    progress: dict[str, Any] | None = None  # TaskProgress.to_dict()
    # what the console has not taken yet, oldest first: state changes {state, stage, message}
    # and events {kind: "event", level, stage, message}
    unreported: list[dict[str, str]] = field(default_factory=list)
    bandwidth_bps: int | None = None
    # continuous tasks: the latest live change of the rounds (console set-rounds, migratectl set);
    # wins over ``spec``: {"RoundIntervalSeconds": seconds, "ReadLimitKBps": KiB/s, 0 = none}
    rounds: dict[str, Any] | None = None

    @property
    def settings(self) -> TaskSpec:
        """``spec`` read as a :class:`TaskSpec`; UsageError naming the key of a mistyped setting."""
        return read_spec(self.task_id, self.spec)

    def progress_obj(self) -> TaskProgress:
        if self.progress:
            p = TaskProgress.from_dict(self.progress)
        else:
            p = TaskProgress(task_id=self.task_id, state=self.state)
        p.state, p.stage, p.message = self.state, self.stage, self.message
        return p


def read_spec(task_id: str, spec: dict[str, Any]) -> TaskSpec:
    """The console's task view as a :class:`TaskSpec`. A setting of the wrong type or value refuses
    the task: UsageError naming its key (``task task-1: setting Quiesce: must be one of ...``)."""
    try:
        return TaskSpec.from_api(spec)
    except SpecError as e:
        raise UsageError(f"task {task_id}: {e}") from None


class AgentStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self._held = HeldWrites()

    # -- the freeze of a cutover
    def hold(self) -> None:
        """From now on keep writes in memory (the newest per file): the state dir may be on a
        filesystem that is about to be frozen, and a write there would block the daemon's event
        loop, and with it the final pass, until the guardian's budget thaws it."""
        self._held.hold()

    def release(self) -> list[str]:
        """Write what was held (atomically, durably) and write through again; returns the paths.
        Call only once the source is thawed."""
        pending = self._held.pending
        self._held.release()
        return pending

    @property
    def holding(self) -> bool:
        return self._held.held

    # -- helpers
    def _read(self, name: str) -> Any | None:
        path = self.dir / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        try:
            return json.loads(text)
        except ValueError:
            raise ConfigError(f"{path} is damaged (not JSON); move it away and restart "
                              "(the task's checkpoint is kept separately)") from None

    def _write(self, name: str, data: Any) -> None:
        self._held.write(self.dir / name, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o600)

    # -- source
    def load_source(self) -> SourceRecord | None:
        d = self._read("source.json")
        if d is None:
            return None
        try:
            return SourceRecord(source_id=str(d["source_id"]), console=str(d["console"]))
        except (KeyError, TypeError):
            raise ConfigError(f"{self.dir / 'source.json'} is damaged; run migrated register again") from None

    def save_source(self, rec: SourceRecord) -> None:
        self._write("source.json", asdict(rec))

    # -- applied commands
    def load_applied(self) -> list[list[Any]]:
        """[[command_id, ok, message], ...] oldest first."""
        d = self._read("commands.json")
        out: list[list[Any]] = []
        for x in d if isinstance(d, list) else []:
            if isinstance(x, list) and len(x) == 3:
                out.append([str(x[0]), bool(x[1]), str(x[2])])
        return out

    def save_applied(self, entries: list[list[Any]]) -> None:
        self._write("commands.json", entries[-MAX_REMEMBERED_COMMANDS:])

    # -- task
    def load_task(self) -> TaskRecord | None:
        d = self._read("task.json")
        if d is None:
            return None
        try:
            return TaskRecord(**d)
        except TypeError:
            raise ConfigError(f"{self.dir / 'task.json'} is damaged; move it away and restart") from None

    def save_task(self, rec: TaskRecord | None) -> None:
        if rec is None:
            (self.dir / "task.json").unlink(missing_ok=True)
        else:
            self._write("task.json", asdict(rec))

    def checkpoint_dir(self, task_id: str) -> Path:
        return self.dir / "checkpoints" / task_id

    def drop_checkpoints(self, task_id: str) -> None:
        shutil.rmtree(self.checkpoint_dir(task_id), ignore_errors=True)

    @property
    def ssh_identity(self) -> Path:
        return self.dir / "ssh" / "id_ed25519"
