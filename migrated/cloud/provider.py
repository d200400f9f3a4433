"""The cloud boundary: what the console asks of a cloud, in neutral types.

Imports no asyncio, aiohttp, files or cloud SDK; only :func:`provider_module` / :func:`open_provider`
import a provider's module, by name, when asked. The console (``console/service.py``,
``console/app.py``, the web UI) and ``migrate-cloud`` import this module and
:mod:`migrated.cloud.config`, never a provider module: :func:`open_provider` imports the one a
console config names, by name, when the console starts (tests/test_cloud_boundary.py checks that
importing the console app loads no provider and no cloud SDK).

* :class:`CloudProvider`: the calls, one method each; every failure of a cloud call is a
  :class:`~migrated.errors.CloudError`, a target that cannot take the migration is
  :class:`InstanceInvalid`.
* :class:`DiskSpec`, :class:`InstanceInfo`, :class:`ImageInfo`: what crosses the boundary.
  Instance and image states are the provider's own words (``RUNNING``, ``NORMAL``), shown as they are.
* :class:`ProviderTraits`: what the console must know about a provider without importing it
  (instance-ID shape, regions for the form, image-name limit, its pip extra); one entry per
  provider in :data:`PROVIDERS`.

Adding a provider: docs/cloud.md "Where to add a cloud provider".
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from migrated.errors import ConfigError, TargetError

if TYPE_CHECKING:
    from migrated.cloud.config import CloudConfig

GIB = 1 << 30


@dataclass(frozen=True)
class CallNames:
    """The provider's names for the read-only calls ``migrate-cloud check`` reports (as its
    permission system names them, so a missing permission can be granted by that name)."""

    instances: str  # CloudProvider.probe_instances / validate_instance
    images: str  # find_images
    security_groups: str  # ssh_port_warnings


@dataclass(frozen=True)
class ProviderTraits:
    """A provider's facts the console needs while the provider's module stays unimported."""

    name: str  # the config's cloud.provider
    title: str  # in messages: "Tencent Cloud DescribeImages: ..."
    module: str  # implements from_config(CloudConfig) -> CloudProvider
    extra: str  # pip install 'migrated[<extra>]' brings its SDK
    instance_id_pattern: str  # a regex for one instance ID (no anchors)
    instance_id_example: str
    regions: tuple[str, ...]  # offered by the web form (the API takes any well-formed region)
    image_name_max: int  # longest image name the provider accepts
    credential_env: tuple[str, str]  # SecretId / SecretKey variables when cloud.credentials_file is empty
    calls: CallNames


TENCENT = ProviderTraits(
    name="tencent", title="Tencent Cloud", module="migrated.cloud.tencent", extra="tencent",
    instance_id_pattern=r"ins-[a-z0-9]{6,32}", instance_id_example="ins-abcd1234",
    regions=("ap-guangzhou", "ap-shanghai", "ap-beijing", "ap-chengdu", "ap-chongqing", "ap-nanjing",
             "ap-hongkong", "ap-singapore", "ap-bangkok", "ap-jakarta", "ap-seoul", "ap-tokyo",
             "na-siliconvalley", "na-ashburn", "eu-frankfurt", "sa-saopaulo"),
    image_name_max=60,
    credential_env=("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"),  # the SDK's own variable names
    calls=CallNames("cvm:DescribeInstances", "cvm:DescribeImages", "vpc:DescribeSecurityGroupPolicies"),  # CAM
)

PROVIDERS: dict[str, ProviderTraits] = {t.name: t for t in (TENCENT,)}
DEFAULT_PROVIDER = "tencent"  # the console's API speaks its dialect; its traits apply with no cloud: section


def traits_for(provider: str | None) -> ProviderTraits:
    """The named provider's traits; the default provider's for None (no ``cloud:`` section)."""
    return PROVIDERS[provider or DEFAULT_PROVIDER]


def instance_id_regex() -> str:
    """A full-match regex for TargetInstanceId: empty, or an instance ID of any known provider."""
    return "^(" + "|".join(f"(?:{t.instance_id_pattern})" for t in PROVIDERS.values()) + ")?$"


# ---------------------------------------------------------------- what crosses the boundary


@dataclass(frozen=True)
class DiskSpec:
    """A source disk as the task maps it (size in bytes); not :class:`migrated.source.SourceDisk`,
    which reads one."""

    name: str
    size_bytes: int
    is_system: bool = False


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    name: str
    state: str  # the provider's word; RUNNING is the one that can take a migration
    os_name: str
    zone: str
    system_disk_gb: int
    data_disks_gb: tuple[int, ...]
    security_group_ids: tuple[str, ...]
    private_ips: tuple[str, ...] = ()
    public_ips: tuple[str, ...] = ()
    data_disk_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageInfo:
    image_id: str
    name: str
    state: str  # the provider's word (Tencent: CREATING, NORMAL, CREATEFAILED, ...)
    size_gb: int = 0
    description: str = ""


class InstanceInvalid(TargetError):
    """The target instance cannot take this migration. ``kind``: not_found, not_running, os, too_small."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@runtime_checkable
