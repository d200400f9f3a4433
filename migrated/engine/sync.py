"""One disk sync: plan -> send -> flush -> checkpoint -> verify.

A run walks the disk in chunks (``chunk_size``, a multiple of ``block_size``). For each chunk,
worker threads read and hash the source (one xxh3-128 per block; holes of sparse files are not
read), the engine resolves what the target holds (hash file of the checkpoint, or "zero" on a
target created sparse, or a HASH request to the receiver), plans SAME/ZERO/DATA runs, and
compresses DATA runs in threads (one zstd compressor per thread). Chunks are prepared
concurrently, at most ``window_chunks`` ahead, and sent strictly in order.

Durability (docs/engine.md): the agent sends FLUSH, the receiver fsyncs and answers, only then
the hash-file entries of the flushed range are written and fsynced and the checkpoint is saved
with ``atomic_write``. No frame is sent for a block at or beyond the durable checkpoint's
``dirty_end``, so after any crash, only blocks in ``[cursor, dirty_end)`` can differ from what
the hash file says, and the next run asks the target about exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from migrated.errors import (
    CheckpointError,
    ConnectionFailed,
    Interrupted,
    ProtocolError,
    TargetError,
    UsageError,
    VerificationFailed,
)
from migrated.model.checkpoint import (
    HASHFILE_HEADER_SIZE,
    UNKNOWN,
    Checkpoint,
    encode_hashfile_header,
    hashfile_header_matches,
    hashfile_trusted,
    trusted_entries,
    zero_entries,
)
from migrated.model.negotiate import choose_codec, choose_hash
from migrated.model.plan import Kind, plan_chunk
from migrated.model.status import DiskProgress
from migrated.model.tokenbucket import TokenBucket
from migrated.source import SourceDisk
from migrated.store import atomic_write
from migrated.transport import recv as wire
from migrated.transport.ssh import RecvChannel

log = structlog.get_logger(__name__)

HASH_LEN = wire.HASH_LEN
SUB_BLOCK = 4096  # changed blocks the target holds data for are patched in pieces of this size
MAX_WRITE = 1024 * 1024  # raw bytes per WRITE frame


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/migrated/checkpoints")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "migrated" / "checkpoints"


def state_file_names(source_path: str, target_label: str, target_path: str) -> tuple[str, str]:
    """(checkpoint, hash file) names in the state dir of the disk ``source_path`` -> ``target_label:target_path``."""
    key = hashlib.sha256(f"{os.path.realpath(source_path)}\0{target_label}\0{target_path}".encode()).hexdigest()
    return f"{key[:24]}.ckpt", f"{key[:24]}.hashes"


@dataclass
class SyncOptions:
    """How to sync one disk. Defaults are the measured sweet spot on a 2-core box."""

    block_size: int = 64 * 1024
    chunk_size: int = 4 * 1024 * 1024
    bwlimit: int | None = None  # bytes/s on the wire; None = unlimited
    checksum: bool = False  # verify every target block after the transfer, re-send what differs
    state_dir: str | os.PathLike[str] | None = None  # checkpoints; default_state_dir() when None
    compress: str = "auto"  # auto (zstd when both ends have it, else none) or a codec of wire.CODECS
    window_chunks: int = 6  # chunks prepared ahead of the sender (memory ~ window * chunk * 2)
    checkpoint_bytes: int = 64 * 1024 * 1024  # flush + checkpoint after this many bytes on the wire
    checkpoint_seconds: float = 5.0  # ... or after this long
    dirty_span: int = 1024 * 1024 * 1024  # how far past the checkpoint cursor frames may be in flight
    reply_timeout: float = 300.0  # seconds a receiver may take to answer (a flush of a slow disk included)
    subblocks: bool = True  # patch changed blocks in 4 KiB pieces where the target holds data
    trust_checkpoint: bool = True  # False: ignore the checkpoint and compare hashes with the target
    # Byte ranges [start, end) that may have changed since the checkpoint's last round; blocks outside
    # them are taken as unchanged from the hash file without reading the source. Only for a caller that
    # traced every write to the source (the cutover's final pass, migrated.source.tracker); None = read all.
    only_ranges: list[tuple[int, int]] | None = None
    # Read the blocks from this path, a point-in-time copy of the source (an LVM snapshot: the
    # cutover's final pass with --quiesce lvm), while the checkpoint stays the source's: same
    # identity, size and state files, so the pass is one more round of the source. Opened
    # read-only (migrated.source.open_source_via); its size must equal the source's.
    read_from: str | None = None

    def validate(self) -> None:
        bs = self.block_size
        if not (wire.MIN_BLOCK <= bs <= wire.MAX_BLOCK) or bs & (bs - 1):
            raise UsageError(f"--block-size {bs}: must be a power of two between 4KiB and 4MiB")
        if self.chunk_size % bs or self.chunk_size < bs:
            self.chunk_size = max(bs, self.chunk_size // bs * bs)
        choices = wire.compress_choices()
        if self.compress not in choices:
            raise UsageError(f"--compress {self.compress!r}: choose {', '.join(choices[:-1])} or {choices[-1]}")


class SyncControl:
    """Steer a running sync from outside (daemon, signal handler): bandwidth and stop.

    ``request_stop()`` makes the engine stop sending, flush, checkpoint and raise Interrupted.
    Both methods may be called from the event loop thread at any time, before or during a run.
    """

    def __init__(self, bwlimit: int | None = None) -> None:
        self._bwlimit = bwlimit
        self._stop = False
        self._listeners: list[Callable[[int | None], None]] = []
        self.stop_reason = "stop requested"

    @property
    def bwlimit(self) -> int | None:
        return self._bwlimit

    def set_bwlimit(self, bytes_per_s: int | None) -> None:
        self._bwlimit = bytes_per_s if bytes_per_s else None
        for cb in list(self._listeners):
            cb(self._bwlimit)

    def watch_bwlimit(self, cb: Callable[[int | None], None]) -> Callable[[], None]:
        """Call ``cb(bytes_per_s)`` on every ``set_bwlimit``; returns the function that stops it."""
        self._listeners.append(cb)

        def unwatch() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(cb)

        return unwatch

    # Source read-rate limit (bytes/s; None = unlimited), changeable while running: protects the
    # production server's I/O during continuous rounds (migrated.engine.continuous).
    read_limit: int | None = None

    def set_read_limit(self, bytes_per_s: int | None) -> None:
        """Takes effect at the next chunk read (the engine compares before each read)."""
        self.read_limit = bytes_per_s if bytes_per_s else None

    def request_stop(self, reason: str = "stop requested") -> None:
        self._stop = True
        self.stop_reason = reason

    @property
    def stop_requested(self) -> bool:
        return self._stop


@dataclass
class SyncResult:
    source: str
    target: str
    bytes_total: int
    bytes_read: int = 0
    bytes_sent: int = 0  # on the wire (frames after compression), this run
    bytes_changed: int = 0  # raw bytes of blocks that differed (sent as data or zero markers)
    blocks_sent: int = 0
    blocks_zero: int = 0
    blocks_same: int = 0
    blocks_resent: int = 0  # by --checksum verification
    seconds: float = 0.0
    throughput_bps: float = 0.0  # disk bytes covered per second
    verified: bool | None = None  # None: not asked
    resumed: bool = False  # continued a round from its checkpoint
    round: int = 1
    checkpoint: str = "none"  # trusted | none | fallback: <reason>
    target_created: bool = False
    hash: str = ""  # negotiated block hash (xxh3-128, or blake2b-128 with a stdlib-only receiver)
    codec: str = ""  # negotiated codec (zstd or none, zlib on request)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Stats:
    bytes_read: int = 0
    bytes_sent: int = 0
    bytes_changed: int = 0
    blocks_sent: int = 0
    blocks_zero: int = 0
    blocks_same: int = 0


@dataclass
class _Chunk:
    offset: int
    length: int
    frames: list[bytes] = field(default_factory=list)
    entries: bytes = b""  # new hash-file entries (source hashes) for the chunk's blocks
    bytes_read: int = 0
    same: int = 0
    zero: int = 0
    data: int = 0
    changed_bytes: int = 0


def _encode_write(offset: int, raw: memoryview, codec: wire.Codec) -> bytes:
    """A WRITE frame; compressed only where that saves more than 1/32 of the bytes."""
    payload: bytes | memoryview = raw
    cid = 0
    if codec.wire_id != 0:
        comp = codec.compress(raw)
        if len(comp) < len(raw) - len(raw) // 32:
            payload, cid = comp, codec.wire_id
    hdr = wire.HEADER.pack(wire.T_WRITE, wire.WRITE_HDR.size + len(payload))
    return b"".join((hdr, wire.WRITE_HDR.pack(offset, len(raw), cid), payload))


class HashFile:
    """Per-block hashes of what the target durably holds: 16 bytes per block after a 64-byte header.

    Read in chunk-sized slices, written after each flush; never held whole in memory.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: Path, generation: str, block_size: int, hash_name: str, *, fresh: bool) -> HashFile:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        header = encode_hashfile_header(generation, block_size, hash_name)
        if fresh:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.pwrite(fd, header, 0)
            os.fsync(fd)
            return cls(path, fd)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise CheckpointError(f"hash file {path} missing: {e.strerror}") from None
        if not hashfile_header_matches(os.pread(fd, HASHFILE_HEADER_SIZE, 0), generation, block_size, hash_name):
            os.close(fd)
            raise CheckpointError(f"hash file {path} belongs to another checkpoint")
        return cls(path, fd)

    def read(self, first_block: int, count: int) -> bytes:
        data = os.pread(self.fd, count * HASH_LEN, HASHFILE_HEADER_SIZE + first_block * HASH_LEN)
        return data + UNKNOWN * (count - len(data) // HASH_LEN) if len(data) < count * HASH_LEN else data

    def write(self, first_block: int, entries: bytes) -> None:
        os.pwrite(self.fd, entries, HASHFILE_HEADER_SIZE + first_block * HASH_LEN)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class DiskSync:
    """Runs one sync of ``source`` onto ``target_path`` through one receiver channel."""

    def __init__(self, chan: RecvChannel, source: SourceDisk, target_label: str, target_path: str,
                 options: SyncOptions, control: SyncControl | None,
                 on_progress: Callable[[DiskProgress], None] | None, executor: ThreadPoolExecutor) -> None:
        self.chan = chan
        self.src = source
        self.target_label = target_label  # "user@host:port"
        self.target_path = target_path
        self.opt = options
        self.control = control or SyncControl(options.bwlimit)
        if control is not None and options.bwlimit and control.bwlimit is None:
            control.set_bwlimit(options.bwlimit)
        self.on_progress = on_progress
        self.pool = executor
        self.bs = options.block_size
        self.size = source.size
        self.stats = _Stats()
        self.bucket = TokenBucket(self.control.bwlimit, time.monotonic())
        self._unwatch = self.control.watch_bwlimit(lambda r: self.bucket.set_rate(r, time.monotonic()))
        self.read_bucket = TokenBucket(self.control.read_limit, time.monotonic())
        self.flush_seq = 0
        self.progress = DiskProgress(name=source.path, target=f"{target_label}:{target_path}",
                                     bytes_total=self.size)
        self._last_progress = 0.0
        state = Path(options.state_dir) if options.state_dir else default_state_dir()
        cp_name, hf_name = state_file_names(source.path, target_label, target_path)
        self.cp_path = state / cp_name
        self.hf_path = state / hf_name
        self.hf: HashFile | None = None
        self._zero_hash: dict[int, bytes] = {}

    # -- small helpers ---------------------------------------------------------------------
    def zero_entries(self, off: int, length: int) -> bytes:
        """Hash-file entries of an all-zero range (the last block of the disk may be short)."""
        return zero_entries(length, self.bs, self.zero_hash)

    def zero_hash(self, length: int) -> bytes:
        h = self._zero_hash.get(length)
        if h is None:
            h = self._zero_hash[length] = self.hash(bytes(length))
        return h

    def _emit_progress(self, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= 0.1:
            self._last_progress = now
            self.on_progress(self.progress)

    async def _send_frames(self, frames: list[bytes]) -> int:
        """Send a chunk's frames, paced by the token bucket in groups of about 256 KiB.

        A frame is written whole and a group without any await in between: other tasks send
        requests (HASH, FLUSH) on the same channel, and they must never land inside a frame.
        """
        total = 0
        group: list[bytes] = []
        size = 0
        for frame in [*frames, None]:
            if group and (frame is None or size + len(frame) > 256 * 1024):
                delay = self.bucket.reserve(size, time.monotonic())
                if delay > 0:
                    await self.chan.drain()
                    await asyncio.sleep(delay)
                for g in group:
                    self.chan.send(g)
                total += size
                group, size = [], 0
            if frame is not None:
                group.append(frame)
                size += len(frame)
        self.stats.bytes_sent += total
        self.progress.bytes_sent = self.stats.bytes_sent
        return total

    async def _reply(self, fut: asyncio.Future[bytes]) -> bytes:
        """Await an answer; a receiver silent for ``reply_timeout`` s is a (retryable) failure."""
        try:
            return await asyncio.wait_for(fut, self.opt.reply_timeout)
        except TimeoutError:
            raise ConnectionFailed(f"receiver on {self.target_label} did not answer for "
                                   f"{self.opt.reply_timeout:.0f} s (target disk stuck?)") from None

    # -- handshake ------------------------------------------------------------------------
    async def handshake(self) -> dict:
        hello = {"magic": wire.MAGIC, "versions": [wire.PROTOCOL_VERSION], "hashes": wire.available_hashes(),
                 "codecs": wire.available_codecs()}
        fut = self.chan.request(wire.pack_json(wire.T_HELLO, hello), wire.T_HELLO_OK)
        reply = wire.parse_json(await self._reply(fut))
        if reply.get("magic") != wire.MAGIC or reply.get("version") != wire.PROTOCOL_VERSION:
            raise ProtocolError(f"receiver on {self.target_label} speaks protocol {reply.get('version')!r}, "
                                f"this agent {wire.PROTOCOL_VERSION}")
        theirs_h = reply.get("hashes") or []
        theirs_c = reply.get("codecs") or []
        self.hash_name = choose_hash(wire.available_hashes(), theirs_h, self.target_label)
        self.hash = wire.hasher(self.hash_name)
        self.subhash = self.opt.subblocks and "subhash" in (reply.get("features") or []) and self.bs > SUB_BLOCK
        self.codec = choose_codec(self.opt.compress, wire.available_codecs(), theirs_c, wire.auto_codecs())
        return reply

    async def open_target(self) -> dict:
        req = {"path": self.target_path, "size": self.size, "create": True, "block_size": self.bs,
               "hash": self.hash_name, "codec": self.codec}
        reply = wire.parse_json(await self._reply(self.chan.request(wire.pack_json(wire.T_OPEN, req), wire.T_OPENED)))
        try:
            tsize = int(reply["size"])
            self.target_id = f"{int(reply['dev'])}:{int(reply['ino'])}:{int(reply['rdev'])}"
            self.target_created = bool(reply["created"])
            prev = reply.get("previous_generation")
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"receiver on {self.target_label} sent a malformed OPENED: {reply!r:.200}") from None
        if tsize < self.size:
            raise TargetError(f"target {self.target_label}:{self.target_path} has {tsize} bytes, smaller than the "
                              f"source {self.src.path} ({self.size} bytes); nothing was written")
        self.previous_generation = prev if isinstance(prev, str) else None
        return reply

    # -- checkpoint -----------------------------------------------------------------------
    def load_checkpoint(self) -> tuple[Checkpoint | None, str]:
        try:
            data = self.cp_path.read_bytes()
        except FileNotFoundError:
            return None, "none"
        except OSError as e:
            return None, f"fallback: cannot read checkpoint: {e.strerror}"
        try:
            cp = Checkpoint.decode(data)
        except CheckpointError as e:
            return None, f"fallback: {e}"
        why = cp.mismatch(source_id=self.src.identity, source_size=self.size,
                          target=f"{self.target_label}:{self.target_path}", target_id=self.target_id,
                          block_size=self.bs, hash_name=self.hash_name)
        if why:
            return None, f"fallback: checkpoint is foreign ({why})"
        if self.previous_generation != cp.generation:
            return None, "fallback: the target was written by another run since the checkpoint"
        if not self.opt.trust_checkpoint:
            return None, "fallback: not trusted by request"
        return cp, "trusted"

    async def save_checkpoint(self, cp: Checkpoint) -> None:
        cp.updated_at = time.time()
        data = cp.encode()
        await asyncio.to_thread(atomic_write, self.cp_path, data)

    async def flush(self) -> asyncio.Future[bytes]:
        self.flush_seq += 1
        return self.chan.request(wire.pack_frame(wire.T_FLUSH, wire.SEQ.pack(self.flush_seq)), wire.T_FLUSHED)

    async def _await_flush(self, fut: asyncio.Future[bytes], seq: int) -> None:
        payload = await self._reply(fut)
        if len(payload) != wire.SEQ.size or wire.SEQ.unpack(payload)[0] != seq:
            raise ProtocolError(f"receiver on {self.target_label} acknowledged the wrong flush")

    # -- chunk preparation ------------------------------------------------------------------
    def _read_and_hash(self, offset: int, length: int, hole: bool) -> tuple[bytes | None, list[bytes], list[bool]]:
        bs = self.bs
        n = wire.block_count(length, bs)
        if hole:
            hashes = [self.zero_hash(min(bs, length - i * bs)) for i in range(n)]
            return None, hashes, [True] * n
        data = self.src.read_uncached(offset, length)
        mv = memoryview(data)
        zero_block = bytes(bs)
        hashes: list[bytes] = []
        zeros: list[bool] = []
        for i in range(0, length, bs):
            blk = mv[i:i + bs]
            # bytes == bytes is a memcmp; memoryview == bytes compares item by item (40x slower).
            if data[i:i + bs] == (zero_block if len(blk) == bs else bytes(len(blk))):
                hashes.append(self.zero_hash(len(blk)))
                zeros.append(True)
            else:
                hashes.append(self.hash(blk))
                zeros.append(False)
        return data, hashes, zeros

    def _encode_runs(self, offset: int, data: bytes | None, runs, length: int,
                     subs: dict[int, bytes] | None = None) -> list[bytes]:
        """Frames for a chunk's ZERO and DATA runs. ``subs`` maps a block index to the target's
        sub-block hashes: only the sub-blocks that differ from the source are sent for it."""
        frames: list[bytes] = []
        bs, sub = self.bs, SUB_BLOCK
        mv = memoryview(data) if data is not None else None
        ranges: list[list[int]] = []  # byte ranges [start, end) within the chunk to send as data

        def add(start: int, end: int) -> None:
            if ranges and ranges[-1][1] == start and end - ranges[-1][0] <= MAX_WRITE:
                ranges[-1][1] = end
            else:
                ranges.append([start, end])

        for run in runs:
            start = run.first * bs
            end = min(length, (run.first + run.count) * bs)
            if run.kind is Kind.ZERO:
                frames.append(wire.pack_frame(wire.T_ZERO, wire.RANGE.pack(offset + start, end - start)))
            elif run.kind is Kind.DATA:
                assert mv is not None
                for i in range(run.first, run.first + run.count):
                    b0, b1 = i * bs, min(length, (i + 1) * bs)
                    theirs = subs.get(i) if subs else None
                    if theirs is None:
                        add(b0, b1)
                        continue
                    for k, p in enumerate(range(b0, b1, sub)):
                        q = min(b1, p + sub)
                        if self.hash(mv[p:q]) != theirs[k * HASH_LEN:(k + 1) * HASH_LEN]:
                            add(p, q)
        assert mv is not None or not ranges
        codec = wire.CODEC_BY_NAME[self.codec]
        for a, b in ranges:
            frames.append(_encode_write(offset + a, mv[a:b], codec))  # type: ignore[index]
        return frames

    async def _ask_subhashes(self, offset: int, length: int, runs, tgt: list[bytes]) -> dict[int, bytes]:
        """Ask the target for sub-block hashes of DATA blocks where it holds (non-zero) data."""
        bs = self.bs
        wanted = [i for r in runs if r.kind is Kind.DATA for i in range(r.first, r.first + r.count)
                  if tgt[i] != self.zero_hash(min(bs, length - i * bs))]
        groups: list[list[int]] = []  # [first block, count]
        for i in wanted:
            if groups and groups[-1][0] + groups[-1][1] == i and (groups[-1][1] + 1) * bs <= wire.MAX_SUBHASH_SPAN:
                groups[-1][1] += 1
            else:
                groups.append([i, 1])
        futs = []
        for first, count in groups:
            a, b = first * bs, min(length, (first + count) * bs)
            req = wire.SUBRANGE.pack(offset + a, b - a, SUB_BLOCK)
            futs.append((first, count, b - a, req, self.chan.request(wire.pack_frame(wire.T_SUBHASH, req),
                                                                    wire.T_SUBHASHES)))
            self.stats.bytes_sent += wire.HEADER.size + len(req)
        subs: dict[int, bytes] = {}
        per_block = bs // SUB_BLOCK * HASH_LEN
        for first, count, nbytes, req, fut in futs:
            reply = await self._reply(fut)
            want = wire.SUBRANGE.size + wire.block_count(nbytes, SUB_BLOCK) * HASH_LEN
            if len(reply) != want or reply[:wire.SUBRANGE.size] != req:
                raise ProtocolError(f"receiver on {self.target_label} answered a sub-block hash request "
                                    f"with {len(reply)} bytes that do not match it")
            body = reply[wire.SUBRANGE.size:]
            for j in range(count):
                subs[first + j] = body[j * per_block:(j + 1) * per_block]
        return subs

    def _is_hole(self, offset: int, length: int) -> bool:
        return not self.src.is_device and not self.src.data_ranges(offset, offset + length)

    async def prepare(self, offset: int, length: int, known: bytes | None, send: bool) -> _Chunk:
        """Read, hash, resolve the target's hashes, plan and encode one chunk.

        ``known``: target hashes for the chunk's blocks (UNKNOWN entries are asked from the
        target), or None to ask the target about every block.
        """
        loop = asyncio.get_running_loop()
        bs = self.bs
        n = wire.block_count(length, bs)
        hole = self._is_hole(offset, length)
        if hole and known is not None:
            zeros = self.zero_entries(offset, length)
            if known == zeros:  # a hole onto zeros: nothing to read, send or ask
                return _Chunk(offset, length, entries=zeros, same=n)
        if known is not None and self.opt.only_ranges is not None and not any(
                s < offset + length and offset < e for s, e in self.opt.only_ranges):
            entries = [known[i * HASH_LEN:(i + 1) * HASH_LEN] for i in range(n)]
            if UNKNOWN not in entries:  # untraced and known: unchanged since the last round read it
                return _Chunk(offset, length, same=n, entries=known)
        hash_fut = None
        if known is None or UNKNOWN in [known[i * HASH_LEN:(i + 1) * HASH_LEN] for i in range(n)]:
            hash_fut = self.chan.request(wire.pack_frame(wire.T_HASH, wire.RANGE.pack(offset, length)), wire.T_HASHES)
            self.stats.bytes_sent += wire.HEADER.size + wire.RANGE.size
        if not hole:
            if self.read_bucket.rate != self.control.read_limit:
                self.read_bucket.set_rate(self.control.read_limit, time.monotonic())
            read_delay = self.read_bucket.reserve(length, time.monotonic())
            if read_delay > 0:
                await asyncio.sleep(read_delay)
        data, src_hashes, src_zero = await loop.run_in_executor(self.pool, self._read_and_hash, offset, length, hole)
        tgt = [known[i * HASH_LEN:(i + 1) * HASH_LEN] for i in range(n)] if known is not None else [UNKNOWN] * n
        if hash_fut is not None:
            reply = await self._reply(hash_fut)
            if len(reply) != wire.RANGE.size + n * HASH_LEN or wire.RANGE.unpack_from(reply) != (offset, length):
                raise ProtocolError(f"receiver on {self.target_label} answered a hash request for {offset}+{length} "
                                    f"with {len(reply)} bytes that do not match it")
            for i in range(n):
                if tgt[i] == UNKNOWN:
                    tgt[i] = reply[wire.RANGE.size + i * HASH_LEN:wire.RANGE.size + (i + 1) * HASH_LEN]
        runs = plan_chunk(src_hashes, src_zero, tgt, max_data_blocks=max(1, (1 << 20) // bs))
        ch = _Chunk(offset, length, bytes_read=0 if hole else length)
        for r in runs:
            nbytes = min(length, (r.first + r.count) * bs) - r.first * bs
            if r.kind is Kind.SAME:
                ch.same += r.count
            elif r.kind is Kind.ZERO:
                ch.zero += r.count
                ch.changed_bytes += nbytes
            else:
                ch.data += r.count
                ch.changed_bytes += nbytes
        if send and (ch.zero or ch.data):
            subs = await self._ask_subhashes(offset, length, runs, tgt) if self.subhash and ch.data else None
            ch.frames = await loop.run_in_executor(self.pool, self._encode_runs, offset, data, runs, length, subs)
        # What the target holds once these frames are durable: the source's hashes, except blocks
        # that a check-only pass found different (their entries keep the target's hash).
        ch.entries = b"".join(src_hashes) if send else b"".join(tgt)
        return ch

    # -- one pass over the disk --------------------------------------------------------------
    async def run_pass(self, cp: Checkpoint, start: int, untrusted: tuple[int, int], *, ask_all: bool,
                       send: bool, show: bool = True) -> int:
        """Walk [start, size); return the number of differing blocks found.

        ``untrusted``: [lo, hi) where hash-file entries are not trusted (asked from the target).
        ``send=False`` only compares (verification's final check) and changes no state.
        """
        bs, size, csize = self.bs, self.size, self.opt.chunk_size
        pending: deque[tuple[int, asyncio.Task]] = deque()
        position = start
        next_off = start
        committed_entries: deque[tuple[int, bytes]] = deque()  # (first block, entries) not yet on disk
        flight: tuple[asyncio.Future[bytes], int, int] | None = None  # (future, seq, position)
        sent_since = 0
        last_ck = time.monotonic()
        differing = 0

        def known_for(off: int, length: int) -> bytes | None:
            if ask_all:
                return None
            raw = self.hf.read(off // bs, wire.block_count(length, bs))  # type: ignore[union-attr]
            return trusted_entries(raw, off, length, block_size=bs, disk_size=size, untrusted=untrusted,
                                   zero_from=cp.zero_from, zero_hash=self.zero_hash)

        def schedule() -> None:
            nonlocal next_off
            while next_off < size and len(pending) < self.opt.window_chunks:
                length = min(csize, size - next_off)
                off = next_off
                if self._is_hole(off, length):  # take the whole hole (up to a HASH span) in one chunk
                    data_at = self.src.next_data(off)
                    hole_end = min(size, off + wire.MAX_HASH_SPAN, max(off + length, data_at // bs * bs))
                    length = hole_end - off
                task = asyncio.create_task(self.prepare(off, length, known_for(off, length), send))
                pending.append((off, task))
                next_off += length

        async def commit(fut: asyncio.Future[bytes], seq: int, pos: int) -> None:
            await self._await_flush(fut, seq)
            hf = self.hf
            assert hf is not None
            while committed_entries and committed_entries[0][0] * bs < pos:
                first, entries = committed_entries.popleft()
                hf.write(first, entries)
            await asyncio.to_thread(hf.sync)
            cp.advance(pos, self.opt.dirty_span, self.stats.bytes_sent - self._sent_at_last_ck)
            self._sent_at_last_ck = self.stats.bytes_sent
            await self.save_checkpoint(cp)

        self._sent_at_last_ck = self.stats.bytes_sent
        try:
            schedule()
            while pending:
                off, task = pending[0]
                ch = await task
                pending.popleft()
                if send and self.control.stop_requested:
                    break
                end = off + ch.length
                if send and ch.frames and end > cp.dirty_end:
                    # Frames past the durable dirty_end are not allowed: make a checkpoint first.
                    if flight is None:
                        seq = self.flush_seq + 1
                        flight = (await self.flush(), seq, position)
                    await commit(*flight)
                    flight = None
                    sent_since, last_ck = 0, time.monotonic()
                if send:
                    if ch.frames:
                        sent_since += await self._send_frames(ch.frames)
                        await self.chan.drain()
                    committed_entries.append((off // bs, ch.entries))
                differing += ch.zero + ch.data
                position = end
                self.stats.bytes_read += ch.bytes_read
                if send:
                    self.stats.blocks_same += ch.same
                    self.stats.blocks_zero += ch.zero
                    self.stats.blocks_sent += ch.data
                    self.stats.bytes_changed += ch.changed_bytes
                    self.progress.blocks_same = self.stats.blocks_same
                    self.progress.blocks_zero = self.stats.blocks_zero
                    self.progress.blocks_sent = self.stats.blocks_sent
                if show:
                    self.progress.bytes_done = position
                    self._emit_progress()
                schedule()
                if not send:
                    continue
                if flight is not None and flight[0].done():
                    await commit(*flight)
                    flight = None
                if flight is None and (sent_since >= self.opt.checkpoint_bytes
                                       or time.monotonic() - last_ck >= self.opt.checkpoint_seconds):
                    seq = self.flush_seq + 1
                    flight = (await self.flush(), seq, position)
                    sent_since, last_ck = 0, time.monotonic()
            if send:
                if flight is not None:
                    await commit(*flight)
                    flight = None
                if position > cp.cursor or position >= size:
                    seq = self.flush_seq + 1
                    await commit(await self.flush(), seq, position)
        finally:
            for _, t in pending:
                t.cancel()
            for _, t in pending:
                with contextlib.suppress(BaseException):
                    await t
        if send and self.control.stop_requested and position < size:
            raise Interrupted(f"{self.control.stop_reason}: {self.src.path} checkpointed at "
                              f"{position * 100 // max(1, size)}%; run the same command again to resume")
        return differing

    # -- the whole run ----------------------------------------------------------------------
    def check_state_paths(self) -> None:
        """Refuse, before anything is written anywhere, a state dir or checkpoint file that is not one
        (a directory at the checkpoint's path, a file at the state dir's): nothing is removed or changed."""
        import stat as st

        state = self.cp_path.parent
        for path, want, what in ((state, st.S_ISDIR, "a directory"), (self.cp_path, st.S_ISREG, "a regular file"),
                                 (self.hf_path, st.S_ISREG, "a regular file")):
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                continue
            except OSError as e:
                raise UsageError(f"state dir {state}: cannot use {path}: {e.strerror}") from None
            if not want(mode):
                raise UsageError(f"{path} is in the way of the checkpoint of {self.src.path}: it is not {what}; "
                                 "move it away or pass another --state-dir (nothing was written)")

    async def run(self) -> SyncResult:
        t0 = time.monotonic()
        self.check_state_paths()
        await self.handshake()
        await self.open_target()
        result = SyncResult(source=self.src.path, target=f"{self.target_label}:{self.target_path}",
                            bytes_total=self.size, target_created=self.target_created, hash=self.hash_name,
                            codec=self.codec)
        cp, how = self.load_checkpoint()
        result.checkpoint = how
        if how.startswith("fallback"):
            log.warning("checkpoint_fallback", disk=self.src.path, reason=how)
        if cp is not None:
            try:
                self.hf = HashFile.open(self.hf_path, cp.generation, self.bs, self.hash_name, fresh=False)
            except CheckpointError as e:
                cp, result.checkpoint = None, f"fallback: {e}"
        if cp is None:
            generation = secrets.token_hex(16)
            await self._reply(self.chan.request(wire.pack_json(wire.T_SETGEN, {"generation": generation}),
                                                wire.T_GENSET))
            self.hf = HashFile.open(self.hf_path, generation, self.bs, self.hash_name, fresh=True)
            cp = Checkpoint(source_path=self.src.path, source_id=self.src.identity, source_size=self.size,
                            target=f"{self.target_label}:{self.target_path}", target_id=self.target_id,
                            block_size=self.bs, hash_name=self.hash_name, generation=generation,
                            zero_from=0 if self.target_created else None)
        begin = cp.begin_run(self.opt.dirty_span)  # the dirty window, saved durably before the first frame
        ask_all = not hashfile_trusted(cp, checkpoint_trusted=result.checkpoint == "trusted",
                                       target_created=self.target_created)
        result.resumed = begin.resumed
        start, untrusted = begin.start, begin.untrusted
        await self.save_checkpoint(cp)
        result.round = cp.round
        self.progress.bytes_done = start
        self._emit_progress(force=True)
        log.info("sync_start", disk=self.src.path, target=result.target, round=cp.round, start=start,
                 checkpoint=result.checkpoint, hash=self.hash_name, codec=self.codec, bwlimit=self.control.bwlimit)
        try:
            await self.run_pass(cp, start, untrusted, ask_all=ask_all, send=True)
            if self.opt.checksum:
                self.last_resent = 0
                try:
                    result.verified = await self.verify(cp)
                except VerificationFailed:
                    result.verified = False
                    raise
                finally:
                    result.blocks_resent = self.last_resent
        finally:
            result.bytes_read = self.stats.bytes_read
            result.bytes_sent = self.stats.bytes_sent
            result.bytes_changed = self.stats.bytes_changed
            result.blocks_sent = self.stats.blocks_sent
            result.blocks_zero = self.stats.blocks_zero
            result.blocks_same = self.stats.blocks_same
            result.seconds = round(time.monotonic() - t0, 3)
            covered = max(0, self.progress.bytes_done - start)
            result.throughput_bps = round(covered / result.seconds if result.seconds else 0.0, 1)
            self._emit_progress(force=True)
            self.last_result = result
            self._unwatch()
        return result

    async def verify_recorded(self, *, reread: bool) -> tuple[int, list[int]]:
        """Compare every target block with what the last complete pass recorded in the hash file, or
        (``reread``) with the hashes of the source read again (a snapshot that cannot have changed).
        Returns (blocks compared, offsets of the blocks that differ). Writes nothing
        (``Session.verify_disk``)."""
        await self.handshake()
        await self.open_target()
        cp, how = self.load_checkpoint()
        if cp is None or not cp.complete:
            raise VerificationFailed(f"cannot verify {self.target_label}:{self.target_path}: no complete "
                                     f"checkpoint of the final pass ({how})")
        hf = HashFile.open(self.hf_path, cp.generation, self.bs, self.hash_name, fresh=False)
        bs = self.bs
        # re-reading holds a span in memory: keep it smaller
        limit = 16 * 1024 * 1024 if reread else 64 * 1024 * 1024
        span = max(bs, min(wire.MAX_HASH_SPAN, limit) // bs * bs)
        loop = asyncio.get_running_loop()
        bad: list[int] = []
        blocks = 0
        try:
            for off in range(0, self.size, span):
                length = min(span, self.size - off)
                n = wire.block_count(length, bs)
                asked = self.chan.request(wire.pack_frame(wire.T_HASH, wire.RANGE.pack(off, length)), wire.T_HASHES)
                if reread:
                    _, hashes, _ = await loop.run_in_executor(self.pool, self._read_and_hash, off, length, False)
                    expect = b"".join(hashes)
                else:
                    expect = hf.read(off // bs, n)
                got = (await asked)[wire.RANGE.size:]
                for i in range(n):
                    if got[i * HASH_LEN:(i + 1) * HASH_LEN] != expect[i * HASH_LEN:(i + 1) * HASH_LEN]:
                        bad.append(off + i * bs)
                blocks += n
        finally:
            hf.close()
        return blocks, bad

    async def verify(self, cp: Checkpoint) -> bool:
        """Compare every target block with the source; re-send what differs; check once more."""
        before = (self.stats.blocks_sent, self.stats.blocks_zero)
        same_before = self.stats.blocks_same
        cp.restart_pass(self.opt.dirty_span)
        await self.save_checkpoint(cp)
        differing = await self.run_pass(cp, 0, (0, self.size), ask_all=True, send=True, show=False)
        resent = self.stats.blocks_sent - before[0] + self.stats.blocks_zero - before[1]
        # The verification pass's counters are not the transfer's: keep the transfer's figures.
        self.stats.blocks_sent, self.stats.blocks_zero = before
        self.stats.blocks_same = same_before
        self.last_resent = resent
        if differing == 0:
            return True
        log.warning("verify_resent", disk=self.src.path, blocks=resent)
        remaining = await self.run_pass(cp, 0, (0, self.size), ask_all=True, send=False, show=False)
        if remaining:
            raise VerificationFailed(f"{remaining} blocks of {self.target_label}:{self.target_path} still differ "
                                     f"from {self.src.path} after re-sending; run again or inspect the target")
        return True


__all__ = ["DiskSync", "SyncControl", "SyncOptions", "SyncResult", "default_state_dir", "state_file_names"]
