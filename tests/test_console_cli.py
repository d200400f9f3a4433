"""migrate-console as a user runs it: `serve` as a real process, the admin subcommands as
real processes talking to it through the signed API."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from migrated.console.client import ConsoleClient
from tests.conftest import repo_env
from tests.console_proc import ConsoleProcess, run_cli, write_config
from tests.console_support import HOST_KEY, register


@pytest.fixture
def served(tmp_path):
    cfg = write_config(tmp_path, tmp_path / "db" / "console.db")
    proc = ConsoleProcess(cfg, tmp_path / "console.log").start()
    creds = tmp_path / "admin.yaml"
    r = run_cli("keys", "create", "--local", "--config", str(cfg), "--role", "admin", "--name", "ops",
                "--save", str(creds), "--endpoint", proc.url)
    assert r.returncode == 0, r.stderr
    assert "SecretKey:" in r.stdout and oct(creds.stat().st_mode & 0o777) == "0o600"
    try:
        yield proc, creds, cfg
    finally:
        assert proc.stop() == 0


def ok(*args: str, env=None) -> str:
    r = run_cli(*args, env=env)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_admin_workflow(served, tmp_path):
    proc, creds, _ = served
    c = ["--credentials", str(creds)]
    assert (tmp_path / "db" / "console.db").stat().st_mode & 0o077 == 0, "the database holds keys: private"
    agent_key = json.loads(ok("keys", "create", "--role", "agent", "--name", "fleet", "--json", *c))
    assert agent_key["Role"] == "agent"
    listing = ok("keys", "list", *c)
    assert "fleet" in listing and "ops" in listing and agent_key["SecretKey"] not in listing

    async def agent_registers() -> str:
        async with ConsoleClient(proc.url, agent_key["SecretId"], agent_key["SecretKey"]) as a:
            src = await register(a, "web01")
            await a.call("Heartbeat", {"SourceId": src})
            return src

    src = asyncio.run(agent_registers())
    out = ok("sources", *c)
    assert src in out and "online" in out and "web01.example" in out
    (s,) = json.loads(ok("sources", "--json", *c))["SourceSet"]
    assert s["SourceId"] == src and s["Status"] == "online"

    created = json.loads(ok("tasks", "create", "--source", src, "--name", "web01", "--region", "ap-guangzhou",
                            "--target-type", "instance", "--target-instance", "ins-abc12345",
                            "--target-ssh", "root@203.0.113.7:22", "--target-host-key", HOST_KEY,
                            "--bandwidth-limit", "20480", "--checksum", "--disk", "/dev/vda=/dev/vda",
                            "--json", *c))
    tid = created["TaskId"]
    assert created["State"] == "created"
    assert tid in ok("tasks", "list", *c)
    (t,) = json.loads(ok("tasks", "list", "--state", "created", "--json", *c))["TaskSet"]
    assert t["DiskMapping"] == [{"Source": "/dev/vda", "Target": "/dev/vda"}]
    shown = ok("tasks", "show", tid, *c)
    assert "20.0 MiB/s" in shown and "/dev/vda -> /dev/vda" in shown and "start, delete" in shown

    r = run_cli("tasks", "pause", tid, *c)
    assert r.returncode == 2 and "pause is allowed when syncing, transferring" in r.stderr
    r = run_cli("tasks", "cutover", tid, *c)
    assert r.returncode == 2 and "cutover is allowed when syncing" in r.stderr
    assert "queued" in ok("tasks", "start", tid, *c)
    assert "1.0 MiB/s" in ok("tasks", "set-bandwidth", tid, "1024", *c)  # a bare number is KB/s, as before
    events = ok("tasks", "events", tid, *c)
    assert "start by ops" in events and "20.0 MiB/s -> 1.0 MiB/s" in events
    out = ok("tasks", "set-bandwidth", tid, "160Mbit", *c)  # any unit: 20e6 B/s = 19531 KB/s
    assert "19.1 MiB/s" in out
    assert json.loads(ok("tasks", "show", tid, "--json", *c))["BandwidthLimitKBps"] == 19531
    assert json.loads(ok("tasks", "set-bandwidth", tid, "20MiB/s", "--json", *c))["BandwidthLimitKBps"] == 20480
    r = run_cli("tasks", "set-bandwidth", tid, "fast", *c)
    assert r.returncode == 2 and "'fast' is not a rate" in r.stderr and "20MiB/s, 20480K, 160Mbit" in r.stderr

    r = run_cli("tasks", "delete", tid, *c)
    assert r.returncode == 2 and "delete is allowed when" in r.stderr
    r = run_cli("sources", "remove", src, *c)
    assert r.returncode == 2 and "unfinished task" in r.stderr  # ResourceInUse: USAGE (docs/exit-codes.md)
    r = run_cli("keys", "revoke", agent_key["SecretId"], *c)
    assert r.returncode == 0 and "revoked" in r.stdout

    later = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 120))
    r = run_cli("tasks", "create", "--source", src, "--name", "x", "--region", "ap-guangzhou", "--target-type",
                "image", "--image-name", "img", "--target-ssh", "root@h", "--target-host-key", HOST_KEY,
                "--schedule", later, *c)
    assert r.returncode == 2 and "ScheduledStartTime" in r.stderr and "10 minutes" in r.stderr

    # the exit code follows the console's error code (docs/exit-codes.md): bad arguments are USAGE, not CONNECTION
    r = run_cli("tasks", "create", "--source", src, "--name", "x", "--region", "ap-guangzhou", "--target-type",
                "image", "--image-name", "img", "--target-ssh", "root@h", "--target-host-key", "garbage key line", *c)
    assert r.returncode == 2 and "InvalidParameterValue" in r.stderr and "TargetHostKey" in r.stderr, r.stderr
    r = run_cli("tasks", "show", "task-nope", *c)
    assert r.returncode == 2 and "ResourceNotFound.Task" in r.stderr and "task-nope" in r.stderr, r.stderr
    r = run_cli("tasks", "start", "task-nope", *c)
    assert r.returncode == 2 and "ResourceNotFound.Task" in r.stderr, r.stderr


def test_credentials_from_env_and_refusals(served, tmp_path):
    proc, creds, _ = served
    import yaml

    doc = yaml.safe_load(creds.read_text())
    env = repo_env(MIGRATE_CONSOLE_SECRET_ID=doc["secret_id"], MIGRATE_CONSOLE_SECRET_KEY=doc["secret_key"],
                   MIGRATE_CONSOLE_ENDPOINT=proc.url, HOME=str(tmp_path))
    assert "ops" in ok("keys", "list", env=env)

    env_none = repo_env(HOME=str(tmp_path), MIGRATE_CONSOLE_ENDPOINT=proc.url)
    for k in ("MIGRATE_CONSOLE_SECRET_ID", "MIGRATE_CONSOLE_SECRET_KEY", "MIGRATE_CONSOLE_CREDENTIALS"):
        env_none.pop(k, None)
    r = run_cli("keys", "list", env=env_none)
    assert r.returncode == 2 and "no console credentials" in r.stderr

    loose = tmp_path / "loose.yaml"
    loose.write_text(creds.read_text())
    os.chmod(loose, 0o644)
    r = run_cli("keys", "list", "--credentials", str(loose), env=env_none)
    assert r.returncode == 2 and "chmod 600" in r.stderr

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**doc, "secret_key": "nope"}))
    os.chmod(wrong, 0o600)
    r = run_cli("keys", "list", "--credentials", str(wrong), env=env_none)
    assert r.returncode == 3 and "AuthFailure.SignatureFailure" in r.stderr and "nope" not in r.stderr

    r = run_cli("keys", "list", "--credentials", str(creds), "--endpoint", "http://127.0.0.1:9", env=env_none)
    assert r.returncode == 3 and "127.0.0.1:9" in r.stderr


def test_serve_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  prot: 80\n")
    r = run_cli("serve", "--config", str(bad))
    assert r.returncode == 2 and "listen.prot: unknown key" in r.stderr


def _self_signed(tmp_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "console.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_file, 0o600)
    return cert_file, key_file


def test_serve_https_with_our_client_and_the_sdk(tmp_path):
    import ssl

    import aiohttp
    import yaml
    from tencentcloud.common import credential
    from tencentcloud.common.common_client import CommonClient
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile

    cert_file, key_file = _self_signed(tmp_path)
    cfg = write_config(tmp_path, tmp_path / "console.db",
                       listen={"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}})
    creds = tmp_path / "admin.yaml"
    assert run_cli("keys", "create", "--local", "--config", str(cfg), "--role", "admin", "--name", "ops",
                   "--save", str(creds)).returncode == 0
    a = yaml.safe_load(creds.read_text())
    proc = ConsoleProcess(cfg, tmp_path / "console.log").start()
    try:
        assert proc.url.startswith("https://127.0.0.1:")

        async def ours() -> dict:
            ctx = ssl.create_default_context(cafile=str(cert_file))
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s, \
                    ConsoleClient(proc.url, a["secret_id"], a["secret_key"], session=s) as c:
                return await c.call("DescribeKeys", {})

        assert asyncio.run(ours())["TotalCount"] == 1
        hp = HttpProfile(protocol="https", endpoint=proc.url.removeprefix("https://"), certification=str(cert_file))
        sdk = CommonClient("migrate", "2026-11-01", credential.Credential(a["secret_id"], a["secret_key"]),
                           "ap-guangzhou", profile=ClientProfile(httpProfile=hp))
        assert sdk.call_json("DescribeSources", {})["Response"]["TotalCount"] == 0
        # without the CA the client refuses the console: a ConnectionFailed, not a silent downgrade
        r = run_cli("keys", "list", "--credentials", str(creds), "--endpoint", proc.url)
        assert r.returncode == 3 and "certificate" in r.stderr.lower()
    finally:
        assert proc.stop() == 0
