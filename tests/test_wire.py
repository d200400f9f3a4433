"""Wire framing (migrated/transport/recv.py is its one source of truth) and target parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrated.errors import UsageError
from migrated.transport import recv as wire
from migrated.transport.ssh import parse_target


@given(st.integers(0, 255), st.binary(max_size=4096))
def test_frame_roundtrip(ftype, payload):
    frame = wire.pack_frame(ftype, payload)
    t, n = wire.parse_header(frame[:wire.HEADER.size])
    assert (t, frame[wire.HEADER.size:]) == (ftype, payload) and n == len(payload)


def test_frame_cap_enforced_both_ways():
    with pytest.raises(ValueError):
        wire.pack_frame(wire.T_WRITE, bytes(wire.MAX_PAYLOAD + 1))
    with pytest.raises(ValueError, match="cap"):
        wire.parse_header(wire.HEADER.pack(wire.T_WRITE, wire.MAX_PAYLOAD + 1))


def test_hashes_and_codecs_offered_in_preference_order():
    assert wire.available_hashes()[-1] == "blake2b-128"  # stdlib fallback always there
    assert "zlib" in wire.available_codecs() and "none" in wire.available_codecs()
    for name in wire.available_hashes():
        assert len(wire.hasher(name)(b"x" * 100)) == wire.HASH_LEN


@pytest.mark.parametrize("spec,expected", [
    ("host:/dev/vdb", (None, "host", 22, "/dev/vdb")),
    ("root@10.0.0.5:/dev/vdb", ("root", "10.0.0.5", 22, "/dev/vdb")),
    ("backup@host:2222:/srv/images/a.img", ("backup", "host", 2222, "/srv/images/a.img")),
    ("[::1]:2222:/x.img", (None, "::1", 2222, "/x.img")),
    ("u@[fe80::1]:/x", ("u", "fe80::1", 22, "/x")),
    ("host:relative.img", (None, "host", 22, "relative.img")),
])
def test_parse_target(spec, expected):
    assert parse_target(spec) == expected


@pytest.mark.parametrize("spec", ["nohost", ":/x", "host:", "@host:/x", "host:70000:/x", "[::1/x"])
def test_parse_target_rejects(spec):
    with pytest.raises(UsageError):
        parse_target(spec)


# -- the codec table (recv.CODECS) and negotiation (model/negotiate.py) -------------------------

@pytest.mark.parametrize("codec", wire.CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("data", [b"", b"x", bytes(65536), b"migrated " * 10000, bytes(range(256)) * 64])
def test_every_codec_in_the_table_round_trips(codec, data):
    # every codec's library is a dependency of the install the tests run from: a missing one is a broken install
    assert codec.available, f"{codec.name} is not importable here (pip install -e '.[test]')"
    payload = codec.compress(memoryview(data))
    assert bytes(codec.decompress(payload, len(data))) == data


def test_codec_table_is_consistent():
    ids = [c.wire_id for c in wire.CODECS]
    assert len(set(ids)) == len(ids) and wire.CODEC_BY_ID[0].name == "none"  # 0: raw payload, always there
    assert wire.available_codecs() == [c.name for c in wire.CODECS if c.available]
    assert wire.compress_choices() == ["auto", *wire.codec_names()]
    assert set(wire.auto_codecs()) <= set(wire.codec_names())


def test_cli_and_options_take_their_codec_choices_from_the_table():
    import argparse

    from migrated.cli import sync_cmd
    from migrated.engine.sync import SyncOptions

    parser = argparse.ArgumentParser()
    sync_cmd.add_parser(parser.add_subparsers())
    for name in wire.compress_choices():
        assert parser.parse_args(["sync", "a.img", "h:/b", "--compress", name]).compress == name
    with pytest.raises(SystemExit):
        parser.parse_args(["sync", "a.img", "h:/b", "--compress", "lz4"])
    for name in wire.compress_choices():
        SyncOptions(compress=name).validate()
    with pytest.raises(UsageError, match="choose auto, zstd, zlib or none"):
        SyncOptions(compress="lz4").validate()


@pytest.mark.parametrize(("want", "ours", "theirs", "expected"), [
    ("auto", ["zstd", "zlib", "none"], ["zstd", "zlib", "none"], "zstd"),
    ("auto", ["zstd", "zlib", "none"], ["zlib", "none"], "none"),  # auto never picks zlib
    ("auto", ["zlib", "none"], ["zstd", "zlib", "none"], "none"),
    ("zlib", ["zstd", "zlib", "none"], ["zlib", "none"], "zlib"),
    ("none", ["none"], ["none"], "none"),
])
def test_choose_codec(want, ours, theirs, expected):
    from migrated.model.negotiate import choose_codec

    assert choose_codec(want, ours, theirs, ["zstd"]) == expected


def test_choose_codec_refuses_a_named_codec_one_end_lacks():
    from migrated.errors import TargetError
    from migrated.model.negotiate import choose_codec

    with pytest.raises(TargetError, match=r"codec zstd is not available on both ends \(receiver has \['zlib'"):
        choose_codec("zstd", ["zstd", "zlib", "none"], ["zlib", "none"], ["zstd"])


def test_choose_hash_prefers_ours_in_order():
    from migrated.errors import ProtocolError
    from migrated.model.negotiate import choose_hash

    assert choose_hash(["xxh3-128", "blake2b-128"], ["blake2b-128", "xxh3-128"], "h") == "xxh3-128"
    assert choose_hash(["xxh3-128", "blake2b-128"], ["blake2b-128"], "h") == "blake2b-128"
    with pytest.raises(ProtocolError, match="no common hash with the receiver on u@h:22"):
        choose_hash(["xxh3-128"], ["md5"], "u@h:22")
