"""A FAKE Tencent Cloud for tests: a stateful local stand-in (the real cloud cannot be reached from here).

A real aiohttp server on 127.0.0.1 port 0 that speaks the Tencent Cloud API 3.0 wire format:
``POST /`` with a JSON body, ``X-TC-Action`` / ``X-TC-Region`` / ``X-TC-Timestamp`` headers, and a
TC3-HMAC-SHA256 ``Authorization`` it **verifies** with the SDK's own signing code
(:mod:`migrated.model.tc3`, built on ``tencentcloud.common.sign.Sign``): a wrong key gets
``AuthFailure.SignatureFailure`` as from Tencent. The service is taken from the credential scope
(``cvm`` / ``vpc``), so one endpoint serves every product.

What it answers (response shapes copied from the SDK's models, ``tencentcloud/cvm/v20170312/models.py``):
DescribeInstances, RunInstances, StopInstances, StartInstances, TerminateInstances, EnterRescueMode,
ExitRescueMode, DescribeImages, CreateImage (cvm) and DescribeSecurityGroupPolicies (vpc).
docs/cloud.md ("The local stand-in") says what of it is taken from the SDK and what is assumed.

* **Parameters** a request carries that the installed SDK's ``<Action>Request`` model does not read
  (nested ones too: ``Placement.Zonee``) are refused with ``UnknownParameter``, as the real API does.
* **State**: ``instances`` (region, id) -> the SDK's ``Instance`` dict, ``images`` id -> ``Image``
  dict; plain dicts tests may edit. Instances made by RunInstances have **real disk files** (sparse, in
  ``workdir``; a "GB" of the fake is ``gib`` bytes, 1 MiB by default so copies stay cheap);
  :meth:`disk_path` gives (or makes) the file of any disk ID.
* **Asynchronous states**, each lasting ``delays.<name>`` seconds of the fake's clock (``advance()``
  moves that clock, so a test can hold a state without a timing window): RunInstances PENDING ->
  RUNNING (or LAUNCH_FAILED, see ``fail_launch``), TerminateInstances TERMINATING -> gone (delay 0:
  gone at once), StopInstances STOPPING -> STOPPED, StartInstances STARTING -> RUNNING,
  EnterRescueMode ENTER_RESCUE_MODE -> RESCUE_MODE, ExitRescueMode EXIT_RESCUE_MODE -> RUNNING,
  CreateImage CREATING -> NORMAL (seen by DescribeImages with ImageIds once the delay has passed and
  after ``image_polls_until_done`` such polls; ``image_outcome`` may be CREATEFAILED). An action
  refused in a state answers the SDK's ``UnsupportedOperation.InstanceState*`` code for that state.
* **Rescue mode** is a real OpenSSH ``sshd`` on 127.0.0.1 (``tests/sshd.py``) started by
  EnterRescueMode and stopped by ExitRescueMode / TerminateInstances: :meth:`rescue` gives its
  address, host key, a client key it accepts (``authorize()`` adds more) and the instance's disk files
  (also as ``/dev/vda``, ``/dev/vdb``... symlinks under its ``dev/``). The Password of the call is checked
  against the SDK's Linux rule and kept in ``rescue(...).password``; the sshd itself accepts keys only.
* **CreateImage copies the bytes**: :meth:`image_disks` gives the image's copies of the system disk and
  of each disk in ``DataDiskIds``, taken when the call is made.
* **ClientToken** on RunInstances: the same token gives the same instances, no second one.
* **Failures**: ``inject(action, code, times)`` rules (first matching rule with times left fires);
  the older ``fail[action] = (code, message)`` with ``fail_times[action]`` still works.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from migrated.model import tc3
from tests.sshd import LoopbackSshd

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


# an instance state -> the SDK's code for "the request does not support an instance in this state"
STATE_CODES = {
    "PENDING": "UnsupportedOperation.InstanceStatePending",
    "LAUNCH_FAILED": "UnsupportedOperation.InstanceStateLaunchFailed",
    "RUNNING": "UnsupportedOperation.InstanceStateRunning",
    "STOPPED": "UnsupportedOperation.InstanceStateStopped",
    "STARTING": "UnsupportedOperation.InstanceStateStarting",
    "STOPPING": "UnsupportedOperation.InstanceStateStopping",
    "REBOOTING": "UnsupportedOperation.InstanceStateRebooting",
    "SHUTDOWN": "UnsupportedOperation.InstanceStateShutdown",
    "TERMINATING": "UnsupportedOperation.InstanceStateTerminating",
    "ENTER_RESCUE_MODE": "UnsupportedOperation.InstanceStateEnterRescueMode",
    "RESCUE_MODE": "UnsupportedOperation.InstanceStateRescueMode",
    "EXIT_RESCUE_MODE": "UnsupportedOperation.InstanceStateExitRescueMode",
}
# action -> the states it is accepted in (the rest get STATE_CODES); see docs/cloud.md for what is assumed
ALLOWED_STATES = {
    "EnterRescueMode": {"RUNNING", "STOPPED"},
    "ExitRescueMode": {"RESCUE_MODE"},
    "CreateImage": {"RUNNING", "STOPPED"},
    "TerminateInstances": set(STATE_CODES) - {"TERMINATING"},
    "StopInstances": {"RUNNING"},
    "StartInstances": {"STOPPED"},
}
_PASSWORD_CLASSES = ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
                     "()`~!@#$%^&*-+=|{}[]:;',.?/")


def model_parameters(product: str, action: str) -> set[str] | None:
    """The top-level parameter names of the installed SDK's ``<action>Request`` model (the attributes
    its ``__init__`` sets), or None when the SDK has no such model."""
    version = {"cvm": "v20170312", "vpc": "v20170312"}.get(product)
    if version is None:
        return None
    models = importlib.import_module(f"tencentcloud.{product}.{version}.models")
    cls = getattr(models, f"{action}Request", None)
    if cls is None:
        return None
    return {k[1:] for k in vars(cls()) if k.startswith("_")}


class _Reading(dict):  # type: ignore[type-arg]
    """A request's parameters that note each name the SDK model's ``_deserialize`` reads (nested: ``A.B``)."""

    def __init__(self, params: dict[str, Any], prefix: str, read: set[str]) -> None:
        super().__init__(params)
        self.prefix, self.read = prefix, read

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(self.prefix + key)
        value = super().get(key, default)
        if isinstance(value, dict):
            return _Reading(value, f"{self.prefix}{key}.", self.read)
        if isinstance(value, list):
            return [_Reading(v, f"{self.prefix}{key}.", self.read) if isinstance(v, dict) else v for v in value]
        return value


def _names(params: dict[str, Any], prefix: str = "") -> set[str]:
    names = set()
    for key, value in params.items():
        names.add(prefix + key)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict):
                names |= _names(v, f"{prefix}{key}.")
    return names


def unknown_parameters(product: str, action: str, params: dict[str, Any]) -> list[str] | None:
    """The parameter names in ``params`` (nested ones as ``Placement.Zone``) that the installed SDK's
    ``<action>Request`` model does not read: its own ``_deserialize`` is run on them and every name
    it reads is noted. None when the SDK has no such model."""
    if model_parameters(product, action) is None:
        return None
    models = importlib.import_module(f"tencentcloud.{product}.v20170312.models")
    read: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK warns "fileds are useless": that is what we answer
        getattr(models, f"{action}Request")()._deserialize(_Reading(params, "", read))
    return sorted(_names(params) - read)


def linux_password_ok(password: str) -> bool:
    """The SDK's EnterRescueModeRequest.Password rule for Linux: 8 to 30 characters, at least two of
    lower case, upper case, digits and the listed specials."""
    allowed = "".join(_PASSWORD_CLASSES)
    return (8 <= len(password) <= 30 and all(c in allowed for c in password)
            and sum(any(c in cls for c in password) for cls in _PASSWORD_CLASSES) >= 2)


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` keeping holes (disk files are mostly holes)."""
    size = src.stat().st_size
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.truncate(size)
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fi.fileno(), start, os.SEEK_HOLE)
            fi.seek(start)
            fo.seek(start)
            left = end - start
            while left:
                chunk = fi.read(min(left, 1 << 20))
                fo.write(chunk)
                left -= len(chunk)
            pos = end


