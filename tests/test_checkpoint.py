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


# -- the resume rules (model/checkpoint.py: begin_run, advance, restart_pass, hashfile_trusted, trusted_entries)

MiB = 1 << 20
SPAN = 4 * MiB  # dirty span in these tables
SIZE = 10 * MiB


def rcp(**kw) -> Checkpoint:
    return cp(**dict(dict(source_size=SIZE, round=1, cursor=0, dirty_end=0, zero_from=None), **kw))


BEGIN_CASES = [
    # (checkpoint fields, expected RunStart fields, expected checkpoint fields after)
    pytest.param({}, dict(start=0, untrusted=(0, 0), resumed=False, new_round=False),
                 dict(round=1, cursor=0, dirty_end=SPAN, zero_from=None), id="fresh"),
    pytest.param(dict(zero_from=0), dict(start=0, untrusted=(0, 0), resumed=False, new_round=False),
                 dict(cursor=0, dirty_end=SPAN, zero_from=SPAN), id="fresh-sparse-target"),
    pytest.param(dict(cursor=3 * MiB, dirty_end=5 * MiB),
                 dict(start=3 * MiB, untrusted=(3 * MiB, 5 * MiB), resumed=True, new_round=False),
                 dict(cursor=3 * MiB, dirty_end=7 * MiB), id="resume-distrusts-the-dirty-window"),
    pytest.param(dict(cursor=1 * MiB, dirty_end=8 * MiB, zero_from=8 * MiB),
                 dict(start=1 * MiB, untrusted=(1 * MiB, 8 * MiB), resumed=True, new_round=False),
                 dict(dirty_end=8 * MiB, zero_from=8 * MiB), id="dirty-window-never-shrinks"),
    pytest.param(dict(cursor=8 * MiB, dirty_end=SIZE),
                 dict(start=8 * MiB, untrusted=(8 * MiB, SIZE), resumed=True, new_round=False),
                 dict(dirty_end=SIZE), id="window-capped-at-the-disk-end"),
    pytest.param(dict(round=3, cursor=SIZE, dirty_end=SIZE, complete=True, zero_from=SIZE),
                 dict(start=0, untrusted=(0, 0), resumed=False, new_round=True),
                 dict(round=4, cursor=0, dirty_end=SPAN, complete=False, zero_from=None), id="complete-next-round"),
]


@pytest.mark.parametrize(("before", "start", "after"), BEGIN_CASES)
def test_begin_run_table(before: dict, start: dict, after: dict) -> None:
    c = rcp(**before)
    got = c.begin_run(SPAN)
    assert {k: getattr(got, k) for k in start} == start
    assert {k: getattr(c, k) for k in after} == after
    Checkpoint.decode(c.encode())  # still a valid checkpoint


ADVANCE_CASES = [
    # (checkpoint fields, pos, expected fields after)
    pytest.param(dict(dirty_end=SPAN), 2 * MiB, dict(cursor=2 * MiB, dirty_end=6 * MiB, complete=False),
                 id="moves-cursor-and-window"),
    pytest.param(dict(dirty_end=SPAN, zero_from=SPAN), 2 * MiB, dict(dirty_end=6 * MiB, zero_from=6 * MiB),
                 id="zero-from-follows-the-window"),
    pytest.param(dict(dirty_end=SIZE, zero_from=SIZE), 8 * MiB, dict(dirty_end=SIZE, zero_from=SIZE),
                 id="zero-from-never-moves-down"),
    pytest.param(dict(cursor=8 * MiB, dirty_end=SIZE), SIZE, dict(cursor=SIZE, dirty_end=SIZE, complete=True),
                 id="end-of-disk-completes"),
]


@pytest.mark.parametrize(("before", "pos", "after"), ADVANCE_CASES)
def test_advance_table(before: dict, pos: int, after: dict) -> None:
    c = rcp(bytes_sent_total=100, **before)
    c.advance(pos, SPAN, 23)
    assert {k: getattr(c, k) for k in after} == after
    assert c.bytes_sent_total == 123
    Checkpoint.decode(c.encode())


def test_restart_pass_goes_back_to_block_zero_in_the_same_round() -> None:
    c = rcp(round=2, cursor=SIZE, dirty_end=SIZE, complete=True, zero_from=SIZE)
    c.restart_pass(SPAN)
    assert (c.round, c.cursor, c.dirty_end, c.complete, c.zero_from) == (2, 0, SPAN, False, SIZE)


