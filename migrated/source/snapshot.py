"""LVM snapshot as the quiesce method of a cutover (``--quiesce lvm``).

Instead of freezing the filesystem for the whole final pass, take an LVM snapshot of the logical
volume (``lvcreate --snapshot``: device-mapper suspends the volume, which freezes its filesystem,
only while the snapshot is created), let the source run again, read the final pass from the
*snapshot*, verify the target against it, then remove it. The target gets the volume as it was at
the instant of the snapshot (the cutover point). Writes made after it are not migrated: stop the
applications with a pre hook (and start them with the post hook right after the snapshot), or
accept that the cutover point is the snapshot (crash-consistent for applications, a clean
filesystem).

Contracts:

* The origin and the snapshot are only ever opened read-only (``open_source_via``); the only
  writes are lvm2's own (``lvcreate`` / ``lvremove``).
* The snapshot device path is what lvm2 reports (``lvs -o lv_path``), never guessed.
* :func:`lvm_snapshot` removes the snapshot (``lvremove --force``) whenever the block ends: success,
  error, stop (SIGTERM), cancellation. The removal is a blocking call, so no cancellation can cut it
  short. Only ``kill -9`` (or a power cut) can leave one behind: every snapshot is named
  ``migrated-snap-<name>``, and :func:`remove_leftover_snapshots` (called when a continuous run
  with ``--quiesce lvm`` starts) removes the ones of the origin volume.
* ``size`` is the copy-on-write space (``--snapshot-size``, default ``10%ORIGIN``): the origin's
  writes during the final pass and the verification must fit in it, or device-mapper invalidates
  the snapshot, its reads fail (EIO) and the cutover fails (the snapshot is still removed).
* Needs lvm2 and free extents in the volume group; errors are :class:`QuiesceError` naming the
  volume and lvm2's own message.

Tested with a labelled fake lvm2 (tests/test_continuous_lvm.py) because device-mapper does not
work on the CI machine; see docs/consistency.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from migrated.errors import QuiesceError
from migrated.model.lvmsize import DEFAULT_SNAPSHOT_SIZE, SNAPSHOT_SIZE_HINT, snapshot_size_ok

log = structlog.get_logger(__name__)

PREFIX = "migrated-snap-"
DEFAULT_SIZE = DEFAULT_SNAPSHOT_SIZE


def check_size(size: str) -> None:
    """QuiesceError (a UsageError at the CLI) unless ``size`` is something lvcreate takes."""
    if not snapshot_size_ok(size):
        raise QuiesceError(f"--snapshot-size {size!r}: {SNAPSHOT_SIZE_HINT}")


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
    def path_query(self) -> list[str]:
        """Ask lvm2 where the snapshot's device is (not assumed to be /dev/VG/LV)."""
        return ["lvs", "--noheadings", "-o", "lv_path", f"{self.vg}/{self.snap}"]


def plan_snapshot(vg: str, lv: str, task: str, size: str) -> LvmPlan:
    check_size(size)
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", task)[:40]
    return LvmPlan(vg=vg, lv=lv, snap=f"{PREFIX}{safe}", size=size)


