"""The Tencent Cloud adapter (migrated/cloud/tencent.py) through the real SDK clients.

The real Tencent Cloud cannot be reached from here, so these tests run a FAKE Tencent Cloud endpoint
(tests/fake_tencentcloud.py): a real aiohttp server on 127.0.0.1 port 0 that verifies each request's
TC3 signature with the SDK's own signing code and answers with the response shapes of the SDK's
models. The adapter's SDK clients are pointed at it (endpoint override, plain http). What these
tests cannot show: that Tencent's real service behaves like the fake (error codes, eventual
consistency of a new image, quotas).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from migrated.cloud.config import CloudConfig, cloud_credentials
from migrated.cloud.provider import DiskSpec, InstanceInvalid, unique_name
from migrated.cloud.tencent import RELAY_NAME, TencentCloud, ssh_port_findings
from migrated.credentials import Credentials
from migrated.errors import CloudError, ConfigError, TargetError
from tests.fake_tencentcloud import SECRET_ID, SECRET_KEY, FakeTencentCloud, instance, rule

R = "ap-guangzhou"
SYSTEM = DiskSpec("/dev/vda", 20 << 30, is_system=True)
DATA = DiskSpec("/dev/vdb", 100 << 30)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTencentCloud]:
    async with FakeTencentCloud() as f:
        yield f


@pytest.fixture
async def cloud(fake: FakeTencentCloud) -> AsyncIterator[TencentCloud]:
    c = TencentCloud(Credentials(SECRET_ID, SECRET_KEY), endpoint=fake.endpoint, retry_base_seconds=0.01)
    try:
        yield c
    finally:
        await c.close()


async def test_valid_instance_passes_and_is_described(fake: FakeTencentCloud, cloud: TencentCloud) -> None:
    fake.instances[(R, "ins-good0001")] = instance("ins-good0001", system_gb=50, data_gb=(200,))
    info = await cloud.validate_instance(R, "ins-good0001", [SYSTEM, DATA])
    assert (info.state, info.system_disk_gb, info.data_disks_gb, info.zone) == ("RUNNING", 50, (200,), "ap-guangzhou-3")
    assert fake.bad_signatures == 0 and fake.calls[0][:2] == ("DescribeInstances", R)


@pytest.mark.parametrize(("inst", "region", "kind", "words"), [
    (None, R, "not_found", "instance ins-good0001 does not exist in region ap-guangzhou"),
    (instance("ins-good0001"), "ap-shanghai", "not_found", "does not exist in region ap-shanghai"),
    (instance("ins-good0001", state="STOPPED"), R, "not_running", "instance ins-good0001 is STOPPED, not RUNNING"),
    (instance("ins-good0001", os_name="Windows Server 2019"), R, "os", "runs Windows Server 2019"),
    (instance("ins-good0001", system_gb=10, data_gb=(200,)), R, "too_small",
     "system disk is 10 GB, source disk /dev/vda needs 20 GB"),
    (instance("ins-good0001", system_gb=50, data_gb=()), R, "too_small", "has 0 data disk(s), the task maps 1"),
    (instance("ins-good0001", system_gb=50, data_gb=(60,)), R, "too_small", "/dev/vdb needs 100 GB"),
])
async def test_instance_validation_errors_a_user_reads(fake: FakeTencentCloud, cloud: TencentCloud, inst, region,
                                                       kind, words) -> None:
    if inst is not None:
        fake.instances[(R, "ins-good0001")] = inst
    with pytest.raises(InstanceInvalid) as ei:
        await cloud.validate_instance(region, "ins-good0001", [SYSTEM, DATA])
    assert ei.value.kind == kind and words in str(ei.value)
    assert isinstance(ei.value, TargetError)


async def test_wrong_key_is_a_cloud_error_with_code_and_request_id(fake: FakeTencentCloud) -> None:
    c = TencentCloud(Credentials(SECRET_ID, "not-the-right-key"), endpoint=fake.endpoint)
    try:
        with pytest.raises(CloudError) as ei:
            await c.describe_instance(R, "ins-good0001")
    finally:
        await c.close()
    assert ei.value.code == "AuthFailure.SignatureFailure" and not ei.value.retryable
    assert ei.value.request_id and ei.value.request_id in str(ei.value)
    assert fake.bad_signatures == 1


async def test_rate_limit_is_retried_then_succeeds(fake: FakeTencentCloud, cloud: TencentCloud) -> None:
    fake.instances[(R, "ins-good0001")] = instance("ins-good0001")
    fake.fail["DescribeInstances"] = ("RequestLimitExceeded", "Your current request times equals to `21`")
    fake.fail_times["DescribeInstances"] = 2
    info = await cloud.describe_instance(R, "ins-good0001")
    assert info is not None and fake.actions().count("DescribeInstances") == 3


async def test_internal_error_gives_up_after_retries(fake: FakeTencentCloud, cloud: TencentCloud) -> None:
    fake.fail["DescribeImages"] = ("InternalError", "An internal error has occurred.")
    fake.fail_times["DescribeImages"] = 99
    with pytest.raises(CloudError) as ei:
        await cloud.find_images(R, name="x")
    assert ei.value.code == "InternalError" and ei.value.retryable and fake.actions().count("DescribeImages") == 4


async def test_ssh_port_check_against_security_groups(fake: FakeTencentCloud, cloud: TencentCloud) -> None:
    fake.security_groups["sg-open1234"] = [rule(0, port="80,443"), rule(1, port="22")]
    fake.security_groups["sg-office12"] = [rule(0, port="20-30", cidr="198.51.100.0/24"), rule(1, port="ALL",
                                                                                              action="DROP")]
    fake.security_groups["sg-closed12"] = [rule(0, port="3389")]
    open_, office, closed = (instance("ins-a0000001", sgs=("sg-open1234",)),
                             instance("ins-a0000002", sgs=("sg-office12",)),
                             instance("ins-a0000003", sgs=("sg-closed12",)))
    for i in (open_, office, closed):
        fake.instances[(R, i["InstanceId"])] = i
    infos = [await cloud.describe_instance(R, f"ins-a000000{n}") for n in (1, 2, 3)]
    assert await cloud.ssh_port_warnings(R, infos[0], 22) == []
    w = await cloud.ssh_port_warnings(R, infos[1], 22)
    assert len(w) == 1 and "accepted only from 198.51.100.0/24" in w[0]
    w = await cloud.ssh_port_warnings(R, infos[2], 22)
    assert len(w) == 1 and "TCP 22 on ins-a0000003" in w[0] and "accepted by no rule" in w[0]
    assert "dropped by sg-x" in ssh_port_findings("ins-x", 2222, {"sg-x": [rule(0, port="ALL", action="DROP"),
                                                                           rule(1, port="2222")]})[0]


async def test_image_name_dedup(fake: FakeTencentCloud, cloud: TencentCloud) -> None:
    assert await cloud.unique_image_name(R, "web01", "task-abc") == "web01"
    fake.add_image(R, "web01")
    assert await cloud.unique_image_name(R, "web01", "task-abc") == "web01-task-abc"
    assert await cloud.unique_image_name("ap-shanghai", "web01", "task-abc") == "web01"  # images are regional
    assert len(unique_name("x" * 60, "task-abcdefghij", TencentCloud.traits.image_name_max)) == 60


async def test_create_image_polled_to_normal(fake: FakeTencentCloud, cloud: TencentCloud) -> None:
    fake.instances[(R, "ins-relay001")] = instance("ins-relay001")
    image_id = await cloud.create_image(R, "ins-relay001", "web01", "migrated task-abc")
    seen: list[str] = []

    async def on_state(s: str) -> None:
        seen.append(s)

    img = await cloud.wait_image(R, image_id, timeout=10, interval=0.01, on_state=on_state)
    assert (img.image_id, img.state, img.name) == (image_id, "NORMAL", "web01")
    assert seen == ["CREATING", "NORMAL"]


async def test_create_image_failure_and_deadline(fake: FakeTencentCloud, cloud: TencentCloud) -> None:
    fake.instances[(R, "ins-relay001")] = instance("ins-relay001")
    fake.image_outcome = "CREATEFAILED"
    image_id = await cloud.create_image(R, "ins-relay001", "web01")
    with pytest.raises(CloudError) as ei:
        await cloud.wait_image(R, image_id, timeout=10, interval=0.01)
    assert ei.value.code == "ImageState.CREATEFAILED" and image_id in str(ei.value)
    fake.image_polls_until_done = 10**6
    image_id = await cloud.create_image(R, "ins-relay001", "web02")
    with pytest.raises(CloudError) as ei:
        await cloud.wait_image(R, image_id, timeout=0.05, interval=0.01)
    assert ei.value.code == "ImageTimeout" and "still CREATING" in str(ei.value)
    with pytest.raises(CloudError) as ei:
        await cloud.create_image(R, "ins-gone0001", "web03")
    assert ei.value.code == "InvalidInstanceId.NotFound"


async def test_relay_lifecycle(fake: FakeTencentCloud, cloud: TencentCloud) -> None:
    kw = dict(zone="ap-guangzhou-3", instance_type="S5.MEDIUM4", image_id="img-9qrfy1xt", system_disk_gb=50,
              data_disks_gb=[200], task_id="task-abc")
    iid = await cloud.run_relay(R, **kw)
    assert await cloud.run_relay(R, **kw) == iid  # same ClientToken: no second relay
    inst = fake.instances[(R, iid)]
    assert inst["InstanceName"] == RELAY_NAME and {"Key": "migrated-task", "Value": "task-abc"} in inst["Tags"]
    assert [d["DiskSize"] for d in inst["DataDisks"]] == [200]
    fake.instances[(R, "ins-users001")] = instance("ins-users001", name="production-db")
    with pytest.raises(TargetError, match="terminates only its own relay"):
        await cloud.terminate_relay(R, "ins-users001")
    assert await cloud.terminate_relay(R, iid) is True
    assert (R, iid) not in fake.instances and (R, "ins-users001") in fake.instances
    assert await cloud.terminate_relay(R, iid) is False
    assert "TerminateInstances" in fake.actions()


async def test_secret_key_absent_from_logs(fake: FakeTencentCloud, cloud: TencentCloud,
                                           caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail["DescribeInstances"] = ("AuthFailure.UnauthorizedOperation", f"echoing {SECRET_KEY} back")
    with pytest.raises(CloudError) as ei:
        await cloud.describe_instance(R, "ins-good0001")
    out = capsys.readouterr()
    assert SECRET_KEY not in str(ei.value) and "***" in str(ei.value)
    assert SECRET_KEY not in caplog.text + out.out + out.err
    assert SECRET_KEY not in repr(Credentials(SECRET_ID, SECRET_KEY))


def test_credentials_file_rules(tmp_path, monkeypatch) -> None:
    def load_credentials(path: str | None) -> Credentials:  # the console's cloud key, as the console loads it
        return cloud_credentials(CloudConfig(credentials_file=path or ""))

    f = tmp_path / "tc.yaml"
    f.write_text(f"secret_id: {SECRET_ID}\nsecret_key: {SECRET_KEY}\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by others.*chmod 600"):
        load_credentials(str(f))
    f.chmod(0o600)
    assert load_credentials(str(f)) == Credentials(SECRET_ID, SECRET_KEY)
    f.write_text("secret_id: x\n")
    with pytest.raises(ConfigError, match="must hold") as ei:
        load_credentials(str(f))
    assert SECRET_KEY not in str(ei.value)
    monkeypatch.delenv("TENCENTCLOUD_SECRET_ID", raising=False)
    monkeypatch.delenv("TENCENTCLOUD_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="TENCENTCLOUD_SECRET_ID"):
        load_credentials(None)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
    assert load_credentials(None).secret_key == SECRET_KEY
