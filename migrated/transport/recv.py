"""migrated-recv: the receiver the agent runs on the target host over SSH.

ONE file, Python standard library only: when ``migrated-recv`` is not installed on
the target, the agent uploads this file over SFTP and runs it with ``python3``.
``xxhash`` and ``zstandard`` are used when importable; otherwise blake2b and zlib.

It is also the one source of truth for the wire framing (``docs/protocol.md``):
the agent imports the constants, ``pack_frame``/``parse_*`` helpers and the
mount check from here, so both ends cannot drift apart.

Contract of the receiver:
  * it speaks only after a valid HELLO, and writes only inside the opened target;
  * every frame is length-checked against ``MAX_PAYLOAD`` before it is read;
  * FLUSHED is sent only after ``fsync`` of the target returned;
  * answers leave in the order of the requests (the agent matches them first in, first out);
  * a mounted block device is never opened for writing (O_EXCL + mountinfo);
  * on any error it sends one ERROR frame and exits non-zero.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import struct
import sys
import threading
import time
import zlib

try:  # optional fast paths, used when present on both ends
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - depends on the target host
    _xxhash = None
try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover
    _zstd = None

PROTOCOL_VERSION = 1
MAGIC = "migrated"
# = migrated.__version__ (tests/test_recv_receiver.py keeps them equal): this file stands alone, it
# cannot import the package it ships with
__version__ = "0.1.0"

# --- framing -------------------------------------------------------------------------------
HEADER = struct.Struct(">BI")  # type, payload length
MAX_PAYLOAD = 16 * 1024 * 1024 + 64  # hard cap: any larger frame is a protocol error
MAX_HASH_SPAN = 256 * 1024 * 1024  # one HASH request covers at most this many bytes
MIN_BLOCK, MAX_BLOCK = 4096, 4 * 1024 * 1024

T_HELLO, T_HELLO_OK = 0x01, 0x02
T_OPEN, T_OPENED = 0x03, 0x04
T_SETGEN, T_GENSET = 0x05, 0x06
T_WRITE, T_ZERO = 0x10, 0x11
T_HASH, T_HASHES = 0x12, 0x13
T_SUBHASH, T_SUBHASHES = 0x14, 0x15
T_FLUSH, T_FLUSHED = 0x20, 0x21
T_BYE, T_BYE_OK = 0x30, 0x31
T_ERROR = 0x7F

WRITE_HDR = struct.Struct(">QIB")  # offset, raw length, codec id
RANGE = struct.Struct(">QQ")  # offset, length (ZERO, HASH, HASHES header)
SEQ = struct.Struct(">Q")  # FLUSH / FLUSHED
SUBRANGE = struct.Struct(">QQI")  # offset, length, sub-block size (SUBHASH, SUBHASHES header)
MAX_SUBHASH_SPAN = 4 * 1024 * 1024
MIN_SUB = 512
FEATURES = ["subhash"]  # optional requests this receiver answers (same protocol version)

HASH_LEN = 16


# --- codecs: the one table (docs/engine.md "Where to add a codec") ----------------------------
class Codec:
    """One codec of WRITE frames. ``wire_id`` is its byte in WRITE_HDR (never reuse one);
    ``auto``: ``--compress auto`` may pick it (in table order) when both ends have it;
    ``compress(raw) -> bytes`` (the agent, from several threads); ``decompress(body, raw_len) ->
    bytes-like`` (the receiver, which refuses output longer than ``raw_len``). ``available``: this
    process can do both (an optional module imported)."""

    __slots__ = ("auto", "available", "compress", "decompress", "name", "wire_id")

    def __init__(self, name: str, wire_id: int, auto: bool, available: bool, compress, decompress) -> None:
        self.name = name
        self.wire_id = wire_id
        self.auto = auto
        self.available = available
        self.compress = compress
        self.decompress = decompress


_codec_tls = threading.local()  # zstd (de)compressors are not thread-safe: one per thread


def _zstd_compress(raw) -> bytes:
    c = getattr(_codec_tls, "zstd_c", None)
    if c is None:
        c = _codec_tls.zstd_c = _zstd.ZstdCompressor(level=1)
    return c.compress(raw)


def _zstd_decompress(body, raw_len: int):
    d = getattr(_codec_tls, "zstd_d", None)
    if d is None:
        d = _codec_tls.zstd_d = _zstd.ZstdDecompressor()
    return d.decompress(body, max_output_size=raw_len)


def _zlib_decompress(body, raw_len: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(body, raw_len + 1)  # one byte over the claim is enough to see a lie
    return out + d.flush() if len(out) <= raw_len and not d.unconsumed_tail else out


# In order of preference: available_codecs() offers them in this order.
CODECS = (
    Codec("zstd", 2, True, _zstd is not None, _zstd_compress, _zstd_decompress),
    Codec("zlib", 1, False, True, lambda raw: zlib.compress(raw, 1), _zlib_decompress),
    Codec("none", 0, False, True, bytes, lambda body, raw_len: body),  # payload is the raw bytes
)
CODEC_BY_NAME = {c.name: c for c in CODECS}
CODEC_BY_ID = {c.wire_id: c for c in CODECS}


def codec_names() -> list[str]:
    """Every codec of the table, available here or not (what ``--compress`` may name besides auto)."""
    return [c.name for c in CODECS]


def compress_choices() -> list[str]:
    """What ``--compress`` (``SyncOptions.compress``) accepts: ``auto`` and every codec of the table."""
    return ["auto", *codec_names()]


def auto_codecs() -> list[str]:
    """The codecs ``--compress auto`` may pick, best first."""
    return [c.name for c in CODECS if c.auto]


def available_hashes() -> list[str]:
    """Hash names this process can compute, best first."""
    return (["xxh3-128"] if _xxhash is not None else []) + ["blake2b-128"]


def available_codecs() -> list[str]:
    """Codec names this process can use, best first."""
    return [c.name for c in CODECS if c.available]


def hasher(name: str):
    """Return ``f(bytes-like) -> 16-byte digest`` for a negotiated hash name."""
    if name == "xxh3-128" and _xxhash is not None:
        return _xxhash.xxh3_128_digest
    if name == "blake2b-128":
        return lambda b: hashlib.blake2b(b, digest_size=16).digest()
    raise ValueError(f"unknown hash {name!r}")


def pack_frame(ftype: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload {len(payload)} exceeds cap {MAX_PAYLOAD}")
    return HEADER.pack(ftype, len(payload)) + payload


def pack_json(ftype: int, obj: dict) -> bytes:
    return pack_frame(ftype, json.dumps(obj, separators=(",", ":")).encode())


def parse_header(hdr: bytes) -> tuple[int, int]:
    """Return (type, length); raise ValueError when the length is over the cap."""
    ftype, length = HEADER.unpack(hdr)
    if length > MAX_PAYLOAD:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD}-byte cap")
    return ftype, length


def parse_json(payload: bytes) -> dict:
    obj = json.loads(payload.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("JSON payload is not an object")
    return obj


def block_count(length: int, block_size: int) -> int:
    return (length + block_size - 1) // block_size


# --- mount detection (used by the agent for its own checks too) -----------------------------
def _mounted_devnums(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    nums = set()
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 3:
                    nums.add(parts[2])  # "major:minor"
    except OSError:
        pass
    try:
        with open("/proc/swaps", encoding="utf-8", errors="replace") as f:
            for line in f.readlines()[1:]:
                dev = line.split()[0] if line.split() else ""
                if dev.startswith("/dev/"):
                    try:
                        st = os.stat(dev)
                        nums.add(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
                    except OSError:
                        pass
    except OSError:
        pass
    return nums


def device_in_use(rdev: int, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Why block device ``rdev`` is in use (mounted, a partition mounted, held by dm/md, swap), or None."""
    maj, mnr = os.major(rdev), os.minor(rdev)
    me = f"{maj}:{mnr}"
    mounted = _mounted_devnums(mountinfo)
    if me in mounted:
        return "it is mounted"
    sysdir = f"/sys/dev/block/{me}"
    try:
        for entry in os.listdir(sysdir):
            devfile = os.path.join(sysdir, entry, "dev")
            if os.path.exists(os.path.join(sysdir, entry, "partition")) and os.path.exists(devfile):
                with open(devfile) as f:
                    if f.read().strip() in mounted:
                        return f"its partition {entry} is mounted"
        holders = os.listdir(os.path.join(sysdir, "holders"))
        if holders:
            return f"it is held by {', '.join(sorted(holders))}"
    except OSError:
        pass
    return None


