"""API keys (SecretId/SecretKey): one type and one file format for both sides.

The agent holds its console key (``/etc/migrated/credentials``, or systemd's
``$CREDENTIALS_DIRECTORY/credentials``: :func:`migrated.config.load_credentials` picks the path);
the console holds its cloud key (``cloud.credentials_file``, or the provider's environment
variables: :func:`migrated.cloud.config.cloud_credentials`). Both files are the same YAML::

    secret_id: AKID...
    secret_key: ...

Contracts:

* A file that group or others can read is refused, with ``chmod 600 <file>`` in the message.
* Unknown keys are refused and named (``ConfigError.path``, in :mod:`migrated.configload`'s
  ``FILE: key: message`` form); values are non-empty strings, stripped.
* No message, ``repr`` or traceback shows the SecretKey (nor any value read from the file).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from migrated.configload import Issue, config_error
from migrated.errors import ConfigError

KEYS = ("secret_id", "secret_key")


@dataclass(frozen=True)
class Credentials:
    secret_id: str
    secret_key: str = field(repr=False)

    def __repr__(self) -> str:  # never print the key, even in a traceback
        return f"Credentials(secret_id={self.secret_id!r}, secret_key='[redacted]')"


def parse_credentials(text: str, source: str) -> Credentials:
    """The credentials file's text (YAML ``secret_id``, ``secret_key``). Errors never echo values."""
    hint = "the file must hold secret_id: AKID... and secret_key: ..."
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{source}: not valid YAML ({hint})") from None  # no echo: it holds a secret
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping; {hint}")
    for key in data:
        if key not in KEYS:
            raise config_error(source, [Issue(str(key), f"unknown key (known: {', '.join(KEYS)})")])
    for key in KEYS:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise config_error(source, [Issue(key, f"required, a non-empty string ({hint})")])
    return Credentials(secret_id=data["secret_id"].strip(), secret_key=data["secret_key"].strip())


def read_credentials(path: str | os.PathLike[str], *, setting: str, missing_hint: str = "") -> Credentials:
    """Read and check a credentials file. ``setting`` is the config key that names it (the error's
    ``.path`` when the file is missing); ``missing_hint`` says how to make the file."""
    p = Path(path)
    try:
        st = p.stat()
        raw = p.read_bytes()
    except FileNotFoundError:
        err = ConfigError(f"{setting}: credentials file {p} not found" + (f": {missing_hint}" if missing_hint else ""))
        err.path = setting
        raise err from None
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {p}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{setting}: {p} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 {p}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    return parse_credentials(text, str(p))


def credentials_from_env(id_var: str, key_var: str, environ: Mapping[str, str] | None = None
                         ) -> Credentials | None:
    """The pair from two environment variables; None unless both are set and non-empty."""
    env = os.environ if environ is None else environ
    sid, skey = env.get(id_var, "").strip(), env.get(key_var, "").strip()
    return Credentials(sid, skey) if sid and skey else None


def dump_credentials(creds: Credentials) -> bytes:
    """The file's bytes (write them with mode 0600: :func:`migrated.store.atomic_write`)."""
    return yaml.safe_dump({"secret_id": creds.secret_id, "secret_key": creds.secret_key}).encode()
