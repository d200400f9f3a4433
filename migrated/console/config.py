"""migrate-console configuration: YAML -> frozen, validated models.

Validated whole at load time by the loader the agent's config uses too (``migrated/configload.py``):
unknown keys are refused, every error names its key path, line and column
(``agents.heartbeat_interval_seconds: ...``), all of them at once. Defaults sit next to their fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from migrated.configload import StrictModel, load_file, validate

API_VERSION = "2026-11-01"
SERVICE = "migrate"


_Model = StrictModel  # unknown keys refused, no coercion, frozen


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
    # the same formats as the agent's log.format and every program's --log-format
    format: Literal["auto", "console", "json", "journald"] = "console"


class CloudConfig(_Model):
    """Tencent Cloud (docs/cloud.md). Absent from the config = no cloud calls at all."""

    provider: Literal["tencent"] = "tencent"
    # YAML with secret_id / secret_key, mode 0600; empty = TENCENTCLOUD_SECRET_ID / _KEY from the environment
    credentials_file: str = ""
    endpoint: str = Field("", pattern=r"^(https?://[A-Za-z0-9.\-\[\]:]+)?$")  # API host override (tests, private)
    check_security_groups: bool = True  # warn at CreateTask when the target's SSH port looks closed
    api_timeout_seconds: float = Field(30.0, gt=0, le=300)
    image_timeout_seconds: float = Field(7200.0, gt=0, le=86400)  # CreateImage -> NORMAL deadline
    image_poll_seconds: float = Field(15.0, gt=0, le=600)
    # after the image is NORMAL, terminate the image task's TargetInstanceId if (and only if) it is
    # named do_not_delete_csm_instance, the relay naming convention
    terminate_relay: bool = False


class ConsoleConfig(_Model):
    listen: ListenConfig = ListenConfig()
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    agents: AgentsConfig = AgentsConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    log: LogConfig = LogConfig()
    cloud: CloudConfig | None = None


def parse_config(data: object, *, origin: str = "config") -> ConsoleConfig:
    """Validate already-parsed data (a dict, or None for all defaults)."""
    return validate(ConsoleConfig, data, origin)


def load_config(path: str | Path) -> ConsoleConfig:
    return load_file(ConsoleConfig, path)
