"""The source disk: opened read-only, always. Size from the device (ioctl) or the file.

Block devices are read with O_DIRECT (a second, read-only descriptor; page-aligned buffers): the
block device's page cache is *not coherent* with a filesystem mounted on it. The filesystem
writes file data and journal blocks around that cache, and a cached page that also holds
metadata the filesystem pins (e.g. ext4's journal superblock next to file data on a 1 KiB-block
filesystem) cannot be dropped, so a buffered read can return blocks as they were long ago
(tests/test_continuous_lvm.py caught exactly that; tests/test_source_direct.py shows it). O_DIRECT
reads what is on the disk (the kernel first writes back the filesystem's own dirty buffers of
that range, which it would write anyway; nothing of ours is written) and leaves the page cache
alone. When a device refuses O_DIRECT the read falls back to the buffered path below. Regular
files (images) are read buffered: their page cache is the one their writers use.

Buffered reads do not evict the server's page cache of hot data: :meth:`SourceDisk.read_uncached`
notes which pages of the range were cached before the read (``mincore``), reads, then drops
(posix_fadvise DONTNEED) only the pages the read itself brought in. Pages the server had cached
(for a block device: the filesystem's metadata buffers, for an image: hot parts of it) stay;
a migration does not leave the page cache full of the disk either. Regular files are read
hole-aware (SEEK_DATA/SEEK_HOLE), so a 200 GiB sparse image costs what its data costs.

:func:`open_source_via` reads the blocks of another device that is a point-in-time copy of the
source (an LVM snapshot, ``--quiesce lvm``) while the disk keeps the source's path, identity and
size: the engine's checkpoint is keyed on those, so the snapshot's pass continues the origin's
rounds. Both are opened read-only.
"""

from __future__ import annotations

import contextlib
import ctypes
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
PAGE = mmap.PAGESIZE


class _Mincore:
    """``mincore(2)`` through ctypes (the standard library has no binding): which pages of a file
    range are in the page cache. Maps the range read-only and shared, asks, unmaps; nothing is read."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.mmap = libc.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        self.munmap = libc.munmap
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.mincore = libc.mincore
        self.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]

    def resident(self, fd: int, offset: int, length: int) -> bytes | None:
        """One byte per page of [offset, offset+length) (``offset`` page-aligned), bit 0 set when
        the page is cached; None when the kernel cannot tell (then the caller keeps everything)."""
        if length <= 0 or offset % PAGE:
            return None
        addr = self.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            vec = (ctypes.c_ubyte * ((length + PAGE - 1) // PAGE))()
            if self.mincore(addr, length, vec) != 0:
                return None
            return bytes(vec)
        finally:
            self.munmap(addr, length)


try:
    _MINCORE: _Mincore | None = _Mincore()
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _MINCORE = None


def resident_pages(fd: int, offset: int, length: int) -> bytes | None:
    """See :meth:`_Mincore.resident`."""
    return _MINCORE.resident(fd, offset, length) if _MINCORE is not None else None


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
            direct = self._read_direct(offset, length)
            if direct is not None:
                return direct
        return self._read_buffered(offset, length)

    def _read_buffered(self, offset: int, length: int) -> bytes:
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

    def read_uncached(self, offset: int, length: int) -> bytes:
        """:meth:`read`, then drop from the page cache what this read brought in, and only that
        (pages cached before it stay: module doc). An O_DIRECT read brings nothing in."""
        if self.direct_fd >= 0:
            direct = self._read_direct(offset, length)
            if direct is not None:
                return direct
        before = resident_pages(self.fd, offset, length)
        data = self._read_buffered(offset, length)  # (a refused O_DIRECT read is not tried twice)
        if before is not None:
            self.drop_cache(offset, length, keep=before)
        return data

    def drop_cache(self, offset: int, length: int, keep: bytes | None = None) -> None:
        """posix_fadvise DONTNEED over [offset, offset+length), except the pages flagged in ``keep``
        (one byte per page from ``offset``, as :func:`resident_pages` returns). ``keep=None``:
        nothing is known to be kept, so nothing is dropped (never evict what may be hot)."""
        if keep is None:
            return
        runs: list[tuple[int, int]] = []  # [first page, end page) not to keep
        start = None
        for i, b in enumerate(keep):
            if not b & 1:
                if start is None:
                    start = i
            elif start is not None:
                runs.append((start, i))
                start = None
        if start is not None:
            runs.append((start, len(keep)))
        end = offset + length
        try:
            for a, b in runs:
                lo = offset + a * PAGE
                os.posix_fadvise(self.fd, lo, min(end, offset + b * PAGE) - lo, os.POSIX_FADV_DONTNEED)
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
    # No kernel readahead on our descriptor (only this open file, not the server's): each read
    # brings in exactly the chunk asked for, so read_uncached knows which pages it brought in.
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    direct_fd = -1
    if is_device:
        try:
            direct_fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            direct_fd = -1  # no O_DIRECT here: buffered reads it is
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
