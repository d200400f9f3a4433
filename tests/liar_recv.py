"""A receiver that lies, for tests: the real receiver with one answer falsified.

Usage: python3 liar_recv.py MODE, MODE one of
  hash-len     HASHES answer one hash short
  hash-offset  HASHES answer for another offset
  flush-seq    FLUSHED acknowledges another sequence number
  big-frame    a frame header announcing more than the cap
  opened-junk  OPENED without the fields the agent needs
  extra-frame  an unsolicited frame after OPENED
  version      HELLO_OK with another protocol version
  garbage      random bytes instead of the first HASHES answer
  hang         never answers a FLUSH (a stuck target disk)
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrated.transport import recv as wire

MODE = sys.argv[1]


class Liar(wire.Receiver):
    def send(self, frame: bytes, fsync: bool = False) -> None:
        ftype, _ = wire.HEADER.unpack_from(frame)
        payload = frame[wire.HEADER.size:]
        if MODE == "hash-len" and ftype == wire.T_HASHES:
            frame = wire.pack_frame(ftype, payload[:-wire.HASH_LEN])
        elif MODE == "hash-offset" and ftype == wire.T_HASHES:
            off, length = wire.RANGE.unpack_from(payload)
            frame = wire.pack_frame(ftype, wire.RANGE.pack(off + 65536, length) + payload[wire.RANGE.size:])
        elif MODE == "flush-seq" and ftype == wire.T_FLUSHED:
            frame = wire.pack_frame(ftype, wire.SEQ.pack(wire.SEQ.unpack(payload)[0] + 7))
        elif MODE == "big-frame" and ftype == wire.T_OPENED:
            frame = struct.pack(">BI", wire.T_OPENED, wire.MAX_PAYLOAD + 1)
        elif MODE == "opened-junk" and ftype == wire.T_OPENED:
            frame = wire.pack_json(ftype, {"size": "lots"})
        elif MODE == "extra-frame" and ftype == wire.T_OPENED:
            frame = frame + wire.pack_frame(wire.T_FLUSHED, wire.SEQ.pack(99))
        elif MODE == "hang" and ftype == wire.T_FLUSHED:
            import time

            time.sleep(3600)
        elif MODE == "garbage" and ftype == wire.T_HASHES:
            import random

            frame = random.Random(3).randbytes(4096)
        elif MODE == "version" and ftype == wire.T_HELLO_OK:
            frame = wire.pack_json(ftype, {"magic": wire.MAGIC, "version": 99, "hashes": [], "codecs": []})
        super().send(frame, fsync)


if __name__ == "__main__":
    sys.stdout = sys.stderr
    liar = Liar(sys.stdin.buffer, sys.__stdout__.buffer)
    try:
        raise SystemExit(liar.run())
    except wire.Fail as e:
        liar.fail(wire.pack_json(wire.T_ERROR, {"kind": e.kind, "message": e.message}))
        raise SystemExit(2) from None
