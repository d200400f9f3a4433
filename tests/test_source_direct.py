"""Block devices are read with O_DIRECT because their page cache is not coherent with a mounted
filesystem (migrated/source/disk.py, module doc).

The scenario that bit us (found by tests/test_continuous_lvm.py's re-read verification): a
1 KiB-block ext4 on a loop device; the device was read once through its page cache; then a file
is written and synced. ext4 writes file data around the block device's cache, and the cached
page holding the file's first block also holds the journal superblock, which jbd2 pins, so
DONTNEED cannot drop it: a buffered read returns the block as it was before the write. The
oracle is the loop device's backing file (the loop driver writes through it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrated.source.disk import open_source
from tests.loopfs import loop_ext4, root_only

MiB = 1024 * 1024


def stale_offsets(a: bytes, b: bytes, block: int = 4096) -> list[int]:
    return [i for i in range(0, len(a), block) if a[i:i + block] != b[i:i + block]]


@pytest.mark.root
@root_only
def test_reads_of_a_mounted_device_see_what_the_filesystem_wrote(tmp_path: Path) -> None:
    with loop_ext4(tmp_path, size_mb=48) as fs:
        size = 48 * MiB
        fd = os.open(fs.loopdev, os.O_RDONLY)
        try:
            os.pread(fd, size, 0)  # someone (an earlier buffered reader, blkid...) cached the device
            with open(fs.mountpoint / "big", "wb") as f:
                f.write(os.urandom(6 * MiB))
                f.flush()
                os.fsync(f.fileno())
            os.sync()
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # what the old code did: drop what can be dropped
            buffered = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        truth = fs.image.read_bytes()
        disk = open_source(fs.loopdev)
        try:
            assert disk.direct_fd >= 0
            ours = b"".join(disk.read_uncached(off, 4 * MiB) for off in range(0, size, 4 * MiB))
            again = disk.read(0, size)
        finally:
            disk.close()
        # What the source reader returns is the disk's content, whether or not this kernel left the
        # buffered read stale this time (it did on the kernel where the LVM test found it).
        stale = stale_offsets(buffered, truth)
        assert stale_offsets(ours, truth) == [], f"buffered read was stale at {len(stale)} blocks"
        assert stale_offsets(again, truth) == []
