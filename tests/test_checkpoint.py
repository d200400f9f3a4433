"""Checkpoint codec, block planning, size parsing and the token bucket (all pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrated.errors import CheckpointError
from migrated.model.checkpoint import Checkpoint, encode_hashfile_header, hashfile_header_matches
from migrated.model.plan import Kind, Run, parse_size, plan_chunk
from migrated.model.tokenbucket import TokenBucket


def cp(**kw) -> Checkpoint:
    base = dict(source_path="/dev/vdb", source_id="blk:252:16", source_size=10 << 30, target="h:22:/dev/vdb",
                target_id="5:6:64784", block_size=65536, hash_name="xxh3-128", generation="ab" * 16,
                round=2, cursor=1 << 30, dirty_end=2 << 30, zero_from=None)
    base.update(kw)
    return Checkpoint(**base)


def test_roundtrip():
    c = cp()
    assert Checkpoint.decode(c.encode()) == c


@given(st.data())
def test_any_damage_is_detected_or_harmless(data):
    raw = bytearray(cp().encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        got = Checkpoint.decode(bytes(raw))
    except CheckpointError:
        return
    assert got == cp()  # only whitespace changed: the same checkpoint, never a wrong one


@pytest.mark.parametrize("blob,words", [
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "not a migrated checkpoint"),
    (b'{"magic": "other"}', "not a migrated checkpoint"),
])
def test_garbage_rejected(blob, words):
    with pytest.raises(CheckpointError, match=words):
        Checkpoint.decode(blob)


def test_truncated_rejected():
    raw = cp().encode()
    for n in (1, len(raw) // 2, len(raw) - 3):
        with pytest.raises(CheckpointError):
            Checkpoint.decode(raw[:n])


@pytest.mark.parametrize("fields", [dict(cursor=3 << 30, dirty_end=2 << 30), dict(dirty_end=11 << 30),
                                    dict(block_size=1000), dict(generation="short"), dict(round=-1)])
def test_inconsistent_fields_rejected(fields):
    with pytest.raises(CheckpointError):
        Checkpoint.decode(cp(**fields).encode())


def test_foreign_checkpoint_named():
    c = cp()
    assert c.mismatch(source_id="blk:252:16", block_size=65536) is None
    assert "source_id" in c.mismatch(source_id="blk:8:0")


def test_hashfile_header():
    h = encode_hashfile_header("ab" * 16, 65536, "xxh3-128")
    assert len(h) == 64 and hashfile_header_matches(h, "ab" * 16, 65536, "xxh3-128")
    assert not hashfile_header_matches(h, "cd" * 16, 65536, "xxh3-128")
    assert not hashfile_header_matches(h[:10], "ab" * 16, 65536, "xxh3-128")


def test_plan_chunk_coalesces_and_caps():
    s, z, d = b"S" * 16, b"Z" * 16, b"D" * 16
    src = [s, s, z, z, d, d, d, s]
    zero = [False, False, True, True, False, False, False, False]
    tgt = [s, b"x" * 16, b"x" * 16, z, b"y" * 16, b"y" * 16, b"y" * 16, s]
    assert plan_chunk(src, zero, tgt, max_data_blocks=2) == [
        Run(Kind.SAME, 0, 1), Run(Kind.DATA, 1, 1), Run(Kind.ZERO, 2, 1), Run(Kind.SAME, 3, 1),
        Run(Kind.DATA, 4, 2), Run(Kind.DATA, 6, 1), Run(Kind.SAME, 7, 1)]


@pytest.mark.parametrize("text,n", [("4096", 4096), ("64KiB", 65536), ("20MiB", 20 << 20), ("1.5G", 3 << 29),
                                    ("20M/s", 20 << 20), ("1 GiB", 1 << 30)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "abc", "12XB", "-5M"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_token_bucket_rate_and_live_change():
    b = TokenBucket(1000.0, now=0.0, burst=100.0)
    assert b.reserve(100, 0.0) == 0.0  # the burst
    assert b.reserve(1000, 0.0) == pytest.approx(1.0)  # debt paid at the rate
    b.set_rate(10000.0, now=1.0)  # changed while running
    assert b.reserve(1000, 1.0) == pytest.approx(0.1)
    b.set_rate(None, now=2.0)
    assert b.reserve(10**9, 2.0) == 0.0
    assert TokenBucket(0, now=0).rate is None


@given(st.lists(st.integers(1, 50_000), min_size=1, max_size=50), st.floats(1e3, 1e7))
def test_token_bucket_long_run_rate(sizes, rate):
    b = TokenBucket(rate, now=0.0, burst=0.0)
    t = 0.0
    for n in sizes:
        t += b.reserve(n, t)
    assert t == pytest.approx(sum(sizes) / rate, rel=1e-6)


@given(st.lists(st.tuples(st.sampled_from([b"a" * 16, b"b" * 16, b"z" * 16]), st.sampled_from([b"a" * 16, b"z" * 16])),
                max_size=200), st.integers(1, 8))
def test_plan_chunk_partitions_blocks_and_decides_each_right(blocks, cap):
    src = [s for s, _ in blocks]
    zero = [s == b"z" * 16 for s in src]
    tgt = [t for _, t in blocks]
    runs = plan_chunk(src, zero, tgt, max_data_blocks=cap)
    pos = 0
    for i, r in enumerate(runs):
        assert r.first == pos and r.count >= 1
        for b in range(r.first, r.first + r.count):
            want = Kind.SAME if src[b] == tgt[b] else (Kind.ZERO if zero[b] else Kind.DATA)
            assert r.kind is want
        if r.kind is Kind.DATA:
            assert r.count <= cap
        if i and runs[i - 1].kind is r.kind:
            assert r.kind is Kind.DATA and runs[i - 1].count == cap  # split only at the cap
        pos += r.count
    assert pos == len(blocks)
