"""``migrate-cloud check`` as a real subprocess, against the FAKE Tencent Cloud endpoint
(tests/fake_tencentcloud.py: the real one cannot be reached from here; the fake verifies every
request's TC3 signature with the SDK's signing code)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import repo_env
from tests.fake_tencentcloud import SECRET_ID, SECRET_KEY, FakeTencentCloud, instance, rule

R = "ap-guangzhou"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTencentCloud]:
    async with FakeTencentCloud() as f:
        yield f


def write_config(tmp_path: Path, endpoint: str, key: str = SECRET_KEY) -> Path:
    creds = tmp_path / "tc.yaml"
    creds.write_text(f"secret_id: {SECRET_ID}\nsecret_key: {key}\n")
    creds.chmod(0o600)
    cfg = tmp_path / "console.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"path": str(tmp_path / "c.db")},
                                   "cloud": {"credentials_file": str(creds), "endpoint": endpoint}}))
    return cfg


async def run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "migrated.cloud.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=repo_env())
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_check_passes_and_reports_the_target(tmp_path: Path, fake: FakeTencentCloud) -> None:
    fake.instances[(R, "ins-abc12345")] = instance("ins-abc12345", data_gb=(200,), sgs=("sg-a1234567",))
    fake.security_groups["sg-a1234567"] = [rule(0, port="22", cidr="198.51.100.0/24")]
    cfg = write_config(tmp_path, fake.endpoint)
    rc, out, err = await run("check", "--config", str(cfg), "--region", R, "--instance", "ins-abc12345", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["ok"] is True and [c["name"] for c in doc["checks"]] == [
        "cvm:DescribeInstances", "cvm:DescribeImages", "target ins-abc12345", "vpc:DescribeSecurityGroupPolicies"]
    assert "accepted only from 198.51.100.0/24" in doc["checks"][3]["warnings"][0]
    assert SECRET_KEY not in out + err


async def test_check_fails_on_missing_permission_and_wrong_key(tmp_path: Path, fake: FakeTencentCloud) -> None:
    fake.fail["DescribeImages"] = ("AuthFailure.UnauthorizedOperation", "no permission cvm:DescribeImages")
    cfg = write_config(tmp_path, fake.endpoint)
    rc, out, _ = await run("check", "--config", str(cfg), "--region", R, "--instance", "ins-stopped1")
    assert rc == 9
    assert "ok    cvm:DescribeInstances" in out
    assert "FAIL  cvm:DescribeImages: Tencent Cloud DescribeImages: AuthFailure.UnauthorizedOperation" in out
    assert "FAIL  target ins-stopped1: instance ins-stopped1 does not exist in region ap-guangzhou" in out
    (tmp_path / "bad").mkdir()
    bad = write_config(tmp_path / "bad", fake.endpoint, key="wrong-key-0000")
    rc, out, _ = await run("check", "--config", str(bad), "--region", R)
    assert rc == 9 and out.count("AuthFailure.SignatureFailure") == 2 and "wrong-key-0000" not in out


async def test_no_cloud_section_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "console.yaml"
    cfg.write_text("storage: {path: /tmp/x.db}\n")
    rc, _, err = await run("check", "--config", str(cfg), "--region", R)
    assert rc == 2 and "no cloud: section" in err
