"""The local stand-in for Tencent Cloud (tests/fake_tencentcloud.py), driven with the REAL SDK client.

The real Tencent Cloud cannot be reached from here, so the cloud flows of issue #11 are tested against
this stand-in; these tests pin down that the stand-in itself behaves as its docstring and docs/cloud.md
("The local stand-in") say. Every call goes through the installed SDK's own synchronous
``tencentcloud.cvm.v20170312.cvm_client.CvmClient`` (request models, TC3 signing, error parsing),
pointed at the stand-in's endpoint over plain http and run in a thread so the stand-in's event loop
keeps answering. What they cannot show: that Tencent's real service behaves like the stand-in (see
docs/cloud.md for what is taken from the SDK models and what is assumed).
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client, models

from tests.fake_tencentcloud import SECRET_ID, SECRET_KEY, FakeTencentCloud, model_parameters

R = "ap-guangzhou"
PASSWORD = "Rescue-pass-2026"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTencentCloud]:
    async with FakeTencentCloud() as f:
        yield f


class Cvm:
    """The SDK's synchronous CvmClient against the stand-in; each call runs in a thread."""

    def __init__(self, fake: FakeTencentCloud) -> None:
        hp = HttpProfile(protocol="http", endpoint=f"127.0.0.1:{fake.port}", reqTimeout=30)
        self.client = cvm_client.CvmClient(credential.Credential(SECRET_ID, SECRET_KEY), R,
                                           ClientProfile(httpProfile=hp))

    async def __call__(self, action: str, **params: Any) -> Any:
        req = getattr(models, f"{action}Request")()
        req._deserialize(params)
        return await asyncio.to_thread(getattr(self.client, action), req)

    async def error(self, action: str, **params: Any) -> str:
        """The error code the call answers (fails the test if it succeeds)."""
        with pytest.raises(TencentCloudSDKException) as ei:
            await self(action, **params)
        return ei.value.get_code()

    async def state(self, instance_id: str) -> str | None:
        resp = await self("DescribeInstances", InstanceIds=[instance_id])
        return resp.InstanceSet[0].InstanceState if resp.InstanceSet else None

    async def run(self, **extra: Any) -> str:
        params: dict[str, Any] = {
            "Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-9qrfy1xt", "InstanceType": "S5.MEDIUM4",
            "InstanceChargeType": "POSTPAID_BY_HOUR", "SystemDisk": {"DiskType": "CLOUD_PREMIUM", "DiskSize": 20},
            "DataDisks": [{"DiskType": "CLOUD_PREMIUM", "DiskSize": 10}], "InstanceName": "do_not_delete_csm_instance",
            "TagSpecification": [{"ResourceType": "instance", "Tags": [{"Key": "migrated-task", "Value": "task-1"}]}],
        }
        params.update(extra)
        resp = await self("RunInstances", **params)
        assert len(resp.InstanceIdSet) == 1
        return resp.InstanceIdSet[0]

    async def until(self, instance_id: str, state: str | None) -> None:
        """Poll DescribeInstances until the instance is in ``state`` (None: gone)."""
        for _ in range(500):
            if await self.state(instance_id) == state:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{instance_id} never reached {state}: {await self.state(instance_id)}")


@pytest.fixture
def cvm(fake: FakeTencentCloud) -> Cvm:
    return Cvm(fake)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_parameter_the_sdk_model_lacks_is_refused(fake: FakeTencentCloud, cvm: Cvm) -> None:
    assert {"InstanceId", "Password", "Username", "ForceStop", "StopType"} == model_parameters("cvm",
                                                                                              "EnterRescueMode")
    with pytest.raises(TencentCloudSDKException) as ei:  # call_json sends the dict as it is
        await asyncio.to_thread(cvm.client.call_json, "DescribeInstances", {"InstanceIds": [], "Bogus": 1})
    assert ei.value.get_code() == "UnknownParameter" and "Bogus" in ei.value.get_message()
    assert (await cvm("DescribeInstances")).TotalCount == 0  # known parameters only: answered
    with pytest.raises(TencentCloudSDKException) as ei:  # nested names are checked against the nested models
        await asyncio.to_thread(cvm.client.call_json, "RunInstances", {"Placement": {"Zone": "ap-guangzhou-3"},
                                "DataDisks": [{"DiskSize": 10, "DiskSizee": 20}]})
    assert ei.value.get_code() == "UnknownParameter" and "DataDisks.DiskSizee" in ei.value.get_message()
    assert fake.instances == {}


