"""A FAKE Tencent Cloud API endpoint for tests (the real one cannot be reached from here).

A real aiohttp server on 127.0.0.1 port 0 that speaks the Tencent Cloud API 3.0 wire format:
``POST /`` with a JSON body, ``X-TC-Action`` / ``X-TC-Region`` / ``X-TC-Timestamp`` headers, and a
TC3-HMAC-SHA256 ``Authorization`` it **verifies** with the SDK's own signing code
(:mod:`migrated.model.tc3`, built on ``tencentcloud.common.sign.Sign``): a wrong key gets
``AuthFailure.SignatureFailure`` as from Tencent. The service is taken from the credential scope
(``cvm`` / ``vpc``), so one endpoint serves every product.

Answers DescribeInstances, DescribeImages, CreateImage, RunInstances, TerminateInstances (cvm) and
DescribeSecurityGroupPolicies (vpc) with response shapes copied from the SDK's models
(``tencentcloud/cvm/v20170312/models.py``: Instance, Image...). State is plain dicts tests edit.
``fail[action] = (code, message)`` makes the next calls of ``action`` fail (``fail_times`` of them).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from migrated.model import tc3

SECRET_ID = "AKIDfakeTencentCloudKey0000000000000"
SECRET_KEY = "fakeSecretKeyThatMustNeverBeLogged12345"


def instance(instance_id: str, *, state: str = "RUNNING", os_name: str = "TencentOS Server 3.1 (TK4)",
             system_gb: int = 50, data_gb: tuple[int, ...] = (), sgs: tuple[str, ...] = ("sg-open1234",),
             name: str = "web01-target", zone: str = "ap-guangzhou-3") -> dict[str, Any]:
    """A CVM Instance as DescribeInstances returns it (the SDK's ``Instance`` model)."""
    return {
        "Placement": {"Zone": zone, "ProjectId": 0, "HostIds": None, "HostId": None},
        "InstanceId": instance_id, "InstanceType": "S5.MEDIUM4", "CPU": 2, "Memory": 4,
        "RestrictState": "NORMAL", "InstanceName": name, "InstanceChargeType": "POSTPAID_BY_HOUR",
        "SystemDisk": {"DiskType": "CLOUD_PREMIUM", "DiskId": "disk-sys" + instance_id[4:], "DiskSize": system_gb},
        "DataDisks": [{"DiskSize": gb, "DiskType": "CLOUD_PREMIUM", "DiskId": f"disk-d{i}{instance_id[4:]}",
                       "DeleteWithInstance": True, "Encrypt": False} for i, gb in enumerate(data_gb)],
        "PrivateIpAddresses": ["10.0.0.12"], "PublicIpAddresses": ["203.0.113.7"],
        "InternetAccessible": {"InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR", "InternetMaxBandwidthOut": 10},
        "VirtualPrivateCloud": {"VpcId": "vpc-abcd1234", "SubnetId": "subnet-abcd1234", "AsVpcGateway": False},
        "ImageId": "img-9qrfy1xt", "RenewFlag": None, "CreatedTime": "2026-11-01T02:00:00Z", "ExpiredTime": None,
        "OsName": os_name, "SecurityGroupIds": list(sgs), "LoginSettings": {"KeyIds": ["skey-abcd1234"]},
        "InstanceState": state, "Tags": [], "StopChargingMode": "NOT_APPLICABLE",
        "Uuid": str(uuid.uuid4()), "LatestOperation": None, "LatestOperationState": None,
        "LatestOperationRequestId": None, "DisasterRecoverGroupId": "", "IPv6Addresses": None,
        "CamRoleName": "", "HpcClusterId": "", "RdmaIpAddresses": None, "IsolatedSource": "NOTISOLATED",
        "DisableApiTermination": False, "DefaultLoginUser": "root", "DefaultLoginPort": 22,
    }


def rule(index: int, *, port: str = "22", cidr: str = "0.0.0.0/0", action: str = "ACCEPT",
         protocol: str = "TCP") -> dict[str, Any]:
    """A SecurityGroupPolicy (vpc model) as DescribeSecurityGroupPolicies returns it."""
    return {"PolicyIndex": index, "Protocol": protocol, "Port": port,
            "ServiceTemplate": {"ServiceId": "", "ServiceGroupId": ""}, "CidrBlock": cidr, "Ipv6CidrBlock": "",
            "SecurityGroupId": "", "AddressTemplate": {"AddressId": "", "AddressGroupId": ""}, "Action": action,
            "PolicyDescription": "", "ModifyTime": "2026-11-01 10:00:00"}


@dataclass
class FakeTencentCloud:
    secret_id: str = SECRET_ID
    secret_key: str = SECRET_KEY
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (region, id) -> Instance
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> Image (+ "_region", "_polls")
    security_groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # sg id -> Ingress
    image_polls_until_done: int = 2  # DescribeImages by ID answers CREATING this many times first
    image_outcome: str = "NORMAL"  # or CREATEFAILED
    fail: dict[str, tuple[str, str]] = field(default_factory=dict)
    fail_times: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (action, region, params)
    client_tokens: dict[tuple[str, str], str] = field(default_factory=dict)  # RunInstances ClientToken -> id
    bad_signatures: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def actions(self) -> list[str]:
        return [a for a, _, _ in self.calls]

    async def start(self) -> FakeTencentCloud:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aenter__(self) -> FakeTencentCloud:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ wire

    @staticmethod
    def _reply(body: dict[str, Any]) -> web.Response:
        body["RequestId"] = str(uuid.uuid4())
        # exactly "application/json", as Tencent sends: the SDK checks for an Error only when the
        # Content-Type is exactly that (with "; charset=utf-8" it would take an error for an empty reply)
        return web.Response(body=json.dumps({"Response": body}).encode(), headers={"Content-Type": "application/json"})

    def _error(self, code: str, message: str) -> web.Response:
        return self._reply({"Error": {"Code": code, "Message": message}})

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        action = request.headers.get("X-TC-Action", "")
        region = request.headers.get("X-TC-Region", "")
        try:
            auth = tc3.parse_authorization(request.headers.get("Authorization", ""))
        except tc3.MalformedAuthorization as exc:
            return self._error("AuthFailure.SignatureFailure", str(exc))
        if auth.secret_id != self.secret_id:
            return self._error("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        ts = request.headers.get("X-TC-Timestamp", "0")
        headers = {k.lower(): v for k, v in request.headers.items()}
        expected = tc3.signature(self.secret_key, timestamp=ts, date=auth.date, service=auth.service,
                                 method=request.method, path=request.path, query=request.query_string,
                                 headers=headers, signed_headers=auth.signed_headers, body=body)
        if not tc3.signatures_equal(expected, auth.signature):
            self.bad_signatures += 1
            return self._error("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        params = json.loads(body or b"{}")
        self.calls.append((action, region, params))
        if action in self.fail and self.fail_times.get(action, 1) > 0:
            self.fail_times[action] = self.fail_times.get(action, 1) - 1
            return self._error(*self.fail[action])
        handler = getattr(self, f"_{auth.service}_{action}", None)
        if handler is None:
            return self._error("InvalidAction", f"the action {action} is not supported by this fake ({auth.service})")
        try:
            return self._reply(handler(region, params))
        except _Fail as exc:
            return self._error(exc.code, exc.message)

    # ------------------------------------------------------------ cvm

    def _cvm_DescribeInstances(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        ids = p.get("InstanceIds") or [i for (r, i) in self.instances if r == region]
        found = [self.instances[(region, i)] for i in ids if (region, i) in self.instances]
        return {"TotalCount": len(found), "InstanceSet": found}

    def _cvm_DescribeImages(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        imgs = [i for i in self.images.values() if i["_region"] == region]
        if p.get("ImageIds"):
            imgs = [i for i in imgs if i["ImageId"] in p["ImageIds"]]
            for i in imgs:
                if i["ImageState"] == "CREATING":
                    i["_polls"] += 1
                    if i["_polls"] > self.image_polls_until_done:
                        i["ImageState"] = self.image_outcome
        for f in p.get("Filters") or []:
            if f["Name"] == "image-name":
                imgs = [i for i in imgs if i["ImageName"] in f["Values"]]
            elif f["Name"] == "image-type":
                imgs = [i for i in imgs if i["ImageType"] in f["Values"]]
        shown = [{k: v for k, v in i.items() if not k.startswith("_")} for i in imgs]
        return {"ImageSet": shown, "TotalCount": len(shown)}

    def add_image(self, region: str, name: str, state: str = "NORMAL", description: str = "") -> str:
        image_id = "img-" + uuid.uuid4().hex[:8]
        self.images[image_id] = {
            "ImageId": image_id, "OsName": "TencentOS Server 3.1", "ImageType": "PRIVATE_IMAGE",
            "CreatedTime": "2026-11-25T10:00:00Z", "ImageName": name, "ImageDescription": description, "ImageSize": 50,
            "Architecture": "x86_64", "ImageState": state, "Platform": "TencentOS", "ImageCreator": "100000000001",
            "ImageSource": "CREATE_IMAGE", "SyncPercent": None, "IsSupportCloudinit": True, "SnapshotSet": [],
            "Tags": [], "LicenseType": "TencentCloud", "ImageFamily": "", "ImageDeprecated": False,
            "_region": region, "_polls": 0,
        }
        return image_id

    def _cvm_CreateImage(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        inst = self.instances.get((region, p["InstanceId"]))
        if inst is None:
            raise _Fail("InvalidInstanceId.NotFound", f"instance {p['InstanceId']} not found")
        own = {d["DiskId"] for d in inst["DataDisks"]}
        for d in p.get("DataDiskIds") or []:
            if d not in own:
                raise _Fail("InvalidParameterValue", f"disk {d} is not attached to {p['InstanceId']}")
        return {"ImageId": self.add_image(region, p["ImageName"], "CREATING", p.get("ImageDescription", ""))}

    def _cvm_RunInstances(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        token = p.get("ClientToken")
        if token and (region, token) in self.client_tokens:  # the same request returns the same instance
            return {"InstanceIdSet": [self.client_tokens[(region, token)]]}
        iid = "ins-" + uuid.uuid4().hex[:8]
        inst = instance(iid, state="PENDING", name=p.get("InstanceName", ""), zone=p["Placement"]["Zone"],
                        system_gb=p.get("SystemDisk", {}).get("DiskSize", 50),
                        data_gb=tuple(d["DiskSize"] for d in p.get("DataDisks") or []))
        inst["Tags"] = [t for s in p.get("TagSpecification") or [] for t in s["Tags"]]
        if token:
            self.client_tokens[(region, token)] = iid
        self.instances[(region, iid)] = inst
        return {"InstanceIdSet": [iid]}

    def _cvm_TerminateInstances(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        for i in p["InstanceIds"]:
            self.instances.pop((region, i), None)
        return {}

    # ------------------------------------------------------------ vpc

    def _vpc_DescribeSecurityGroupPolicies(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        sg = p["SecurityGroupId"]
        if sg not in self.security_groups:
            raise _Fail("ResourceNotFound", f"security group {sg} not found")
        ingress = [dict(r, SecurityGroupId=sg) for r in self.security_groups[sg]]
        return {"SecurityGroupPolicySet": {"Version": "3", "Ingress": ingress, "Egress": [
            rule(0, port="ALL", protocol="ALL")], "PolicyStatistics": {
            "IngressIPv4TotalCount": len(ingress), "IngressIPv6TotalCount": 0, "EgressIPv4TotalCount": 1,
            "EgressIPv6TotalCount": 0}}}


class _Fail(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

