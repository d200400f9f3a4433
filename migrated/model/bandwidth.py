"""Bandwidth and read limits: one way to read them, one way to show them. Pure: no I/O.

The unit of record is the API's: ``BandwidthLimitKBps`` and ``ReadLimitKBps`` count KB/s with
1 KB = 1024 bytes, which is what the agent's token bucket counts (the daemon and the engine hold
bytes/s). Every program *shows* a limit the same way, :func:`format_rate`: ``20.0 MiB/s`` (binary
units, one decimal), or ``unlimited``.

Every input reads a limit with :func:`parse_rate`, which takes an explicit unit:

==================================================  ===========================================
typed                                               means
==================================================  ===========================================
``20480K`` ``20480KB`` ``20480KiB`` ``20480KB/s``   bytes, binary: K = KB = KiB = 1024 bytes,
``20M`` ``20MiB/s`` ``20MBps`` ``1.5G`` ``512B``    M = 2**20, G = 2**30, T = 2**40 (any case)
``160Mbit`` ``160Mbit/s`` ``160Mbps`` ``160Mb/s``   bits, decimal as links count them: 1 Mbit =
``800kbit`` ``1Gbps``                               10**6 bits = 125000 bytes (``b`` lowercase
                                                    before ``ps`` or ``/s`` is a bit)
``0`` ``unlimited`` ``none`` ``off``                no limit
==================================================  ===========================================

A bare number keeps the unit that input always had, so no script breaks: the caller passes it as
``bare`` (KB/s for the console CLI, bytes/s for ``migratectl`` and ``migrated sync``, Mbit/s for the
web form's bandwidth limit, MiB/s for its read limit).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from migrated.model.status import format_bytes


@dataclass(frozen=True)
class Unit:
    """What a bare number means in one input: ``name`` for messages, ``bytes`` per second of 1."""

    name: str
    bytes: float


BYTES = Unit("bytes/s", 1)
KB = Unit("KB/s", 1024)  # the API's unit (KiB/s)
MIB = Unit("MiB/s", 1 << 20)
MBIT = Unit("Mbit/s", 1_000_000 / 8)

MAX_KBPS = 100 * 1024 * 1024  # the API's cap on BandwidthLimitKBps / ReadLimitKBps (100 GiB/s)
MAX_BPS = MAX_KBPS * 1024

EXAMPLES = "20MiB/s, 20480K, 160Mbit"
NO_LIMIT_WORDS = ("unlimited", "none", "off")

_BYTE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
               "tib": 1 << 40}
_BIT_UNITS = {"bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "tbit": 1e12 / 8}
_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([A-Za-z]*(?:/[sS])?)")


class RateError(ValueError):
    """Not a limit this module can read; the message says what to type instead. ``unreadable`` is
    false when the text was a rate but out of range (over :data:`MAX_BPS`, under 1 byte/s)."""

    def __init__(self, message: str, *, unreadable: bool = True) -> None:
        super().__init__(message)
        self.unreadable = unreadable


def _per_second_multiplier(unit: str) -> float | None:
    """Bytes per second of 1 ``unit`` (``"MiB/s"``, ``"Mbps"``, ``"K"``), None if unknown; ``""`` is
    the caller's bare unit and is not handled here."""
    per_second = unit.endswith(("/s", "/S", "ps"))
    stem = unit[:-2] if per_second else unit
    if per_second and stem.endswith("b") and len(stem) <= 2:  # Mbps, kb/s, bps: bits (network convention)
        stem = stem[:-1] + "bit"
    low = stem.lower()
    if low in _BIT_UNITS:
        return _BIT_UNITS[low]
    if low in _BYTE_UNITS and low:
        return _BYTE_UNITS[low]
    return None


def parse_rate(text: str, bare: Unit) -> int:
    """A typed limit -> bytes/s (0 = no limit). A number without a unit is in ``bare``.
    RateError if unreadable, negative, not finite, above :data:`MAX_BPS`, or positive but under 1 B/s."""
    t = text.strip().replace(" ", "")
    if t.lower() in NO_LIMIT_WORDS:
        return 0
    m = _RATE.fullmatch(t)
    factor = (bare.bytes if not m.group(2) else _per_second_multiplier(m.group(2))) if m else None
    if m is None or factor is None:
        raise RateError(f"{text.strip()!r} is not a rate: give a number of {bare.name} or a number with its unit, "
                        f"e.g. {EXAMPLES} (0 or unlimited: no limit)")
    value = float(m.group(1)) * factor
    if not math.isfinite(value) or value > MAX_BPS:
        raise RateError(f"{text.strip()!r} is over the limit of {format_rate(MAX_BPS)}", unreadable=False)
    if value and round(value) == 0:
        raise RateError(f"{text.strip()!r} is under 1 byte/s; use 0 or unlimited to remove the limit",
                        unreadable=False)
    return round(value)


def to_kbps(bps: float) -> int:
    """Bytes/s -> the API's KB/s (KiB/s), never rounding a real limit down to 0 (= no limit)."""
    return max(1, round(bps / 1024)) if bps > 0 else 0


def parse_kbps(text: str, bare: Unit) -> int:
    """A typed limit -> the API's KB/s (0 = no limit); RateError as :func:`parse_rate`."""
    return to_kbps(parse_rate(text, bare))


def format_rate(bps: float | None) -> str:
    """How every program shows a limit or a rate in bytes/s: ``20.0 MiB/s``; ``unlimited`` for 0/None."""
    if not bps or bps < 0 or not math.isfinite(bps):
        return "unlimited"
    return f"{format_bytes(bps)}/s"


def format_kbps(kbps: int | None) -> str:
    """An API limit in KB/s, shown as :func:`format_rate` shows it: 20480 -> ``20.0 MiB/s``."""
    return format_rate((kbps or 0) * 1024)


def kbps_text(kbps: int | None) -> str:
    """An API limit as an input reads it back exactly (to prefill a form): 20480 -> ``20MiB/s``,
    9766 -> ``9766KiB/s``, 0/None -> ``""``."""
    if not kbps:
        return ""
    return f"{kbps // 1024}MiB/s" if kbps % 1024 == 0 else f"{kbps}KiB/s"
