"""``migrated version``."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from migrated import __version__
    from migrated.transport.recv import PROTOCOL_VERSION

    if args.json:
        print(json.dumps({"version": __version__, "protocol": PROTOCOL_VERSION}))
    else:
        print(f"migrated {__version__} (protocol {PROTOCOL_VERSION})")
    return 0
