"""Block planning: which blocks of a chunk to send, mark zero or skip. Pure: no I/O.

A *chunk* is a run of consecutive blocks read in one go. For each block the engine knows
the source hash, whether the source block is all zeros, and the hash of what the target
holds (all resolved before planning: from the hash file, from the target, or "zero" on a
fresh sparse target). ``plan_chunk`` turns that into coalesced runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    SAME = "same"  # target already holds it: not sent
    ZERO = "zero"  # source is zero, target is not: a ZERO marker (written as a hole/zeros)
    DATA = "data"  # sent as (compressed) data


@dataclass(frozen=True)
class Run:
    kind: Kind
    first: int  # block index within the chunk
    count: int


def plan_chunk(src_hashes: list[bytes], src_zero: list[bool], tgt_hashes: list[bytes],
               max_data_blocks: int) -> list[Run]:
    """Coalesce per-block decisions into runs; DATA runs hold at most ``max_data_blocks`` blocks.

    A block is SAME when the target hash equals the source hash (a zero block on a zero
    target is SAME too); otherwise ZERO when the source block is all zeros, else DATA.
    """
    if not (len(src_hashes) == len(src_zero) == len(tgt_hashes)):
        raise ValueError("hash lists differ in length")
    runs: list[Run] = []
    for i, (hs, z, ht) in enumerate(zip(src_hashes, src_zero, tgt_hashes, strict=True)):
        kind = Kind.SAME if hs == ht else (Kind.ZERO if z else Kind.DATA)
        if runs and runs[-1].kind is kind and runs[-1].first + runs[-1].count == i and (
                kind is not Kind.DATA or runs[-1].count < max_data_blocks):
            last = runs[-1]
            runs[-1] = Run(kind, last.first, last.count + 1)
        else:
            runs.append(Run(kind, i, 1))
    return runs


def parse_size(text: str) -> int:
    """Parse "64KiB", "20MiB", "1.5G", "4096" into bytes (binary units; K/M/G = KiB/MiB/GiB)."""
    t = text.strip().replace(" ", "")
    units = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
             "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}
    i = len(t)
    while i and not (t[i - 1].isdigit() or t[i - 1] == "."):
        i -= 1
    num, unit = t[:i], t[i:].lower()
    if unit.endswith("/s"):
        unit = unit[:-2]
    if not num or unit not in units:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 64KiB, 20MiB, 1.5GiB)")
    value = float(num) * units[unit]
    if value < 0:
        raise ValueError(f"negative size: {text!r}")
    return int(value)
