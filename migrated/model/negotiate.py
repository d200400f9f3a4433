"""What the two ends agree on in the HELLO exchange: the block hash and the codec. Pure: names in,
a name out; no I/O. The codec table itself is ``CODECS`` in ``migrated/transport/recv.py`` (the
receiver must stand alone, so the table lives there); the engine passes its lists in.
"""

from __future__ import annotations

from collections.abc import Sequence

from migrated.errors import ProtocolError, TargetError


def choose_hash(ours: Sequence[str], theirs: Sequence[str], peer: str) -> str:
    """The first of our hashes (best first) the receiver on ``peer`` also computes."""
    for name in ours:
        if name in theirs:
            return name
    raise ProtocolError(f"no common hash with the receiver on {peer} ({list(theirs)})")


def choose_codec(want: str, ours: Sequence[str], theirs: Sequence[str], auto: Sequence[str]) -> str:
    """The codec of WRITE frames. ``want`` is ``auto`` or a codec name; ``ours``/``theirs`` are what each
    end has; ``auto`` the codecs ``auto`` may pick, best first. ``auto`` falls back to ``none`` (every
    receiver has it); a named codec that one end lacks is refused."""
    if want == "auto":
        return next((name for name in auto if name in ours and name in theirs), "none")
    if want in ours and want in theirs:
        return want
    raise TargetError(f"codec {want} is not available on both ends (receiver has {list(theirs)})")