# --- the receiver ---------------------------------------------------------------------------
class Fail(Exception):
    """Ends the session with an ERROR frame; ``kind`` is "target" or "protocol"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "migrated-recv")


def _atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably: a temp file in the same directory,
    mode 0600 from birth, fsync, rename over ``path``, fsync the directory.

    A copy of ``migrated.store.atomic_write`` on purpose: this file must run alone on the target
    (uploaded, standard library only), so it cannot import the package. Keep the two in step."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range of a regular file (reads as zeros afterwards). False if unsupported."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fallocate = libc.fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
        return fallocate(fd, 0x01 | 0x02, offset, length) == 0
    except Exception:
        return False


class _Replies:
    """The receiver's output: one thread writes every answer, in the order they were queued.

    A FLUSH is queued as a job that runs ``fsync`` and then answers FLUSHED, so the main loop
    goes on reading and writing the next frames while the disk flushes (an fsync that blocked the
    main loop would stall the whole pipe for its duration). Answers queued after it (HASHES, ...)
    wait behind it: the agent sees them in request order. An fsync that fails sends one ERROR frame
    and drops everything queued after it; the main loop sees ``failed`` and stops.
    """

    def __init__(self, wfile) -> None:
        self.wfile = wfile
        self.jobs: list = []
        self.cond = threading.Condition()
        self.failed = False
        self.idle = True
        self.thread = threading.Thread(target=self._run, name="recv-replies", daemon=True)
        self.thread.start()

    def put(self, frame: bytes | None = None, fsync_fd: int = -1) -> None:
        with self.cond:
            self.jobs.append((frame, fsync_fd))
            self.cond.notify_all()

    def wait(self) -> None:
        """Return once every queued answer is written (or dropped after a failure)."""
        with self.cond:
            while self.jobs or not self.idle:
                self.cond.wait()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.jobs:
                    self.idle = True
                    self.cond.notify_all()
                    self.cond.wait()
                frame, fd = self.jobs.pop(0)
                self.idle = False
                if self.failed:
                    continue
            try:
                if fd >= 0:
                    try:
                        os.fsync(fd)
                    except OSError as e:
                        self.failed = True
                        frame = pack_json(T_ERROR, {"kind": "target", "message": f"fsync failed: {e.strerror}"})
                if frame is not None:
                    self.wfile.write(frame)
                    self.wfile.flush()
            except (OSError, ValueError):
                self.failed = True  # the agent went away; nobody to answer


class Receiver:
    def __init__(self, rfile, wfile) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self.replies = _Replies(wfile)
        self.fd = -1
        self.size = 0
        self.is_device = False
        self.block_size = 0
        self.hash = None

    # I/O helpers
    def read_exact(self, n: int) -> bytes:
        buf = self.rfile.read(n)
        if buf is None or len(buf) != n:
            raise EOFError
        return buf

    def send(self, frame: bytes, fsync: bool = False) -> None:
        """Queue an answer (written by the reply thread, in order); ``fsync``: only after fsync of
        the target returned."""
        self.replies.put(frame, fsync_fd=self.fd if fsync else -1)

    def fail(self, frame: bytes) -> None:
        """Send an ERROR frame after the answers already queued, and wait until it is out."""
        self.replies.put(frame)
        self.replies.wait()

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.replies.wait()  # queued answers (and fsyncs) go out before the process exits

    def _run(self) -> int:
        hello = False
        while True:
            if self.replies.failed:
                return 2  # an fsync failed (the reply thread sent ERROR) or the agent went away
            try:
                hdr = self.rfile.read(HEADER.size)
            except OSError:
                return 1
            if not hdr:
                return 0 if self.fd < 0 else 1  # agent went away; the target keeps what was fsynced
            if len(hdr) != HEADER.size:
                return 1
            try:
                ftype, length = parse_header(hdr)
            except ValueError as e:
                raise Fail("protocol", str(e)) from None
            try:
                payload = self.read_exact(length)
            except EOFError:
                return 1
            if not hello and ftype != T_HELLO:
                raise Fail("protocol", f"expected HELLO, got frame type {ftype:#x}")
            if ftype == T_HELLO:
                self.on_hello(payload)
                hello = True
            elif ftype == T_OPEN:
                self.on_open(payload)
            elif self.fd < 0 and ftype != T_BYE:
                raise Fail("protocol", f"frame type {ftype:#x} before OPEN")
            elif ftype == T_SETGEN:
                self.on_setgen(payload)
            elif ftype == T_WRITE:
                self.on_write(payload)
            elif ftype == T_ZERO:
                self.on_zero(payload)
            elif ftype == T_HASH:
                self.on_hash(payload)
            elif ftype == T_SUBHASH:
                self.on_subhash(payload)
            elif ftype == T_FLUSH:
                if len(payload) != SEQ.size:
                    raise Fail("protocol", "bad FLUSH length")
                self.send(pack_frame(T_FLUSHED, payload), fsync=True)
            elif ftype == T_BYE:
                self.replies.wait()
                if self.replies.failed:
                    return 2
                if self.fd >= 0:
                    os.fsync(self.fd)
                    os.close(self.fd)
                    self.fd = -1
                self.send(pack_frame(T_BYE_OK))
                return 0
            else:
                raise Fail("protocol", f"unknown frame type {ftype:#x}")

    def on_hello(self, payload: bytes) -> None:
        try:
            req = parse_json(payload)
        except ValueError as e:
            raise Fail("protocol", f"bad HELLO: {e}") from None
        if req.get("magic") != MAGIC:
            raise Fail("protocol", "bad HELLO magic")
        versions = req.get("versions") or []
        if PROTOCOL_VERSION not in versions:
            raise Fail("protocol", f"no common protocol version (agent {versions}, receiver {PROTOCOL_VERSION})")
        self.send(pack_json(T_HELLO_OK, {
            "magic": MAGIC, "version": PROTOCOL_VERSION, "hashes": available_hashes(),
            "codecs": available_codecs(), "max_payload": MAX_PAYLOAD, "pid": os.getpid(), "features": FEATURES,
        }))

    def on_open(self, payload: bytes) -> None:
        if self.fd >= 0:
            raise Fail("protocol", "OPEN twice")
        try:
            req = parse_json(payload)
            path = str(req["path"])
            size = int(req["size"])
            create = bool(req.get("create", True))
            block_size = int(req["block_size"])
            hash_name = str(req["hash"])
            codec = str(req["codec"])
        except (ValueError, KeyError, TypeError) as e:
            raise Fail("protocol", f"bad OPEN: {e}") from None
        if not (MIN_BLOCK <= block_size <= MAX_BLOCK) or block_size & (block_size - 1):
            raise Fail("protocol", f"block size {block_size} not a power of two in [{MIN_BLOCK}, {MAX_BLOCK}]")
        if size < 0:
            raise Fail("protocol", "negative size")
        try:
            self.hash = hasher(hash_name)
        except ValueError:
            raise Fail("protocol", f"hash {hash_name!r} not available here") from None
        if codec not in available_codecs():
            raise Fail("protocol", f"codec {codec!r} not available here")
        self.block_size = block_size
        created = False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not create:
                raise Fail("target", f"{path} does not exist") from None
            try:
                self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                os.ftruncate(self.fd, size)  # sparse: holes read as zeros
                os.fsync(self.fd)
                dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(dfd)
                os.close(dfd)
            except OSError as e:
                raise Fail("target", f"cannot create {path}: {e.strerror}") from None
            created = True
            st = os.fstat(self.fd)
        except OSError as e:
            raise Fail("target", f"cannot stat {path}: {e.strerror}") from None
        if not created:
            if stat.S_ISBLK(st.st_mode):
                why = device_in_use(st.st_rdev)
                if why:
                    raise Fail("target", f"refusing to write {path}: {why}")
                flags = os.O_RDWR | os.O_EXCL | os.O_CLOEXEC  # O_EXCL on a block device: EBUSY if mounted
            elif stat.S_ISREG(st.st_mode):
                flags = os.O_RDWR | os.O_CLOEXEC
            else:
                raise Fail("target", f"{path} is neither a block device nor a regular file")
            self.fd = self._open_exclusive(path, flags, stat.S_ISBLK(st.st_mode))
        else:
            self._lock_or_wait(path)
        self.is_device = stat.S_ISBLK(st.st_mode)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        # The generation marker: which checkpoint lineage last wrote this target (see SETGEN).
        ident = {"dev": st.st_dev, "ino": st.st_ino, "rdev": st.st_rdev}
        self.ident = ident
        self.path = path
        self.marker = os.path.join(_state_dir(), hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:32])
        previous = None
        try:
            with open(self.marker, "rb") as f:
                m = json.loads(f.read().decode())
            if all(m.get(k) == v for k, v in ident.items()) and not created:
                previous = m.get("generation")
        except (OSError, ValueError):
            pass
        self.send(pack_json(T_OPENED, dict(
            ident, size=self.size, created=created, device=self.is_device, previous_generation=previous,
        )))

    def _open_exclusive(self, path: str, flags: int, is_blk: bool) -> int:
        """Open the target for us alone. A receiver of a killed agent may still be draining its
        input for a moment: wait for it (``MIGRATED_RECV_LOCK_WAIT`` seconds, default 30)."""
        deadline = time.monotonic() + float(os.environ.get("MIGRATED_RECV_LOCK_WAIT", "30"))
        while True:
            try:
                fd = os.open(path, flags)
            except OSError as e:
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                if e.errno == errno.EBUSY:
                    raise Fail("target", f"refusing to write {path}: device is busy (mounted or in use)") from None
                raise Fail("target", f"cannot open {path}: {e.strerror}") from None
            if is_blk:
                return fd
            self.fd = fd
            self._lock_or_wait(path, deadline)
            return fd

    def _lock_or_wait(self, path: str, deadline: float | None = None) -> None:
        """flock the open target file exclusively (another migrated-recv holds it: wait, then fail)."""
        import fcntl

        if deadline is None:
            deadline = time.monotonic() + float(os.environ.get("MIGRATED_RECV_LOCK_WAIT", "30"))
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = -1
                    raise Fail("target", f"{path} is in use by another migrated-recv (another sync to the "
                                         "same target is running)") from None
                time.sleep(0.2)

    def on_setgen(self, payload: bytes) -> None:
        """Durably record which checkpoint lineage writes this target from now on."""
        try:
            generation = str(parse_json(payload)["generation"])
        except (ValueError, KeyError, TypeError) as e:
            raise Fail("protocol", f"bad SETGEN: {e}") from None
        self.replies.wait()  # a queued FLUSH runs first
        os.fsync(self.fd)  # what was written under the previous generation is on disk first
        try:
            _atomic_write(self.marker, json.dumps(dict(self.ident, generation=generation, path=self.path)).encode())
        except OSError as e:
            raise Fail("target", f"cannot record generation in {self.marker}: {e.strerror}") from None
        self.send(pack_frame(T_GENSET))

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise Fail("protocol", f"range {offset}+{length} outside the target ({self.size} bytes)")

    def on_write(self, payload: bytes) -> None:
        if len(payload) < WRITE_HDR.size:
            raise Fail("protocol", "short WRITE")
        offset, raw_len, codec = WRITE_HDR.unpack_from(payload)
        self._check_range(offset, raw_len)
        body = memoryview(payload)[WRITE_HDR.size:]
        c = CODEC_BY_ID.get(codec)
        if c is None or not c.available:
            raise Fail("protocol", f"unknown codec id {codec}")
        try:
            data = c.decompress(body, raw_len)
        except Exception as e:
            raise Fail("protocol", f"cannot decompress block at {offset}: {e}") from None
        if len(data) != raw_len:
            raise Fail("protocol", f"block at {offset}: {len(data)} bytes after decompression, expected {raw_len}")
        self._pwrite(data, offset)

    def _pwrite(self, data, offset: int) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as e:
            raise Fail("target", f"write at offset {offset} failed: {e.strerror}") from None

    def on_zero(self, payload: bytes) -> None:
        if len(payload) != RANGE.size:
            raise Fail("protocol", "bad ZERO length")
        offset, length = RANGE.unpack(payload)
        self._check_range(offset, length)
        step = 1 << 20
        end = offset + length
        pos = offset
        while pos < end:
            n = min(step, end - pos)
            cur = os.pread(self.fd, n, pos)
            # Only where the target is not already zero: a hole on files, zeros on devices.
            if cur != bytes(len(cur)) and (self.is_device or not _punch_hole(self.fd, pos, n)):
                self._pwrite(bytes(n), pos)
            pos += n

    def on_subhash(self, payload: bytes) -> None:
        """Hashes of ``sub``-byte pieces of a range: lets the agent send only the changed pieces."""
        if len(payload) != SUBRANGE.size:
            raise Fail("protocol", "bad SUBHASH length")
        offset, length, sub = SUBRANGE.unpack(payload)
        self._check_range(offset, length)
        why = _subhash_check(offset, length, sub, self.block_size)
        if why:
            raise Fail("protocol", why)
        buf = os.pread(self.fd, length, offset)
        if len(buf) != length:
            raise Fail("target", f"short read at {offset}")
        mv = memoryview(buf)
        out = [payload] + [self.hash(mv[i:i + sub]) for i in range(0, length, sub)]
        self.send(pack_frame(T_SUBHASHES, b"".join(out)))

    def _zero_hash(self, length: int) -> bytes:
        cache = self.__dict__.setdefault("_zh", {})
        if length not in cache:
            cache[length] = self.hash(bytes(length))
        return cache[length]

    def _hole_until(self, pos: int) -> int:
        """End of the hole starting at ``pos`` (``pos`` itself when data is there or unknown)."""
        try:
            return os.lseek(self.fd, pos, os.SEEK_DATA)  # no cache: every WRITE may fill a hole
        except OSError as e:
            return self.size if e.errno == errno.ENXIO else pos

    def on_hash(self, payload: bytes) -> None:
        if len(payload) != RANGE.size:
            raise Fail("protocol", "bad HASH length")
        offset, length = RANGE.unpack(payload)
        self._check_range(offset, length)
        if length > MAX_HASH_SPAN or offset % self.block_size:
            raise Fail("protocol", f"HASH range {offset}+{length} not block-aligned or too long")
        out = [RANGE.pack(offset, length)]
        bs = self.block_size
        end = offset + length
        pos = offset
        step = max(bs, (1 << 22) // bs * bs)
        while pos < end:
            n = min(step, end - pos)
            if not self.is_device and self._hole_until(pos) >= pos + n:
                # Holes of a sparse target read as zeros: hash them without reading.
                for i in range(0, n, bs):
                    out.append(self._zero_hash(min(bs, n - i)))
                pos += n
                continue
            buf = os.pread(self.fd, n, pos)
            if len(buf) != n:
                raise Fail("target", f"short read at {pos}")
            mv = memoryview(buf)
            for i in range(0, n, bs):
                out.append(self.hash(mv[i:i + bs]))
            pos += n
        self.send(pack_frame(T_HASHES, b"".join(out)))


def _subhash_check(offset: int, length: int, sub: int, block_size: int) -> str | None:
    if sub < MIN_SUB or sub > block_size or sub & (sub - 1):
        return f"sub-block size {sub} not a power of two in [{MIN_SUB}, {block_size}]"
    if offset % sub or length > MAX_SUBHASH_SPAN:
        return f"SUBHASH range {offset}+{length} not aligned to {sub} or too long"
    return None


USAGE = """usage: migrated-recv [-h] [--version]

