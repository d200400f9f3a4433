"""Config loading: every sample in etc/ parses, every file in tests/samples/invalid/ fails with the key named."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from migrated.config import Config, ConfigError, load_config, load_credentials, parse_config
from tests.conftest import REPO, cli, repo_env

SAMPLES = sorted((REPO / "etc").glob("migrated*.yaml"))  # the agent's samples (console.yaml is the console's)
INVALID = REPO / "tests" / "samples" / "invalid"

# file -> (key path the error must name, words the message must contain)
EXPECTED = {
    "unknown-key.yaml": ("console.endpiont", "unknown key"),
    "endpoint-no-scheme.yaml": ("console.endpoint", "https://"),
    "heartbeat-zero.yaml": ("heartbeat.interval", "> 0"),
    "heartbeat-not-number.yaml": ("heartbeat.interval", "number"),
    "ignore-unknown-check.yaml": ("ignore_checks[1]", "unknown check 'virtio'"),
    "ignore-bad-word.yaml": ("ignore_checks", "'all'"),
    "log-level.yaml": ("log.level", "debug, info, warning, error"),
    "relative-state-dir.yaml": ("state_dir", "absolute path"),
    "section-not-mapping.yaml": ("console", "mapping"),
    "broken-yaml.yaml": ("", "not valid YAML at line"),
    "backoff-max-below-initial.yaml": ("backoff.max", ">= backoff.initial"),
    "verify-tls-string.yaml": ("console.verify_tls", "true or false"),
    "secret-in-config.yaml": ("secret_key", "unknown key"),
    "top-level-list.yaml": ("(top level)", "mapping"),
}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_sample_parses(sample: Path) -> None:
    cfg = load_config(sample)
    assert isinstance(cfg, Config)


def test_the_main_sample_is_the_defaults_plus_an_endpoint() -> None:
    cfg = load_config(REPO / "etc" / "migrated.yaml")
    assert cfg.console.endpoint == "https://console.example.com:8443"
    assert cfg == Config(console=type(cfg.console)(endpoint=cfg.console.endpoint))


def test_every_invalid_sample_has_an_expectation() -> None:
    assert sorted(p.name for p in INVALID.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_sample_fails_naming_the_key(name: str) -> None:
    key, words = EXPECTED[name]
    path = INVALID / name
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert str(path) in str(err)
    assert words in str(err)
    if key == "(top level)":
        assert key in str(err)
    elif key:
        assert err.path == key
        assert f": {key}: " in str(err)


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("# nothing\n")
    assert load_config(f) == Config()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_is_frozen() -> None:
    cfg = parse_config("ignore_checks: all\n")
    assert cfg.check_ignored("selinux")
    with pytest.raises(AttributeError):
        cfg.state_dir = "/x"  # type: ignore[misc]


def test_ignore_checks_by_name() -> None:
    cfg = parse_config("ignore_checks: [selinux]\n")
    assert cfg.check_ignored("selinux") and not cfg.check_ignored("disks")


def test_credentials_must_be_private_and_never_echoed(tmp_path: Path) -> None:
    f = tmp_path / "credentials"
    f.write_text("secret_id: AKIDtest\nsecret_key: s3cr3t-value\n")
    os.chmod(f, 0o644)
    cfg = Config(credentials_file=str(f))
    with pytest.raises(ConfigError, match="chmod 600"):
        load_credentials(cfg, environ={})
    os.chmod(f, 0o600)
    creds = load_credentials(cfg, environ={})
    assert (creds.secret_id, creds.secret_key) == ("AKIDtest", "s3cr3t-value")
    assert "s3cr3t" not in repr(creds)
    f.write_text("secret_id: AKIDtest\nsecret_key: [s3cr3t-value]\n")
    with pytest.raises(ConfigError) as info:
        load_credentials(cfg, environ={})
    assert info.value.path == "secret_key" and "s3cr3t" not in str(info.value)


def test_systemd_credential_directory_wins(tmp_path: Path) -> None:
    creddir = tmp_path / "creds"
    creddir.mkdir()
    (creddir / "credentials").write_text("secret_id: FROMSYSTEMD\nsecret_key: k\n")
    os.chmod(creddir / "credentials", 0o400)
    cfg = Config(credentials_file=str(tmp_path / "absent"))
    assert load_credentials(cfg, environ={"CREDENTIALS_DIRECTORY": str(creddir)}).secret_id == "FROMSYSTEMD"


@pytest.mark.parametrize("name", ["unknown-key.yaml", "heartbeat-zero.yaml"])
def test_check_config_command(name: str, tmp_path: Path) -> None:
    bad = subprocess.run([*cli("migrated"), "check-config", "--config", str(INVALID / name)],
                         env=repo_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad.stderr
    assert EXPECTED[name][0] in bad.stderr
    # check-config also refuses what `run` would (tests/test_agent_check_config.py): the sample's
    # `control.group: migrated` needs that group, which this machine may not have
    sample = (REPO / "etc" / "migrated.yaml").read_text()
    assert "  group: migrated " in sample
    (tmp_path / "migrated.yaml").write_text(sample.replace("  group: migrated ", "  group: null "))
    good = subprocess.run([*cli("migrated"), "check-config", "--config", str(tmp_path / "migrated.yaml")],
                          env=repo_env(), capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout


def test_missing_credentials_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run migrated register") as info:
        load_credentials(Config(credentials_file=str(tmp_path / "none")), environ={})
    assert info.value.path == "credentials_file"
