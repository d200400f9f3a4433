"""The agent's configuration: ``/etc/migrated/migrated.yaml`` -> frozen dataclasses.

Contract:

* The whole file is validated at load time; the first error found raises
  :class:`~migrated.errors.ConfigError` whose ``path`` is the dotted key path
  (``heartbeat.interval``, ``ignore_checks[2]``) and whose message says what is
  wanted. Unknown keys are rejected (a typo is never silently ignored).
* Defaults sit next to their fields; an empty file is a valid config (the
  console endpoint is then unset: ``migrated run`` refuses to start without it,
  ``migrated sync`` does not need it).
* Secrets are NOT in this file. SecretId/SecretKey live in a separate 0600 file
  (``credentials_file``) or come from systemd ``LoadCredential=`` (the file
  ``$CREDENTIALS_DIRECTORY/credentials``); :func:`load_credentials` reads them.
  Error messages never include a secret value.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, model_validator

from migrated.configload import StrictModel, as_tuple, issue_at, load_file, parse_text
from migrated.credentials import Credentials, read_credentials
from migrated.errors import ConfigError as ConfigError  # re-exported: callers catch config errors from here
from migrated.model.taskspec import CHECKS

DEFAULT_CONFIG_PATH = Path("/etc/migrated/migrated.yaml")
CREDENTIAL_NAME = "credentials"  # name of the systemd credential (LoadCredential=credentials:...)

# Names of the pre-migration checks: one list, in migrated.model.taskspec (the API and the CLIs use it too).
CHECK_NAMES = CHECKS

LogFormat = Literal["auto", "console", "json", "journald"]
LogLevel = Literal["debug", "info", "warning", "error"]


def _absolute(value: str) -> str:
    if not os.path.isabs(value):
        raise ValueError(f"must be an absolute path, got {value!r}")
    return value


def _endpoint(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with https:// (or http://), got {value!r}")
    return value


def _ignore_checks(value: Any) -> Literal["all"] | tuple[str, ...]:
    """``all`` or a list of names from CHECK_NAMES; an unknown name is blamed at its index."""
    if value == "all":
        return "all"
    if not isinstance(value, list | tuple):
        raise issue_at((), f"must be 'all' or a list of check names, got {value!r}")
    for i, name in enumerate(value):
        if name not in CHECK_NAMES:
            raise issue_at((i,), f"unknown check {name!r}; known: {', '.join(CHECK_NAMES)} (or ignore_checks: all)")
    return tuple(value)


Text = Annotated[str, Field(min_length=1)]
AbsPath = Annotated[str, Field(min_length=1), AfterValidator(_absolute)]
Seconds = Annotated[float, Field(gt=0)]
SecondsOrZero = Annotated[float, Field(ge=0)]


class ConsoleConfig(StrictModel):
    """Where the console is and how to talk to it."""

    # https://console.example:8443 ; required by `migrated run`
    endpoint: Annotated[Text | None, AfterValidator(_endpoint)] = None
    ca_file: Text | None = None  # PEM bundle to verify the console's TLS certificate
    verify_tls: bool = True  # false only for a lab console with a self-signed cert and no ca_file
    timeout: Seconds = 30.0  # seconds for one ordinary request


class ControlConfig(StrictModel):
    """The Unix control socket migratectl talks to."""

    socket: AbsPath = "/run/migrated/control.sock"  # its directory is the runtime dir
    # Members of this group may use migratectl (socket 0660, runtime dir 0750 root:group);
    # null: root only (0600 / 0700).
    group: Text | None = "migrated"


class LogConfig(StrictModel):
    level: LogLevel = "info"
    format: LogFormat = "auto"  # auto: journald under systemd, console on a tty, else json


class HeartbeatConfig(StrictModel):
    interval: Seconds = 10.0  # seconds between beats; the console marks a source offline after 3 missed
    first_jitter: SecondsOrZero = 5.0  # the first beat waits a random 0..first_jitter seconds
    max_clock_skew: Seconds = 60.0  # seconds between our clock and the console's before we complain


class PollConfig(StrictModel):
    wait: Seconds = 20.0  # long-poll: seconds the console may hold a request open
    min_cycle: SecondsOrZero = 1.0  # never poll faster than this, even when the console answers at once


class BackoffConfig(StrictModel):
    """Retry delays of every loop: initial * factor**n, capped, with equal jitter (in [d/2, d]); reset on success."""

    initial: Seconds = 1.0
    factor: Annotated[float, Field(ge=1)] = 2.0
    max: float = 60.0  # >= initial

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> BackoffConfig:
        if self.max < self.initial:
            raise issue_at(("max",), f"must be >= backoff.initial ({self.initial}), got {self.max}")
        return self


class ProgressConfig(StrictModel):
    interval: Seconds = 3.0  # seconds between progress reports to the console


class Config(StrictModel):
    console: ConsoleConfig = ConsoleConfig()
    credentials_file: AbsPath = "/etc/migrated/credentials"  # 0600 YAML: secret_id, secret_key
    state_dir: AbsPath = "/var/lib/migrated"  # source ID, applied command IDs, checkpoints
    control: ControlConfig = ControlConfig()
    log: LogConfig = LogConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    poll: PollConfig = PollConfig()
    backoff: BackoffConfig = BackoffConfig()
    progress: ProgressConfig = ProgressConfig()
    # Pre-migration checks to skip: "all", or a list of check names (see CHECK_NAMES).
    ignore_checks: Annotated[Literal["all"] | tuple[str, ...], PlainValidator(_ignore_checks)] = ()
    stop_timeout: Seconds = 8.0  # SIGTERM: seconds to checkpoint before giving up (systemd kills at 10)
    # A transfer retries temporary failures (network, target away) from its checkpoint for this long
    # (seconds since the last progress) before the task is marked failed.
    transfer_retry_deadline: Seconds = 600.0
    ssh_identity: AbsPath | None = None  # private key for targets; default <state_dir>/ssh/id_ed25519
    # Disks this source offers (block devices or raw image files). Empty: discovered, i.e. the
    # system disk and every disk with a mounted filesystem.
    disks: Annotated[tuple[AbsPath, ...], BeforeValidator(as_tuple)] = ()
    # A continuous task's cutover may carry hook commands (PreHook/PostHook) that this agent runs as
    # root. Off by default: a console (or whoever holds an admin key) cannot run commands on this
    # server unless its operator allows it here.
    allow_console_hooks: bool = False

    @property
    def runtime_dir(self) -> str:
        return os.path.dirname(self.control.socket)

    def check_ignored(self, name: str) -> bool:
        return self.ignore_checks == "all" or name in self.ignore_checks


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a validated :class:`Config`; raise ConfigError naming every bad key."""
    return parse_text(Config, text, source)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config file. A missing file at the default path means all defaults."""
    return load_file(Config, path if path is not None else DEFAULT_CONFIG_PATH, missing_ok=path is None)


def credentials_path(cfg: Config, environ: typing.Mapping[str, str] | None = None) -> Path:
    """Where the credentials are: systemd's credential directory first, else ``credentials_file``."""
    env = os.environ if environ is None else environ
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).exists():
        return Path(cred_dir) / CREDENTIAL_NAME
    return Path(cfg.credentials_file)


def load_credentials(cfg: Config, environ: typing.Mapping[str, str] | None = None) -> Credentials:
    """Read SecretId/SecretKey (:mod:`migrated.credentials`). The file must not be readable by
    group/others (systemd's copy is not)."""
    return read_credentials(credentials_path(cfg, environ), setting="credentials_file",
                            missing_hint="run migrated register (it asks for SecretId/SecretKey and writes it), "
                                         "or write secret_id/secret_key there with mode 0600")