@dataclass
class Delays:
    """Seconds of the fake's clock each asynchronous state lasts."""

    run: float = 0.0  # PENDING
    terminate: float = 0.0  # TERMINATING (0: the instance is gone when the call returns)
    enter_rescue: float = 0.0  # ENTER_RESCUE_MODE
    exit_rescue: float = 0.0  # EXIT_RESCUE_MODE
    image: float = 0.0  # CREATING (besides image_polls_until_done)
    stop: float = 0.0  # STOPPING
    start: float = 0.0  # STARTING


@dataclass
class FailRule:
    action: str
    code: str
    times: int = 1
    message: str = "injected by the fake"
    fired: int = 0


@dataclass
class Rescue:
    """The rescue system of an instance in RESCUE_MODE: a real sshd on 127.0.0.1."""

    instance_id: str
    sshd: LoopbackSshd
    password: str
    username: str
    disks: dict[str, Path]  # disk ID -> its file (system disk first)
    devices: dict[str, Path]  # "/dev/vda"... -> a symlink to the disk file

    @property
    def host(self) -> str:
        return self.sshd.host

    @property
    def port(self) -> int:
        return self.sshd.port

    @property
    def host_key_line(self) -> str:
        return self.sshd.host_key_line

    def authorize(self, public_key_line: str) -> None:
        """Let ``public_key_line`` (``ssh-ed25519 AAAA...``) log in, as the console would install the agent's key."""
        with open(self.sshd.authorized_keys, "a") as f:
            f.write(public_key_line.strip() + "\n")


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
    rules: list[FailRule] = field(default_factory=list)
    delays: Delays = field(default_factory=Delays)
    launch_failures: int = 0  # the next this many RunInstances instances end LAUNCH_FAILED
    gib: int = 1 << 20  # bytes of a disk file per GB of DiskSize
    workdir: Path | None = None  # disk files and rescue sshds; a temporary directory when None
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (action, region, params)
    client_tokens: dict[tuple[str, str], str] = field(default_factory=dict)  # RunInstances ClientToken -> id
    bad_signatures: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _skew: float = 0.0
    _timers: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)  # -> (deadline, next state)
    _rescues: dict[tuple[str, str], Rescue] = field(default_factory=dict)
    _disks: dict[str, Path] = field(default_factory=dict)  # disk ID -> file
    _image_disks: dict[str, list[Path]] = field(default_factory=dict)
    _image_ready: dict[str, float] = field(default_factory=dict)
    _own_workdir: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def actions(self) -> list[str]:
        return [a for a, _, _ in self.calls]

    async def start(self) -> FakeTencentCloud:
        if self.workdir is None:
            self.workdir, self._own_workdir = Path(tempfile.mkdtemp(prefix="fake-tencentcloud-")), True
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
        for r in list(self._rescues.values()):
            await asyncio.to_thread(r.sshd.stop)
        self._rescues.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------ what tests look at and steer

    def now(self) -> float:
        return time.monotonic() + self._skew

    def advance(self, seconds: float) -> None:
        """Move the fake's clock: states whose delay has then passed change at the next request."""
        self._skew += seconds

    def inject(self, action: str, code: str, times: int = 1, message: str = "injected by the fake") -> FailRule:
        """The next ``times`` calls of ``action`` answer the error ``code`` (and change nothing)."""
        r = FailRule(action, code, times, message)
        self.rules.append(r)
        return r

    def fail_launch(self, times: int = 1) -> None:
        """The next ``times`` instances RunInstances makes end LAUNCH_FAILED instead of RUNNING."""
        self.launch_failures += times

    def state(self, region: str, instance_id: str) -> str | None:
        self._advance()
        inst = self.instances.get((region, instance_id))
        return None if inst is None else inst["InstanceState"]

    def rescue(self, region: str, instance_id: str) -> Rescue | None:
        """The rescue system of an instance in RESCUE_MODE (None in any other state)."""
        self._advance()
        inst = self.instances.get((region, instance_id))
        if inst is None or inst["InstanceState"] != "RESCUE_MODE":
            return None
        return self._rescues.get((region, instance_id))

    def disk_path(self, disk_id: str, size_gb: int = 10) -> Path:
        """The file holding disk ``disk_id`` (a sparse file of ``size_gb`` * ``gib`` bytes made on first use)."""
        path = self._disks.get(disk_id)
        if path is None:
            assert self.workdir is not None, "start() the fake first"
            (self.workdir / "disks").mkdir(exist_ok=True)
            path = self._disks[disk_id] = self.workdir / "disks" / f"{disk_id}.img"
            with open(path, "wb") as f:
                f.truncate(size_gb * self.gib)
        return path

    def instance_disks(self, region: str, instance_id: str) -> dict[str, Path]:
        """Disk ID -> file for an instance's system disk then its data disks."""
        inst = self.instances[(region, instance_id)]
        disks = [inst["SystemDisk"], *inst["DataDisks"]]
        return {d["DiskId"]: self.disk_path(d["DiskId"], d["DiskSize"]) for d in disks}

    def image_disks(self, image_id: str) -> list[Path]:
        """The image's copies of its instance's disks: the system disk, then each of DataDiskIds."""
        return list(self._image_disks.get(image_id, []))

    def leftovers(self, tag_key: str = "migrated-task") -> list[str]:
        """IDs of instances and images carrying the tag ``tag_key`` (what a task would leave behind)."""
        found = [i["InstanceId"] for i in self.instances.values() if any(t["Key"] == tag_key for t in i["Tags"])]
        return found + [i["ImageId"] for i in self.images.values() if any(t["Key"] == tag_key for t in i["Tags"])]

    # ------------------------------------------------------------ the clock

    def _after(self, key: tuple[str, str], seconds: float, then: str) -> None:
        self._timers[key] = (self.now() + seconds, then)

    def _advance(self) -> None:
        now = self.now()
        for key, (deadline, then) in list(self._timers.items()):
            if deadline > now:
                continue
            del self._timers[key]
            if then == "GONE":
                self.instances.pop(key, None)
            elif key in self.instances:
                self.instances[key]["InstanceState"] = then

    def _instance_in(self, region: str, instance_id: str, action: str) -> dict[str, Any]:
        inst = self.instances.get((region, instance_id))
        if inst is None:
            raise _Fail("InvalidInstanceId.NotFound", f"The instance `{instance_id}` is not found.")
        state = inst["InstanceState"]
        if state not in ALLOWED_STATES[action]:
            raise _Fail(STATE_CODES.get(state, "InvalidInstanceState"),
                        f"{action} does not support instance `{instance_id}` in state `{state}`.")
        return inst

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
        unknown = unknown_parameters(auth.service, action, params)
        if unknown:
            return self._error("UnknownParameter", f"The parameter `{unknown[0]}` is not recognized.")
        if action in self.fail and self.fail_times.get(action, 1) > 0:
            self.fail_times[action] = self.fail_times.get(action, 1) - 1
            return self._error(*self.fail[action])
        for r in self.rules:
            if r.action == action and r.fired < r.times:
                r.fired += 1
                return self._error(r.code, r.message)
        handler = getattr(self, f"_{auth.service}_{action}", None)
        if handler is None:
            return self._error("InvalidAction", f"the action {action} is not supported by this fake ({auth.service})")
        self._advance()
        try:
            result = handler(region, params)
            if inspect.isawaitable(result):
                result = await result
        except _Fail as exc:
            return self._error(exc.code, exc.message)
        self._advance()
        return self._reply(result)

    # ------------------------------------------------------------ cvm

    def _cvm_DescribeInstances(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        ids = p.get("InstanceIds") or [i for (r, i) in self.instances if r == region]
        found = [self.instances[(region, i)] for i in ids if (region, i) in self.instances]
        for f in p.get("Filters") or []:
            name, values = f["Name"], f["Values"]
            if name == "instance-name":
                found = [i for i in found if i["InstanceName"] in values]
            elif name == "instance-state":
                found = [i for i in found if i["InstanceState"] in values]
            elif name.startswith("tag:"):
                found = [i for i in found if any(t["Key"] == name[4:] and t["Value"] in values for t in i["Tags"])]
            elif name == "tag-key":
                found = [i for i in found if any(t["Key"] in values for t in i["Tags"])]
        offset, limit = int(p.get("Offset", 0)), int(p.get("Limit", 20))
        return {"TotalCount": len(found), "InstanceSet": found[offset:offset + limit]}

    def _cvm_DescribeImages(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        imgs = [i for i in self.images.values() if i["_region"] == region]
        if p.get("ImageIds"):
            imgs = [i for i in imgs if i["ImageId"] in p["ImageIds"]]
            for i in imgs:
                if i["ImageState"] == "CREATING":
                    i["_polls"] += 1
                    ready = self._image_ready.get(i["ImageId"], 0.0) <= self.now()
                    if i["_polls"] > self.image_polls_until_done and ready:
                        i["ImageState"] = self.image_outcome
        for f in p.get("Filters") or []:
            if f["Name"] == "image-name":
                imgs = [i for i in imgs if i["ImageName"] in f["Values"]]
            elif f["Name"] == "image-type":
                imgs = [i for i in imgs if i["ImageType"] in f["Values"]]
        shown = [{k: v for k, v in i.items() if not k.startswith("_")} for i in imgs]
        offset, limit = int(p.get("Offset", 0)), int(p.get("Limit", 20))
        return {"ImageSet": shown[offset:offset + limit], "TotalCount": len(shown)}

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
        inst = self._instance_in(region, p["InstanceId"], "CreateImage")
        own = {d["DiskId"] for d in inst["DataDisks"]}
        for d in p.get("DataDiskIds") or []:
            if d not in own:
                raise _Fail("InvalidParameterValue", f"disk {d} is not attached to {p['InstanceId']}")
        image_id = self.add_image(region, p["ImageName"], "CREATING", p.get("ImageDescription", ""))
        img = self.images[image_id]
        img["Tags"] = [t for s in p.get("TagSpecification") or [] for t in s["Tags"]]
        img["ImageSize"] = inst["SystemDisk"]["DiskSize"]
        self._image_ready[image_id] = self.now() + self.delays.image
        sizes = {d["DiskId"]: d["DiskSize"] for d in [inst["SystemDisk"], *inst["DataDisks"]]}
        copies = []
        assert self.workdir is not None
        (self.workdir / "images").mkdir(exist_ok=True)
        for n, disk_id in enumerate([inst["SystemDisk"]["DiskId"], *(p.get("DataDiskIds") or [])]):
            copy = self.workdir / "images" / f"{image_id}-{n}.img"
            copy_sparse(self.disk_path(disk_id, sizes[disk_id]), copy)
            copies.append(copy)
        self._image_disks[image_id] = copies
        return {"ImageId": image_id}

    def _cvm_RunInstances(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        token = p.get("ClientToken")
        if token and (region, token) in self.client_tokens:  # the same request returns the same instance
            return {"InstanceIdSet": [self.client_tokens[(region, token)]]}
        iid = "ins-" + uuid.uuid4().hex[:8]
        inst = instance(iid, state="PENDING", name=p.get("InstanceName", ""), zone=p["Placement"]["Zone"],
                        system_gb=p.get("SystemDisk", {}).get("DiskSize", 50),
                        data_gb=tuple(d["DiskSize"] for d in p.get("DataDisks") or []))
        inst["Tags"] = [t for s in p.get("TagSpecification") or [] for t in s["Tags"]]
        if p.get("ImageId"):
            inst["ImageId"] = p["ImageId"]
        if token:
            self.client_tokens[(region, token)] = iid
        self.instances[(region, iid)] = inst
        self.instance_disks(region, iid)  # real (sparse) disk files from the start
        outcome = "RUNNING"
        if self.launch_failures > 0:
            self.launch_failures -= 1
            outcome = "LAUNCH_FAILED"
        self._after((region, iid), self.delays.run, outcome)
        return {"InstanceIdSet": [iid]}

    async def _cvm_TerminateInstances(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        for i in p["InstanceIds"]:
            if (region, i) in self.instances:
                self._instance_in(region, i, "TerminateInstances")
        for i in p["InstanceIds"]:
            if (region, i) not in self.instances:
                continue
            await self._stop_rescue(region, i)
            if self.delays.terminate <= 0:
                self.instances.pop((region, i), None)
                self._timers.pop((region, i), None)
            else:
                self.instances[(region, i)]["InstanceState"] = "TERMINATING"
                self._after((region, i), self.delays.terminate, "GONE")
        return {}

    def _cvm_StopInstances(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        return self._move(region, p["InstanceIds"], "StopInstances", "STOPPING", self.delays.stop, "STOPPED")

    def _cvm_StartInstances(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        return self._move(region, p["InstanceIds"], "StartInstances", "STARTING", self.delays.start, "RUNNING")

    def _move(self, region: str, ids: list[str], action: str, now: str, seconds: float, then: str) -> dict[str, Any]:
        """Every instance of ``ids`` (all checked first: one refused, none moved) goes ``now`` -> ``then``."""
        for i in ids:
            self._instance_in(region, i, action)
        for i in ids:
            self.instances[(region, i)]["InstanceState"] = now
            self._after((region, i), seconds, then)
        return {}

    async def _cvm_EnterRescueMode(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        key = (region, p.get("InstanceId", ""))
        self._instance_in(*key, "EnterRescueMode")
        password = p.get("Password") or ""
        if not password:
            raise _Fail("MissingParameter", "The request is missing a required parameter `Password`.")
        if not linux_password_ok(password):
            raise _Fail("InvalidPassword", "The password does not meet the complexity requirements.")
        if p.get("ForceStop") is not None and p.get("StopType"):
            raise _Fail("InvalidParameter", "ForceStop and StopType cannot be used together.")
        self.instances[key]["InstanceState"] = "ENTER_RESCUE_MODE"
        disks = self.instance_disks(*key)
        assert self.workdir is not None
        root = self.workdir / f"rescue-{key[1]}"
        (root / "dev").mkdir(parents=True, exist_ok=True)
        devices: dict[str, Path] = {}
        for n, path in enumerate(disks.values()):
            dev = root / "dev" / f"vd{'abcdefghijklmnopqrstuvwxyz'[n]}"
            if not dev.is_symlink():
                dev.symlink_to(path)
            devices[f"/dev/{dev.name}"] = dev
        sshd = LoopbackSshd(root / "sshd")
        await asyncio.to_thread(sshd.start)
        self._rescues[key] = Rescue(key[1], sshd, password, p.get("Username") or "root", disks, devices)
        self._after(key, self.delays.enter_rescue, "RESCUE_MODE")
        return {}

    async def _cvm_ExitRescueMode(self, region: str, p: dict[str, Any]) -> dict[str, Any]:
        key = (region, p.get("InstanceId", ""))
        self._instance_in(*key, "ExitRescueMode")
        await self._stop_rescue(*key)
        self.instances[key]["InstanceState"] = "EXIT_RESCUE_MODE"
        self._after(key, self.delays.exit_rescue, "RUNNING")
        return {}

    async def _stop_rescue(self, region: str, instance_id: str) -> None:
        r = self._rescues.pop((region, instance_id), None)
        if r is not None:
            await asyncio.to_thread(r.sshd.stop)

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

