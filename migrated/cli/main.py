"""``migrated``: the agent program. Subcommands are modules listed in ``SUBCOMMANDS``; each has
``add_parser(subparsers)`` that registers its arguments and sets ``func(args) -> int``.
Add a subcommand by writing such a module and listing it here.

Only this ``main()`` turns errors into exit codes (docs/exit-codes.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from migrated.cli.options import add_common_options, configure_logging
from migrated.errors import MigratedError

SUBCOMMANDS: list[str] = [
    "migrated.cli.sync_cmd",
    "migrated.cli.version_cmd",
    "migrated.cli.agent_cmds",
    "migrated.cli.thaw_cmd",
    "migrated.cli.install_units",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="migrated", description="migrated agent: move disks to another host over SSH")
    from migrated.transport.recv import PROTOCOL_VERSION

    # default warning / console; `run` takes log.level / log.format from the config file instead
    add_common_options(parser, version_detail=f"protocol {PROTOCOL_VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(args, level="warning", fmt="console")
        return int(args.func(args))
    except MigratedError as e:
        print(f"migrated: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print("migrated: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
