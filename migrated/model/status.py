"""Status as data: the one shape that the engine fills, the daemon serves on its
control socket, migratectl renders, and the console receives in
ReportTaskProgress. Pure: no I/O. Never parse status out of log lines.

The ``format_*`` renderers never raise: what they show may come from any agent (a huge
integer, NaN, a string where a number belongs), and one bad report must not break a page.
"""

from __future__ import annotations

import math
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
        try:
            return 1.0 if self.bytes_total == 0 else max(0.0, min(1.0, self.bytes_done / self.bytes_total))
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):  # a renderer never raises
            return 0.0


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
    # continuous tasks (incremental rounds until a cutover); None/"" otherwise
    phase: str = ""  # full-pass | round | waiting | cutover | final-pass | verifying | done
    round: int | None = None  # rounds finished, the full pass included
    round_changed_bytes: int | None = None  # bytes found changed by the last round
    lag_seconds: float | None = None  # how far the target trails the source (since the last round began)
    forecast_seconds: float | None = None  # forecast of the final pass (the downtime)
    convergence: str = ""  # the advice's sentence, e.g. "not converging: 80 MB/s changing, 40 MB/s sent"
    advice: str = ""  # keep-going | cutover | not-converging
    downtime_seconds: float | None = None  # measured at the cutover
    round_interval_seconds: float | None = None  # pause between rounds in effect (changeable live)
    read_limit_bps: int | None = None  # source read limit in effect during the rounds (None: unlimited)

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


def continuous_line(p: TaskProgress) -> str:
    """One line about the rounds of a continuous task ("" when it has none): what ``migratectl
    status`` and the console show. Example: "round 3, changed 12.0 MiB per round, lag 00:41,
    forecast of the final pass 00:02"."""
    if p.round is None and p.downtime_seconds is None:
        return ""
    parts = []
    if p.round is not None:
        parts.append(f"round {p.round}")
    if p.round_changed_bytes is not None:
        parts.append(f"changed {format_bytes(p.round_changed_bytes)} per round")
    if p.lag_seconds is not None:
        parts.append(f"lag {format_duration(p.lag_seconds)}")
    if p.forecast_seconds is not None:
        parts.append(f"forecast of the final pass {format_seconds(p.forecast_seconds)} s")
    if p.downtime_seconds is not None:
        parts.append(f"downtime {format_seconds(p.downtime_seconds, '.2f')} s")
    line = ", ".join(parts)
    if p.advice == "not-converging" and p.convergence:
        line += f"; {p.convergence}"
    return line


def rounds_settings_line(p: TaskProgress) -> str:
    """The round interval and source read limit in effect ("" when the task has no rounds), e.g.
    "a round every 30 s, source read limit 20.0 MiB/s"."""
    if p.round_interval_seconds is None:
        return ""
    limit = f"{format_bytes(p.read_limit_bps)}/s" if p.read_limit_bps else "unlimited"
    return f"a round every {format_seconds(p.round_interval_seconds, 'g')} s, source read limit {limit}"


def _finite(x: object) -> float | None:
    """``x`` as a finite float, or None (not a number, NaN, infinite, beyond a float)."""
    if isinstance(x, bool):
        return None
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def percent_done(done: float, total: float) -> float:
    """``100 * done / total`` rounded to 0.01, 0.0 without a total. Never raises (a stored 4,000-digit
    total is beyond a float)."""
    try:
        return round(100.0 * done / total, 2) if total else 0.0
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return 0.0


def format_bytes(n: float) -> str:
    """``1.5 MiB``. Never raises, whatever an agent reported: "?" for what is not a finite number."""
    x = _finite(n)
    if x is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    raise AssertionError("unreachable")


def format_seconds(seconds: float | None, spec: str = ".1f") -> str:
    """``12.5`` (no unit). Never raises: "?" for what is not a finite number."""
    x = _finite(seconds)
    return "?" if x is None else format(x, spec)


def format_duration(seconds: float | None) -> str:
    """``01:05`` or ``2:01:05``; ``--:--`` when unknown. Never raises, whatever an agent reported."""
    x = _finite(seconds)
    if x is None:
        return "--:--"
    s = int(x)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