async def test_stop_start_and_describe_images_pages(fake: FakeTencentCloud, cvm: Cvm) -> None:
    iid = await cvm.run()
    fake.delays.stop = 3600
    await cvm("StopInstances", InstanceIds=[iid], StopType="SOFT")
    assert await cvm.state(iid) == "STOPPING"
    assert await cvm.error("StopInstances", InstanceIds=[iid]) == "UnsupportedOperation.InstanceStateStopping"
    fake.advance(3600)
    assert await cvm.state(iid) == "STOPPED"
    assert await cvm.error("StopInstances", InstanceIds=[iid]) == "UnsupportedOperation.InstanceStateStopped"
    await cvm("StartInstances", InstanceIds=[iid])
    assert await cvm.state(iid) == "RUNNING"
    for n in range(105):
        fake.add_image(R, f"img{n}")
    pages = [await cvm("DescribeImages", Offset=o, Limit=100) for o in (0, 100)]
    assert [p.TotalCount for p in pages] == [105, 105] and [len(p.ImageSet) for p in pages] == [100, 5]
    assert len((await cvm("DescribeImages")).ImageSet) == 20  # the API's default Limit


async def test_client_token_twice_gives_one_instance(fake: FakeTencentCloud, cvm: Cvm) -> None:
    first = await cvm.run(ClientToken="task-1-relay")
    assert await cvm.run(ClientToken="task-1-relay") == first
    assert await cvm.run(ClientToken="task-2-relay") != first
    assert len(fake.instances) == 2
    disks = fake.instance_disks(R, first)
    assert [p.stat().st_size for p in disks.values()] == [20 * fake.gib, 10 * fake.gib]  # real sparse files


async def test_pending_then_running_seen_by_describe_instances(fake: FakeTencentCloud, cvm: Cvm) -> None:
    fake.delays.run = 3600  # held PENDING until the fake's clock moves: no timing window
    iid = await cvm.run()
    assert await cvm.state(iid) == "PENDING"
    fake.advance(3600)
    assert await cvm.state(iid) == "RUNNING"
    fake.delays.run = 0.05  # and on the real clock, polled
    iid2 = await cvm.run()
    await cvm.until(iid2, "RUNNING")


async def test_launch_failed_and_terminating(fake: FakeTencentCloud, cvm: Cvm) -> None:
    fake.fail_launch()
    bad = await cvm.run()
    assert await cvm.state(bad) == "LAUNCH_FAILED"
    assert await cvm.error("EnterRescueMode", InstanceId=bad, Password=PASSWORD) == \
        "UnsupportedOperation.InstanceStateLaunchFailed"
    fake.delays.terminate = 3600
    await cvm("TerminateInstances", InstanceIds=[bad])
    assert await cvm.state(bad) == "TERMINATING"
    assert await cvm.error("TerminateInstances", InstanceIds=[bad]) == "UnsupportedOperation.InstanceStateTerminating"
    fake.advance(3600)
    assert await cvm.state(bad) is None


async def test_actions_refused_in_the_wrong_state(fake: FakeTencentCloud, cvm: Cvm) -> None:
    fake.delays.run = 3600
    iid = await cvm.run()
    assert await cvm.error("EnterRescueMode", InstanceId=iid, Password=PASSWORD) == \
        "UnsupportedOperation.InstanceStatePending"
    assert await cvm.error("CreateImage", InstanceId=iid, ImageName="x") == "UnsupportedOperation.InstanceStatePending"
    fake.advance(3600)
    assert await cvm.error("ExitRescueMode", InstanceId=iid) == "UnsupportedOperation.InstanceStateRunning"
    assert await cvm.error("EnterRescueMode", InstanceId=iid, Password="short") == "InvalidPassword"
    fake.delays.enter_rescue = 3600
    await cvm("EnterRescueMode", InstanceId=iid, Password=PASSWORD)
    assert await cvm.state(iid) == "ENTER_RESCUE_MODE" and fake.rescue(R, iid) is None
    assert await cvm.error("ExitRescueMode", InstanceId=iid) == "UnsupportedOperation.InstanceStateEnterRescueMode"
    fake.advance(3600)
    assert await cvm.state(iid) == "RESCUE_MODE"
    assert await cvm.error("CreateImage", InstanceId=iid, ImageName="x") == \
        "UnsupportedOperation.InstanceStateRescueMode"
    assert await cvm.error("EnterRescueMode", InstanceId=iid, Password=PASSWORD) == \
        "UnsupportedOperation.InstanceStateRescueMode"
    assert await cvm.error("ExitRescueMode", InstanceId="ins-nothere1") == "InvalidInstanceId.NotFound"
    await cvm("TerminateInstances", InstanceIds=[iid])  # terminating in rescue mode stops the rescue sshd
    assert fake.rescue(R, iid) is None and not fake._rescues


