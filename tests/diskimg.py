"""Deterministic test disk images: mixes of zero, random and compressible runs. Small on purpose."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

MiB = 1024 * 1024


def make_image(path: Path, size: int, seed: int = 1, *, sparse_zero: bool = True) -> Path:
    """Write ``size`` bytes: runs of 64 KiB..2 MiB that are zero (holes when sparse), random or text."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghij klmnop\n") for _ in range(rng.randint(3, 9))) for _ in range(200)]
    with open(path, "wb") as f:
        f.truncate(size)
        pos = 0
        while pos < size:
            n = min(size - pos, rng.randint(1, 32) * 64 * 1024)
            kind = rng.random()
            if kind < 0.4:
                if not sparse_zero:
                    f.seek(pos)
                    f.write(bytes(n))
            elif kind < 0.75:
                f.seek(pos)
                f.write(rng.randbytes(n))
            else:
                f.seek(pos)
                buf = bytearray()
                while len(buf) < n:
                    buf += rng.choice(words) + b" "
                f.write(bytes(buf[:n]))
            pos += n
    return path


def mutate(path: Path, regions: int, seed: int = 2, max_len: int = 256 * 1024) -> int:
    """Overwrite ``regions`` random regions (4 KiB..max_len) in place; return bytes rewritten."""
    rng = random.Random(seed)
    size = path.stat().st_size
    total = 0
    with open(path, "r+b") as f:
        for _ in range(regions):
            n = rng.randint(4096, max_len)
            off = rng.randrange(0, max(1, size - n))
            f.seek(off)
            f.write(rng.randbytes(n))
            total += n
    return total


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def differing_bytes(a: Path, b: Path, block: int = 64 * 1024) -> int:
    """Bytes in ``block``-sized blocks that differ between two files (a missing tail counts)."""
    total = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(block)
            y = fb.read(block)
            if not x and not y:
                return total
            if x != y:
                total += max(len(x), len(y))


def assert_same(a: Path, b: Path) -> None:
    assert os.path.getsize(a) == os.path.getsize(b), f"sizes differ: {a} {b}"
    assert sha256(a) == sha256(b), f"{b} differs from {a}"
