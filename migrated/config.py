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
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from migrated.credentials import Credentials, read_credentials
from migrated.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/migrated/migrated.yaml")
CREDENTIAL_NAME = "credentials"  # name of the systemd credential (LoadCredential=credentials:...)

# Names of the pre-migration checks (migrated/agent/checks.py keeps the same list).
CHECK_NAMES = (
    "virtio_drivers",
    "selinux",
    "clock_skew",
    "disks",
    "target_ssh",
    "target_capacity",
    "target_receiver",
)

LogFormat = Literal["auto", "console", "json", "journald"]
LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class ConsoleConfig:
    """Where the console is and how to talk to it."""

    endpoint: str | None = None  # https://console.example:8443 ; required by `migrated run`
    ca_file: str | None = None  # PEM bundle to verify the console's TLS certificate
    verify_tls: bool = True  # false only for a lab console with a self-signed cert and no ca_file
    timeout: float = 30.0  # seconds for one ordinary request

    def validate(self, path: str) -> None:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"must start with https:// (or http://), got {self.endpoint!r}", path=f"{path}.endpoint")
        _positive(self.timeout, f"{path}.timeout")


@dataclass(frozen=True)
class ControlConfig:
    """The Unix control socket migratectl talks to."""

    socket: str = "/run/migrated/control.sock"  # its directory is the runtime dir
    # Members of this group may use migratectl (socket 0660, runtime dir 0750 root:group);
    # null: root only (0600 / 0700).
    group: str | None = "migrated"

    def validate(self, path: str) -> None:
        if not os.path.isabs(self.socket):
            raise ConfigError(f"must be an absolute path, got {self.socket!r}", path=f"{path}.socket")


