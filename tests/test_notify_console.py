"""The console under systemd's Type=notify: READY=1 once it listens, STOPPING=1 on SIGTERM, sent to our own
NOTIFY_SOCKET datagram socket (as tests/test_notify.py does for the agent)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

from tests.conftest import cli, repo_env
from tests.console_proc import write_config


def receive(s: socket.socket) -> dict[str, str]:
    data = s.recv(4096).decode()  # the socket's timeout bounds the wait
    return dict(line.split("=", 1) for line in data.split("\n") if line)


def test_ready_when_listening_and_stopping_on_sigterm(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "console.db", log={"format": "console"})
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(address)
        s.settimeout(30)
        proc = subprocess.Popen([*cli("migrate-console"), "--log-format", "json", "serve", "--config", str(config)],
                                env=repo_env(NOTIFY_SOCKET=address), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            ready = receive(s)
            assert ready["READY"] == "1"
            url = ready["STATUS"].removeprefix("listening on ")
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url + "/healthz", timeout=10) as r:  # READY means it answers
                assert r.status == 200
            proc.send_signal(signal.SIGTERM)
            assert receive(s)["STOPPING"] == "1"
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, err
    # --log-format json (before the subcommand) wins over the file's log.format: one JSON object a line
    lines = [json.loads(line) for line in err.splitlines()]
    assert {"console listening", "console stopping"} <= {line["event"] for line in lines}


def test_check_config(tmp_path: Path) -> None:
    """migrate-console check-config (the unit's ExecStartPre) refuses what serve would refuse."""
    good = write_config(tmp_path, tmp_path / "console.db")
    r = subprocess.run([*cli("migrate-console"), "check-config", "--config", str(good)], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  prot: 1\n")
    r = subprocess.run([*cli("migrate-console"), "check-config", "--config", str(bad)], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "line 2, column 3: listen.prot: unknown key" in r.stderr
    tls = tmp_path / "tls.yaml"
    tls.write_text(f"listen:\n  tls:\n    cert_file: {tmp_path}/none.crt\n    key_file: {tmp_path}/none.key\n")
    r = subprocess.run([*cli("migrate-console"), "check-config", "--config", str(tls)], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "listen.tls: cannot load" in r.stderr
    (tmp_path / "afile").write_text("")
    db = write_config(tmp_path, tmp_path / "afile" / "console.db")
    r = subprocess.run([*cli("migrate-console"), "check-config", "--config", str(db)], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"storage.path: {tmp_path / 'afile'} is not a directory" in r.stderr
    # plain HTTP beyond loopback is allowed (a TLS proxy may be in front) but said
    (tmp_path / "wide").mkdir()
    wide = write_config(tmp_path / "wide", tmp_path / "console.db", listen={"host": "0.0.0.0", "port": 8930})
    r = subprocess.run([*cli("migrate-console"), "check-config", "--config", str(wide)], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "warning: listen.host 0.0.0.0 serves plain HTTP beyond this machine; set listen.tls" in r.stderr
    loopback = write_config(tmp_path, tmp_path / "console.db")
    r = subprocess.run([*cli("migrate-console"), "check-config", "--config", str(loopback)], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "warning" not in r.stderr
    # root may "access" /proc, yet nothing can be created there: check-config must say so, as serve would fail
    db = write_config(tmp_path, Path("/proc/nope/console.db"))
    r = subprocess.run([*cli("migrate-console"), "check-config", "--config", str(db)], env=repo_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "storage.path: cannot create files in /proc, so /proc/nope/console.db cannot be created" in r.stderr
