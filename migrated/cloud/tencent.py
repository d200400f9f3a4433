"""Tencent Cloud, driven with the official ``tencentcloud-sdk-python`` (cvm, vpc): the
:class:`~migrated.cloud.provider.CloudProvider` for ``cloud.provider: tencent``. Needs the
``[tencent]`` extra (``pip install 'migrated[tencent]'``); nothing outside ``migrated/cloud/``
imports this module (:func:`migrated.cloud.provider.open_provider` does, by name).

One :class:`TencentCloud` per console process. It uses the SDK's **async product clients**
(``CvmClient`` / ``VpcClient`` from ``*_client_async``) with **our own** ``httpx.AsyncClient``
injected in place of the one the SDK builds: the SDK's own construction passes ``proxies=`` (gone in
httpx 0.28) and sends a CA bundle as a client certificate, while the injected client is plain httpx
with a timeout. Why async rather than the sync clients in a thread: the console is one asyncio
process; a hung cloud call must be cancellable on shutdown, and one connection pool serves every
product and region without a thread per call.

Contracts:

* The SDK's logger (``tencentcloud_sdk_common``) is pinned to WARNING: at DEBUG it prints whole
  requests and responses, which a console running with ``log.level: debug`` must not do.
* Every SDK error becomes :class:`~migrated.errors.CloudError` (Tencent code + RequestId; retryable
  for ``RequestLimitExceeded*``, ``InternalError*`` and network faults, which :meth:`_call` retries
  a few times with the project's one retry loop, ``migrated/aio/retry.py``). The SecretKey never
  appears in a message or a log line.
* :meth:`validate_instance` raises :class:`~migrated.cloud.provider.InstanceInvalid` (a TargetError)
  with a message that names the instance and what to fix; it never guesses: anything it cannot check is a warning.
* :meth:`terminate_relay` only terminates an instance named :data:`RELAY_NAME` (never a user's machine).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import structlog
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client_async
from tencentcloud.cvm.v20170312 import models as cvm
from tencentcloud.vpc.v20170312 import models as vpc
from tencentcloud.vpc.v20170312 import vpc_client_async

from migrated.aio.retry import Retry
from migrated.cloud.config import CloudConfig, cloud_credentials
from migrated.cloud.provider import (
    TENCENT,
    DiskSpec,
    ImageInfo,
    InstanceInfo,
    InstanceInvalid,
    check_disks_fit,
    unique_name,
)
from migrated.credentials import Credentials
from migrated.errors import CloudError, TargetError
from migrated.model.backoff import Backoff

log = structlog.get_logger(__name__)

RELAY_NAME = "do_not_delete_csm_instance"
IMAGE_DONE, IMAGE_FAILED = frozenset({"NORMAL", "USING"}), frozenset({"CREATEFAILED", "IMPORTFAILED"})


# ---------------------------------------------------------------- pure helpers


def port_in(spec: str, port: int) -> bool:
    """Does a security-group Port field (``ALL``, ``22``, ``20-30``, ``22,3389``) cover ``port``?"""
    spec = (spec or "").strip().upper()
    if spec in ("", "ALL"):
        return True
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                if int(lo) <= port <= int(hi):
                    return True
            elif int(part) == port:
                return True
        except ValueError:
            continue
    return False


def _everyone(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def ssh_port_findings(instance_id: str, port: int, groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Warnings about inbound TCP ``port`` given each security group's Ingress rules (dicts as the API
    returns them). Empty when a rule accepts the port from anywhere before any rule drops it. Rules
    that use address or service templates are reported, not evaluated."""
    if not groups:
        return [f"instance {instance_id} has no security group: check by hand that TCP {port} is reachable"]
    partial: list[str] = []
    unknown: list[str] = []
    dropped: list[str] = []
    for sg, rules in groups.items():
        for r in sorted(rules, key=lambda r: r.get("PolicyIndex") or 0):
            proto = str(r.get("Protocol") or "ALL").upper()
            if proto not in ("TCP", "ALL"):
                continue
            tmpl = r.get("ServiceTemplate") or {}
            if any(tmpl.get(k) for k in ("ServiceId", "ServiceGroupId")):
                unknown.append(f"{sg} rule {r.get('PolicyIndex')} (service template)")
                continue
            if not port_in(str(r.get("Port") or "ALL"), port):
                continue
            addr = r.get("AddressTemplate") or {}
            if any(addr.get(k) for k in ("AddressId", "AddressGroupId")):
                unknown.append(f"{sg} rule {r.get('PolicyIndex')} (address template)")
                continue
            cidr = r.get("CidrBlock") or r.get("Ipv6CidrBlock") or ""
            accept = str(r.get("Action") or "").upper() == "ACCEPT"
            if _everyone(cidr):
                if accept:
                    return []
                dropped.append(sg)
                break  # this group drops it for everyone from here on
            if accept:
                partial.append(cidr)
    where = f"TCP {port} on {instance_id} (security groups {', '.join(groups)})"
    out = []
    if partial:
        out.append(f"{where} is accepted only from {', '.join(partial)}: make sure the source's address is "
                   "among them")
    if unknown:
        out.append(f"{where}: not checked, rules use templates: {', '.join(unknown)}")
    if not partial and not unknown:
        why = f"dropped by {', '.join(dropped)}" if dropped else "accepted by no rule"
        out.append(f"{where} is {why}: the source cannot reach the receiver; add an inbound rule for TCP {port}")
    return out


