"""Real ext4 filesystems on loop devices for the freeze/cutover tests (root only).

Every helper cleans up in ``finally``: thaw, umount, ``losetup -d``, even when
the test fails. A leaked frozen filesystem would hang the machine for everyone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import sys
import threading
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


# ---------------------------------------------------- a busy filesystem and what it held at the freeze

WRITER = r"""
import os, random, sys, time
root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
os.makedirs(os.path.join(root, "data"), exist_ok=True)
n = 0
while True:
    name = os.path.join(root, "data", f"f{rng.randrange(40):02d}")
    op = rng.random()
    if op < 0.15:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    elif op < 0.3:
        with open(name, "ab") as f:
            f.write(rng.randbytes(rng.randrange(1, 8192)))
    else:  # create or rewrite: write a temp file, rename over (what careful programs do)
        tmp = name + ".tmp"
        with open(tmp, "wb") as f:
            f.write(rng.randbytes(rng.randrange(1, 256 * 1024)))
            if op > 0.9:
                f.flush(); os.fsync(f.fileno())
        os.replace(tmp, name)
    n += 1
    time.sleep(0.002)
"""


@contextlib.contextmanager
def writer_process(root: Path, seed: int = 7) -> Iterator[subprocess.Popen[bytes]]:
    """A process creating, appending to, rewriting (temp + rename) and deleting files under
    ``root/data`` until the block ends (then killed)."""
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(seed)])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def tree_digest(root: Path, skip: tuple[str, ...] = ("lost+found",)) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root`` (directories in ``skip`` left out)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for f in filenames:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def frozen_wait(pid: int) -> bool:
    """True while process ``pid`` waits on a frozen filesystem's freeze lock (sb_start_write ->
    percpu_rwsem_wait: writers wait there only while the superblock is frozen)."""
    return wchan(pid) == "percpu_rwsem_wait"


class FrozenRecorder(threading.Thread):
    """Watches the writer; when it is blocked on the filesystem's freeze lock, records the
    files of the source (reads work while frozen), then checks the writer is still blocked,
    so the record is the state at the freeze. ``skip``: top-level directories left out of the
    record (lost+found; a state dir that is written only after the thaw)."""

    def __init__(self, writer_pid: int, root: Path, skip: tuple[str, ...] = ("lost+found",)) -> None:
        super().__init__(daemon=True)
        self.pid, self.root, self.skip = writer_pid, root, skip
        self.record: dict[str, str] | None = None
        self.freezes_seen = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if frozen_wait(self.pid):
                snap = tree_digest(self.root, self.skip)
                if frozen_wait(self.pid):
                    self.freezes_seen += 1
                    self.record = snap
                    while frozen_wait(self.pid) and not self.done.is_set():
                        self.done.wait(0.001)
            self.done.wait(0.001)


def guardian_of(daemon_pid: int) -> int | None:
    """The pid of the freeze guardian the daemon started (a child of the daemon), if any."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"migrated.source.guardian" in cmd and ppid == daemon_pid:
            return int(p.name)
    return None


def fsck_clean(image: Path) -> subprocess.CompletedProcess[str]:
    return run("e2fsck", "-fn", str(image), check=False)


@contextlib.contextmanager
def mounted_ro(image: Path, at: Path) -> Iterator[Path]:
    """``image`` mounted read-only (no journal replay: the image is never written) at ``at``."""
    at.mkdir()
    run("mount", "-o", "ro,loop,noload", str(image), str(at))
    try:
        yield at
    finally:
        run("umount", str(at), check=False)


@pytest.fixture
def tracefs_cleanup() -> Iterator[None]:
    """An agent killed with -9 leaves its tracefs instance (the next agent removes it): remove it here."""
    yield
    from migrated.source.tracker import TRACEFS, _remove_stale_instances

    _remove_stale_instances(Path(TRACEFS))
