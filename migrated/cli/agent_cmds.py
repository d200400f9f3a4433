"""The daemon's subcommands of ``migrated``: ``run``, ``register``, ``check``, ``check-config``.

``migrated/cli/main.py`` (the subcommand registry) calls :func:`register` with its
argparse subparsers; each subcommand's handler is ``args.func(args) -> int`` and
may raise :class:`~migrated.errors.MigratedError` (``main()`` maps it to an exit code).
This module is also runnable by itself (``python -m migrated.cli.agent_cmds``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from migrated.agent.console_api import AgentConsole
from migrated.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    load_config,
    load_credentials,
)
from migrated.credentials import Credentials, dump_credentials
from migrated.errors import ExitCode, MigratedError, UsageError
from migrated.store import atomic_write


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=None,
                   help=f"config file (default {DEFAULT_CONFIG_PATH}; missing default file = all defaults)")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add run, register, check, check-config to ``migrated``'s subparsers."""
    p = subparsers.add_parser("check-config", help="validate the config file (for ExecStartPre)")
    _common(p)
    p.set_defaults(func=cmd_check_config)

    p = subparsers.add_parser("run", help="run the agent daemon (what systemd starts)")
    _common(p)
    from migrated.cli.options import add_log_options

    add_log_options(p, subcommand=True)  # override log.level / log.format from the config
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("register", help="register this server with a console (asks for SecretId/SecretKey)")
    _common(p)
    p.add_argument("--console", metavar="URL", help="console endpoint (default: console.endpoint from the config)")
    p.set_defaults(func=cmd_register)

    p = subparsers.add_parser("check", help="run the pre-migration checks on this server")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_check)


add_parser = register  # the name migrated/cli/main.py's SUBCOMMANDS registry calls


@dataclass(frozen=True)
class Preflight:
    """What ``migrated run`` starts with, once :func:`preflight` found nothing it would refuse."""

    store: Any  # AgentStore
    source: Any  # SourceRecord | None: None until ``migrated register``
    endpoint: str | None
    credentials: Credentials | None  # loaded when registered with a console


def preflight(cfg: Config) -> Preflight:
    """Everything ``migrated run`` refuses before it serves, checked without starting anything:
    the credentials of a registered source, the control socket's group. ``check-config`` (the
    unit's ExecStartPre) runs the same function, so a start it passes is not refused for these."""
    from migrated.agent.state import AgentStore
    from migrated.control.server import group_id

    store = AgentStore(cfg.state_dir)
    source = store.load_source()
    endpoint = cfg.console.endpoint or (source.console if source else None)
    creds = load_credentials(cfg) if source is not None and endpoint else None
    group_id(cfg.control.group)
    return Preflight(store, source, endpoint, creds)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    where = args.config or DEFAULT_CONFIG_PATH
    pre = preflight(cfg)
    registered = f"registered as {pre.source.source_id}" if pre.source else "not registered yet"
    print(f"{where}: OK (console {cfg.console.endpoint or 'not set'}, socket {cfg.control.socket}, {registered})")
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
    import time

    from migrated.agent.state import AgentStore

    source = AgentStore(cfg.state_dir).load_source() if os.path.isdir(cfg.state_dir) else None
    endpoint = cfg.console.endpoint or (source.console if source else None)
    if source is None or endpoint is None:
        return None

    async def beat() -> float | None:
        try:
            async with console_client(cfg, endpoint, load_credentials(cfg)) as client:
                sent = time.time()
                r = await AgentConsole(client).heartbeat(source.source_id)
                now = time.time()
        except MigratedError:
            return None
        server = r.get("ServerTime")
        return float(server) - (sent + now) / 2 if isinstance(server, (int, float)) else None

    return asyncio.run(beat())


@contextlib.asynccontextmanager
async def console_client(cfg: Config, endpoint: str, creds: Credentials) -> AsyncIterator[Any]:
    """The console's async client, with TLS as configured (ca_file / verify_tls); closed on exit."""
    import ssl

    import aiohttp

    from migrated.console.client import ConsoleClient

    ssl_ctx: ssl.SSLContext | bool = True
    if cfg.console.ca_file:
        ssl_ctx = ssl.create_default_context(cafile=cfg.console.ca_file)
    elif not cfg.console.verify_tls:
        ssl_ctx = False
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as session:
        yield ConsoleClient(endpoint, creds.secret_id, creds.secret_key, session=session,
                            timeout=cfg.console.timeout)


def _machine_facts() -> tuple[str, str, str]:
    import socket

    machine_id = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            machine_id = open(path).read().strip()  # noqa: SIM115
            if machine_id:
                break
    if not machine_id:
        import uuid

        machine_id = f"mac-{uuid.getnode():012x}"
    os_name = ""
    with contextlib.suppress(OSError):
        for line in open("/etc/os-release"):  # noqa: SIM115
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    return machine_id, socket.gethostname(), os_name