async def _run(argv: list[str], timeout: float = 120) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise QuiesceError(f"`{' '.join(argv)}` timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        raise QuiesceError(f"`{' '.join(argv)}` failed: {err.decode(errors='replace').strip()}")
    return out.decode()


def _run_blocking(argv: list[str], timeout: float = 120) -> None:
    """For the removal: a blocking call cannot be cancelled half way."""
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise QuiesceError(f"`{' '.join(argv)}` timed out after {timeout:g} s") from None
    except OSError as e:
        raise QuiesceError(f"`{' '.join(argv)}` could not run: {e.strerror}") from None
    if r.returncode != 0:
        raise QuiesceError(f"`{' '.join(argv)}` failed: {r.stderr.strip()}")


def _need_lvm2() -> None:
    missing = [c for c in ("lvs", "lvcreate", "lvremove") if shutil.which(c) is None]
    if missing:
        raise QuiesceError(f"--quiesce lvm needs lvm2 ({'/'.join(missing)} not found); install it or use "
                           "--quiesce freeze")


async def lvm_volume_of(device: str) -> tuple[str, str]:
    """(vg, lv) of an LVM logical volume device; QuiesceError if lvm2 is missing or it is no LV."""
    _need_lvm2()
    try:
        out = await _run(["lvs", "--noheadings", "--separator", "/", "-o", "vg_name,lv_name", device])
    except QuiesceError:
        raise QuiesceError(f"{device} is not an LVM logical volume; use --quiesce freeze") from None
    vg, _, lv = out.strip().partition("/")
    if not vg or not lv:
        raise QuiesceError(f"{device} is not an LVM logical volume; use --quiesce freeze")
    return vg, lv


async def leftover_snapshots(vg: str, lv: str) -> list[str]:
    """Names of snapshots of ``vg/lv`` that migrated made (``migrated-snap-*``) and that still exist."""
    out = await _run(["lvs", "--noheadings", "--separator", "/", "-o", "lv_name,origin", vg])
    names = []
    for line in out.splitlines():
        name, _, origin = line.strip().partition("/")
        if name.startswith(PREFIX) and origin == lv:
            names.append(name)
    return names


async def remove_leftover_snapshots(device: str) -> list[str]:
    """Remove the ``migrated-snap-*`` snapshots of ``device``'s volume that a killed run (kill -9,
    power cut) left behind; returns their ``vg/name``. They hold copy-on-write space and slow the
    origin's writes, and one with our name would make the next ``lvcreate`` fail."""
    vg, lv = await lvm_volume_of(device)
    removed = []
    for name in await leftover_snapshots(vg, lv):
        await _run(["lvremove", "--force", f"{vg}/{name}"])
        log.warning("lvm_leftover_snapshot_removed", snapshot=f"{vg}/{name}", origin=f"{vg}/{lv}")
        removed.append(f"{vg}/{name}")
    return removed


@dataclass
class Snapshot:
    origin: str  # the source device (what the checkpoint is keyed on)
    volume: str = ""  # vg/lv
    name: str = ""  # vg/snapshot
    device: str = ""  # the snapshot's device, as lvm2 reports it: read the final pass from here
    started: float = 0.0  # time.monotonic() when lvcreate started
    created: float = 0.0  # time.monotonic() when it returned: the cutover point
    removed: bool = False

    @property
    def created_in(self) -> float:
        """Seconds lvcreate took (device-mapper suspends the volume for part of it)."""
        return self.created - self.started


@contextlib.asynccontextmanager
async def lvm_snapshot(device: str, task: str | None = None, size: str = DEFAULT_SIZE) -> AsyncIterator[Snapshot]:
    """Take a snapshot of the LVM volume ``device``; yield it (``.device`` is the path to read);
    remove it when the block ends, whatever happened (module doc). ``task`` names the snapshot
    (``migrated-snap-<task>``, default the volume's name)."""
    vg, lv = await lvm_volume_of(device)
    plan = plan_snapshot(vg, lv, task or lv, size)
    snap = Snapshot(origin=device, volume=f"{vg}/{lv}", name=f"{vg}/{plan.snap}")
    created = False
    refused = False  # lvcreate said no: there is nothing to remove
    body_error: BaseException | None = None
    try:
        snap.started = time.monotonic()
        try:
            await _run(plan.create)
        except QuiesceError as e:
            refused = True
            raise QuiesceError(f"could not take the LVM snapshot of {vg}/{lv} ({e}); nothing was frozen, the "
                               "source runs on (free space in the volume group? --snapshot-size)") from None
        snap.created = time.monotonic()
        created = True
        log.info("lvm_snapshot_created", snapshot=snap.name, seconds=round(snap.created_in, 3))
        out = (await _run(plan.path_query)).strip()
        if not out.startswith("/"):
            raise QuiesceError(f"lvs reported no device path for the snapshot {snap.name} ({out!r})")
        for _ in range(100):  # udev makes the /dev link a moment after lvcreate returns
            if os.path.exists(out):
                break
            await asyncio.sleep(0.1)
        else:
            raise QuiesceError(f"the snapshot {snap.name}'s device {out} did not appear within 10 s")
        snap.device = out
        yield snap
    except BaseException as e:
        body_error = e
        raise
    finally:
        if not refused:  # also when lvcreate was cancelled half way: it may have made the snapshot
            try:
                _run_blocking(plan.remove)
                snap.removed = True
                log.info("lvm_snapshot_removed", snapshot=snap.name)
            except QuiesceError as e:
                if created:
                    msg = f"the snapshot {snap.name} could not be removed ({e}); remove it with `lvremove {snap.name}`"
                    if body_error is None:
                        raise QuiesceError(msg) from None
                    body_error.add_note(msg)