@dataclass(frozen=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "auto"  # auto: journald under systemd, console on a tty, else json


@dataclass(frozen=True)
class HeartbeatConfig:
    interval: float = 10.0  # seconds between beats; the console marks a source offline after 3 missed
    first_jitter: float = 5.0  # the first beat waits a random 0..first_jitter seconds
    max_clock_skew: float = 60.0  # seconds between our clock and the console's before we complain

    def validate(self, path: str) -> None:
        _positive(self.interval, f"{path}.interval")
        _non_negative(self.first_jitter, f"{path}.first_jitter")
        _positive(self.max_clock_skew, f"{path}.max_clock_skew")


@dataclass(frozen=True)
class PollConfig:
    wait: float = 20.0  # long-poll: seconds the console may hold a request open
    min_cycle: float = 1.0  # never poll faster than this, even when the console answers at once

    def validate(self, path: str) -> None:
        _positive(self.wait, f"{path}.wait")
        _non_negative(self.min_cycle, f"{path}.min_cycle")


@dataclass(frozen=True)
class BackoffConfig:
    """Retry delays of every loop: initial * factor**n, capped, with full jitter; reset on success."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0

    def validate(self, path: str) -> None:
        _positive(self.initial, f"{path}.initial")
        if self.factor < 1:
            raise ConfigError(f"must be >= 1, got {self.factor}", path=f"{path}.factor")
        if self.max < self.initial:
            raise ConfigError(f"must be >= backoff.initial ({self.initial}), got {self.max}", path=f"{path}.max")


@dataclass(frozen=True)
class ProgressConfig:
    interval: float = 3.0  # seconds between progress reports to the console

    def validate(self, path: str) -> None:
        _positive(self.interval, f"{path}.interval")


@dataclass(frozen=True)
class Config:
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    credentials_file: str = "/etc/migrated/credentials"  # 0600 YAML: secret_id, secret_key
    state_dir: str = "/var/lib/migrated"  # source ID, applied command IDs, checkpoints
    control: ControlConfig = field(default_factory=ControlConfig)
    log: LogConfig = field(default_factory=LogConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    poll: PollConfig = field(default_factory=PollConfig)
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    # Pre-migration checks to skip: "all", or a list of check names (see CHECK_NAMES).
    ignore_checks: Literal["all"] | tuple[str, ...] = ()
    stop_timeout: float = 8.0  # SIGTERM: seconds to checkpoint before giving up (systemd kills at 10)
    # A transfer retries temporary failures (network, target away) from its checkpoint for this long
    # (seconds since the last progress) before the task is marked failed.
    transfer_retry_deadline: float = 600.0
    ssh_identity: str | None = None  # private key for targets; default <state_dir>/ssh/id_ed25519
    # Disks this source offers (block devices or raw image files). Empty: discovered, i.e. the
    # system disk and every disk with a mounted filesystem.
    disks: tuple[str, ...] = ()
    # A continuous task's cutover may carry hook commands (PreHook/PostHook) that this agent runs as
    # root. Off by default: a console (or whoever holds an admin key) cannot run commands on this
    # server unless its operator allows it here.
    allow_console_hooks: bool = False

    def validate(self, path: str) -> None:
        for key in ("credentials_file", "state_dir"):
            if not os.path.isabs(getattr(self, key)):
                raise ConfigError(f"must be an absolute path, got {getattr(self, key)!r}", path=key)
        if isinstance(self.ignore_checks, tuple):
            for i, name in enumerate(self.ignore_checks):
                if name not in CHECK_NAMES:
                    raise ConfigError(
                        f"unknown check {name!r}; known: {', '.join(CHECK_NAMES)} (or ignore_checks: all)",
                        path=f"ignore_checks[{i}]",
                    )
        _positive(self.stop_timeout, "stop_timeout")
        _positive(self.transfer_retry_deadline, "transfer_retry_deadline")
        for i, d in enumerate(self.disks):
            if not os.path.isabs(d):
                raise ConfigError(f"must be an absolute path, got {d!r}", path=f"disks[{i}]")
        if self.ssh_identity is not None and not os.path.isabs(self.ssh_identity):
            raise ConfigError(f"must be an absolute path, got {self.ssh_identity!r}", path="ssh_identity")

    @property
    def runtime_dir(self) -> str:
        return os.path.dirname(self.control.socket)

    def check_ignored(self, name: str) -> bool:
        return self.ignore_checks == "all" or name in self.ignore_checks


def _positive(value: float, path: str) -> None:
    if not value > 0:
        raise ConfigError(f"must be > 0, got {value}", path=path)


def _non_negative(value: float, path: str) -> None:
    if not value >= 0:
        raise ConfigError(f"must be >= 0, got {value}", path=path)


# ---------------------------------------------------------------- the generic walker


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
            tp.__name__, tp.__name__
        )
    return str(tp)


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` (parsed YAML) against the annotation ``tp``; return the typed value."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"must be one of {', '.join(map(str, choices))}; got {value!r}", path=path)
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError("must not be empty (null)", path=path)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, path)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        wanted = " or ".join(_describe(o) for o in options if o is not type(None))
        raise ConfigError(f"must be {wanted}; got {value!r}", path=path)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"must be a list; got {value!r}", path=path)
        return tuple(_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
    if is_dataclass(tp):
        return _build(tp, value, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number; got {value!r}", path=path)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer; got {value!r}", path=path)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false; got {value!r}", path=path)
        return value
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"must be a non-empty string; got {value!r}", path=path)
        return value
    raise AssertionError(f"config type {tp!r} not handled")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(c) for c in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if is_dataclass(tp):
        return "a mapping"
    return _type_name(tp)


def _build(cls: Any, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping of keys; got {data!r}", path=path or "(top level)")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"unknown key; known keys here: {', '.join(known)}", path=where)
    kwargs = {}
    for name, f in known.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{path}.{name}" if path else name)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError("required key is missing", path=f"{path}.{name}" if path else name)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a validated :class:`Config`; raise ConfigError naming the key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    try:
        return _build(Config, data, "")
    except ConfigError as e:
        raise _in_file(source, e.path, e.message.removeprefix(f"{e.path}: ")) from None


def _in_file(source: str, path: str, message: str) -> ConfigError:
    """ConfigError reading '<file>: <key.path>: <message>' with ``.path`` = the key path."""
    out = ConfigError(f"{source}: {path}: {message}" if path else f"{source}: {message}")
    out.path = path
    return out


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config file. A missing file at the default path means all defaults."""
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path is None:
            return Config()
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    return parse_config(text, str(p))


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
