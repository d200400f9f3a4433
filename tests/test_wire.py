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