async def ssh(argv: list[str], stdin: bytes = b"") -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    out, _ = await proc.communicate(stdin)
    return proc.returncode or 0, out


async def test_rescue_sshd_writes_the_disks_and_the_image_copies_them(fake: FakeTencentCloud, cvm: Cvm,
                                                                      tmp_path: Path) -> None:
    iid = await cvm.run()
    await cvm.until(iid, "RUNNING")
    await cvm("EnterRescueMode", InstanceId=iid, Password=PASSWORD, Username="root", StopType="SOFT_FIRST")
    await cvm.until(iid, "RESCUE_MODE")
    rescue = fake.rescue(R, iid)
    assert rescue is not None and rescue.password == PASSWORD
    system_id, data_id = fake.instance_disks(R, iid)
    assert list(rescue.disks) == [system_id, data_id] and sorted(rescue.devices) == ["/dev/vda", "/dev/vdb"]
    # a key installed by the test (as the console installs the agent's), the host key the fake reports
    key = tmp_path / "agent_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    rescue.authorize((tmp_path / "agent_key.pub").read_text())
    known = tmp_path / "known_hosts"
    known.write_text(f"[{rescue.host}]:{rescue.port} {rescue.host_key_line}\n")
    argv = ["ssh", "-i", str(key), "-p", str(rescue.port), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
            f"{rescue.sshd.user}@{rescue.host}"]
    system_bytes, data_bytes = b"source system disk\n" * 1000, b"source data disk\n" * 500
    for dev, payload in (("/dev/vda", system_bytes), ("/dev/vdb", data_bytes)):
        rc, out = await ssh([*argv, f"dd of={rescue.devices[dev]} bs=64k conv=notrunc status=none"], payload)
        assert rc == 0, out
    assert fake.disk_path(system_id).read_bytes()[:len(system_bytes)] == system_bytes
    assert fake.disk_path(data_id).read_bytes()[:len(data_bytes)] == data_bytes
    assert fake.disk_path(system_id).stat().st_size == 20 * fake.gib  # written in place, size kept
    await cvm("ExitRescueMode", InstanceId=iid)
    await cvm.until(iid, "RUNNING")
    rc, _ = await ssh([*argv, "true"])
    assert rc != 0, "the rescue sshd is stopped by ExitRescueMode"
    image_id = (await cvm("CreateImage", InstanceId=iid, ImageName="web01", ForcePoweroff="TRUE",
                          DataDiskIds=[data_id])).ImageId
    for _ in range(500):
        img = (await cvm("DescribeImages", ImageIds=[image_id])).ImageSet[0]
        if img.ImageState != "CREATING":
            break
        await asyncio.sleep(0.01)
    assert img.ImageState == "NORMAL"
    copies = fake.image_disks(image_id)
    assert [sha(p) for p in copies] == [sha(fake.disk_path(system_id)), sha(fake.disk_path(data_id))]
    assert copies[0].read_bytes()[:len(system_bytes)] == system_bytes
    assert copies[1].read_bytes()[:len(data_bytes)] == data_bytes


async def test_injected_failure_fires_the_given_number_of_times(fake: FakeTencentCloud, cvm: Cvm) -> None:
    rule = fake.inject("RunInstances", "ResourceInsufficient.SpecifiedInstanceType", times=2)
    assert await cvm.error("RunInstances", Placement={"Zone": "ap-guangzhou-3"}) == \
        "ResourceInsufficient.SpecifiedInstanceType"
    assert await cvm.error("RunInstances", Placement={"Zone": "ap-guangzhou-3"}) == \
        "ResourceInsufficient.SpecifiedInstanceType"
    assert fake.instances == {}, "a refused call changes nothing"
    await cvm.run()
    assert rule.fired == 2 and len(fake.instances) == 1
    assert fake.leftovers() == list(i for (_, i) in fake.instances)
