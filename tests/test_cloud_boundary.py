"""The cloud boundary (migrated/cloud/provider.py): the console and the agent import no provider
module and no cloud SDK; a provider is found by name; a console configured for a provider whose
pip extra is missing says what to install; every registered provider implements the Protocol.

"Not installed" is shown in a fresh interpreter whose ``sys.modules`` maps the SDK's modules to
None, which is how Python itself marks a module that cannot be imported (ModuleNotFoundError).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from migrated import config as agent_config
from migrated.cloud.config import CloudConfig, cloud_credentials, load_cloud_section
from migrated.cloud.provider import (
    DEFAULT_PROVIDER,
    PROVIDERS,
    CloudProvider,
    DiskSpec,
    InstanceInfo,
    InstanceInvalid,
    check_disks_fit,
    instance_id_regex,
    open_provider,
    traits_for,
    unique_name,
)
from migrated.console.config import parse_config
from migrated.credentials import Credentials
from migrated.errors import ConfigError
from tests.conftest import repo_env

# what the core may load of the Tencent SDK: tencentcloud-sdk-python-common's TC3 signing function
# (migrated/model/tc3.py signs the agent's requests and verifies them in the console) and the
# exception module it imports
SIGNING = {"tencentcloud", "tencentcloud.common", "tencentcloud.common.sign", "tencentcloud.common.exception",
           "tencentcloud.common.exception.tencent_cloud_sdk_exception"}
# what the [tencent] extra brings (blocked to play an installation without it)
EXTRA_MODULES = ("httpx", "tencentcloud.cvm", "tencentcloud.vpc", "tencentcloud.tat",
                 "tencentcloud.common.common_client_async")


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=repo_env(), capture_output=True, text=True, timeout=120)


def test_console_and_agent_import_no_provider_and_no_cloud_sdk() -> None:
    r = python("import sys, json\n"
               "import migrated.console.app, migrated.console.cli, migrated.cloud.cli\n"
               "import migrated.cli.main, migrated.cli.ctl, migrated.agent.daemon\n"
               "print(json.dumps(sorted(sys.modules)))")
    assert r.returncode == 0, r.stderr
    loaded = set(json.loads(r.stdout))
    assert "migrated.console.app" in loaded and "migrated.cloud.provider" in loaded
    assert not {m for m in loaded if m.startswith("migrated.cloud.tencent")}
    assert {m for m in loaded if m.split(".")[0] == "tencentcloud"} <= SIGNING
    assert "httpx" not in loaded


def write_console_config(tmp_path: Path, **cloud: object) -> Path:
    creds = tmp_path / "tc.yaml"
    creds.write_text("secret_id: AKIDboundary\nsecret_key: boundary-secret\n")
    creds.chmod(0o600)
    cfg = tmp_path / "console.yaml"
    cfg.write_text(yaml.safe_dump({"listen": {"port": 0}, "storage": {"path": str(tmp_path / "c.db")},
                                   "cloud": {"credentials_file": str(creds), **cloud}}))
    return cfg


def test_cloud_without_the_extra_names_the_pip_install(tmp_path: Path) -> None:
    cfg = write_console_config(tmp_path)
    block = f"import sys\nfor m in {EXTRA_MODULES!r}:\n    sys.modules[m] = None\n"
    r = python(block + "from migrated.console.cli import main\n"
                       f"sys.exit(main(['serve', '--config', {str(cfg)!r}]))")
    assert r.returncode == 2, r.stderr
    assert "pip install 'migrated[tencent]'" in r.stderr and "cloud.provider" in r.stderr
    assert "Traceback" not in r.stderr and "boundary-secret" not in r.stderr
    r = python(block + "from migrated.cloud.cli import main\n"
                       f"sys.exit(main(['check', '--config', {str(cfg)!r}, '--region', 'ap-guangzhou']))")
    assert r.returncode == 2 and "pip install 'migrated[tencent]'" in r.stderr, r.stderr
    r = python(block + "from migrated.console.cli import main\n"
                       f"sys.exit(main(['check-config', '--config', {str(cfg)!r}]))")
    assert r.returncode == 2 and "pip install 'migrated[tencent]'" in r.stderr, r.stderr  # ExecStartPre catches it
    r = python(block + "from migrated.cloud.provider import PROVIDERS, provider_module\n"
                       "provider_module(PROVIDERS['tencent'])")
    assert r.returncode == 1 and "pip install 'migrated[tencent]'" in r.stderr, r.stderr
    # the same config without the block gets past that point (the provider opens)
    provider = open_provider(load_cloud_section(cfg))  # type: ignore[arg-type]
    assert provider.traits is PROVIDERS["tencent"]


def test_a_missing_module_of_ours_is_not_reported_as_an_install_step(tmp_path: Path) -> None:
    r = python("import sys\nsys.modules['migrated.cloud.tencent'] = None\n"
               "from migrated.cloud.config import CloudConfig\nfrom migrated.cloud.provider import open_provider\n"
               "open_provider(CloudConfig())")
    assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr and "pip install" not in r.stderr


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_every_provider_implements_the_protocol(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    traits = PROVIDERS[name]
    assert traits.name == name and traits.regions and traits.extra and traits.image_name_max > 0
    env_id, env_key = traits.credential_env
    monkeypatch.setenv(env_id, "AKIDprotocol")
    monkeypatch.setenv(env_key, "protocol-secret")
    # the registered module's from_config builds an object that satisfies the Protocol, same signatures
    impl = importlib.import_module(traits.module).from_config(CloudConfig(provider=name))
    try:
        assert isinstance(impl, CloudProvider) and impl.traits is traits
        for meth in ("close", "probe_instances", "describe_instance", "validate_instance", "ssh_port_warnings",
                     "find_images", "unique_image_name", "create_image", "wait_image", "terminate_relay"):
            want = inspect.signature(getattr(CloudProvider, meth))
            got = inspect.signature(getattr(type(impl), meth))
            assert list(got.parameters) == list(want.parameters), meth
            assert inspect.iscoroutinefunction(getattr(impl, meth)), meth
    finally:
        await impl.close()


def test_provider_names_are_checked_with_the_known_ones_named() -> None:
    assert parse_config({"cloud": {}}).cloud.provider == DEFAULT_PROVIDER  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"cloud\.provider: .*unknown provider 'aws' \(known: tencent\)"):
        parse_config({"cloud": {"provider": "aws"}})


def test_cloud_section_is_read_alone_with_the_consoles_words(tmp_path: Path) -> None:
    cfg = tmp_path / "console.yaml"
    cfg.write_text("storage: {path: /tmp/x.db}\n")
    assert load_cloud_section(cfg) is None
    cfg.write_text("cloud: {endpoint: 'ftp://cvm.example', secret_key: x}\n")
    with pytest.raises(ConfigError) as ei:
        load_cloud_section(cfg)
    assert "cloud.endpoint:" in str(ei.value) and "cloud.secret_key: unknown key" in str(ei.value)
    with pytest.raises(ConfigError, match="not found"):
        load_cloud_section(tmp_path / "absent.yaml")


def test_one_credentials_type_and_rules_for_both_sides(tmp_path: Path) -> None:
    f = tmp_path / "key.yaml"
    f.write_text("secret_id: ' AKIDboth '\nsecret_key: both-secret\n")
    f.chmod(0o600)
    agent = agent_config.load_credentials(agent_config.Config(credentials_file=str(f)), environ={})
    console = cloud_credentials(CloudConfig(credentials_file=str(f)))
    assert type(agent) is type(console) is Credentials and agent == console == Credentials("AKIDboth", "both-secret")
    f.write_text("secret_id: AKIDboth\nsecret_key: both-secret\nregion: x\n")
    for load in (lambda: agent_config.load_credentials(agent_config.Config(credentials_file=str(f)), environ={}),
                 lambda: cloud_credentials(CloudConfig(credentials_file=str(f)))):
        with pytest.raises(ConfigError) as ei:
            load()
        assert ei.value.path == "region" and "unknown key" in str(ei.value) and "both-secret" not in str(ei.value)
    with pytest.raises(ConfigError, match=r"cloud\.credentials_file: credentials file .* not found"):
        cloud_credentials(CloudConfig(credentials_file=str(tmp_path / "absent")))


def test_traits_table() -> None:
    rx = re.compile(instance_id_regex())
    for ok in ("", "ins-abcd1234", "ins-0123456789abcdef"):
        assert rx.fullmatch(ok), ok
    for bad in ("ins-ab", "INS-abcd1234", "ins-abcd1234 ", "i-0abc", "../ins-abcd1234"):
        assert not rx.fullmatch(bad), bad
    assert traits_for(None) is PROVIDERS[DEFAULT_PROVIDER]
    assert rx.fullmatch(traits_for(None).instance_id_example)


@pytest.mark.parametrize(("disks", "words"), [
    ([DiskSpec("/dev/vda", 20 << 30, True)], None),
    ([DiskSpec("/dev/vda", (50 << 30) + 1, True)], "system disk is 50 GB, source disk /dev/vda needs 51 GB"),
    ([DiskSpec("/dev/vda", 1 << 30, True), DiskSpec("/dev/vdb", 200 << 30), DiskSpec("/dev/vdc", 100 << 30)],
     None),  # largest onto largest
    ([DiskSpec("/dev/vda", 1 << 30, True), DiskSpec("/dev/vdb", 150 << 30), DiskSpec("/dev/vdc", 150 << 30)],
     "source disk /dev/vdc needs 150 GB, the largest data disk left is 100 GB"),
    ([DiskSpec("/dev/vda", 1 << 30, True)] + [DiskSpec(f"/dev/vd{c}", 1 << 30) for c in "bcd"],
     "has 2 data disk(s), the task maps 3"),
])
def test_disk_fit_rule(disks: list[DiskSpec], words: str | None) -> None:
    info = InstanceInfo("ins-fit00001", "", "RUNNING", "Linux", "z", 50, (100, 200), ())
    if words is None:
        check_disks_fit(info, disks)
    else:
        with pytest.raises(InstanceInvalid, match=re.escape(words)) as ei:
            check_disks_fit(info, disks)
        assert ei.value.kind == "too_small"


def test_unique_name_keeps_the_limit() -> None:
    assert unique_name("web01", "task-1", 60) == "web01-task-1"
    assert unique_name("x" * 80, "task-abc", 20) == "x" * 11 + "-task-abc"


def test_console_check_config_refuses_what_serve_would_refuse_about_the_cloud(tmp_path: Path) -> None:
    cfg = write_console_config(tmp_path)
    check = [sys.executable, "-m", "migrated.console.cli", "check-config", "--config", str(cfg)]
    ok = subprocess.run(check, env=repo_env(), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "tc.yaml").chmod(0o644)
    loose = subprocess.run(check, env=repo_env(), capture_output=True, text=True, timeout=120)
    assert loose.returncode == 2 and "chmod 600" in loose.stderr and "boundary-secret" not in loose.stderr
