"""Real ext4 filesystems on loop devices for the freeze/cutover tests (root only).

Every helper cleans up in ``finally``: thaw, umount, ``losetup -d``, even when
the test fails. A leaked frozen filesystem would hang the machine for everyone.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loop devices, mount, FIFREEZE")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=120)


def write_mbr(image: Path, start_sector: int = 2048) -> None:
    """One Linux partition from ``start_sector`` to the end of the image (no sfdisk here)."""
    size = image.stat().st_size // 512
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", start_sector, size - start_sector)
    with open(image, "r+b") as f:
        f.seek(446)
        f.write(entry + b"\0" * 48 + b"\x55\xaa")


@dataclass
class LoopFs:
    image: Path
    loopdev: str  # the whole loop device
    fsdev: str  # the device holding the filesystem (loopdev or its partition)
    mountpoint: Path


def _thaw_quietly(mountpoint: Path) -> None:
    run("fsfreeze", "-u", str(mountpoint), check=False)


@contextlib.contextmanager
def loop_ext4(workdir: Path, size_mb: int = 64, partitioned: bool = False, name: str = "fs") -> Iterator[LoopFs]:
    image = workdir / f"{name}.img"
    mnt = workdir / f"{name}.mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    if partitioned:
        write_mbr(image)
    loopdev = run("losetup", "-f", "--show", *(["-P"] if partitioned else []), str(image)).stdout.strip()
    mounted = False
    try:
        fsdev = loopdev
        if partitioned:
            fsdev = loopdev + "p1"
            for _ in range(100):
                if os.path.exists(fsdev):
                    break
                time.sleep(0.05)
        run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", fsdev)
        run("mount", fsdev, str(mnt))
        mounted = True
        yield LoopFs(image=image, loopdev=loopdev, fsdev=fsdev, mountpoint=mnt)
    finally:
        if mounted:
            _thaw_quietly(mnt)
            if run("umount", str(mnt), check=False).returncode != 0:
                _thaw_quietly(mnt)
                run("umount", "-l", str(mnt), check=False)
        run("losetup", "-d", loopdev, check=False)


def can_write(path: Path, timeout: float = 20.0) -> bool:
    """Write+fsync a file under ``path`` in a child process; False if it did not finish in time
    (the filesystem is frozen). The child is left to finish on its own after a thaw."""
    code = (f"import os; fd=os.open({str(path / 'probe')!r}, os.O_WRONLY|os.O_CREAT|os.O_TRUNC); "
            "os.write(fd, b'x'); os.fsync(fd); os.close(fd)")
    p = subprocess.Popen(["python3", "-c", code])
    try:
        return p.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        return False


def process_state(pid: int) -> str:
    """The one-letter state of a process (R, S, D, Z...), "" if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
