"""Write tracking on the source disk, so the cutover's final pass reads only what changed.

A round re-reads the whole disk; doing that while the filesystems are frozen would make the
downtime proportional to the disk size (about 10 s for 2 GiB at 200 MB/s). Instead, while the
rounds run, the kernel tells us every write to the disk: the ``block:block_bio_queue`` trace
event, in a private tracefs instance, filtered on the disk's device number. The final pass then
reads only the ranges written since the last round started (``SyncOptions.only_ranges``);
every other block still holds what that round read and sent.

Contracts:

* :meth:`WriteTracker.reset` is called right before a round starts reading; :meth:`dirty`
  returns the merged byte ranges written since (a superset: events queued before the reset
  but read after it are kept), or **None when the record cannot be trusted** (events lost to a
  full trace buffer, the reader failed, tracing unavailable, or :meth:`invalidate` was called
  because the round did not read the whole disk — a resumed round): the caller then reads
  everything.
* Call :meth:`drain` after the freeze and before :meth:`dirty`: FIFREEZE returns after the
  filesystem's writes were submitted, so their events are in the buffer; draining reads them all.
* Everything lives in tracefs (memory): nothing is written to any disk. ``close()`` removes the
  instance; an instance left by a killed agent is removed by the next ``start()``. Needs root and
  tracefs (mounted at /sys/kernel/tracing when it is not, and left mounted).
* Writes are bios of any kind that change data: W (write), D (discard), E (secure erase),
  write-zeroes. A source that is a partition is tracked on its whole disk (partition bios are
  remapped before they are queued) and the ranges are shifted by the partition start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import subprocess
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

TRACEFS = "/sys/kernel/tracing"
EVENT = "events/block/block_bio_queue"
_LINE = re.compile(rb"block_bio_queue: (\d+),(\d+) (\S+) (\d+) \+ (\d+)")
MAX_RANGES = 20000  # past this, ranges are coarsened to 1 MiB (still a superset)


class TrackerUnavailable(Exception):
    """Write tracking cannot run here (not root, no tracefs, not a block device)."""


def _tracefs_root() -> tuple[Path, bool]:
    """(path of a mounted tracefs, whether we mounted it)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            parts = line.split()
            if "-" in parts and parts[parts.index("-") + 1] == "tracefs":
                return Path(parts[4]), False
    root = Path(TRACEFS)
    if not root.is_dir():
        raise TrackerUnavailable("no tracefs directory at /sys/kernel/tracing")
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(root)], capture_output=True, text=True)
    if r.returncode != 0:
        raise TrackerUnavailable(f"cannot mount tracefs: {r.stderr.strip()}")
    return root, True


