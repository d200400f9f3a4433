"""Every program takes --version, --log-level and --log-format (journald included) the same way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from migrated import __version__
from migrated.cli import ctl
from migrated.cli import main as agent_main
from migrated.cli.options import LOG_FORMATS, LOG_LEVELS
from migrated.cloud import cli as cloud_cli
from migrated.config import LogFormat
from migrated.console import cli as console_cli
from tests.conftest import cli, repo_env

PROGRAMS = {
    "migrated": cli("migrated"),
    "migratectl": cli("migratectl"),
    "migrate-console": cli("migrate-console"),
    "migrate-cloud": [sys.executable, "-m", "migrated.cloud.cli"],
}
# a program's parser and the smallest command line it accepts
PARSERS = {
    "migrated": (agent_main.build_parser, ["version"]),
    "migratectl": (ctl.build_parser, ["status"]),
    "migrate-console": (console_cli.build_parser, ["check-config", "--config", "c.yaml"]),
    "migrate-cloud": (cloud_cli.build_parser, ["check", "--region", "ap-guangzhou"]),
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_version(program: str) -> None:
    r = subprocess.run([*PROGRAMS[program], "--version"], env=repo_env(), capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{program} {__version__}"), r.stdout


def test_the_command_line_takes_the_formats_the_yaml_takes() -> None:
    assert set(LOG_FORMATS) == {"auto", "console", "json", "journald"} == set(LogFormat.__args__)
    assert LOG_LEVELS == ("debug", "info", "warning", "error")


@pytest.mark.parametrize("program", sorted(PARSERS))
@pytest.mark.parametrize("fmt", ["auto", "console", "json", "journald"])
def test_log_options_on_every_program(program: str, fmt: str) -> None:
    build, rest = PARSERS[program]
    args = build().parse_args(["--log-level", "debug", "--log-format", fmt, *rest])
    assert (args.log_level, args.log_format) == ("debug", fmt)
    args = build().parse_args(rest)
    assert (args.log_level, args.log_format) == (None, None)  # unset: the config file or the default decides


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_bad_log_format_is_a_usage_error(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    build, rest = PARSERS[program]
    with pytest.raises(SystemExit) as info:
        build().parse_args(["--log-format", "xml", *rest])
    assert info.value.code == 2
    assert "journald" in capsys.readouterr().err  # the choices are listed


@pytest.mark.parametrize(("build", "argv"), [
    (agent_main.build_parser, ["run", "--config", "m.yaml"]),
    (console_cli.build_parser, ["serve", "--config", "c.yaml"]),
])
def test_daemons_take_log_options_before_or_after_the_subcommand(build, argv) -> None:
    before = build().parse_args(["--log-format", "journald", "--log-level", "debug", *argv])
    after = build().parse_args([*argv, "--log-format", "journald", "--log-level", "debug"])
    assert (before.log_format, before.log_level) == (after.log_format, after.log_level) == ("journald", "debug")
    assert (build().parse_args(argv).log_format, build().parse_args(argv).log_level) == (None, None)


def test_migrated_journald_format_on_the_command_line() -> None:
    """Before: `migrated --log-format journald` was refused (choices console, json)."""
    r = subprocess.run([*cli("migrated"), "--log-format", "journald", "--log-level", "info", "version"],
                       env=repo_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("migrated ")
