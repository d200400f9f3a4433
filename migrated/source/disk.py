"""The source disk: opened read-only, always. Size from the device (ioctl) or the file.

Block devices are read with O_DIRECT (a second, read-only descriptor; page-aligned buffers): the
block device's page cache is *not coherent* with a filesystem mounted on it. The filesystem
writes file data and journal blocks around that cache, and a cached page that also holds
metadata the filesystem pins (e.g. ext4's journal superblock next to file data on a 1 KiB-block
filesystem) cannot be dropped, so a buffered read can return blocks as they were long ago
(tests/test_continuous_lvm.py caught exactly that). O_DIRECT reads what is on the disk. When a
device refuses O_DIRECT the read falls back to buffered. Regular files (images) are read
buffered: their page cache is the one their writers use.

Reading does not evict the server's page cache of hot data: after each chunk the engine calls
``drop_cache`` (posix_fadvise DONTNEED) for the range it read. Regular files are read
hole-aware (SEEK_DATA/SEEK_HOLE), so a 200 GiB sparse image costs what its data costs.

:func:`open_source_via` reads the blocks of another device that is a point-in-time copy of the
source (an LVM snapshot, ``--quiesce lvm``) while the disk keeps the source's path, identity and
size: the engine's checkpoint is keyed on those, so the snapshot's pass continues the origin's
rounds. Both are opened read-only.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
from dataclasses import dataclass

from migrated.errors import SourceError

BLKGETSIZE64 = 0x80081272
_buffers = threading.local()  # one page-aligned buffer per reading thread (O_DIRECT needs aligned memory)


def _aligned_buffer(length: int) -> mmap.mmap:
    buf: mmap.mmap | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < length:
        if buf is not None:
            buf.close()
        buf = _buffers.buf = mmap.mmap(-1, max(length, 1 << 20))
    return buf


@dataclass
class SourceDisk:
    path: str
    fd: int
    size: int
    identity: str  # "blk:<major>:<minor>" or "file:<dev>:<ino>"
    is_device: bool
    read_path: str | None = None  # the blocks come from this copy of ``path`` (open_source_via)
    direct_fd: int = -1  # O_DIRECT descriptor of a block device (-1: read buffered through ``fd``)

    @property
    def where(self) -> str:
        """The path the blocks are read from, for messages."""
        return self.path if self.read_path is None else f"{self.read_path} (snapshot of {self.path})"

    def read(self, offset: int, length: int) -> bytes:
        """Read exactly ``length`` bytes at ``offset`` (short only past the end: SourceError).
        Block devices: O_DIRECT (module doc); ``offset`` and ``length`` are multiples of the
        engine's block size or end at the end of the device, which O_DIRECT accepts."""
        if self.direct_fd >= 0:
            data = self._read_direct(offset, length)
            if data is not None:
                return data
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as e:
            raise SourceError(f"cannot read {self.where} at offset {offset}: {e.strerror}") from None
        if len(data) != length:
            raise SourceError(f"{self.where} shrank while reading: short read at offset {offset}")
        return data

    def _read_direct(self, offset: int, length: int) -> bytes | None:
        """None if the device refused this O_DIRECT read (alignment): read it buffered."""
        buf = _aligned_buffer(length)
        view = memoryview(buf)
        got = 0
        try:
            while got < length:
                n = os.preadv(self.direct_fd, [view[got:length]], offset + got)
                if n == 0:
                    break
                got += n
        except OSError as e:
            if e.errno == errno.EINVAL:  # not aligned for this device
                return None
            raise SourceError(f"cannot read {self.where} at offset {offset + got}: {e.strerror}") from None
        finally:
            view.release()
        if got != length:
            raise SourceError(f"{self.where} shrank while reading: short read at offset {offset + got}")
        return buf[:length]

    def drop_cache(self, offset: int, length: int) -> None:
        try:
            os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass

    def data_ranges(self, offset: int, end: int) -> list[tuple[int, int]]:
        """Ranges in [offset, end) that may hold data; the rest are holes (zeros).

        Devices (and filesystems without SEEK_DATA) report the whole range as data.
        """
        if self.is_device:
            return [(offset, end)]
        out: list[tuple[int, int]] = []
        pos = offset
        try:
            while pos < end:
                try:
                    start = os.lseek(self.fd, pos, os.SEEK_DATA)
                except OSError:  # ENXIO: only a hole until EOF
                    break
                if start >= end:
                    break
                stop = min(os.lseek(self.fd, start, os.SEEK_HOLE), end)
                out.append((start, stop))
                pos = stop
        except OSError:
            return [(offset, end)]
        return out

    def next_data(self, offset: int) -> int:
        """The first offset >= ``offset`` that may hold data (``size`` if only a hole follows)."""
        if self.is_device:
            return offset
        try:
            return min(self.size, os.lseek(self.fd, offset, os.SEEK_DATA))
        except OSError:
            return self.size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1


def open_source(path: str) -> SourceDisk:
    """Open ``path`` read-only (O_RDONLY, never anything else) and find its size and identity."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError(f"source {path} does not exist") from None
    except OSError as e:
        raise SourceError(f"cannot open source {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISBLK(st.st_mode):
            buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
            size = struct.unpack("Q", buf)[0]
            identity = f"blk:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            is_device = True
        elif stat.S_ISREG(st.st_mode):
            size = st.st_size
            identity = f"file:{st.st_dev}:{st.st_ino}"
            is_device = False
        else:
            raise SourceError(f"source {path} is neither a block device nor a regular file")
    except BaseException:
        os.close(fd)
        raise
    direct_fd = -1
    if is_device:
        try:
            direct_fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            direct_fd = -1  # no O_DIRECT here: buffered reads (and drop_block_cache) it is
    return SourceDisk(path=path, fd=fd, size=size, identity=identity, is_device=is_device, direct_fd=direct_fd)


def open_source_via(path: str, read_path: str) -> SourceDisk:
    """The source ``path`` (identity, size: what the checkpoint is keyed on) whose blocks are read
    from ``read_path``, a point-in-time copy of it (an LVM snapshot). Both are opened read-only;
    ``path`` is closed again at once (only its identity and size are taken). SourceError if the
    copy's size differs from the source's (it is not a copy of it)."""
    origin = open_source(path)
    origin.close()
    copy = open_source(read_path)
    if copy.size != origin.size:
        copy.close()
        raise SourceError(f"{read_path} has {copy.size} bytes but its origin {path} has {origin.size}: "
                          "it is not a snapshot of it")
    return SourceDisk(path=origin.path, fd=copy.fd, size=origin.size, identity=origin.identity,
                      is_device=copy.is_device, read_path=read_path, direct_fd=copy.direct_fd)