The receiver of migrated on the target host. The agent starts it over SSH and
speaks the migrated protocol (docs/protocol.md) with it on stdin/stdout; it is
not meant to be run by hand. It writes only to the target the agent opens.

options:
  -h, --help  show this help and exit
  --version   show the version and the protocol version and exit
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--version", "version"):
        print(f"migrated-recv {__version__} (protocol {PROTOCOL_VERSION})")
        return 0
    if argv and argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if argv:  # never read stdin for a command line we do not understand
        sys.stderr.write(USAGE + f"migrated-recv: unknown argument {argv[0]!r}\n")
        return 2
    try:  # bigger pipes from/to sshd: fewer wake-ups per MiB (Linux F_SETPIPE_SZ)
        import fcntl

        for fd in (0, 1):
            fcntl.fcntl(fd, 1031, 1 << 20)
    except (OSError, ImportError):
        pass
    rfile = open(0, "rb", buffering=1 << 20, closefd=False)  # noqa: SIM115 - lives as long as the process
    wfile = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the agent's channel
    recv = Receiver(rfile, wfile)
    try:
        return recv.run()
    except Fail as e:
        try:
            recv.fail(pack_json(T_ERROR, {"kind": e.kind, "message": e.message}))
        except OSError:
            pass
        return 2
    except BrokenPipeError:
        return 1
    except OSError as e:
        try:
            recv.fail(pack_json(T_ERROR, {"kind": "target", "message": f"I/O error: {e}"}))
        except OSError:
            pass
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
