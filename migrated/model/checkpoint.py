"""Checkpoint codec and hash-file header. Pure: bytes in, bytes out; no files, no asyncio.

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
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, fields

from migrated.errors import CheckpointError

FORMAT_VERSION = 1
MAGIC = "migrated-checkpoint"
UNKNOWN = bytes(16)  # hash-file entry: nothing known about this target block

HASHFILE_MAGIC = b"MGHASH01"
HASHFILE_HEADER = struct.Struct(">8s32sI16s4x")  # magic, generation, block size, hash name
HASHFILE_HEADER_SIZE = HASHFILE_HEADER.size  # 64


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
