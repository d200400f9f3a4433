"""Incremental rounds: bookkeeping, lag, forecast of the final pass, and the
convergence decision. Pure: no asyncio, no files, no clocks (times are passed in).

A *round* is one pass over the source that re-reads every block, compares it
with what the checkpoint says the target holds, and sends what differs. Round 0
is the full pass. Numbers the engine reports per round:

* ``bytes_scanned``  source bytes read and hashed,
* ``bytes_changed``  source bytes that differed from the target and were sent
                     (logical, before compression),
* ``duration``       seconds from the start of reading to "durable on target".

From them (see :func:`summarize`):

* **change rate**: bytes that became different per second of wall time. The
  blocks a round finds changed were written since the previous round read them,
  so the window is ``started_at[n] - started_at[n-1]``. A block rewritten twice
  counts once: this is the rate at which the *dirty set* grows, which is what
  the next round has to send.
* **cost model**: a round takes ``scan_cost * scanned + send_cost * changed``
  seconds, fitted by least squares over the rounds (see :func:`_costs` for the
  fallback when the rounds cannot tell the two apart). ``send_rate = 1 /
  send_cost`` is what we can ship per second, ``scan_rate = 1 / scan_cost``
  what we can re-read and hash.
* **forecast of the final pass**: the cutover freezes the source right after a
  round, so the final pass sends what changed while that round ran
  (``dirty = change_rate * last.duration``) and re-scans the disk:
  ``scan_cost * disk_bytes + send_cost * dirty``; with write tracking
  (``Policy.tracked``) it reads only the dirty bytes:
  ``pass_overhead + (scan_cost + send_cost) * dirty``. This is the predicted
  downtime.

The decision (:class:`Advice`):

* ``keep-going``      not enough rounds yet, or rounds are still shrinking;
* ``cutover``         the forecast fits the downtime target, or rounds stopped
                      shrinking and the forecast still fits the freeze budget;
* ``not-converging``  the source changes at least as fast as we can send, or
                      rounds stopped shrinking with a forecast past the freeze
                      budget. Said plainly: "not converging: 80 MB/s changing,
                      40 MB/s sent".
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

MB = 1_000_000


class Advice(StrEnum):
    KEEP_GOING = "keep-going"
    CUTOVER = "cutover"
    NOT_CONVERGING = "not-converging"


@dataclass(frozen=True)
class RoundStats:
    """One finished round. ``index`` 0 is the full pass. ``started_at`` is on any clock shared by
    all rounds of a task (monotonic seconds)."""

    index: int
    started_at: float
    duration: float
    bytes_scanned: int
    bytes_changed: int
    bytes_sent: int = 0  # on the wire, after compression

    def __post_init__(self) -> None:
        if self.duration < 0 or self.bytes_scanned < 0 or self.bytes_changed < 0 or self.bytes_sent < 0:
            raise ValueError(f"round {self.index}: negative duration or byte count")


@dataclass(frozen=True)
class Policy:
    """When to propose the cutover.

    ``downtime_target``: forecast final pass at or under this -> cutover now (seconds).
    ``freeze_budget``: the hard limit of the freeze; a forecast over it is never proposed.
    ``plateau_rounds``: this many incremental rounds in a row without shrinking by
    ``shrink_factor`` means the rounds have stopped converging further.
    """

    downtime_target: float = 2.0
    freeze_budget: float = 30.0
    plateau_rounds: int = 3
    shrink_factor: float = 0.9
    # The final pass reads only traced writes (migrated.source.tracker) instead of the whole disk;
    # then it costs a fixed ``pass_overhead`` (starting the receiver, flushing the target: ~1 s in
    # bench/cutover_bench.py) plus reading and sending what changed.
    tracked: bool = False
    pass_overhead: float = 1.0

    def __post_init__(self) -> None:
        if self.downtime_target <= 0 or self.freeze_budget <= 0:
            raise ValueError("downtime target and freeze budget must be positive")
        if self.plateau_rounds < 1 or not 0 < self.shrink_factor <= 1:
            raise ValueError("plateau_rounds >= 1 and 0 < shrink_factor <= 1")


@dataclass(frozen=True)
class Summary:
    rounds: int  # finished rounds, the full pass included
    last_changed: int  # bytes changed in the last round
    last_duration: float
    change_rate: float | None  # bytes/s becoming dirty; None before the first incremental round
    send_rate: float | None  # bytes/s we can ship (changed bytes, logical)
    scan_rate: float | None  # bytes/s we can re-read and hash
    forecast_final: float | None  # seconds of the final pass (the downtime)
    advice: Advice
    message: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["advice"] = self.advice.value
        return d


def mbps(rate: float) -> str:
    """Bytes/s as people read it in this message: decimal MB/s, no false precision."""
    v = rate / MB
    return f"{v:.0f} MB/s" if v >= 10 else f"{v:.1f} MB/s"


def _costs(rounds: list[RoundStats]) -> tuple[float | None, float | None]:
    """(scan_cost, send_cost) in seconds per byte, fitted to ``duration = scan_cost * scanned +
    send_cost * changed`` by least squares over all rounds; None where nothing was measured.

    When the fit is undetermined (every round changed the same share of what it scanned, e.g.
    only the full pass) or gives a negative cost, fall back to: scan_cost = the cheapest
    seconds-per-scanned-byte seen, send_cost = what the round with the most changes spent
    beyond that. The fallback overestimates scan_cost, so forecasts err on the long side."""
    rs = [r for r in rounds if r.bytes_scanned > 0 and r.duration > 0]
    if not rs:
        return None, None
    # bytes in GB so the normal equations stay well scaled
    ss = sum((r.bytes_scanned / 1e9) ** 2 for r in rs)
    cc = sum((r.bytes_changed / 1e9) ** 2 for r in rs)
    sc = sum(r.bytes_scanned * r.bytes_changed / 1e18 for r in rs)
    sd = sum(r.bytes_scanned / 1e9 * r.duration for r in rs)
    cd = sum(r.bytes_changed / 1e9 * r.duration for r in rs)
    det = ss * cc - sc * sc
    if cc > 0 and det > 1e-9 * ss * cc:
        a = (sd * cc - sc * cd) / det
        b = (ss * cd - sc * sd) / det
        if a > 0 and b > 0:
            return a / 1e9, b / 1e9
    scan_cost = min(r.duration / r.bytes_scanned for r in rs)
    with_changes = [r for r in rs if r.bytes_changed > 0]
    if not with_changes:
        return scan_cost, None
    biggest = max(with_changes, key=lambda r: (r.bytes_changed, r.duration))
    send_cost = max(biggest.duration - scan_cost * biggest.bytes_scanned, 0.0) / biggest.bytes_changed
    # a round that was all reading leaves no measurable send time: no send rate to report
    return scan_cost, send_cost if send_cost > 0 else None


def change_rate(rounds: list[RoundStats]) -> float | None:
    """Bytes/s becoming dirty, from the last incremental round (see module doc)."""
    if len(rounds) < 2:
        return None
    prev, last = rounds[-2], rounds[-1]
    window = last.started_at - prev.started_at
    if window <= 0:
        return None
    return last.bytes_changed / window


def summarize(rounds: list[RoundStats], disk_bytes: int, policy: Policy | None = None) -> Summary:
    """Lag, rates, forecast and advice after the last finished round (module doc)."""
    policy = policy or Policy()
    if not rounds:
        return Summary(0, 0, 0.0, None, None, None, None, Advice.KEEP_GOING, "full pass not finished yet")
    last = rounds[-1]
    scan_cost, send_cost = _costs(rounds)
    rate = change_rate(rounds)
    scan_rate = 1 / scan_cost if scan_cost else None
    send_rate = 1 / send_cost if send_cost else None
    forecast = None
    if scan_cost is not None and rate is not None:
        dirty = rate * last.duration
        if policy.tracked:
            forecast = policy.pass_overhead + (scan_cost + (send_cost or 0.0)) * dirty
        else:
            forecast = scan_cost * disk_bytes + (send_cost or 0.0) * dirty

    def out(advice: Advice, message: str) -> Summary:
        return Summary(len(rounds), last.bytes_changed, last.duration, rate, send_rate, scan_rate, forecast,
                       advice, message)

    if rate is None or forecast is None:
        return out(Advice.KEEP_GOING, "full pass done; the first incremental round measures the change rate")
    if send_rate is not None and rate >= send_rate:
        return out(Advice.NOT_CONVERGING,
                   f"not converging: {mbps(rate)} changing, {mbps(send_rate)} sent")
    if forecast <= policy.downtime_target:
        return out(Advice.CUTOVER,
                   f"ready for cutover: final pass forecast {forecast:.1f} s "
                   f"(target {policy.downtime_target:g} s)")
    incremental = rounds[1:]
    recent = incremental[-(policy.plateau_rounds + 1):]
    plateau = len(recent) == policy.plateau_rounds + 1 and all(
        b.bytes_changed > a.bytes_changed * policy.shrink_factor for a, b in itertools.pairwise(recent))
    if plateau:
        if forecast <= policy.freeze_budget:
            return out(Advice.CUTOVER,
                       f"rounds stopped shrinking (~{last.bytes_changed / MB:.0f} MB each); final pass forecast "
                       f"{forecast:.1f} s fits the freeze budget of {policy.freeze_budget:g} s")
        return out(Advice.NOT_CONVERGING,
                   f"not converging: rounds stopped shrinking at ~{last.bytes_changed / MB:.0f} MB; final pass "
                   f"forecast {forecast:.1f} s exceeds the freeze budget of {policy.freeze_budget:g} s")
    return out(Advice.KEEP_GOING,
               f"round {last.index}: {last.bytes_changed / MB:.1f} MB changed, {mbps(rate)} changing; "
               f"final pass forecast {forecast:.1f} s")