def _whole_disk(device: str) -> tuple[int, int, int]:
    """(major, minor, byte offset) of the disk whose bios carry ``device``'s writes."""
    try:
        st = os.stat(device)
    except OSError as e:
        raise TrackerUnavailable(f"{device}: {e.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise TrackerUnavailable(f"{device} is not a block device (an image file's writes are not traced)")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    node = Path(os.path.realpath(f"/sys/dev/block/{major}:{minor}"))
    if (node / "partition").exists():
        start = int((node / "start").read_text()) * 512
        parent = (node.parent / "dev").read_text().strip().split(":")
        return int(parent[0]), int(parent[1]), start
    return major, minor, 0


class WriteTracker:
    def __init__(self, device: str, buffer_kb: int = 8192) -> None:
        if os.geteuid() != 0:
            raise TrackerUnavailable("write tracking needs root")
        self.device = device
        self.major, self.minor, self.offset = _whole_disk(device)
        self.buffer_kb = buffer_kb
        self.root: Path | None = None
        self._mounted = False
        self.inst: Path | None = None
        self._fd = -1
        self._partial = b""
        self._ranges: list[tuple[int, int]] = []
        self._broken: str | None = None
        self._lost_base = 0
        self.events = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> WriteTracker:
        self.root, self._mounted = _tracefs_root()
        _remove_stale_instances(self.root)
        inst = self.root / "instances" / f"migrated-{os.getpid()}-{self.major}-{self.minor}"
        try:
            inst.mkdir()
        except FileExistsError:
            pass
        except OSError as e:
            raise TrackerUnavailable(f"cannot create a tracefs instance: {e.strerror}") from None
        self.inst = inst
        try:
            (inst / "buffer_size_kb").write_text(str(self.buffer_kb))
            dev_t = (self.major << 20) | self.minor  # the kernel's internal dev_t, as the event records it
            (inst / EVENT / "filter").write_text(f"dev == {dev_t}")
            (inst / EVENT / "enable").write_text("1")
            self._fd = os.open(inst / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            self.close()
            raise TrackerUnavailable(f"cannot enable block_bio_queue tracing: {e.strerror}") from None
        return self

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.inst is not None:
            with contextlib.suppress(OSError):
                (self.inst / EVENT / "enable").write_text("0")
            with contextlib.suppress(OSError):
                self.inst.rmdir()
            self.inst = None
        # tracefs stays mounted (as systemd's sys-kernel-tracing.mount leaves it): another agent's
        # tracker may be using it, and unmounting under it would strand its instance

    def __enter__(self) -> WriteTracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the record --------------------------------------------------------------------------
    def poll(self) -> int:
        """Read every event available now (non-blocking); returns how many were read."""
        if self._fd < 0 or self._broken:
            return 0
        n = 0
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    break
                self._broken = f"reading trace_pipe failed: {e.strerror}"
                break
            if not chunk:
                break
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                m = _LINE.search(line)
                if not m or int(m[1]) != self.major or int(m[2]) != self.minor:
                    continue
                rwbs, sector, count = m[3], int(m[4]), int(m[5])
                if count == 0 or not any(c in rwbs for c in (b"W", b"D", b"E")):
                    continue
                start = sector * 512 - self.offset
                self._ranges.append((max(0, start), start + count * 512))
                n += 1
        self.events += n
        if len(self._ranges) > 4 * MAX_RANGES:
            self._ranges = _merge(self._ranges)
        return n

    def _lost(self) -> int:
        """Events the kernel dropped or overwrote in our instance (sum over CPUs)."""
        assert self.inst is not None
        lost = 0
        for stats in (self.inst / "per_cpu").glob("cpu*/stats"):
            with contextlib.suppress(OSError, ValueError):
                for line in stats.read_text().splitlines():
                    key, _, val = line.partition(":")
                    if key.strip() in ("overrun", "dropped events"):
                        lost += int(val.strip())
        return lost

    def reset(self) -> None:
        """Start a new record (right before a round starts reading the *whole* disk)."""
        self.poll()
        self._ranges = []
        self._partial = b""
        if self._broken and not self._broken.startswith("reading trace_pipe"):
            self._broken = None  # a new record: what was lost or skipped before no longer matters
        if self.inst is not None:
            self._lost_base = self._lost()

    def invalidate(self, reason: str) -> None:
        """The current record cannot vouch for the disk (e.g. the round resumed mid-disk, so blocks
        before its start were read before the reset): dirty() returns None until the next reset."""
        self._broken = reason

    def drain(self) -> None:
        self.poll()

    def dirty(self) -> list[tuple[int, int]] | None:
        """Merged [start, end) byte ranges written since reset(), or None if the record is not complete."""
        self.poll()
        if self._fd < 0:
            return None
        if self._broken:
            log.warning("write_tracker_broken", device=self.device, reason=self._broken)
            return None
        if self._lost() > self._lost_base:
            log.warning("write_tracker_lost_events", device=self.device)
            self._broken = "trace buffer overrun"
            return None
        merged = _merge(self._ranges)
        if len(merged) > MAX_RANGES:
            merged = _merge([(s // (1 << 20) << 20, -(-e // (1 << 20)) << 20) for s, e in merged])
        return merged


def _remove_stale_instances(root: Path) -> None:
    """Instances left by an agent that was killed (kill -9 cannot clean up): remove them, they hold
    kernel memory (the trace buffer) and keep tracing."""
    with contextlib.suppress(OSError):
        for inst in (root / "instances").glob("migrated-*"):
            pid = inst.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    (inst / EVENT / "enable").write_text("0")
                with contextlib.suppress(OSError):
                    inst.rmdir()
                log.info("write_tracker_stale_instance_removed", instance=inst.name)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out