def _ask_credentials(cfg: Config) -> tuple[Credentials, bool]:
    """(credentials, typed) — from the credentials file if it exists, else asked with getpass."""
    import getpass

    from migrated.config import credentials_path

    path = credentials_path(cfg)
    if path.exists():
        return load_credentials(cfg), False
    if not sys.stdin.isatty():
        # scripted use: two lines on stdin (never argv)
        lines = sys.stdin.read().split("\n")
        sid, skey = ([*lines, "", ""])[:2]
    else:
        sid = input("SecretId: ")
        skey = getpass.getpass("SecretKey: ")
    if not sid.strip() or not skey.strip():
        raise UsageError("SecretId and SecretKey are both required (create an agent key in the console: "
                         "migrate-console keys create --role agent)")
    return Credentials(sid.strip(), skey.strip()), True


def _ensure_ssh_identity(cfg: Config, store: Any) -> str:
    """Create the agent's SSH key for targets if missing; return its public key line."""
    import asyncssh

    path = cfg.ssh_identity or str(store.ssh_identity)
    if not os.path.exists(path):
        key = asyncssh.generate_private_key("ssh-ed25519", comment="migrated-agent")
        atomic_write(path, key.export_private_key(), mode=0o600)
        atomic_write(path + ".pub", key.export_public_key(), mode=0o644)
    return asyncssh.read_private_key(path).export_public_key().decode().strip()


def cmd_register(args: argparse.Namespace) -> int:
    from migrated.agent.checks import SystemProbe, migratable_disks
    from migrated.agent.state import AgentStore, SourceRecord

    cfg = load_config(args.config)
    endpoint = args.console or cfg.console.endpoint
    if not endpoint:
        raise UsageError("which console? pass --console https://console:8443 or set console.endpoint in the config")
    creds, typed = _ask_credentials(cfg)
    machine_id, hostname, os_name = _machine_facts()
    disks = [{"Name": d.path, "SizeBytes": d.size, "MountPoints": list(d.mounts), "IsSystem": d.is_system}
             for d in (configured_disks(cfg) or migratable_disks(SystemProbe().disks() or []))]

    async def go() -> dict[str, Any]:
        async with console_client(cfg, endpoint, creds) as client:
            return await AgentConsole(client, agent_version=_version()).register(machine_id, hostname, os_name, disks)

    r = asyncio.run(go())
    source_id = str(r["SourceId"])
    store = AgentStore(cfg.state_dir)
    store.save_source(SourceRecord(source_id=source_id, console=endpoint))
    if typed:
        atomic_write(cfg.credentials_file, dump_credentials(creds), mode=0o600)
    pub = _ensure_ssh_identity(cfg, store)
    _give_to_state_dir_owner(cfg.state_dir)
    print(f"Import source server successfully (source {source_id})")
    print(f"Credentials: {cfg.credentials_file}; state: {cfg.state_dir}")
    print(f"Authorize this key on migration targets (~/.ssh/authorized_keys):\n{pub}")
    return 0


def configured_disks(cfg: Config) -> list[Any]:
    """The disks named in the config (``disks:``), with their sizes; [] when none are named."""
    from migrated.agent.checks import Disk

    out = []
    for path in cfg.disks:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise UsageError(f"disks: cannot open {path}: {e.strerror}") from None
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
        out.append(Disk(path=path, size=size))
    return out


def _give_to_state_dir_owner(state_dir: str) -> None:
    """Run as root while the daemon runs as ``migrated``: hand the new files to the state dir's owner."""
    st = os.stat(state_dir)
    if os.geteuid() != 0 or st.st_uid == 0:
        return
    for root, dirs, files in os.walk(state_dir):
        for name in dirs + files:
            os.chown(os.path.join(root, name), st.st_uid, st.st_gid, follow_symlinks=False)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("migrated")
    except Exception:
        return "0.1.0"


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    from migrated import logs
    from migrated.agent.daemon import Agent
    from migrated.agent.notify import Notifier

    cfg = load_config(args.config)
    logs.configure(getattr(args, "log_level", None) or cfg.log.level,
                   getattr(args, "log_format", None) or cfg.log.format)
    notifier = Notifier.from_environ()
    pre = preflight(cfg)

    async def main_async() -> None:
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            console = None
            if pre.credentials is not None and pre.endpoint:
                client = await stack.enter_async_context(console_client(cfg, pre.endpoint, pre.credentials))
                console = AgentConsole(client, agent_version=_version())
            agent = Agent(cfg, console, pre.store, notifier, ssh_identity=cfg.ssh_identity,
                          recv_command=os.environ.get("MIGRATED_RECV_COMMAND"))
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, agent.stop)
            await agent.run()

    asyncio.run(main_async())
    return 0


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
