"""Filesystem freeze for the cutover: FIFREEZE / FITHAW, finding the mounted
filesystems of a disk, and a guarded freeze that is always thawed.

Contracts:

* :func:`freeze_fs` / :func:`thaw_fs` issue the ioctls on an ``O_RDONLY`` fd of
  the mount directory (what ``fsfreeze(8)`` does). Freezing syncs the
  filesystem and then blocks every writer until the thaw; reads keep working.
* :func:`mounted_filesystems` lists the filesystems mounted from a disk: the
  disk itself, its partitions, devices stacked on it (dm/LVM holders), and for
  an image file the loop devices backed by it. One entry per filesystem (bind
  mounts are folded), outermost mount first.
* :class:`GuardedFreeze` never does the ioctls in this process: it starts the
  guardian (``python3 -m migrated.source.guardian``) *before* anything is
  frozen, and the guardian freezes, holds the deadline and thaws. The guardian
  thaws when told, when the budget passes, when our end of its pipe closes
  (this process died, even by ``kill -9``), or on SIGTERM/SIGINT/SIGHUP.
  Leaving the block with or without an exception thaws. If the budget passed,
  :meth:`GuardedFreeze.thaw` raises :class:`FreezeBudgetExceeded`: whatever
  was read while frozen may be inconsistent and must not be trusted.
* Nothing here writes a file. While frozen, the caller must not write to the
  frozen filesystems either (state dir, logs, temp files): see
  :class:`HeldWrites` and docs/consistency.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrated.errors import QuiesceError, SourceError
from migrated.source.guardian import freeze_failure_reason

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878

MOUNTINFO = "/proc/self/mountinfo"
SYS_BLOCK = "/sys/class/block"


class FreezeError(QuiesceError):
    """A filesystem could not be frozen (unsupported, already frozen, no permission)."""


class FreezeBudgetExceeded(FreezeError):
    """The freeze lasted past its time budget; the guardian thawed the source.

    What was read while frozen may be inconsistent: the final pass must be
    repeated (or the cutover retried), never trusted.
    """


# ---------------------------------------------------------------- the ioctls


def _ioctl_on_dir(mountpoint: str, request: int) -> None:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, 0)
    finally:
        os.close(fd)


def freeze_fs(mountpoint: str) -> None:
    """FIFREEZE ``mountpoint``. Raises FreezeError naming the mount and the reason."""
    try:
        _ioctl_on_dir(mountpoint, FIFREEZE)
    except OSError as e:
        raise FreezeError(f"cannot freeze {mountpoint}: {freeze_failure_reason(e.errno or 0)}") from None


def thaw_fs(mountpoint: str) -> bool:
    """FITHAW ``mountpoint``. True if it was frozen and is now thawed, False if it was not frozen."""
    try:
        _ioctl_on_dir(mountpoint, FITHAW)
    except OSError as e:
        if e.errno == errno.EINVAL:
            return False
        raise FreezeError(f"cannot thaw {mountpoint}: {e.strerror}") from None
    return True


def drop_block_cache(device: str) -> None:
    """Drop the clean cached pages of a block device.

    A filesystem writes file data straight to the device, around the device's
    own page cache, so a buffered read of the device can return blocks cached
    by an earlier round. Call this before each pass over a live disk.
    No-op for regular files (their page cache is the one the loop device uses).
    """
    try:
        st = os.stat(device)
    except OSError:
        return
    if not stat.S_ISBLK(st.st_mode):
        return
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # DONTNEED drops clean cached pages only; it never writes (BLKFLSBUF would write back first)
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ------------------------------------------------ which filesystems to freeze


@dataclass(frozen=True)
class MountedFs:
    mountpoint: str
    device: str  # major:minor of the mounted device
    fstype: str
    source: str  # the mount source as mountinfo shows it (/dev/loop3p1)


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountedFs]:
    """Parse /proc/self/mountinfo text (see proc(5)) into mounts, in file order."""
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10 or "-" not in parts:
            continue
        sep = parts.index("-")
        mounts.append(MountedFs(mountpoint=_unescape(parts[4]), device=parts[2], fstype=parts[sep + 1],
                                source=_unescape(parts[sep + 2])))
    return mounts


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def related_devices(disk: str, sysblock: str = SYS_BLOCK) -> set[str]:
    """major:minor of ``disk`` and of everything a filesystem on it could be mounted from:
    its partitions, its holders (device-mapper, LVM, md) recursively, and, when ``disk``
    is a regular file, the loop devices backed by it (and their partitions/holders)."""
    try:
        st = os.stat(disk)
    except OSError as e:
        raise SourceError(f"cannot open source {disk}: {e.strerror}") from None
    roots: list[str] = []
    sys_dir = Path(sysblock)
    if stat.S_ISBLK(st.st_mode):
        devnum = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        roots.extend(n.name for n in sys_dir.iterdir() if _read(n / "dev") == devnum)
    elif stat.S_ISREG(st.st_mode):
        real = os.path.realpath(disk)
        for loop in sys_dir.glob("loop*"):
            backing = _read(loop / "loop" / "backing_file")
            if backing and os.path.realpath(backing.removesuffix(" (deleted)")) == real:
                roots.append(loop.name)
    seen: set[str] = set()
    found: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = sys_dir / name
        dev = _read(node / "dev")
        if dev:
            found.add(dev)
        # partitions are subdirectories that carry a "partition" file
        with contextlib.suppress(OSError):
            for child in node.iterdir():
                if (child / "partition").exists():
                    todo.append(child.name)
        with contextlib.suppress(OSError):
            todo.extend(h.name for h in (node / "holders").iterdir())
    return found


def mounted_filesystems(disk: str, mountinfo_text: str | None = None, sysblock: str = SYS_BLOCK) -> list[MountedFs]:
    """The filesystems mounted from ``disk`` (see module doc), one per device, shortest mountpoint first
    (so an outer mount is frozen before one nested in it, and thawed after)."""
    devs = related_devices(disk, sysblock)
    if mountinfo_text is None:
        mountinfo_text = Path(MOUNTINFO).read_text()
    by_dev: dict[str, MountedFs] = {}
    for m in parse_mountinfo(mountinfo_text):
        if m.device in devs:
            prev = by_dev.get(m.device)
            if prev is None or len(m.mountpoint) < len(prev.mountpoint):
                by_dev[m.device] = m
    return sorted(by_dev.values(), key=lambda m: (m.mountpoint.count("/"), m.mountpoint))


def path_on_filesystems(path: str | os.PathLike[str], mounts: Iterable[MountedFs]) -> bool:
    """True if ``path`` (existing, or its nearest existing parent) lives on one of ``mounts``."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        dev = os.stat(p).st_dev
    except OSError:
        return False
    devnum = f"{os.major(dev)}:{os.minor(dev)}"
    return any(m.device == devnum for m in mounts)


