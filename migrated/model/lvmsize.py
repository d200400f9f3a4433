"""The LVM snapshot size rule (``--snapshot-size``, the console's ``SnapshotSize``), shared by the
agent (:mod:`migrated.source.snapshot`) and the console's API parameters so both accept exactly the
same values. Pure: no asyncio, no files, no subprocesses.

A size is what ``lvcreate --snapshot`` takes: an absolute size (``512M``, ``2G``, ``1.5T``; no unit
means MiB, as lvcreate reads it) or a share of extents (``20%ORIGIN``, ``50%FREE``, ``10%VG``).
"""

from __future__ import annotations

import re

DEFAULT_SNAPSHOT_SIZE = "10%ORIGIN"
SNAPSHOT_SIZE_RE = re.compile(r"^\d+(\.\d+)?[kKmMgGtT]?$|^\d+%(ORIGIN|FREE|VG)$")
SNAPSHOT_SIZE_HINT = "use a size like 2G or 512M, or 20%ORIGIN"
MAX_SNAPSHOT_SIZE_CHARS = 32


def snapshot_size_ok(size: str) -> bool:
    """True iff ``size`` is a copy-on-write size lvcreate takes (see the module docstring)."""
    return len(size) <= MAX_SNAPSHOT_SIZE_CHARS and SNAPSHOT_SIZE_RE.fullmatch(size) is not None