@pytest.mark.parametrize(("trusted", "created", "zero_from", "expected"), [
    (True, False, None, True),  # a trusted checkpoint: its hash file holds
    (False, False, None, False),  # nothing known: ask the target about every block
    (False, True, 0, True),  # a target created sparse now: unwritten blocks read as zeros
    (False, False, 0, True),
])
def test_hashfile_trusted(trusted: bool, created: bool, zero_from: int | None, expected: bool) -> None:
    from migrated.model.checkpoint import hashfile_trusted

    assert hashfile_trusted(rcp(zero_from=zero_from), checkpoint_trusted=trusted, target_created=created) is expected


BS = 4096
H_A, H_B = b"a" * 16, b"b" * 16


def zh(length: int) -> bytes:
    return b"z" + length.to_bytes(15, "big")  # stands in for the hash of `length` zero bytes


U = bytes(16)  # UNKNOWN
ENTRY_CASES = [
    # (raw entries, chunk offset in blocks, untrusted in blocks, zero_from in blocks, disk size, expected)
    pytest.param([H_A, H_B], 0, (0, 0), None, 8 * BS, [H_A, H_B], id="trusted-as-is"),
    pytest.param([H_A, U], 0, (0, 0), None, 8 * BS, [H_A, U], id="unknown-is-asked"),
    pytest.param([H_A, H_B, H_A], 0, (1, 2), None, 8 * BS, [H_A, U, H_A], id="untrusted-window-is-asked"),
    pytest.param([U, U], 4, (0, 0), 4, 8 * BS, [zh(BS), zh(BS)], id="never-written-reads-zero"),
    pytest.param([H_A, U, U], 2, (0, 0), 4, 8 * BS, [H_A, U, zh(BS)], id="below-zero-from-stays-unknown"),
    pytest.param([U, U], 6, (6, 7), 6, 8 * BS, [U, zh(BS)], id="untrusted-beats-zero-from"),
    pytest.param([U, U], 6, (0, 0), 0, 7 * BS + 100, [zh(BS), zh(100)], id="short-last-block"),
]


@pytest.mark.parametrize(("raw", "first", "untrusted", "zero_from", "size", "expected"), ENTRY_CASES)
def test_trusted_entries_table(raw, first, untrusted, zero_from, size, expected) -> None:
    from migrated.model.checkpoint import trusted_entries

    off = first * BS
    length = min(len(raw) * BS, size - off)
    got = trusted_entries(b"".join(raw), off, length, block_size=BS, disk_size=size,
                          untrusted=(untrusted[0] * BS, untrusted[1] * BS),
                          zero_from=None if zero_from is None else zero_from * BS, zero_hash=zh)
    assert [got[i:i + 16] for i in range(0, len(got), 16)] == expected


@given(st.data())
def test_trusted_entries_fast_paths_agree_with_the_block_rule(data) -> None:
    """Whatever path trusted_entries takes, its answer is trusted_entry applied block by block."""
    from migrated.model.checkpoint import trusted_entries, trusted_entry

    blocks = data.draw(st.integers(1, 24), label="disk blocks")
    tail = data.draw(st.sampled_from([BS, 1, 100, BS - 1]), label="last block length")
    size = (blocks - 1) * BS + tail
    first = data.draw(st.integers(0, blocks - 1), label="chunk start block")
    n = data.draw(st.integers(1, blocks - first), label="chunk blocks")
    off, length = first * BS, min(n * BS, size - first * BS)
    # entries from a small alphabet so UNKNOWN, zero hashes and runs of them are common;
    # "half" entries put 8 zero bytes at an edge so UNKNOWN can appear across two entries
    alphabet = [U, H_A, H_B, zh(BS), bytes(8) + b"c" * 8, b"d" * 8 + bytes(8)]
    raw = b"".join(data.draw(st.lists(st.sampled_from(alphabet), min_size=n, max_size=n), label="raw"))
    lo = data.draw(st.integers(0, blocks), label="untrusted lo") * BS
    hi = data.draw(st.integers(lo // BS, blocks), label="untrusted hi") * BS
    zero_from = data.draw(st.one_of(st.none(), st.integers(0, blocks).map(lambda b: b * BS)), label="zero_from")
    got = trusted_entries(raw, off, length, block_size=BS, disk_size=size, untrusted=(lo, hi),
                          zero_from=zero_from, zero_hash=zh)
    want = b"".join(trusted_entry(raw[i * 16:(i + 1) * 16], off + i * BS, min(BS, size - off - i * BS), (lo, hi),
                                  zero_from, zh) for i in range(n))
    assert got == want