class CloudProvider(Protocol):
    """One per console process, opened by :func:`open_provider`, closed by the console at exit.
    ``region`` is the task's Region. Failures: CloudError (retryable or not), InstanceInvalid."""

    traits: ProviderTraits

    async def close(self) -> None: ...

    async def probe_instances(self, region: str) -> int:
        """A read-only permission check: the account's instance count in ``region``."""
        ...

    async def describe_instance(self, region: str, instance_id: str) -> InstanceInfo | None:
        """None when there is no such instance."""
        ...

    async def validate_instance(self, region: str, instance_id: str, disks: Sequence[DiskSpec]) -> InstanceInfo:
        """The instance exists, is running, runs Linux, and its disks can take ``disks``
        (:func:`check_disks_fit`); else InstanceInvalid naming what to fix."""
        ...

    async def ssh_port_warnings(self, region: str, info: InstanceInfo, port: int) -> list[str]:
        """Warnings (never errors; empty when open to all) about inbound TCP ``port`` on the instance."""
        ...

    async def find_images(self, region: str, *, name: str | None = None, image_id: str | None = None
                          ) -> list[ImageInfo]:
        """The account's own images with exactly this name, or the one with this ID ([] if none)."""
        ...

    async def unique_image_name(self, region: str, name: str, task_id: str) -> str:
        """``name``, or :func:`unique_name` of it when one of the account's images has it."""
        ...

    async def create_image(self, region: str, instance_id: str, name: str, description: str = "",
                           data_disk_ids: Sequence[str] = ()) -> str:
        """Start making an image of the instance (system disk, plus ``data_disk_ids``); its ID."""
        ...

    async def wait_image(self, region: str, image_id: str, *, timeout: float, interval: float,
                         on_state: Callable[[str], Awaitable[None]] | None = None) -> ImageInfo:
        """Poll until the image is usable (returned) or failed / ``timeout`` (CloudError);
        ``on_state`` is awaited on each state change."""
        ...

    async def terminate_relay(self, region: str, instance_id: str) -> bool:
        """Terminate an instance migrated started as a relay; TargetError for any other instance
        (never a user's machine). False when it is already gone."""
        ...


# ---------------------------------------------------------------- rules every provider shares


def check_disks_fit(info: InstanceInfo, disks: Sequence[DiskSpec]) -> None:
    """System disk onto the system disk; the other disks, largest first, onto the data disks,
    largest first (that pairing fits whenever any pairing does). Raises InstanceInvalid(too_small)."""
    if not disks:
        return
    system = next((d for d in disks if d.is_system), disks[0])
    others = sorted((d for d in disks if d is not system), key=lambda d: d.size_bytes, reverse=True)
    need = math.ceil(system.size_bytes / GIB)
    if need > info.system_disk_gb:
        raise InstanceInvalid("too_small", f"instance {info.instance_id}: system disk is {info.system_disk_gb} GB, "
                                           f"source disk {system.name} needs {need} GB; enlarge the system disk")
    targets = sorted(info.data_disks_gb, reverse=True)
    if len(others) > len(targets):
        raise InstanceInvalid("too_small", f"instance {info.instance_id} has {len(targets)} data disk(s), the task "
                                           f"maps {len(others)} ({', '.join(d.name for d in others)}); "
                                           "attach more data disks")
    for d, gb in zip(others, targets, strict=False):
        need = math.ceil(d.size_bytes / GIB)
        if need > gb:
            raise InstanceInvalid("too_small", f"instance {info.instance_id}: source disk {d.name} needs {need} GB, "
                                               f"the largest data disk left is {gb} GB; enlarge or attach a data disk")


def unique_name(name: str, task_id: str, max_len: int) -> str:
    """``name-task_id``, the name cut so that the whole stays within ``max_len`` characters."""
    suffix = f"-{task_id}"
    return name[: max_len - len(suffix)] + suffix


# ---------------------------------------------------------------- the factory


def provider_module(traits: ProviderTraits) -> ModuleType:
    """Import the provider's module (no credentials read, nothing called): what a config check needs
    to know the provider can be opened. ConfigError naming the pip extra when its SDK is missing."""
    try:
        return importlib.import_module(traits.module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("migrated"):
            raise  # our own code is missing: a bug, not an install step
        raise ConfigError(f"cloud.provider: {traits.name} needs the {traits.title} SDK, which this installation "
                          f"lacks (no module {exc.name}): pip install 'migrated[{traits.extra}]'") from None


def open_provider(cfg: CloudConfig) -> CloudProvider:
    """The provider a console ``cloud:`` section names, with its credentials loaded. ConfigError
    when its SDK is not installed (naming the pip extra) or the credentials cannot be read."""
    provider: CloudProvider = provider_module(traits_for(cfg.provider)).from_config(cfg)
    return provider