# ---------------------------------------------------------------- the adapter


class TencentCloud:
    """Async access to the Tencent Cloud APIs migrated needs. ``endpoint`` (``http://host:port``)
    overrides the API host for every product (tests, private clouds); empty = Tencent's public hosts."""

    traits = TENCENT

    def __init__(self, creds: Credentials, *, endpoint: str = "", timeout: float = 30.0, retries: int = 3,
                 retry_base_seconds: float = 1.0, rng: random.Random | None = None) -> None:
        logging.getLogger("tencentcloud_sdk_common").setLevel(logging.WARNING)
        self._cred = credential.Credential(creds.secret_id, creds.secret_key)
        self._secret_key = creds.secret_key
        self._endpoint = endpoint
        self._timeout = timeout
        self._retries = retries
        self._retry_base = retry_base_seconds
        self._random = rng or random.Random()  # the retry waits' jitter
        self._http = httpx.AsyncClient(timeout=timeout)
        self._clients: dict[tuple[str, str], Any] = {}

    async def close(self) -> None:
        await self._http.aclose()

    async def _client(self, product: str, region: str) -> Any:
        c = self._clients.get((product, region))
        if c is not None:
            return c
        hp = HttpProfile(reqTimeout=int(self._timeout))
        if self._endpoint:
            scheme, _, host = self._endpoint.partition("://")
            hp = HttpProfile(protocol=scheme, endpoint=host, reqTimeout=int(self._timeout))
        profile = ClientProfile(httpProfile=hp)
        cls = {"cvm": cvm_client_async.CvmClient, "vpc": vpc_client_async.VpcClient}[product]
        c = cls(self._cred, region, profile)
        own, c.http_client = c.http_client, self._http  # ours: see the module docstring
        await own.aclose()
        self._clients[(product, region)] = c
        return c

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret_key, "***") if self._secret_key else text

    async def _call(self, product: str, region: str, action: str, req: Any) -> Any:
        """One API call, retried on retryable errors (``migrated/aio/retry.py``: ``retries`` more
        tries, backoff from ``retry_base_seconds`` doubling, equal jitter); any failure is a CloudError."""
        client = await self._client(product, region)

        async def once() -> Any:
            try:
                return await getattr(client, action)(req)
            except TencentCloudSDKException as exc:
                raise CloudError(exc.get_code() or "ClientError", self._scrub(str(exc.get_message() or "")),
                                 request_id=exc.get_request_id() or "", action=action) from None
            except httpx.HTTPError as exc:
                raise CloudError("NetworkError", self._scrub(f"{type(exc).__name__}: {exc}"), action=action,
                                 retryable=True) from None

        retry = Retry(Backoff(initial=self._retry_base, factor=2, cap=self._retry_base * 2 ** max(self._retries, 0),
                              random=self._random.random))
        try:
            return await retry.call(once, retry_on=CloudError, should_retry=lambda e: getattr(e, "retryable", False),
                                    attempts=self._retries + 1)
        except CloudError as err:
            log.warning("tencent cloud call failed", action=action, region=region, code=err.code,
                        request_id=err.request_id)
            raise

    # -- instances

    async def describe_instance(self, region: str, instance_id: str) -> InstanceInfo | None:
        req = cvm.DescribeInstancesRequest()
        req.InstanceIds = [instance_id]
        try:
            resp = await self._call("cvm", region, "DescribeInstances", req)
        except CloudError as exc:
            if exc.code.startswith("InvalidInstanceId"):  # NotFound / Malformed
                return None
            raise
        for i in resp.InstanceSet or []:
            if i.InstanceId == instance_id:
                return InstanceInfo(
                    instance_id=i.InstanceId, name=i.InstanceName or "", state=i.InstanceState or "",
                    os_name=i.OsName or "", zone=(i.Placement.Zone if i.Placement else "") or "",
                    system_disk_gb=(i.SystemDisk.DiskSize if i.SystemDisk else 0) or 0,
                    data_disks_gb=tuple(d.DiskSize or 0 for d in i.DataDisks or []),
                    security_group_ids=tuple(i.SecurityGroupIds or []),
                    private_ips=tuple(i.PrivateIpAddresses or []), public_ips=tuple(i.PublicIpAddresses or []),
                    data_disk_ids=tuple(d.DiskId or "" for d in i.DataDisks or []),
                )
        return None

    async def validate_instance(self, region: str, instance_id: str, disks: Sequence[DiskSpec]) -> InstanceInfo:
        """The instance exists in ``region``, is RUNNING, runs Linux, and its disks can take ``disks``."""
        info = await self.describe_instance(region, instance_id)
        if info is None:
            raise InstanceInvalid("not_found", f"instance {instance_id} does not exist in region {region}: "
                                               "check the instance ID and the task's Region")
        if info.state != "RUNNING":
            raise InstanceInvalid("not_running", f"instance {instance_id} is {info.state}, not RUNNING: start it in "
                                                 "the Tencent Cloud console first")
        if "windows" in info.os_name.lower():
            raise InstanceInvalid("os", f"instance {instance_id} runs {info.os_name}; migrated moves Linux servers: "
                                        "reinstall it with a Linux image")
        check_disks_fit(info, disks)
        return info

    async def probe_instances(self, region: str) -> int:
        """DescribeInstances with no filter, Limit 1 (a permission check): the account's instance count."""
        req = cvm.DescribeInstancesRequest()
        req.Limit = 1
        resp = await self._call("cvm", region, "DescribeInstances", req)
        return resp.TotalCount or 0

    async def ssh_port_warnings(self, region: str, info: InstanceInfo, port: int) -> list[str]:
        """Warnings (empty when open to all) about inbound TCP ``port`` on the instance."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for sg in info.security_group_ids:
            req = vpc.DescribeSecurityGroupPoliciesRequest()
            req.SecurityGroupId = sg
            resp = await self._call("vpc", region, "DescribeSecurityGroupPolicies", req)
            pset = resp.SecurityGroupPolicySet
            groups[sg] = [_plain(r) for r in (pset.Ingress if pset else None) or []]
        return ssh_port_findings(info.instance_id, port, groups)

    # -- images

    async def find_images(self, region: str, *, name: str | None = None, image_id: str | None = None
                          ) -> list[ImageInfo]:
        req = cvm.DescribeImagesRequest()
        if image_id:
            req.ImageIds = [image_id]
        else:
            f1, f2 = cvm.Filter(), cvm.Filter()
            f1.Name, f1.Values = "image-name", [name or ""]
            f2.Name, f2.Values = "image-type", ["PRIVATE_IMAGE"]
            req.Filters = [f1, f2]
        req.Limit = 100
        try:
            resp = await self._call("cvm", region, "DescribeImages", req)
        except CloudError as exc:
            if image_id and exc.code.startswith("InvalidImageId"):
                return []
            raise
        return [ImageInfo(i.ImageId, i.ImageName or "", i.ImageState or "", i.ImageSize or 0,
                          i.ImageDescription or "")
                for i in resp.ImageSet or [] if name is None or i.ImageName == name]

    async def unique_image_name(self, region: str, name: str, task_id: str) -> str:
        """``name``, or ``name-task_id`` when one of the account's images already has that name."""
        if await self.find_images(region, name=name):
            return unique_name(name, task_id, TENCENT.image_name_max)
        return name

    async def create_image(self, region: str, instance_id: str, name: str, description: str = "",
                           data_disk_ids: Sequence[str] = ()) -> str:
        """CreateImage from the instance's system disk, plus ``data_disk_ids`` (a full image)."""
        req = cvm.CreateImageRequest()
        req.InstanceId, req.ImageName = instance_id, name
        if description:
            req.ImageDescription = description[:256]
        if data_disk_ids:
            req.DataDiskIds = list(data_disk_ids)
        resp = await self._call("cvm", region, "CreateImage", req)
        return resp.ImageId

    async def wait_image(self, region: str, image_id: str, *, timeout: float, interval: float,
                         on_state: Callable[[str], Awaitable[None]] | None = None) -> ImageInfo:
        """Poll until the image is NORMAL (returned) or failed / ``timeout`` seconds (CloudError).
        ``on_state`` is awaited on every state change. A briefly invisible new image is waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = ""
        while True:
            found = await self.find_images(region, image_id=image_id)
            state = found[0].state if found else ""
            if state and state != last:
                last = state
                if on_state is not None:
                    await on_state(state)
            if state in IMAGE_DONE:
                return found[0]
            if state in IMAGE_FAILED:
                raise CloudError(f"ImageState.{state}", f"image {image_id} ended {state}", action="CreateImage",
                                 retryable=False)
            if loop.time() + interval > deadline:
                raise CloudError("ImageTimeout", f"image {image_id} is still {state or 'not visible'} after "
                                                 f"{timeout:g} s", action="DescribeImages", retryable=True)
            await asyncio.sleep(interval)

    # -- relay instance (image targets)

    async def run_relay(self, region: str, *, zone: str, instance_type: str, image_id: str, system_disk_gb: int,
                        data_disks_gb: Sequence[int], task_id: str, vpc_id: str = "", subnet_id: str = "",
                        security_group_ids: Sequence[str] = (), key_ids: Sequence[str] = ()) -> str:
        """Start the relay instance a disk image is built on: named :data:`RELAY_NAME`, tagged
        ``migrated-task=<task_id>``, pay-as-you-go; ``ClientToken`` = task ID, so a retried call
        returns the same instance rather than a second one."""
        req = cvm.RunInstancesRequest()
        req.InstanceChargeType = "POSTPAID_BY_HOUR"
        req.Placement = cvm.Placement()
        req.Placement.Zone = zone
        req.InstanceType, req.ImageId, req.InstanceCount = instance_type, image_id, 1
        req.InstanceName = RELAY_NAME
        req.ClientToken = task_id
        req.SystemDisk = cvm.SystemDisk()
        req.SystemDisk.DiskSize = system_disk_gb
        req.DataDisks = []
        for gb in data_disks_gb:
            d = cvm.DataDisk()
            d.DiskSize, d.DeleteWithInstance = gb, True
            req.DataDisks.append(d)
        if vpc_id:
            req.VirtualPrivateCloud = cvm.VirtualPrivateCloud()
            req.VirtualPrivateCloud.VpcId, req.VirtualPrivateCloud.SubnetId = vpc_id, subnet_id
        if security_group_ids:
            req.SecurityGroupIds = list(security_group_ids)
        if key_ids:
            req.LoginSettings = cvm.LoginSettings()
            req.LoginSettings.KeyIds = list(key_ids)
        tag = cvm.Tag()
        tag.Key, tag.Value = "migrated-task", task_id
        spec = cvm.TagSpecification()
        spec.ResourceType, spec.Tags = "instance", [tag]
        req.TagSpecification = [spec]
        resp = await self._call("cvm", region, "RunInstances", req)
        ids = resp.InstanceIdSet or []
        if not ids:
            raise CloudError("EmptyInstanceIdSet", "RunInstances returned no instance", action="RunInstances",
                             request_id=resp.RequestId or "")
        return ids[0]

    async def terminate_relay(self, region: str, instance_id: str) -> bool:
        """Terminate a relay instance; refuses (TargetError) an instance not named RELAY_NAME.
        False when it is already gone."""
        info = await self.describe_instance(region, instance_id)
        if info is None:
            return False
        if info.name != RELAY_NAME:
            raise TargetError(f"instance {instance_id} is named {info.name!r}, not {RELAY_NAME!r}: "
                              "migrated terminates only its own relay instances")
        req = cvm.TerminateInstancesRequest()
        req.InstanceIds = [instance_id]
        await self._call("cvm", region, "TerminateInstances", req)
        return True


def _plain(model: Any) -> dict[str, Any]:
    """An SDK model as the JSON dict the API sent (for the pure rule checks)."""
    out: dict[str, Any] = {}
    for k, v in vars(model).items():
        key = k.lstrip("_")
        if hasattr(v, "_serialize") and not isinstance(v, (str, int, float, list, dict)):
            out[key] = _plain(v)
        else:
            out[key] = v
    return out


def from_config(cfg: CloudConfig) -> TencentCloud:
    """The adapter for a console ``cloud:`` section (the factory's entry point); ConfigError when
    the credentials cannot be loaded."""
    return TencentCloud(cloud_credentials(cfg), endpoint=cfg.endpoint, timeout=cfg.api_timeout_seconds)
