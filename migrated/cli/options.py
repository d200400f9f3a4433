"""The options every program takes the same way: ``--log-level``, ``--log-format``, ``--version``.

Each program's ``build_parser()`` calls :func:`add_common_options`; its ``main()`` calls
:func:`configure_logging` with the program's fallbacks (a config file's ``log:`` section, where the
program has one, sits between the command line and the fallback). The formats and levels are the
ones the YAML's ``log:`` section takes (``migrated.config.LogFormat`` / ``LogLevel``), ``journald``
included.
"""

from __future__ import annotations

import argparse
from typing import get_args

from migrated import __version__
from migrated.config import LogFormat, LogLevel

LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)


def add_log_options(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """``--log-level`` / ``--log-format``; None unless given, so a config file can fill them in.

    ``subcommand``: the same options again on a subcommand, so they are accepted after it too; they
    are then left out of the namespace unless given, not to overwrite what came before the subcommand."""
    default = argparse.SUPPRESS if subcommand else None
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=default,
                        help="log level: " + ", ".join(LOG_LEVELS))
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=default,
                        help="log format: auto (journald under systemd, console on a tty, else json), console, "
                             "json (one object a line), journald (native journal fields)")


def add_common_options(parser: argparse.ArgumentParser, *, version_detail: str = "") -> None:
    """``--version`` plus the log options, on a program's top-level parser."""
    detail = f" ({version_detail})" if version_detail else ""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}{detail}")
    add_log_options(parser)


def configure_logging(args: argparse.Namespace, *, level: str, fmt: str) -> None:
    """Configure logging from the command line, else from ``level``/``fmt`` (the program's defaults)."""
    from migrated import logs

    logs.configure(getattr(args, "log_level", None) or level, getattr(args, "log_format", None) or fmt)
