"""The console config's ``cloud:`` section (docs/cloud.md) and the cloud key it names.

:class:`CloudConfig` is the section's model (``migrated.console.config`` puts it under ``cloud``);
:func:`load_cloud_section` reads only that section of a console config file, for ``migrate-cloud``,
with the same model and the same ``FILE: line L, column C: cloud.<key>: <problem>`` messages as the console.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import ConfigDict, Field, field_validator

from migrated.cloud.provider import DEFAULT_PROVIDER, PROVIDERS, provider_module, traits_for
from migrated.configload import StrictModel, load_file
from migrated.credentials import Credentials, credentials_from_env, read_credentials
from migrated.errors import ConfigError


class CloudConfig(StrictModel):
    """Absent from the config = no cloud calls at all."""

    provider: str = DEFAULT_PROVIDER  # a name in migrated.cloud.provider.PROVIDERS
    # YAML with secret_id / secret_key, mode 0600; empty = the provider's variables from the environment
    # (Tencent: TENCENTCLOUD_SECRET_ID / _KEY)
    credentials_file: str = ""
    endpoint: str = Field("", pattern=r"^(https?://[A-Za-z0-9.\-\[\]:]+)?$")  # API host override (tests, private)
    check_security_groups: bool = True  # warn at CreateTask when the target's SSH port looks closed
    api_timeout_seconds: float = Field(30.0, gt=0, le=300)
    image_timeout_seconds: float = Field(7200.0, gt=0, le=86400)  # CreateImage -> NORMAL deadline
    image_poll_seconds: float = Field(15.0, gt=0, le=600)
    # after the image is NORMAL, terminate the image task's TargetInstanceId if (and only if) it is
    # named do_not_delete_csm_instance, the relay naming convention
    terminate_relay: bool = False

    @field_validator("provider")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PROVIDERS:
            raise ValueError(f"unknown provider {v!r} (known: {', '.join(sorted(PROVIDERS))})")
        return v


def cloud_credentials(cfg: CloudConfig, environ: Mapping[str, str] | None = None) -> Credentials:
    """From ``cfg.credentials_file`` (:mod:`migrated.credentials` rules) or, when that is empty, from
    the provider's environment variables. Never from argv. ConfigError names what to fix."""
    traits = traits_for(cfg.provider)
    if cfg.credentials_file:
        return read_credentials(cfg.credentials_file, setting="cloud.credentials_file")
    id_var, key_var = traits.credential_env
    creds = credentials_from_env(id_var, key_var, environ)
    if creds is None:
        raise ConfigError(f"cloud.credentials_file is not set and {id_var} / {key_var} are not both in "
                          f"the environment: give the console a {traits.title} API key")
    return creds


def check_cloud(cfg: CloudConfig) -> None:
    """What opening the provider would refuse, without calling the cloud (``migrate-console
    check-config``): its SDK missing (the pip extra named), the credentials unreadable or loose."""
    provider_module(traits_for(cfg.provider))
    cloud_credentials(cfg)


class _CloudSection(StrictModel):
    """A console config file seen from the cloud side: its ``cloud:`` key; the others are the console's."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    cloud: CloudConfig | None = None


def load_cloud_section(path: str | Path) -> CloudConfig | None:
    """The ``cloud:`` section of the console config file at ``path`` (None when it has none), checked
    by the console's loader (:mod:`migrated.configload`): the same messages, lines and columns."""
    return load_file(_CloudSection, path).cloud
