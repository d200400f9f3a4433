"""A running task's progress as kept in its task record: disks, the transfer rate, and the fields
of a continuous task (round, lag, forecast ...) that survive between progress updates."""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrated.model.states import COPYING
from migrated.model.status import DiskProgress, TaskProgress

if TYPE_CHECKING:
    from migrated.agent.runners.host import RunnerHost
    from migrated.agent.state import TaskRecord

# TaskProgress fields the continuous runner keeps in the task record between progress updates
KEYS = ("phase", "round", "round_changed_bytes", "forecast_seconds", "convergence", "advice",
        "downtime_seconds", "lag_since")


@dataclass
class RateMeter:
    """Bytes covered per second over the last ``window`` seconds (monotonic clock)."""

    window: float = 10.0
    samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

    def add(self, now: float, done: int) -> None:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0

    def reset(self) -> None:
        self.samples.clear()


def disk_size(path: str) -> int:
    """Size of a block device or image file (0 if it cannot be opened; the engine will say why)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def percent(p: TaskProgress | None) -> str:
    if p is None or not p.bytes_total:
        return "0%"
    return f"{100.0 * p.bytes_done / p.bytes_total:.1f}%"


def carry(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Keep the continuous fields of ``old`` in a freshly built progress dict ``new``."""
    for k in KEYS:
        if old and old.get(k) is not None and new.get(k) in (None, ""):
            new[k] = old[k]
    return new


def fill(p: TaskProgress, stored: dict[str, Any] | None, now: float) -> None:
    """Complete a TaskProgress built from the task record: the lag is live (now - start of the last round)."""
    since = (stored or {}).get("lag_since")
    if since is not None and p.state in COPYING and p.downtime_seconds is None:
        p.lag_seconds = max(0.0, now - float(since))


def initial_disks(t: TaskRecord, mapping: list[tuple[str, str]]) -> list[DiskProgress]:
    known = {d["name"]: d for d in (t.progress or {}).get("disks", [])}
    out = []
    for src, dst in mapping:
        d = known.get(src)
        if d:
            out.append(DiskProgress(**{k: v for k, v in d.items() if k in DiskProgress.__dataclass_fields__}))
        else:
            out.append(DiskProgress(name=src, target=dst, bytes_total=disk_size(src)))
    return out


def on_progress(host: RunnerHost, t: TaskRecord, disks: list[DiskProgress], i: int, dp: DiskProgress) -> None:
    prev = disks[i]
    # bytes_done never goes backwards on a resume
    dp.bytes_done = max(dp.bytes_done, prev.bytes_done if prev.bytes_total == dp.bytes_total else 0)
    disks[i] = dp
    done = set((t.progress or {}).get("done_disks", []))
    store_progress(host, t, disks, done, persist=False)
    host.note_bytes_done(sum(d.bytes_done for d in disks))


def store_progress(host: RunnerHost, t: TaskRecord, disks: list[DiskProgress], done: set[str],
                   persist: bool = True) -> None:
    p = TaskProgress(task_id=t.task_id, state=t.state, stage=t.stage, disks=list(disks))
    d = carry(t.progress, p.to_dict())
    d["done_disks"] = sorted(done)
    t.progress = d
    if persist:
        host.save_task()
