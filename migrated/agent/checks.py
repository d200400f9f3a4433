"""Pre-migration checks: can this server be migrated, and will the copy boot?

Each check gives ``pass`` / ``warn`` / ``fail`` (or ``skip``) with a message that
says what was found and what to do. ``ignore_checks`` in the config (or the
task) skips all checks (``all``) or named ones.

The decisions are pure functions of what was read (``evaluate_*``), so they are
table-tested without touching the machine; :class:`SystemProbe` does the reading
(files under /sys, /proc, /boot, ``lsblk``, ``lsinitramfs``/``lsinitrd``) and
the target checks call a :class:`TargetProbe` (the engine's SSH transport).

========================  =====================================================
``virtio_drivers``        virtio_blk/virtio_scsi + virtio_pci (+ virtio_net) built
                          into the kernel or present in the initramfs
``selinux``               enforcing SELinux may refuse to boot a relabelled copy
``clock_skew``            our clock against the console's (warn; fail past a day)
``disks``                 the system disk and every disk with a mounted fs, sizes
``target_ssh``            target reachable over SSH with the pinned host key
``target_capacity``       every target disk at least as big as its source
``target_receiver``       ``migrated-recv`` runs on the target
========================  =====================================================
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from migrated.config import CHECK_NAMES, Config
from migrated.model.status import format_bytes


class Result(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    name: str
    result: Result
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "result": self.result.value, "message": self.message}


@dataclass(frozen=True)
class Disk:
    """A whole disk of the source: ``mounts`` are the mount points on it or its partitions."""

    path: str
    size: int
    mounts: tuple[str, ...] = ()
    read_only: bool = False

    @property
    def is_system(self) -> bool:
        return "/" in self.mounts


# ---------------------------------------------------------------- pure decisions

VIRTIO_DISK = ("virtio_blk", "virtio_scsi")
VIRTIO_BUS = ("virtio_pci",)


def _module_names(paths: Iterable[str]) -> set[str]:
    """'kernel/drivers/block/virtio_blk.ko.xz' -> 'virtio_blk' (also accepts plain names)."""
    names = set()
    for p in paths:
        base = os.path.basename(p.strip())
        for ext in (".zst", ".xz", ".gz"):
            base = base.removesuffix(ext)
        if base.endswith(".ko") or "/" not in p:
            names.add(base.removesuffix(".ko").replace("-", "_"))
    return names


def evaluate_virtio(builtin: Iterable[str] | None, initramfs: Iterable[str] | None,
                    kernel: str = "") -> CheckResult:
    """builtin: lines of modules.builtin; initramfs: file list of the initramfs (None: unreadable)."""
    name = "virtio_drivers"
    have_builtin = _module_names(builtin or [])
    have_initrd = _module_names(p for p in (initramfs or []) if ".ko" in p)
    have = have_builtin | have_initrd
    if builtin is None and initramfs is None:
        return CheckResult(name, Result.WARN,
                           f"could not read modules.builtin or the initramfs of kernel {kernel or '?'}; make sure "
                           "virtio_blk and virtio_pci are in the initramfs or the copy may not boot on a cloud VM")
    disk_ok = any(m in have for m in VIRTIO_DISK)
    bus_ok = all(m in have for m in VIRTIO_BUS)
    if disk_ok and bus_ok:
        where = "built into the kernel" if any(m in have_builtin for m in VIRTIO_DISK) else "in the initramfs"
        net = "" if "virtio_net" in have else " (virtio_net is not: networking may need it after boot)"
        return CheckResult(name, Result.PASS, f"virtio disk drivers {where}{net}")
    missing = [m for m in (*VIRTIO_BUS, "virtio_blk") if m not in have]
    return CheckResult(name, Result.FAIL,
                       f"{', '.join(missing)} not built in and not in the initramfs: the copy will not find its "
                       "disk on a virtio (cloud) VM. Debian/Ubuntu: add them to /etc/initramfs-tools/modules and "
                       "run update-initramfs -u; RHEL: dracut -f --add-drivers 'virtio_blk virtio_pci'")


def evaluate_selinux(enforce: str | None, config: str | None) -> CheckResult:
    """enforce: contents of /sys/fs/selinux/enforce (None: SELinux off); config: /etc/selinux/config."""
    name = "selinux"
    mode = None
    for line in (config or "").splitlines():
        if line.strip().startswith("SELINUX="):
            mode = line.split("=", 1)[1].strip().lower()
    if enforce is None:
        return CheckResult(name, Result.PASS, "SELinux is disabled" + (f" (config says {mode})" if mode else ""))
    if enforce.strip() == "1":
        return CheckResult(name, Result.WARN,
                           "SELinux is enforcing: a block-level copy keeps the labels, but if the target relabels "
                           "(/.autorelabel) the first boot is slow; set SELINUX=permissive in /etc/selinux/config "
                           "before cutover if services fail on the target")
    return CheckResult(name, Result.PASS, "SELinux is permissive")


def evaluate_clock_skew(skew: float | None, max_skew: float) -> CheckResult:
    """skew: console time minus ours, seconds (None: no heartbeat answered yet)."""
    name = "clock_skew"
    if skew is None:
        return CheckResult(name, Result.WARN, "no answer from the console yet, clock not compared; "
                                              "check console.endpoint and the network")
    if abs(skew) > 86400:
        return CheckResult(name, Result.FAIL,
                           f"this server's clock is {abs(skew) / 3600:.0f} hours {'behind' if skew > 0 else 'ahead of'}"
                           " the console: TLS certificates and scheduled starts cannot be trusted. Set the time and "
                           "enable NTP (timedatectl set-ntp true)")
    if abs(skew) > max_skew:
        return CheckResult(name, Result.WARN,
                           f"this server's clock is {abs(skew):.0f} s {'behind' if skew > 0 else 'ahead of'} the "
                           f"console (heartbeat.max_clock_skew is {max_skew:.0f}); requests are re-signed with the "
                           "console's time, but fix the clock: timedatectl set-ntp true, or chronyc makestep")
    return CheckResult(name, Result.PASS, f"clock within {abs(skew):.1f} s of the console")


def disks_from_lsblk(data: dict[str, Any]) -> list[Disk]:
    """Whole disks from ``lsblk --json --bytes -o NAME,PATH,SIZE,TYPE,MOUNTPOINTS,RO`` output."""
    def mounts_of(node: dict[str, Any]) -> list[str]:
        out = [m for m in (node.get("mountpoints") or [node.get("mountpoint")]) if m]
        for child in node.get("children") or []:
            out += mounts_of(child)
        return out

    disks = []
    for dev in data.get("blockdevices") or []:
        if dev.get("type") != "disk":
            continue
        mounts = tuple(m for m in mounts_of(dev) if m != "[SWAP]")
        disks.append(Disk(path=dev.get("path") or f"/dev/{dev['name']}", size=int(dev.get("size") or 0),
                          mounts=mounts, read_only=bool(dev.get("ro"))))
    return disks


def migratable_disks(disks: Sequence[Disk]) -> list[Disk]:
    """The default disk mapping: the system disk and every disk with a mounted filesystem."""
    return [d for d in disks if d.mounts and d.size > 0]


def evaluate_disks(disks: Sequence[Disk] | None) -> CheckResult:
    name = "disks"
    if disks is None:
        return CheckResult(name, Result.FAIL, "could not list block devices (lsblk failed); is util-linux installed?")
    chosen = migratable_disks(disks)
    if not any(d.is_system for d in chosen):
        return CheckResult(name, Result.FAIL,
                           "no disk holds the root filesystem (/): the system disk was not found; if / is on "
                           "LVM, RAID or a network filesystem, map the disks in the task by hand")
    parts = [f"{d.path} {format_bytes(d.size)}" + (" (system)" if d.is_system else f" ({', '.join(d.mounts)})")
             for d in chosen]
    return CheckResult(name, Result.PASS, f"{len(chosen)} disk(s) to migrate: " + "; ".join(parts))


def evaluate_target_capacity(pairs: Sequence[tuple[str, int, str, int | None]]) -> CheckResult:
    """pairs: (source path, source size, target path, target size or None when missing)."""
    name = "target_capacity"
    problems = []
    for src, src_size, dst, dst_size in pairs:
        if dst_size is None:
            problems.append(f"{dst} does not exist on the target (for {src})")
        elif dst_size < src_size:
            problems.append(f"{dst} is {format_bytes(dst_size)}, smaller than {src} ({format_bytes(src_size)}); "
                            f"grow it by {format_bytes(src_size - dst_size)}")
    if problems:
        return CheckResult(name, Result.FAIL, "; ".join(problems))
    if not pairs:
        return CheckResult(name, Result.PASS, "the targets are image files (created and grown as needed)")
    return CheckResult(name, Result.PASS, f"{len(pairs)} target disk(s) large enough")


# ---------------------------------------------------------------- reading the machine


class SystemProbe:
    """Reads what the checks need. ``root`` lets tests point it at a fake tree."""

    def __init__(self, root: str = "/") -> None:
        self.root = Path(root)

    def _read(self, path: str) -> str | None:
        try:
            return (self.root / path.lstrip("/")).read_text(errors="replace")
        except OSError:
            return None

    def kernel(self) -> str:
        return os.uname().release

    def modules_builtin(self, kernel: str) -> list[str] | None:
        text = self._read(f"/lib/modules/{kernel}/modules.builtin") or self._read(
            f"/usr/lib/modules/{kernel}/modules.builtin")
        return text.splitlines() if text is not None else None

    def initramfs_listing(self, kernel: str) -> list[str] | None:
        candidates = [f"/boot/initrd.img-{kernel}", f"/boot/initramfs-{kernel}.img"]
        for image in candidates:
            full = self.root / image.lstrip("/")
            if not full.exists():
                continue
            for tool in ("lsinitramfs", "lsinitrd"):
                exe = shutil.which(tool)
                if exe is None:
                    continue
                try:
                    out = subprocess.run([exe, str(full)], capture_output=True, text=True, timeout=120)
                except (OSError, subprocess.TimeoutExpired):
                    continue
                if out.returncode == 0:
                    return out.stdout.splitlines()
        return None

    def selinux(self) -> tuple[str | None, str | None]:
        return self._read("/sys/fs/selinux/enforce"), self._read("/etc/selinux/config")

    def disks(self) -> list[Disk] | None:
        exe = shutil.which("lsblk")
        if exe is None:
            return None
        try:
            out = subprocess.run([exe, "--json", "--bytes", "-o", "NAME,PATH,SIZE,TYPE,MOUNTPOINTS,RO"],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                return None
            return disks_from_lsblk(json.loads(out.stdout))
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return None


@dataclass
class TargetInfo:
    """What the target said: its disks' sizes (None = missing) and the receiver's version."""

    disk_sizes: dict[str, int | None] = field(default_factory=dict)  # block devices (None: missing)
    files: set[str] = field(default_factory=set)  # image files (created or grown as needed)
    receiver_version: str | None = None
    receiver_error: str | None = None


class TargetProbe(Protocol):
    """Connects to the task's target (pinned host key) and reports what it finds.

    Raises MigratedError (ConnectionFailed / AuthError) when the target cannot be reached."""

    async def probe(self, target_paths: Sequence[str]) -> TargetInfo: ...


@dataclass(frozen=True)
class TargetPlan:
    """The disks of a task: (source path, source size, target path)."""

    disks: tuple[tuple[str, int, str], ...]


async def run_checks(
    cfg: Config,
    probe: SystemProbe | None = None,
    *,
    clock_skew: float | None = None,
    target: TargetProbe | None = None,
    plan: TargetPlan | None = None,
    ignore: Sequence[str] | str = (),
) -> list[CheckResult]:
    """Run every check not ignored (by the config or by ``ignore``: names or "all"); never raises."""
    from migrated.errors import MigratedError

    probe = probe or SystemProbe()

    def ignored(name: str) -> bool:
        return cfg.check_ignored(name) or ignore == "all" or name in ignore

    results: dict[str, CheckResult] = {}

    def local() -> None:
        kernel = probe.kernel()
        if not ignored("virtio_drivers"):
            results["virtio_drivers"] = evaluate_virtio(probe.modules_builtin(kernel),
                                                        probe.initramfs_listing(kernel), kernel)
        if not ignored("selinux"):
            results["selinux"] = evaluate_selinux(*probe.selinux())
        if not ignored("disks"):
            results["disks"] = evaluate_disks(probe.disks())

    await asyncio.to_thread(local)
    if not ignored("clock_skew"):
        results["clock_skew"] = evaluate_clock_skew(clock_skew, cfg.heartbeat.max_clock_skew)
    target_names = ("target_ssh", "target_capacity", "target_receiver")
    if target is None or plan is None:
        for n in target_names:
            if not ignored(n):
                results[n] = CheckResult(n, Result.SKIP, "no task target yet; checked when a task starts")
    elif not all(ignored(n) for n in target_names):
        try:
            info = await target.probe([dst for _s, _z, dst in plan.disks])
        except MigratedError as e:
            results["target_ssh"] = CheckResult("target_ssh", Result.FAIL, str(e))
            for n in target_names[1:]:
                if not ignored(n):
                    results[n] = CheckResult(n, Result.SKIP, "target not reachable")
        else:
            results["target_ssh"] = CheckResult("target_ssh", Result.PASS, "target reachable, host key matches")
            results["target_capacity"] = evaluate_target_capacity(
                [(s, z, d, info.disk_sizes.get(d)) for s, z, d in plan.disks if d not in info.files])
            if info.receiver_version:
                results["target_receiver"] = CheckResult("target_receiver", Result.PASS,
                                                         f"migrated-recv {info.receiver_version} runs on the target")
            else:
                results["target_receiver"] = CheckResult(
                    "target_receiver", Result.FAIL,
                    f"migrated-recv does not run on the target: {info.receiver_error or 'unknown error'}; "
                    "the target needs python3 (3.8+)")
    out = []
    for n in CHECK_NAMES:
        if n in results and not ignored(n):
            out.append(results[n])
        elif ignored(n):
            out.append(CheckResult(n, Result.SKIP, "ignored by ignore_checks"))
    return out


def any_failed(results: Iterable[CheckResult]) -> bool:
    return any(r.result is Result.FAIL for r in results)


def results_to_dict(results: Iterable[CheckResult]) -> dict[str, Any]:
    return {"checks": [r.to_dict() for r in results]}

