"""The daemon's subcommands of ``migrated``: ``run``, ``register``, ``check``, ``check-config``.

``migrated/cli/main.py`` (the subcommand registry) calls :func:`register` with its
argparse subparsers; each subcommand's handler is ``args.func(args) -> int`` and
may raise :class:`~migrated.errors.MigratedError` (``main()`` maps it to an exit code).
This module is also runnable by itself (``python -m migrated.cli.agent_cmds``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from migrated.config import DEFAULT_CONFIG_PATH, Config, load_config
from migrated.errors import ExitCode, MigratedError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=None,
                   help=f"config file (default {DEFAULT_CONFIG_PATH}; missing default file = all defaults)")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add run, register, check, check-config to ``migrated``'s subparsers."""
    p = subparsers.add_parser("check-config", help="validate the config file (for ExecStartPre)")
    _common(p)
    p.set_defaults(func=cmd_check_config)

    p = subparsers.add_parser("check", help="run the pre-migration checks on this server")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_check)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    where = args.config or DEFAULT_CONFIG_PATH
    print(f"{where}: OK (console {cfg.console.endpoint or 'not set'}, socket {cfg.control.socket})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from migrated.agent.checks import any_failed, results_to_dict, run_checks
    from migrated.cli.ctl import render_checks

    cfg = load_config(args.config)
    results = asyncio.run(run_checks(cfg, clock_skew=_console_clock_skew(cfg)))
    if args.json:
        print(json.dumps(results_to_dict(results), indent=2))
    else:
        render_checks(Console(), results_to_dict(results)["checks"])
    return int(ExitCode.CHECKS_FAILED) if any_failed(results) else 0


def _console_clock_skew(cfg: Config) -> float | None:
    """Console time minus ours, from one heartbeat; None when there is no console to ask."""
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="migrated")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except MigratedError as e:
        print(f"migrated: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
