"""An in-process asyncssh server on 127.0.0.1 port 0 for the engine tests.

It does what a real sshd does for us: verifies the client key, runs the requested command as a
subprocess (stdin/stdout/stderr redirected to the channel), and serves SFTP chrooted to a "home"
directory that is also the commands' working directory (so a relative upload path and
``python3 .migrated-recv-*.py`` agree, as with OpenSSH). Tests can cut every connection from
the server side (``abort_all``) and kill -9 the receivers it started (``kill_children``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Keys:
    dir: Path
    client_key: Path
    known_hosts: Path
    host_pub: str  # "ssh-ed25519 AAAA..." for --host-key
    wrong_known_hosts: Path  # a known_hosts with another key for the same host
    wrong_client_key: Path


def make_keys(dir: Path) -> tuple[Keys, asyncssh.SSHKey]:
    dir.mkdir(parents=True, exist_ok=True)
    host = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    client = asyncssh.generate_private_key("ssh-ed25519")
    wrong_client = asyncssh.generate_private_key("ssh-ed25519")
    client.write_private_key(dir / "id_client")
    os.chmod(dir / "id_client", 0o600)
    wrong_client.write_private_key(dir / "id_wrong")
    os.chmod(dir / "id_wrong", 0o600)
    client.write_public_key(dir / "authorized_keys")
    pub = host.export_public_key().decode().strip()
    (dir / "known_hosts").write_text(f"[127.0.0.1]:* {pub}\n127.0.0.1 {pub}\n")
    opub = other.export_public_key().decode().strip()
    (dir / "wrong_known_hosts").write_text(f"[127.0.0.1]:* {opub}\n127.0.0.1 {opub}\n")
    keys = Keys(dir=dir, client_key=dir / "id_client", known_hosts=dir / "known_hosts",
                host_pub=" ".join(pub.split()[:2]), wrong_known_hosts=dir / "wrong_known_hosts",
                wrong_client_key=dir / "id_wrong")
    return keys, host


@dataclass
class AsyncSSHD:
    home: Path
    keys: Keys
    host_key: asyncssh.SSHKey
    port: int = 0
    server: asyncssh.SSHAcceptor | None = None
    conns: set = field(default_factory=set)
    children: list[asyncio.subprocess.Process] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    async def start(self) -> AsyncSSHD:
        home = self.home
        sshd = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn):
                sshd.conns.add(conn)

            def connection_lost(self, exc):
                pass

        class SFTP(asyncssh.SFTPServer):
            def __init__(self, chan):
                super().__init__(chan, chroot=str(home).encode())

        self.server = await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[self.host_key],
            authorized_client_keys=str(self.keys.dir / "authorized_keys"),
            process_factory=self._handle, sftp_factory=SFTP, encoding=None,
            keepalive_interval=0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, process: asyncssh.SSHServerProcess) -> None:
        self.commands.append(process.command or "")
        env = dict(os.environ, HOME=str(self.home), XDG_STATE_HOME=str(self.home / ".state"), **self.env)
        proc = await asyncio.create_subprocess_shell(
            process.command or "true", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.home, env=env, start_new_session=True)
        self.children.append(proc)

        async def pump_in() -> None:
            with contextlib.suppress(Exception):
                while data := await process.stdin.read(256 * 1024):
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            with contextlib.suppress(Exception):
                proc.stdin.close()

        async def pump_out(src, dst) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(256 * 1024):
                    dst.write(data)
                    await dst.drain()

        feeder = asyncio.create_task(pump_in())
        await asyncio.gather(pump_out(proc.stdout, process.stdout), pump_out(proc.stderr, process.stderr))
        rc = await proc.wait()
        feeder.cancel()
        with contextlib.suppress(Exception):
            process.exit(rc if rc >= 0 else 128 - rc)

    def abort_all(self) -> None:
        """Cut every client connection from the server side."""
        for c in list(self.conns):
            c.abort()

    def kill_children(self) -> None:
        for p in self.children:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)

    async def stop(self) -> None:
        self.kill_children()
        for c in list(self.conns):
            c.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for p in self.children:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.wait(), 5)
            if p.stdin is not None:  # a handler cancelled before its pump closed it: close it here,
                p.stdin.close()     # or the transport is collected after the loop is gone (a warning)

    def ssh_args(self) -> list[str]:
        """CLI arguments that connect to this server."""
        return ["-i", str(self.keys.client_key), "--known-hosts", str(self.keys.known_hosts)]

    def target(self, path: str | os.PathLike[str]) -> str:
        return f"127.0.0.1:{self.port}:{path}"


@pytest.fixture(name="sshd")
async def asyncssh_server(tmp_path):
    """An in-process asyncssh server on 127.0.0.1 port 0 with fresh keys; stopped after the test.
    A module that imports it gets it as ``sshd`` (in place of the OpenSSH fixture of tests/sshd.py)."""
    keys, host_key = make_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir()
    server = await AsyncSSHD(home=home, keys=keys, host_key=host_key).start()
    try:
        yield server
    finally:
        await server.stop()
