"""Status as data: the one shape that the engine fills, the daemon serves on its
control socket, migratectl renders, and the console receives in
ReportTaskProgress. Pure: no I/O. Never parse status out of log lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DiskProgress:
    """One disk of a task. ``bytes_done`` counts bytes the target holds durably
    or that were found identical/zero; it never goes backwards on a resume."""

    name: str  # source path, e.g. /dev/vdb
    target: str  # target path on the target host
    bytes_total: int
    bytes_done: int = 0
    bytes_sent: int = 0  # on the wire, after compression, this run
    blocks_sent: int = 0
    blocks_zero: int = 0
    blocks_same: int = 0

    @property
    def fraction(self) -> float:
        return 1.0 if self.bytes_total == 0 else min(1.0, self.bytes_done / self.bytes_total)


@dataclass
class TaskProgress:
    task_id: str
    state: str  # a TaskState value
    stage: str = ""  # init | transfer | verify | release
    disks: list[DiskProgress] = field(default_factory=list)
    rate_bps: float = 0.0  # bytes of the disk covered per second (recent)
    eta_seconds: float | None = None
    message: str = ""  # last event a person should read (e.g. the failure reason)
    updated_at: float = 0.0  # unix time

    @property
    def bytes_total(self) -> int:
        return sum(d.bytes_total for d in self.disks)

    @property
    def bytes_done(self) -> int:
        return sum(d.bytes_done for d in self.disks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes_total"] = self.bytes_total
        d["bytes_done"] = self.bytes_done
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskProgress:
        disks = [DiskProgress(**{k: v for k, v in x.items() if k in DiskProgress.__dataclass_fields__})
                 for x in d.get("disks", [])]
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "disks"}
        return cls(disks=disks, **fields)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
