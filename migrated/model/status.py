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

    # ------------------------------------------------------------ the console API form

    def to_api(self) -> dict[str, Any]:
        """The ``ReportTaskProgress`` parameters (without ``SourceId``), also the form the console
        keeps: the optional fields of continuous tasks only when set, so an older console never
        sees them otherwise; texts cut to what the API takes."""
        body: dict[str, Any] = {
            "TaskId": self.task_id, "State": self.state, "Stage": self.stage[:32],
            "Disks": [{"Name": d.name, "Target": d.target, "BytesTotal": d.bytes_total, "BytesDone": d.bytes_done,
                       "BytesSent": d.bytes_sent} for d in self.disks],
            "RateBps": max(0.0, self.rate_bps), "EtaSeconds": self.eta_seconds, "Message": self.message[:4000],
        }
        for key, attr, limit in _OPTIONAL:
            value = getattr(self, attr)
            if value not in (None, ""):
                body[key] = value[:limit] if isinstance(value, str) else (
                    max(0.0, value) if isinstance(value, float) else value)
        if self.round_interval_seconds is not None:  # the settings in effect (changed live)
            body["RoundIntervalSeconds"] = float(self.round_interval_seconds)
            body["ReadLimitKBps"] = max(1, round(self.read_limit_bps / 1024)) if self.read_limit_bps else 0
        return body

    def to_view(self) -> dict[str, Any]:
        """The ``Progress`` of a task in ``DescribeTasks`` (the console adds ``UpdatedTime``): every
        field, ``null``/``""`` where the agent has not reported it, with the totals and the percent."""
        total, done = self.bytes_total, self.bytes_done
        api = self.to_api()
        view: dict[str, Any] = {
            "Disks": api["Disks"], "BytesTotal": total, "BytesDone": done,
            "Percent": percent_done(done, total),
            "RateBps": _finite(self.rate_bps), "EtaSeconds": self.eta_seconds,  # null: not a number
        }
        for key, _attr, _limit in _OPTIONAL:
            view[key] = api.get(key, "" if key in ("Phase", "Convergence", "Advice") else None)
        # continuous tasks: the round interval / source read limit the agent applies right now (null
        # until it reports); the task's RoundIntervalSeconds / ReadLimitKBps are the settings
        view["RoundIntervalSeconds"] = api.get("RoundIntervalSeconds")
        view["ReadLimitKBps"] = api.get("ReadLimitKBps")
        return view

    @classmethod
    def from_api(cls, d: dict[str, Any], **known: Any) -> TaskProgress:
        """Read the API form: a ``ReportTaskProgress`` body, the console's stored progress (with
        ``UpdatedAt``) or the ``Progress`` of a task view. ``known`` gives fields that live outside
        it (``task_id``, ``state``, ``stage``, ``message``) and win over it. Never raises on odd
        values (what an agent reported): a field of the wrong type is left at its default."""
        disks = [DiskProgress(name=_text(x.get("Name")), target=_text(x.get("Target")),
                              bytes_total=_whole(x.get("BytesTotal")) or 0, bytes_done=_whole(x.get("BytesDone")) or 0,
                              bytes_sent=_whole(x.get("BytesSent")) or 0)
                 for x in (d.get("Disks") or []) if isinstance(x, dict)] if isinstance(d.get("Disks"), list) else []
        fields: dict[str, Any] = {
            "task_id": _text(d.get("TaskId")), "state": _text(d.get("State")), "stage": _text(d.get("Stage")),
            "message": _text(d.get("Message")),
            # a stored non-finite rate (an older console took RateBps 1e400) stays so: the view says null
            "rate_bps": d["RateBps"] if isinstance(d.get("RateBps"), float) else _number(d.get("RateBps")) or 0.0,
            "eta_seconds": _number(d.get("EtaSeconds")), "updated_at": _number(d.get("UpdatedAt")) or 0.0,
        }
        for key, attr, _limit in _OPTIONAL:
            default = cls.__dataclass_fields__[attr].default
            fields[attr] = (_text(d.get(key)) if isinstance(default, str) else
                            _whole(d.get(key)) if attr in ("round", "round_changed_bytes") else _number(d.get(key)))
        fields["round_interval_seconds"] = _number(d.get("RoundIntervalSeconds"))
        fields["read_limit_bps"] = (_whole(d.get("ReadLimitKBps")) or 0) * 1024 or None
        fields.update(known)
        return cls(disks=disks, **fields)


# the optional fields of TaskProgress.to_api(): (API key, attribute, longest text)
_OPTIONAL = (
    ("Phase", "phase", 32), ("Round", "round", 0), ("RoundChangedBytes", "round_changed_bytes", 0),
    ("LagSeconds", "lag_seconds", 0), ("ForecastSeconds", "forecast_seconds", 0),
    ("Convergence", "convergence", 512), ("Advice", "advice", 32), ("DowntimeSeconds", "downtime_seconds", 0),
)


def _text(v: object) -> str:
    return v if isinstance(v, str) else ""


def _whole(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _number(v: object) -> float | None:
    """A JSON number as a finite float (not a string that spells one), else None."""
    return _finite(v) if isinstance(v, int | float) else None


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
