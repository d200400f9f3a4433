"""Checkpoint codec, hash-file header and the resume rules. Pure: no files, no asyncio, no I/O.

A checkpoint records how far the current round got and which lineage ("generation") of
writes the target holds. Per-block hashes of what the target durably holds live in a
separate *hash file* (16 bytes per block, written in place, read in slices), so the
checkpoint itself stays a few hundred bytes whatever the disk size.

Meaning of the fields (the contract resume relies on, see docs/engine.md):

* every block below ``cursor`` was processed in round ``round`` and is durable on the target;
* the hash-file entry of every block outside ``[cursor, dirty_end)`` equals the hash of what
  the target durably holds, or is all-zero bytes (``UNKNOWN``);
* blocks in ``[cursor, dirty_end)`` may have been written after the last flush: their
  entries are not trusted (the engine asks the target);
* if ``zero_from`` is set, the target was created sparse in this generation and nothing at
  or beyond ``zero_from`` was ever written, so it reads as zeros.

The rules that keep this contract are here, not in the engine (``migrated.engine.sync`` only
does the I/O around them):

* :meth:`Checkpoint.begin_run`: where a run starts and which range it must not trust; a
  complete checkpoint starts the next round; the dirty window is opened before any frame;
* :meth:`Checkpoint.advance`: the checkpoint after a flush made everything below ``pos`` durable;
* :meth:`Checkpoint.restart_pass`: back to block 0 for a verification pass;
* :func:`hashfile_trusted`: whether the hash file may be used at all (else ask the target);
* :func:`trusted_entries`: what the hash file tells about one chunk of the target
  (:func:`trusted_entry` is the block-by-block rule it must agree with).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from migrated.errors import CheckpointError

FORMAT_VERSION = 1
MAGIC = "migrated-checkpoint"
UNKNOWN = bytes(16)  # hash-file entry: nothing known about this target block

HASHFILE_MAGIC = b"MGHASH01"
HASHFILE_HEADER = struct.Struct(">8s32sI16s4x")  # magic, generation, block size, hash name
HASHFILE_HEADER_SIZE = HASHFILE_HEADER.size  # 64
ENTRY_LEN = len(UNKNOWN)  # bytes per hash-file entry (one block)


@dataclass(frozen=True)
class RunStart:
    """Where a run starts (:meth:`Checkpoint.begin_run`)."""

    start: int  # first byte of the disk this run processes (the cursor)
    untrusted: tuple[int, int]  # [lo, hi): hash-file entries there are not trusted (ask the target)
    resumed: bool  # continues a round an earlier run left unfinished
    new_round: bool  # the checkpoint was complete: this run is the next round from block 0


@dataclass
class Checkpoint:
    source_path: str
    source_id: str  # "file:<dev>:<ino>" or "blk:<major>:<minor>"
    source_size: int
    target: str  # "[user@]host:port:/path"
    target_id: str  # "<dev>:<ino>:<rdev>" as the receiver reported it
    block_size: int
    hash_name: str
    generation: str  # 32 hex chars; also recorded by the receiver next to the target
    round: int = 1  # 1 = the first full copy; each later sync_disk run is one more round
    cursor: int = 0
    dirty_end: int = 0
    complete: bool = False
    zero_from: int | None = None
    bytes_sent_total: int = 0
    updated_at: float = 0.0
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        body = asdict(self)
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
        out = {"magic": MAGIC, "body": body, "checksum": hashlib.sha256(canon.encode()).hexdigest()}
        return (json.dumps(out, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        """Parse and check a checkpoint; any damage raises CheckpointError (callers fall back)."""
        try:
            outer = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CheckpointError("checkpoint is not valid JSON (damaged or truncated)") from None
        if not isinstance(outer, dict) or outer.get("magic") != MAGIC:
            raise CheckpointError("not a migrated checkpoint")
        body = outer.get("body")
        if not isinstance(body, dict):
            raise CheckpointError("checkpoint has no body")
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if hashlib.sha256(canon.encode()).hexdigest() != outer.get("checksum"):
            raise CheckpointError("checkpoint checksum mismatch (damaged)")
        if body.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint format {body.get('version')!r} not supported (want {FORMAT_VERSION})")
        names = {f.name for f in fields(cls)}
        if set(body) != names:
            raise CheckpointError("checkpoint fields do not match this version")
        try:
            cp = cls(**body)
        except TypeError as e:
            raise CheckpointError(f"checkpoint fields invalid: {e}") from None
        cp._validate()
        return cp

    def _validate(self) -> None:
        ints = ("source_size", "block_size", "round", "cursor", "dirty_end", "bytes_sent_total")
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise CheckpointError(f"checkpoint field {name} invalid")
        if self.zero_from is not None and (not isinstance(self.zero_from, int) or self.zero_from < 0):
            raise CheckpointError("checkpoint field zero_from invalid")
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise CheckpointError("checkpoint block size invalid")
        if not self.cursor <= self.dirty_end <= self.source_size:
            raise CheckpointError("checkpoint cursor/dirty_end out of order or past the end of the disk")
        if not isinstance(self.generation, str) or len(self.generation) != 32:
            raise CheckpointError("checkpoint generation invalid")

    # -- the resume rules ---------------------------------------------------------------------
    def begin_run(self, dirty_span: int) -> RunStart:
        """Start a run from this checkpoint (fresh, resumed or complete) and open its dirty window.

        A complete checkpoint starts the next round: from block 0, everything re-read, and
        ``zero_from`` dropped (the target was written). An incomplete one resumes at ``cursor``;
        its ``[cursor, dirty_end)`` may have been written after the last flush, so it is returned
        as untrusted. Then ``dirty_end`` covers ``dirty_span`` bytes past the start: the caller
        saves the checkpoint durably before it sends any frame (no frame at or past ``dirty_end``).
        """
        new_round = self.complete
        if new_round:
            self.round += 1
            self.cursor, self.dirty_end, self.complete, self.zero_from = 0, 0, False, None
            untrusted = (0, 0)
        else:
            untrusted = (self.cursor, self.dirty_end)
        start = self.cursor
        self._open_window(max(self.dirty_end, min(self.source_size, start + dirty_span)))
        return RunStart(start=start, untrusted=untrusted, resumed=not new_round and start > 0,
                        new_round=new_round)

    def advance(self, pos: int, dirty_span: int, bytes_sent: int = 0) -> None:
        """A flush made every block below ``pos`` durable on the target and its hash-file entries
        are fsynced: move the cursor there, the dirty window ``dirty_span`` past it, count
        ``bytes_sent`` since the last checkpoint. Complete once ``pos`` reaches the end."""
        self.cursor = pos
        self._open_window(min(self.source_size, pos + dirty_span))
        self.complete = pos >= self.source_size
        self.bytes_sent_total += bytes_sent

    def restart_pass(self, dirty_span: int) -> None:
        """Back to block 0 in the same round (a ``--checksum`` verification pass re-sends what differs)."""
        self.cursor, self.complete = 0, False
        self.dirty_end = 0
        self._open_window(min(self.source_size, dirty_span))

    def _open_window(self, dirty_end: int) -> None:
        # nothing at or past dirty_end is ever written, so zero_from may follow it up, never down
        self.dirty_end = dirty_end
        if self.zero_from is not None:
            self.zero_from = max(self.zero_from, dirty_end)

    def mismatch(self, **expected: object) -> str | None:
        """The first field whose value differs from ``expected`` (a foreign checkpoint), or None."""
        for key, want in expected.items():
            have = getattr(self, key)
            if have != want:
                return f"{key} is {have!r}, expected {want!r}"
        return None


def encode_hashfile_header(generation: str, block_size: int, hash_name: str) -> bytes:
    return HASHFILE_HEADER.pack(HASHFILE_MAGIC, generation.encode("ascii"), block_size, hash_name.encode("ascii"))


def hashfile_header_matches(header: bytes, generation: str, block_size: int, hash_name: str) -> bool:
    if len(header) != HASHFILE_HEADER_SIZE:
        return False
    return header == encode_hashfile_header(generation, block_size, hash_name)


# -- which hash-file entries to trust -------------------------------------------------------------
def hashfile_trusted(cp: Checkpoint, *, checkpoint_trusted: bool, target_created: bool) -> bool:
    """Whether a run may take target hashes from the hash file (else it asks the target about every
    block). Yes for a trusted checkpoint; for a fresh one only when the target was created sparse in
    this run (``zero_from``: what was never written reads as zeros, the rest is UNKNOWN and asked)."""
    return checkpoint_trusted or target_created or cp.zero_from is not None


def zero_entries(length: int, block_size: int, zero_hash: Callable[[int], bytes]) -> bytes:
    """Hash-file entries of ``length`` zero bytes from a block boundary (the last block may be short)."""
    n = (length + block_size - 1) // block_size
    return zero_hash(block_size) * (n - 1) + zero_hash(length - (n - 1) * block_size)


def trusted_entry(entry: bytes, offset: int, length: int, untrusted: tuple[int, int], zero_from: int | None,
                  zero_hash: Callable[[int], bytes]) -> bytes:
    """The rule for one block at ``offset`` (``length`` bytes) whose hash-file entry is ``entry``:
    UNKNOWN inside ``untrusted``; the zero hash where the entry is UNKNOWN at or past ``zero_from``
    (never written since created sparse); otherwise the entry itself (UNKNOWN: ask the target)."""
    lo, hi = untrusted
    if lo <= offset < hi:
        return UNKNOWN
    if entry == UNKNOWN and zero_from is not None and offset >= zero_from:
        return zero_hash(length)
    return entry


def trusted_entries(raw: bytes, offset: int, length: int, *, block_size: int, disk_size: int,
                    untrusted: tuple[int, int], zero_from: int | None,
                    zero_hash: Callable[[int], bytes]) -> bytes:
    """What the target holds for the chunk ``[offset, offset + length)``, as hash-file entries:
    ``raw`` (the hash file's entries for it, UNKNOWN where absent) with :func:`trusted_entry`
    applied to every block. UNKNOWN entries in the result are asked from the target.

    ``offset`` is block-aligned and the chunk ends on a block boundary or at ``disk_size``. Two fast
    paths skip the per-block loop; ``tests/test_checkpoint.py`` checks they agree with the rule."""
    bs = block_size
    n = (length + bs - 1) // bs
    lo, hi = untrusted
    if not (lo < offset + length and offset < hi):
        if zero_from is None or offset + length <= zero_from or UNKNOWN not in raw:
            return raw  # the hash file says it all
        if offset >= zero_from and raw == UNKNOWN * n:  # never written since created sparse
            return zero_entries(length, bs, zero_hash)
    out = bytearray(raw)
    for i in range(n):
        boff = offset + i * bs
        e = bytes(out[i * ENTRY_LEN:(i + 1) * ENTRY_LEN])
        out[i * ENTRY_LEN:(i + 1) * ENTRY_LEN] = trusted_entry(e, boff, min(bs, disk_size - boff), untrusted,
                                                              zero_from, zero_hash)
    return bytes(out)
