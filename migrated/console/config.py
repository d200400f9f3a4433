"""migrate-console configuration: YAML -> frozen, validated models.

Validated whole at load time: unknown keys are refused, every error names its key
path (``agents.heartbeat_interval_seconds: ...``). Defaults sit next to their fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from migrated.cloud.config import CloudConfig  # the cloud: section lives with the cloud boundary
from migrated.errors import ConfigError

API_VERSION = "2026-11-01"
SERVICE = "migrate"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TLSConfig(_Model):
    cert_file: str
    key_file: str


class ListenConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8930, ge=0, le=65535)
    tls: TLSConfig | None = None  # plain HTTP when absent (put it behind a TLS proxy, or set this)


class StorageConfig(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "/var/lib/migrate-console/console.db"
    heartbeat_flush_seconds: float = Field(5.0, gt=0, le=60)


class ApiConfig(_Model):
    service: str = Field(SERVICE, min_length=1)  # the credential-scope service clients sign for
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    signature_window_seconds: int = Field(300, ge=10, le=3600)
    # refuse requests whose signature does not cover X-TC-Action (the official SDK's do not)
    require_signed_action: bool = False


class AgentsConfig(_Model):
    heartbeat_interval_seconds: float = Field(10.0, gt=0, le=3600)
    offline_after_missed: int = Field(3, ge=1, le=100)
    command_visibility_seconds: float = Field(60.0, gt=0, le=3600)  # redeliver an unacked command after
    max_wait_seconds: float = Field(30.0, gt=0, le=30)  # longest PollCommands hold


class SchedulerConfig(_Model):
    min_lead_seconds: float = Field(600.0, ge=0)  # a scheduled start must be at least this far ahead
    tick_seconds: float = Field(1.0, gt=0, le=60)


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class ConsoleConfig(_Model):
    listen: ListenConfig = ListenConfig()
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    agents: AgentsConfig = AgentsConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    log: LogConfig = LogConfig()
    cloud: CloudConfig | None = None  # docs/cloud.md


def _first_error(exc: ValidationError) -> ConfigError:
    errs = exc.errors()
    lines = []
    for e in errs:
        path = ".".join(str(x) for x in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{path}: {msg}")
    return ConfigError("; ".join(lines))


def parse_config(data: object, *, origin: str = "config") -> ConsoleConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping")
    try:
        return ConsoleConfig.model_validate(data)
    except ValidationError as exc:
        err = _first_error(exc)
        raise ConfigError(f"{origin}: {err.message}") from None


def load_config(path: str | Path) -> ConsoleConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_config(data, origin=str(p))
