"""The console config's ``cloud:`` section (docs/cloud.md) and the cloud key it names.

:class:`CloudConfig` is the section's model (``migrated.console.config`` puts it under ``cloud``);
:func:`load_cloud_section` reads only that section of a console config file, for ``migrate-cloud``,
with the same model and the same ``cloud.<key>: <problem>`` messages as the console.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from migrated.cloud.provider import DEFAULT_PROVIDER, PROVIDERS, traits_for
from migrated.credentials import Credentials, credentials_from_env, read_credentials
from migrated.errors import ConfigError


class CloudConfig(BaseModel):
    """Absent from the config = no cloud calls at all."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

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


def load_cloud_section(path: str | Path) -> CloudConfig | None:
    """The ``cloud:`` section of the console config file at ``path`` (None when it has none)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    if data.get("cloud") is None:
        return None
    try:
        return CloudConfig.model_validate(data["cloud"])
    except ValidationError as exc:
        problems = "; ".join(".".join(("cloud", *(str(x) for x in e["loc"]))) + ": "
                             + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"]) for e in exc.errors())
        raise ConfigError(f"{p}: {problems}") from None
