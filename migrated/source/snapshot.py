"""LVM snapshot as the quiesce method of a cutover (``--quiesce lvm``).

Instead of freezing the filesystem for the whole final pass, take an LVM
snapshot of the logical volume (``lvcreate --snapshot``: device-mapper
suspends the volume, which freezes its filesystem, only for the moment the
snapshot is created), run the final pass reading the *snapshot*, then remove
it. The downtime is the snapshot creation; the target gets the volume as it
was at that instant. Writes made after it are not migrated: stop the
applications with a pre hook, or accept that the cutover point is the
snapshot.

Contracts: the snapshot is always removed (``lvremove -f``) when the block
ends, even on error; the origin volume is never written. Needs lvm2 and
free extents in the volume group (``size`` is the copy-on-write space: writes
to the origin during the final pass must fit in it, or the snapshot becomes
invalid and the pass fails).

Not tested end-to-end here: device-mapper does not work on the CI machine;
the command lines and the error paths are tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from migrated.errors import QuiesceError

_SIZE = re.compile(r"^\d+(\.\d+)?[kKmMgGtT]?$|^\d+%(ORIGIN|FREE|VG)$")


@dataclass(frozen=True)
class LvmPlan:
    vg: str
    lv: str
    snap: str
    size: str

    @property
    def create(self) -> list[str]:
        size_opt = ["--extents", self.size] if "%" in self.size else ["--size", self.size]
        return ["lvcreate", "--snapshot", *size_opt, "--name", self.snap, f"{self.vg}/{self.lv}"]

    @property
    def remove(self) -> list[str]:
        return ["lvremove", "--force", f"{self.vg}/{self.snap}"]

    @property
    def snapshot_device(self) -> str:
        return f"/dev/{self.vg}/{self.snap}"


def plan_snapshot(vg: str, lv: str, task: str, size: str) -> LvmPlan:
    if not _SIZE.match(size):
        raise QuiesceError(f"--snapshot-size {size!r}: use a size like 2G or 512M, or 20%ORIGIN")
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", task)[:40]
    return LvmPlan(vg=vg, lv=lv, snap=f"migrated-snap-{safe}", size=size)


async def _run(argv: list[str], timeout: float = 120) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise QuiesceError(f"`{' '.join(argv)}` timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        raise QuiesceError(f"`{' '.join(argv)}` failed: {err.decode(errors='replace').strip()}")
    return out.decode()


async def lvm_volume_of(device: str) -> tuple[str, str]:
    """(vg, lv) of an LVM logical volume device; QuiesceError if lvm2 is missing or it is no LV."""
    if shutil.which("lvs") is None or shutil.which("lvcreate") is None:
        raise QuiesceError("--quiesce lvm needs lvm2 (lvs/lvcreate not found); install it or use --quiesce freeze")
    try:
        out = await _run(["lvs", "--noheadings", "--separator", "/", "-o", "vg_name,lv_name", device])
    except QuiesceError:
        raise QuiesceError(f"{device} is not an LVM logical volume; use --quiesce freeze") from None
    vg, _, lv = out.strip().partition("/")
    if not vg or not lv:
        raise QuiesceError(f"{device} is not an LVM logical volume; use --quiesce freeze")
    return vg, lv


@dataclass
class SnapshotReport:
    device: str = ""
    created_in: float = 0.0  # seconds lvcreate took: the downtime of this method


@contextlib.asynccontextmanager
async def lvm_snapshot(device: str, task: str, size: str = "10%ORIGIN") -> AsyncIterator[SnapshotReport]:
    """Yield a report whose ``device`` is the snapshot to read the final pass from; remove it after."""
    vg, lv = await lvm_volume_of(device)
    plan = plan_snapshot(vg, lv, task, size)
    report = SnapshotReport(device=plan.snapshot_device)
    started = time.monotonic()
    await _run(plan.create)
    report.created_in = time.monotonic() - started
    try:
        yield report
    finally:
        await _run(plan.remove)
