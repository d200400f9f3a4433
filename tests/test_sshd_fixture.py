"""The loopback sshd fixture is a real, strict SSH server: right keys get in, a wrong host key does not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest

from tests.sshd import LoopbackSshd


async def test_asyncssh_runs_a_command_with_verified_host_key(sshd: LoopbackSshd) -> None:
    assert sshd.host_key_line.startswith("ssh-ed25519 AAAA")
    assert sshd.host_key_line in sshd.known_hosts.read_text()
    async with asyncssh.connect(**sshd.asyncssh_options()) as conn:
        result = await conn.run("echo ok", check=True)
    assert result.stdout == "ok\n"


async def test_asyncssh_rejects_a_wrong_host_key(sshd: LoopbackSshd, tmp_path: Path) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd.host}]:{sshd.port} {impostor}\n")
    options = sshd.asyncssh_options() | {"known_hosts": str(wrong)}
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with asyncssh.connect(**options):
            pass


async def test_unknown_client_key_is_refused(sshd: LoopbackSshd) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    options = sshd.asyncssh_options() | {"client_keys": [stranger]}
    with pytest.raises(asyncssh.PermissionDenied):
        async with asyncssh.connect(**options):
            pass


def test_openssh_client_and_sftp_work(sshd: LoopbackSshd, tmp_path: Path) -> None:
    out = subprocess.run([*sshd.ssh_argv(), "echo", "ok"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"
    local = tmp_path / "up.bin"
    local.write_bytes(b"payload\n")
    remote = tmp_path / "remote.bin"
    sftp = subprocess.run(
        ["sftp", "-b", "-", *sshd.ssh_options(), f"{sshd.user}@{sshd.host}"],
        input=f"put {local} {remote}\n", capture_output=True, text=True, timeout=30,
    )
    assert sftp.returncode == 0, sftp.stderr
    assert remote.read_bytes() == b"payload\n"


async def test_drop_connections_cuts_a_live_session(sshd: LoopbackSshd) -> None:
    async with asyncssh.connect(**sshd.asyncssh_options()) as conn:
        assert (await conn.run("echo before", check=True)).stdout == "before\n"
        assert sshd.drop_connections() >= 1
        with pytest.raises((asyncssh.Error, OSError)):
            await conn.run("echo after", check=True)
    assert sshd.running  # the listener survives: a new connection works
    async with asyncssh.connect(**sshd.asyncssh_options()) as conn:
        assert (await conn.run("echo again", check=True)).stdout == "again\n"


def test_stop_frees_the_port(tmp_path: Path) -> None:
    server = LoopbackSshd(tmp_path / "s").start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    assert not server.running
    out = subprocess.run([*server.ssh_argv(), "true"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 255
    assert port == server.port