# -------------------------------------------------------- the guarded freeze


@dataclass
class FreezeReport:
    """What the guardian did. Times are CLOCK_MONOTONIC seconds (system-wide, so comparable
    between the guardian and us)."""

    mountpoints: list[str]
    frozen_at: float | None = None  # first FIFREEZE issued
    thawed_at: float | None = None  # last FITHAW returned
    reason: str = ""  # told | budget | parent-gone | signal | error
    errors: list[str] = field(default_factory=list)

    @property
    def downtime(self) -> float:
        """Seconds writers were blocked on the source (the cutover's downtime)."""
        if self.frozen_at is None or self.thawed_at is None:
            return 0.0
        return max(0.0, self.thawed_at - self.frozen_at)


def default_record() -> str | None:
    """Where the guardian records what it froze (module doc of migrated.source.guardian): the
    service's runtime directory (systemd sets $RUNTIME_DIRECTORY, tmpfs), else nowhere."""
    d = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return os.path.join(d, "frozen.json") if d else None


def thaw_recorded(path: str) -> dict[str, Any] | None:
    """Thaw what a guardian recorded in ``path`` and remove the record; None if there is none.
    Returns {"mountpoints": [...], "was_frozen": {mountpoint: bool}, "guardian_pid": N,
    "guardian_alive": bool}. FreezeError (the record kept) if a mountpoint could not be thawed."""
    try:
        with open(path) as f:
            rec = json.load(f)
        mounts = [str(m) for m in rec["mountpoints"]]
        pid = int(rec.get("guardian_pid") or 0)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FreezeError(f"freeze record {path} is unreadable ({e}); thaw by hand: migrated thaw DISK") from None
    alive = pid > 0 and _is_guardian(pid)
    was: dict[str, bool] = {}
    errors: list[str] = []
    for m in reversed(mounts):  # inner mounts first
        try:
            was[m] = thaw_fs(m)
        except FreezeError as e:
            was[m] = False
            errors.append(str(e))
    if errors:  # the record stays for another try
        raise FreezeError("; ".join(errors))
    with contextlib.suppress(OSError):
        os.unlink(path)
    return {"mountpoints": mounts, "was_frozen": was, "guardian_pid": pid, "guardian_alive": alive}



