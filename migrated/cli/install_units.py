"""``migrated install-units``: write the systemd units with THIS installation's program paths.

The units in ``systemd/`` name ``/usr/bin/migrated`` (where a distribution package puts it), but
``pip install .`` puts the programs in ``/usr/local/bin``, ``~/.local/bin`` or a venv's ``bin/``. This
command finds the programs of the installed distribution (its RECORD lists the scripts pip wrote),
rewrites ``/usr/bin/<program>`` in each unit, and writes:

* ``<dest>/migrated.service`` and ``<dest>/migrate-console.service`` (default dest ``/etc/systemd/system``);
* ``<dest>/migrated.service.d/cutover.conf`` with ``--cutover`` (continuous tasks: docs/agent.md);
* ``<sysusers-dest>/migrated.conf``, the ``migrated`` user and group (default ``/etc/sysusers.d``).

The unit files come from the wheel's data files (``share/migrated/systemd``), or from the checkout's
``systemd/`` when run from a source tree (then without an installed script a program is started as
``<this python> -m <module>``). ``--prefix P`` says the programs are in ``P/bin`` instead.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

from migrated.errors import UsageError
from migrated.store import atomic_write

DIST = "migrated"
# program -> module run with `python -m` when no installed script is found (a source checkout)
PROGRAMS = {
    "migrated": "migrated.cli.main",
    "migratectl": "migrated.cli.ctl",
    "migrate-console": "migrated.console.cli",
    "migrated-recv": "migrated.transport.recv",
    "migrate-cloud": "migrated.cloud.cli",
}
UNITS = ("migrated.service", "migrate-console.service")
DROP_IN = "cutover.conf"
SYSUSERS = "sysusers.d/migrated.conf"
# directories the units hide from their own processes: a program installed there cannot start
HIDDEN = {
    "migrated.service": ("/home", "/root", "/run/user", "/tmp", "/var/tmp"),  # ProtectHome, PrivateTmp
    "migrate-console.service": ("/home", "/root", "/run/user", "/tmp", "/var/tmp"),
}
_PROGRAM_IN_UNIT = re.compile(r"/usr/bin/(" + "|".join(sorted(map(re.escape, PROGRAMS), key=len, reverse=True))
                              + r")(?![\w-])")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("install-units", help="write the systemd units with this installation's program paths",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", default="/etc/systemd/system", help="where the units go (default %(default)s)")
    p.add_argument("--sysusers-dest", default="/etc/sysusers.d",
                   help="where the sysusers.d file for the migrated user goes (default %(default)s)")
    p.add_argument("--prefix", help="the programs are in PREFIX/bin (default: where this installation put them)")
    p.add_argument("--cutover", action="store_true",
                   help="also install the cutover drop-in (continuous tasks: freeze needs CAP_SYS_ADMIN)")
    p.set_defaults(func=run)


def unit_sources() -> Path:
    """The directory holding the shipped unit files: the checkout's when this code runs from one, else
    the installed distribution's data files."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "systemd" / "migrated.service").is_file():
        return root / "systemd"
    try:
        files = metadata.distribution(DIST).files or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.as_posix().endswith("share/migrated/systemd/migrated.service"):
            return Path(str(f.locate())).parent
    raise UsageError("the unit files are not installed with this copy of migrated (no share/migrated/systemd); "
                     "install from the wheel or the source tree")


def program_commands(prefix: str | None = None) -> dict[str, str]:
    """program -> the command line that starts it, as a unit's Exec*= line wants it."""
    if prefix is not None:
        return {name: _quote(str(Path(prefix) / "bin" / name)) for name in PROGRAMS}
    scripts: dict[str, str] = {}
    try:
        files = metadata.distribution(DIST).files or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.parent.name in ("bin", "Scripts") and f.name in PROGRAMS:
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                scripts[f.name] = _quote(str(path))
    return {name: scripts.get(name) or f"{_quote(sys.executable)} -m {module}" for name, module in PROGRAMS.items()}


def _quote(path: str) -> str:
    if not path.startswith("/"):
        raise UsageError(f"--prefix must be an absolute path, got {path!r}")
    return shlex.quote(path) if re.search(r"[\s\"'\\$;%]", path) else path


def render_unit(text: str, commands: dict[str, str]) -> str:
    """The unit ``text`` with each ``/usr/bin/<program>`` replaced by ``commands[program]``."""
    return _PROGRAM_IN_UNIT.sub(lambda m: commands[m.group(1)], text)


def hidden_from(unit: str, command: str) -> str | None:
    """The directory of ``command`` that ``unit``'s sandbox hides, if any (the unit could not start it)."""
    path = shlex.split(command)[0]
    return next((d for d in HIDDEN.get(unit, ()) if path == d or path.startswith(d + "/")), None)


def install(dest: Path, sysusers_dest: Path, commands: dict[str, str], *, cutover: bool = False) -> list[Path]:
    source = unit_sources()
    written = []
    for unit in UNITS:
        text = render_unit((source / unit).read_text(encoding="utf-8"), commands)
        written.append(_write(dest / unit, text))
    if cutover:
        written.append(_write(dest / "migrated.service.d" / DROP_IN, (source / DROP_IN).read_text(encoding="utf-8")))
    written.append(_write(sysusers_dest / "migrated.conf", (source / SYSUSERS).read_text(encoding="utf-8")))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode(), mode=0o644)
    return path


def run(args: argparse.Namespace) -> int:
    commands = program_commands(args.prefix)
    for path in install(Path(args.dest), Path(args.sysusers_dest), commands, cutover=args.cutover):
        print(f"wrote {path}")
    for unit, program in (("migrated.service", "migrated"), ("migrate-console.service", "migrate-console")):
        hidden = hidden_from(unit, commands[program])
        if hidden:
            print(f"warning: {unit} cannot start {commands[program]}: its sandbox hides {hidden} "
                  "(install into /usr/local, /opt or /usr instead, or use --prefix)", file=sys.stderr)
    print("next: systemd-sysusers; systemctl daemon-reload; then `migrated register` and "
          "`systemctl enable --now migrated` (agent) or `systemctl enable --now migrate-console` (console)")
    return 0
