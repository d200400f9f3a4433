"""The console's config and its pure signing code (no network)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from migrated.console.config import load_config, parse_config
from migrated.errors import ConfigError
from migrated.model import tc3

REPO = Path(__file__).resolve().parent.parent


def test_sample_config_parses():
    cfg = load_config(REPO / "etc" / "console.yaml")
    assert cfg.listen.host == "127.0.0.1" and cfg.listen.port == 8930  # was 0.0.0.0 (issue 10: plain HTTP)
    assert cfg.storage.path == "/var/lib/migrate-console/console.db"
    assert cfg.agents.heartbeat_interval_seconds == 10 and cfg.agents.offline_after_missed == 3
    assert cfg.scheduler.min_lead_seconds == 600
    assert parse_config({}) == parse_config(None)


@pytest.mark.parametrize(("data", "needle"), [
    ({"listen": {"prot": 1}}, "listen.prot: unknown key"),
    ({"listen": {"port": "80"}}, "listen.port"),
    ({"listen": {"port": 70000}}, "listen.port"),
    ({"agents": {"max_wait_seconds": 60}}, "agents.max_wait_seconds"),
    ({"storage": {"backend": "mysql"}}, "storage.backend"),
    ({"log": {"level": "loud"}}, "log.level"),
    ({"listen": {"tls": {"cert_file": "/x"}}}, "listen.tls.key_file"),
    ([1, 2], "top level must be a mapping"),
])
def test_bad_config_names_the_key(data, needle):
    with pytest.raises(ConfigError) as ei:
        parse_config(data)
    assert needle in str(ei.value)


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("listen: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_our_signature_is_the_sdks_signature():
    """The server's verifier must accept what the official SDK signs: compute the SDK's own
    signature for a request and ours for the same inputs."""
    client = CommonClient("migrate", "2026-11-01", credential.Credential("AKIDx", "secret"), "ap-guangzhou",
                          profile=ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint="127.0.0.1:8930")))
    params = {"SourceId": "src-1", "Disks": [{"Name": "/dev/vda", "SizeBytes": 1}], "Text": "中文"}
    req = RequestInternal("127.0.0.1:8930", "POST", "/", header={})
    client._build_req_with_tc3_signature("Heartbeat", params, req)
    auth = tc3.parse_authorization(req.header["Authorization"])
    assert (auth.secret_id, auth.service, auth.signed_headers) == ("AKIDx", "migrate", ("content-type", "host"))
    headers = {k.lower(): v for k, v in req.header.items()}
    ours = tc3.signature("secret", timestamp=req.header["X-TC-Timestamp"], date=auth.date, service="migrate",
                         method="POST", path="/", query="", headers=headers, signed_headers=auth.signed_headers,
                         body=req.data.encode())
    assert ours == auth.signature
    assert tc3.signature("secreT", timestamp=req.header["X-TC-Timestamp"], date=auth.date, service="migrate",
                         method="POST", path="/", query="", headers=headers, signed_headers=auth.signed_headers,
                         body=req.data.encode()) != auth.signature


def test_sign_headers_round_trip():
    body = json.dumps({"A": 1}).encode()
    ts = int(time.time())
    h = tc3.sign_headers(secret_id="AKIDx", secret_key="k", service="migrate", host="h:1", action="Heartbeat",
                         version="v", timestamp=ts, body=body, nonce="n1")
    auth = tc3.parse_authorization(h["Authorization"])
    assert auth.signed_headers == ("content-type", "host", "x-tc-action", "x-tc-nonce")
    lower = {k.lower(): v for k, v in h.items()}
    sig = tc3.signature("k", timestamp=ts, date=tc3.utc_date(ts), service="migrate", method="POST", path="/",
                        query="", headers=lower, signed_headers=auth.signed_headers, body=body)
    assert tc3.signatures_equal(sig, auth.signature)


@pytest.mark.parametrize("value", [
    "", "Basic abc", "TC3-HMAC-SHA256 Credential=a/b/c, SignedHeaders=content-type;host, Signature=" + "0" * 64,
    "TC3-HMAC-SHA256 Credential=a/2026-01-01/svc/tc3_request, SignedHeaders=host, Signature=" + "0" * 64,
    "TC3-HMAC-SHA256 Credential=a/2026-01-01/svc/tc3_request, SignedHeaders=content-type;host, Signature=xyz",
])
def test_malformed_authorization(value):
    with pytest.raises(tc3.MalformedAuthorization):
        tc3.parse_authorization(value)


def test_console_file_errors_have_line_column_and_all_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("listen:\n  port: 70000\nagents:\n  max_wait_seconds: 60\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert str(ei.value).splitlines() == [
        f"{p}: line 2, column 9: listen.port: must be <= 65535, got 70000",
        f"{p}: line 4, column 21: agents.max_wait_seconds: must be <= 30, got 60",
    ]