def _is_guardian(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"migrated.source.guardian" in f.read()
    except OSError:
        return False


class GuardedFreeze:
    """Freeze ``mountpoints`` for at most ``budget`` seconds, via a guardian process.

    ::

        with GuardedFreeze(["/srv", "/var/lib"], budget=10.0) as fz:
            ...               # final pass: read, send, flush; write nothing to /srv or /var/lib
            fz.check()        # raises FreezeBudgetExceeded if the guardian already thawed
        report = fz.report    # downtime, reason

    ``__exit__`` thaws and, when the budget passed, raises FreezeBudgetExceeded (unless another
    exception is already on its way out). ``mountpoints`` are frozen in the order given and thawed
    in reverse: pass outer mounts first (as :func:`mounted_filesystems` returns them).
    """

    def __init__(self, mountpoints: list[str], budget: float, *, python: str = sys.executable,
                 record: str | None = None) -> None:
        if budget <= 0:
            raise ValueError("freeze budget must be positive")
        self.record = record if record is not None else default_record()
        self.mountpoints = list(mountpoints)
        self.budget = budget
        self.python = python
        self.report = FreezeReport(mountpoints=self.mountpoints)
        self._proc: subprocess.Popen[bytes] | None = None
        self._done = False

    # the guardian speaks one JSON object per line on its stdout
    def _read_msg(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise FreezeError("the freeze guardian exited unexpectedly")
        return json.loads(line)

    def _send(self, cmd: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self._proc.stdin.write(cmd.encode() + b"\n")
            self._proc.stdin.flush()

    def freeze(self) -> FreezeReport:
        env = dict(os.environ)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # it must never write, least of all on a frozen fs
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        args = [self.python, "-m", "migrated.source.guardian", "--budget", str(self.budget)]
        for m in self.mountpoints:
            args += ["--mount", m]
        if self.record:
            args += ["--record", self.record]
        # own session: a Ctrl-C on our terminal does not reach it; cwd "/" holds no mount busy.
        # stderr inherited: the guardian writes there only after everything is thawed.
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/",
                                      env=env, start_new_session=True, close_fds=True)
        ready = self._read_msg()
        if ready.get("event") != "ready":
            self._kill()
            raise FreezeError(f"freeze guardian failed to start: {ready}")
        self._send("freeze")
        msg = self._read_msg()
        if msg.get("event") != "frozen":
            # it thawed whatever it had frozen before answering
            self._absorb(msg)
            self._wait()
            raise FreezeError("; ".join(self.report.errors) or f"freeze failed: {msg}")
        self.report.frozen_at = msg["frozen_at"]
        return self.report

    def _absorb(self, msg: dict[str, Any]) -> None:
        self.report.frozen_at = msg.get("frozen_at", self.report.frozen_at)
        self.report.thawed_at = msg.get("thawed_at", self.report.thawed_at)
        self.report.reason = msg.get("reason", self.report.reason)
        self.report.errors.extend(msg.get("errors", []))

    def remaining(self) -> float:
        """Seconds left in the budget (negative once past)."""
        if self.report.frozen_at is None:
            return self.budget
        return self.report.frozen_at + self.budget - time.monotonic()

    def check(self) -> None:
        """Raise FreezeBudgetExceeded if the budget has passed (the guardian thaws on its own),
        FreezeError if the guardian is gone (then we thaw ourselves)."""
        if self._proc is not None and self._proc.poll() is not None and not self._done:
            self.thaw()
            raise FreezeError("the freeze guardian died during the freeze; the source was thawed")
        if self.remaining() <= 0:
            raise FreezeBudgetExceeded(
                f"freeze of {', '.join(self.mountpoints)} passed its budget of {self.budget:g} s; "
                "the source was thawed and the final pass must be repeated")

    def thaw(self) -> FreezeReport:
        """Tell the guardian to thaw, wait for it, return the report. Raise FreezeBudgetExceeded if the
        guardian had already thawed on the budget, FreezeError if a thaw failed. Safe to call again:
        it raises the same way each time."""
        if not self._done:
            self._done = True
            self._thaw_now()
        if self.report.reason == "budget":
            raise FreezeBudgetExceeded(
                f"freeze of {', '.join(self.mountpoints)} passed its budget of {self.budget:g} s "
                f"(frozen {self.report.downtime:.2f} s); the guardian thawed it; "
                "the final pass must be repeated")
        if self.report.errors:
            raise FreezeError("; ".join(self.report.errors))
        return self.report

    def _thaw_now(self) -> None:
        self._send("thaw")
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._absorb(self._read_msg())
        except (FreezeError, ValueError):
            # the guardian died (killed -9?): thaw from here; EINVAL (not frozen) is fine
            for m in reversed(self.mountpoints):
                try:
                    thaw_fs(m)
                except FreezeError as e:
                    self.report.errors.append(str(e))
            self.report.thawed_at = time.monotonic()
            self.report.reason = self.report.reason or "guardian-gone"
        self._wait()

    def _wait(self) -> None:
        assert self._proc is not None
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._kill()
        for f in (self._proc.stdin, self._proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    @property
    def guardian_pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> GuardedFreeze:
        self.freeze()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.thaw()
        else:
            with contextlib.suppress(FreezeError):
                self.thaw()


# ----------------------------------------------------- writes held while frozen


class HeldWrites:
    """Writes that must wait until the source is thawed.

    While ``held`` is true, :meth:`write` keeps the newest content per path in memory
    instead of touching the disk (the state dir may be on a frozen filesystem: a write
    there would block this process until the thaw, and the thaw could then only come
    from the guardian's deadline). :meth:`release` performs them in order, atomically
    and durably (``store.atomic_write``).
    """

    def __init__(self) -> None:
        self.held = False
        self._pending: dict[str, tuple[bytes, int]] = {}

    def hold(self) -> None:
        self.held = True

    def write(self, path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
        from migrated.store import atomic_write

        if self.held:
            self._pending.pop(os.fspath(path), None)
            self._pending[os.fspath(path)] = (data, mode)
        else:
            atomic_write(path, data, mode=mode)

    @property
    def pending(self) -> list[str]:
        return list(self._pending)

    def release(self) -> None:
        from migrated.store import atomic_write

        self.held = False
        while self._pending:
            path = next(iter(self._pending))
            data, mode = self._pending.pop(path)
            atomic_write(path, data, mode=mode)


class StagedDir:
    """A state directory that lives in memory while its filesystem is frozen.

    ``stage()`` copies the files of ``real`` whose names match ``names`` (all files when
    ``names`` is None) into a fresh directory on a filesystem that is *not* being frozen
    (tmpfs: $XDG_RUNTIME_DIR, /run, /dev/shm), and returns its path: point the final pass at it.
    Its name carries our pid; ``stage()`` first removes the staging dirs of processes that are
    gone (:meth:`sweep`: an agent killed during a freeze cannot clean up).
    ``unstage()``, after the thaw, writes every file that changed back into ``real``
    atomically and durably, and removes the staging directory. ``discard()`` removes it
    without writing back (the final pass failed: the real checkpoint stays as it was, which
    is always safe: it claims less than the target holds).
    """

    CANDIDATES = ("XDG_RUNTIME_DIR", "/run", "/dev/shm")

    def __init__(self, real: str | os.PathLike[str], frozen: list[MountedFs], names: Iterable[str] | None = None):
        self.real = Path(real)
        self.frozen = frozen
        self.names = set(names) if names is not None else None
        self.path: Path | None = None
        self._orig: dict[str, bytes] = {}

    def _base(self) -> Path:
        import tempfile

        for c in self.CANDIDATES:
            d = os.environ.get(c, "") if not c.startswith("/") else c
            if d and os.path.isdir(d) and os.access(d, os.W_OK) and not path_on_filesystems(d, self.frozen):
                return Path(d)
        d = tempfile.gettempdir()
        if path_on_filesystems(d, self.frozen):
            raise FreezeError("no writable directory outside the filesystems to freeze for the state during the "
                              "final pass (tried $XDG_RUNTIME_DIR, /run, /dev/shm, $TMPDIR)")
        return Path(d)

    PREFIX = "migrated-final-"

    @classmethod
    def sweep(cls, base: Path) -> list[Path]:
        """Remove staging dirs in ``base`` left by a process that is gone (an agent killed with -9
        during a freeze leaves one: a copy of the hash file, in RAM); returns what was removed.
        A dir whose process (``migrated-final-PID-...``) still runs is left alone."""
        import shutil

        removed = []
        for d in base.glob(cls.PREFIX + "*-*"):
            pid = d.name[len(cls.PREFIX):].split("-", 1)[0]
            if not pid.isdigit() or not d.is_dir() or d.is_symlink():
                continue
            try:
                os.kill(int(pid), 0)
                continue  # alive (or another process got its pid: leave it)
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        return removed

    def stage(self) -> Path:
        import shutil
        import tempfile

        base = self._base()
        self.sweep(base)
        self.path = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-", dir=base))
        if self.real.is_dir():
            for f in self.real.iterdir():
                if f.is_file() and (self.names is None or f.name in self.names):
                    shutil.copy2(f, self.path / f.name)
                    self._orig[f.name] = f.read_bytes()
        return self.path

    def unstage(self) -> list[str]:
        """Write changed files back (atomic, durable); returns their names. Checkpoint files
        (``*.ckpt``) go last: a checkpoint must never be newer than the hash file it vouches for."""
        from migrated.store import atomic_write

        assert self.path is not None
        written = []
        for f in sorted(self.path.iterdir(), key=lambda f: (f.suffix == ".ckpt", f.name)):
            if f.is_file() and not f.name.startswith("."):
                data = f.read_bytes()
                if self._orig.get(f.name) != data:
                    atomic_write(self.real / f.name, data)
                    written.append(f.name)
        self.discard()
        return written

    def discard(self) -> None:
        import shutil

        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
