"""Config loading: every sample in etc/ parses, every file in tests/samples/invalid/ fails with the key named."""

from __future__ import annotations

import os
import subprocess
import time
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


def test_every_error_at_once_with_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("console:\n  endpiont: x\n  timeout: '3'\nheartbeat:\n  interval: -1\ndisks: [a, /b]\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{f}: line 2, column 3: console.endpiont: unknown key; valid keys here: endpoint, ca_file, verify_tls, "
        "timeout",
        f"{f}: line 3, column 12: console.timeout: must be a number, got a string '3'",
        f"{f}: line 5, column 13: heartbeat.interval: must be > 0, got -1",
        f"{f}: line 6, column 9: disks[0]: must be an absolute path, got 'a'",
    ]
    assert info.value.path == "console.endpiont"
    assert [i.path for i in info.value.issues] == ["console.endpiont", "console.timeout", "heartbeat.interval",
                                                   "disks[0]"]


def test_a_duplicate_key_is_an_error_not_a_silent_override() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("heartbeat:\n  interval: 5\nheartbeat:\n  interval: 6\n", "m.yaml")
    assert str(info.value) == "m.yaml: line 3, column 1: heartbeat: duplicate key (first at line 1)"


def test_a_missing_section_key_points_at_its_parent() -> None:
    """The console's config uses the same loader: same form, a missing key located at its section."""
    from migrated.configload import parse_text
    from migrated.console.config import ConsoleConfig

    with pytest.raises(ConfigError) as info:
        parse_text(ConsoleConfig, "listen:\n  tls:\n    cert_file: /x\n  prot: 1\n", "c.yaml")
    assert str(info.value).splitlines() == [
        "c.yaml: line 3, column 5: listen.tls.key_file: required key is missing",
        "c.yaml: line 4, column 3: listen.prot: unknown key; valid keys here: host, port, tls",
    ]


def test_python_callers_are_validated_too() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        Config(state_dir="relative")
    assert Config(disks=["/dev/vda"]).disks == ("/dev/vda",)


def test_an_empty_section_is_its_defaults() -> None:
    """`heartbeat:` with every line under it commented out is the defaults (as before the shared loader),
    for the console's config too; a section that may be null keeps null (the console's `cloud:`)."""
    from migrated.console.config import ConsoleConfig
    from migrated.console.config import parse_config as parse_console

    assert parse_config("heartbeat:\n  # interval: 5\nconsole:\n") == Config()
    assert parse_console({"listen": None, "cloud": None}) == ConsoleConfig()
    assert parse_console({"listen": {"tls": None}}).listen.tls is None


def test_a_recursive_alias_does_not_hang_the_loader() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("disks: &a [*a]\n", "m.yaml")
    assert "m.yaml: line 1, column 8: disks[0]: must be a string" in str(info.value)


def test_a_billion_laughs_alias_bomb_is_refused_at_once() -> None:
    # 9**8 paths through eight anchors: the position walk visited each (minutes); it locates a node once
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        parse_config("\n".join(lines) + "\n", "bomb.yaml")
    assert "bomb.yaml: line 8, column 1: a7: unknown key" in str(info.value)
    assert time.monotonic() - start < 30  # was ~minutes; a generous bound, not a timing window
