"""The source disk: opened read-only, always. Size from the device (ioctl) or the file.

Reading does not evict the server's page cache of hot data: :meth:`SourceDisk.read_uncached`
notes which pages of the range were cached before the read (``mincore``), reads, then drops
(posix_fadvise DONTNEED) only the pages the read itself brought in. Pages the server had cached
(for a block device: the filesystem's metadata buffers, for an image: hot parts of it) stay;
a migration does not leave the page cache full of the disk either. Regular files are read
hole-aware (SEEK_DATA/SEEK_HOLE), so a 200 GiB sparse image costs what its data costs.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import stat
import struct
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


@dataclass
class SourceDisk:
    path: str
    fd: int
    size: int
    identity: str  # "blk:<major>:<minor>" or "file:<dev>:<ino>"
    is_device: bool

    def read(self, offset: int, length: int) -> bytes:
        """Read exactly ``length`` bytes at ``offset`` (short only past the end: SourceError)."""
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as e:
            raise SourceError(f"cannot read {self.path} at offset {offset}: {e.strerror}") from None
        if len(data) != length:
            raise SourceError(f"{self.path} shrank while reading: short read at offset {offset}")
        return data

    def read_uncached(self, offset: int, length: int) -> bytes:
        """:meth:`read`, then drop from the page cache what this read brought in, and only that
        (pages cached before it stay: module doc)."""
        before = resident_pages(self.fd, offset, length)
        data = self.read(offset, length)
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
    return SourceDisk(path=path, fd=fd, size=size, identity=identity, is_device=is_device)
