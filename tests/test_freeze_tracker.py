"""Write tracking through the kernel's block_bio_queue trace event, on a real loop device (root)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from migrated.source.tracker import TrackerUnavailable, WriteTracker, _merge
from tests.loopfs import root_only, run


def test_merge_joins_overlaps_and_neighbours() -> None:
    assert _merge([(10, 20), (0, 5), (5, 8), (15, 30), (40, 41)]) == [(0, 8), (10, 30), (40, 41)]
    assert _merge([]) == []


def test_an_image_file_cannot_be_traced(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    img.write_bytes(b"\0" * 4096)
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(TrackerUnavailable, match="not a block device"):
        WriteTracker(str(img))


def _direct_write(dev: str, offset: int, length: int) -> None:
    buf = mmap.mmap(-1, length)  # page-aligned, as O_DIRECT wants
    buf.write(os.urandom(length))
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        os.pwrite(fd, buf, offset)
    finally:
        os.close(fd)


@pytest.mark.root
@root_only
def test_writes_after_reset_are_reported_and_earlier_ones_are_not(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    dev = run("losetup", "-f", "--show", str(img)).stdout.strip()
    from migrated.source.tracker import _tracefs_root

    root, _ = _tracefs_root()
    stale = root / "instances" / "migrated-999999999-7-0"  # left by an agent killed with -9
    stale.mkdir(exist_ok=True)
    try:
        with WriteTracker(dev) as tr:
            assert not stale.exists()
            _direct_write(dev, 1 << 20, 65536)  # before the reset: the round will read it
            tr.drain()
            tr.reset()
            _direct_write(dev, 4 << 20, 8192)
            _direct_write(dev, (4 << 20) + 8192, 4096)
            _direct_write(dev, 9 << 20, 4096)
            with open(dev, "rb") as f:  # reads are not changes
                f.seek(12 << 20)
                f.read(4096)
            tr.drain()
            assert tr.dirty() == [(4 << 20, (4 << 20) + 12288), (9 << 20, (9 << 20) + 4096)]
            tr.invalidate("the round resumed mid-disk")  # then the record vouches for nothing ...
            assert tr.dirty() is None
            tr.reset()  # ... until the next whole-disk round starts
            _direct_write(dev, 2 << 20, 4096)
            tr.drain()
            assert tr.dirty() == [(2 << 20, (2 << 20) + 4096)]
    finally:
        run("losetup", "-d", dev, check=False)
    # this process's instance is gone (other test workers' trackers may have theirs meanwhile)
    left = os.listdir("/sys/kernel/tracing/instances") if os.path.isdir("/sys/kernel/tracing/instances") else []
    assert [n for n in left if n.startswith(f"migrated-{os.getpid()}-") or n == stale.name] == []
