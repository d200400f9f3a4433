"""migrate-console configuration: YAML -> frozen, validated models.

Validated whole at load time by the loader the agent's config uses too (``migrated/configload.py``):
unknown keys are refused, every error names its key path, line and column
(``agents.heartbeat_interval_seconds: ...``), all of them at once. Defaults sit next to their fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from migrated.cloud.config import CloudConfig  # the cloud: section lives with the cloud boundary
from migrated.configload import StrictModel, issue_at, load_file, validate

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
    """``backend: sqlite`` (one file, the default) or ``postgresql`` (docs/console.md, "PostgreSQL")."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: str = "/var/lib/migrate-console/console.db"  # sqlite
    # postgresql: postgresql://user@host:port/db (or ...@/db?host=/run/postgresql), never with a password:
    # that comes from password_file (mode 0600) or the systemd credential password_credential
    # ($CREDENTIALS_DIRECTORY/NAME, from the unit's LoadCredential=NAME:/path)
    dsn: str = ""
    password_file: str = ""
    password_credential: str = Field("", pattern=r"^[A-Za-z0-9_.\-]*$")
    pool_size: int = Field(10, ge=1, le=200)  # postgresql: connections per console process
    heartbeat_flush_seconds: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _backend_options(self) -> StorageConfig:
        if self.backend == "postgresql":
            if not self.dsn:
                raise issue_at(("dsn",), "backend postgresql needs a dsn (postgresql://user@host:port/database)")
            if urlsplit(self.dsn).scheme not in ("postgresql", "postgres"):
                raise issue_at(("dsn",), "must start with postgresql:// (e.g. postgresql://migrate@db.example/migrate)")
            from migrated.console.storage.postgresql import dsn_has_password

            if dsn_has_password(self.dsn):
                raise issue_at(("dsn",), "must not hold a password (it would show in ps, logs and backups); "
                                         "put it in password_file or password_credential")
            if self.password_file and self.password_credential:
                raise issue_at(("password_credential",), "give password_file or password_credential, not both")
        else:
            for key in ("dsn", "password_file", "password_credential"):
                if getattr(self, key):
                    raise issue_at((key,), f"only for backend postgresql (backend is {self.backend})")
        return self

    def backend_options(self) -> dict[str, object]:
        """What ``create_storage(backend, ...)`` takes for this backend."""
        if self.backend == "postgresql":
            return {"dsn": self.dsn, "password_file": self.password_file,
                    "password_credential": self.password_credential, "pool_size": self.pool_size}
        return {"path": self.path}

    def describe(self) -> str:
        """The database in one line for messages and logs (never a password)."""
        return f"postgresql {self.dsn}" if self.backend == "postgresql" else f"sqlite {self.path}"


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


class ConsoleConfig(_Model):
    listen: ListenConfig = ListenConfig()
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    agents: AgentsConfig = AgentsConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    log: LogConfig = LogConfig()
    cloud: CloudConfig | None = None  # docs/cloud.md


def parse_config(data: object, *, origin: str = "config") -> ConsoleConfig:
    """Validate already-parsed data (a dict, or None for all defaults)."""
    return validate(ConsoleConfig, data, origin)


def load_config(path: str | Path) -> ConsoleConfig:
    return load_file(ConsoleConfig, path)
