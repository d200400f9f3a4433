"""The sdist carries what its own tests need; a wheel built from it, installed into a fresh venv, writes
units (`migrated install-units`) that point at that venv's programs and pass systemd's checks.

Offline: the builds use the running interpreter's setuptools and ``build`` (``--no-isolation``; both are
in the [test] extra), the wheel is
installed ``--no-deps --no-index``, and the fresh venv sees this venv's dependencies through a .pth
file (not its editable ``migrated``: a .pth line adds a path, it does not run that path's .pth files).
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

from migrated import __version__
from migrated.cli.install_units import program_commands, render_unit
from tests.conftest import REPO, repo_env
from tests.test_systemd import BUDGET

# what the sdist must carry besides the package: the tests with their helpers and samples, the docs,
# the units, the sample configs, the benchmarks and the scripts
SHIPPED_DIRS = ("tests", "docs", "systemd", "etc", "bench", "scripts")
JUNK = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                              ".pytest_cache", ".ruff_cache", "test-artifacts", ".demo", "out", "*.img")


def repo_files(top: str) -> set[str]:
    out = set()
    for root, dirs, files in os.walk(REPO / top):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "out", ".pytest_cache")]
        out |= {str((Path(root) / f).relative_to(REPO)) for f in files if not f.endswith((".pyc", ".img"))}
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sdist from a copy of the checkout, then the wheel from the unpacked sdist (as `python -m build` does)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=JUNK)
    dist = tmp / "dist"
    run = {"capture_output": True, "text": True, "timeout": 300}
    r = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(dist), str(src)],
                       **run)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (sdist,) = dist.glob("migrated-*.tar.gz")
    with tarfile.open(sdist) as tf:
        # our own archive; the "data" filter where this Python has it (3.11.4+)
        tf.extractall(tmp / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    unpacked = tmp / "unpacked" / f"migrated-{__version__}"
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
                        str(unpacked)], **run)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (wheel,) = dist.glob("migrated-*.whl")
    return {"sdist": sdist, "wheel": wheel, "tmp": tmp}


def test_sdist_carries_tests_docs_units_samples_bench_scripts(built: dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
        pkg_info = email.message_from_bytes(tf.extractfile(f"migrated-{__version__}/PKG-INFO").read())  # type: ignore[union-attr]
    for top in SHIPPED_DIRS:
        missing = repo_files(top) - names
        assert not missing, f"{top}/ files missing from the sdist: {sorted(missing)}"
    for must in ("tests/conftest.py", "tests/sshd.py", "tests/console_support.py",
                 "tests/samples/invalid/unknown-key.yaml", "systemd/sysusers.d/migrated.conf", "LICENSE",
                 "CHANGELOG.md", "README.md", "migrated/console/web/templates/base.html"):
        assert must in names, must
    assert not {n for n in names if "__pycache__" in n or n.endswith(".pyc")}
    assert pkg_info["License-Expression"] == "Apache-2.0"
    urls = dict(v.split(", ", 1) for v in pkg_info.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls)


def test_license_is_the_apache_text() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_package_data_names_only_dirs_that_exist() -> None:
    """Stale package-data patterns (console/static, console/templates) are gone; each one left matches files."""
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["migrated"]
    for pattern in patterns:
        assert list((REPO / "migrated").glob(pattern)), pattern


@pytest.fixture(scope="module")
def venv(built: dict[str, Path]) -> Path:
    """A fresh venv with the wheel installed (no download: --no-deps --no-index)."""
    venv = built["tmp"] / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--no-deps", "--no-index", str(built["wheel"])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c", code], text=True).strip())
    (site / "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def venv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return env


def test_the_wheel_runs_from_its_own_venv(venv: Path) -> None:
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import migrated; print(migrated.__file__)"],
                       env=venv_env(), capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0 and r.stdout.startswith(str(venv)), r.stdout + r.stderr
    r = subprocess.run([str(venv / "bin" / "migrated"), "--version"], env=venv_env(), capture_output=True,
                       text=True, timeout=60, cwd="/")
    assert r.returncode == 0 and r.stdout.startswith(f"migrated {__version__}"), r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def exposure(unit: Path, budget: float) -> None:
    s = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--threshold={int(budget * 10)}",
                        "--no-pager", str(unit)], capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", s.stdout)
    assert m and float(m.group(1)) <= budget, s.stdout + s.stderr
    assert s.returncode == 0, s.stdout + s.stderr


def install_units(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(venv / "bin" / "migrated"), "install-units", *args], env=venv_env(),
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    return r


def test_install_units_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    units, sysusers = tmp_path / "units", tmp_path / "sysusers.d"
    r = install_units(venv, "--dest", str(units), "--sysusers-dest", str(sysusers))
    bindir = (venv / "bin").resolve()
    agent = (units / "migrated.service").read_text()
    console = (units / "migrate-console.service").read_text()
    assert f"ExecStart={bindir}/migrated run --config /etc/migrated/migrated.yaml" in agent
    assert f"ExecStartPre={bindir}/migrated check-config" in agent
    assert f"ExecStopPost=-{bindir}/migrated thaw --recorded" in agent
    assert f"ExecStartPre={bindir}/migrate-console check-config --config" in console
    assert f"ExecStart={bindir}/migrate-console serve" in console
    assert "Type=notify" in console
    for text in (agent, console):
        assert not re.search(r"^Exec\w*=-?/usr/bin/", text, re.M)
    assert not (units / "migrated.service.d").exists()  # the cutover drop-in only when asked
    # a venv under /tmp is hidden by the units' PrivateTmp: said, not silently written
    assert "sandbox hides /tmp" in r.stderr

    for unit in ("migrated.service", "migrate-console.service"):
        v = subprocess.run(["systemd-analyze", "verify", str(units / unit)], capture_output=True, text=True,
                           timeout=120)
        assert v.returncode == 0 and v.stderr.strip() == "", v.stderr
        exposure(units / unit, BUDGET[unit])

    install_units(venv, "--dest", str(units), "--sysusers-dest", str(sysusers), "--cutover")
    drop_in = units / "migrated.service.d" / "cutover.conf"
    assert drop_in.read_text() == (REPO / "systemd" / "cutover.conf").read_text()
    v = subprocess.run(["systemd-analyze", "verify", str(units / "migrated.service")], capture_output=True, text=True,
                       timeout=120)
    assert v.returncode == 0 and v.stderr.strip() == "", v.stderr
    exposure(units / "migrated.service", 3.0)  # the drop-in is read: root with CAP_SYS_ADMIN (test_systemd.py)

    if shutil.which("systemd-sysusers"):
        root = tmp_path / "root"
        (root / "etc").mkdir(parents=True)
        u = subprocess.run(["systemd-sysusers", f"--root={root}", str(sysusers / "migrated.conf")],
                           capture_output=True, text=True, timeout=60)
        assert u.returncode == 0, u.stderr
        passwd = (root / "etc" / "passwd").read_text()
        assert re.search(r"^migrated:x:\d+:\d+:[^:]*:/var/lib/migrated:/usr/sbin/nologin$", passwd, re.M), passwd
        assert re.search(r"^migrated:x:\d+:", (root / "etc" / "group").read_text(), re.M)


def test_prefix_and_rendering() -> None:
    commands = program_commands("/usr/local")
    text = render_unit("ExecStart=/usr/bin/migrated run\nExecStartPre=/usr/bin/migrate-console check-config\n"
                       "# useradd -s /usr/sbin/nologin\nExecStart=/usr/bin/migratectl status\n", commands)
    assert text == ("ExecStart=/usr/local/bin/migrated run\nExecStartPre=/usr/local/bin/migrate-console check-config\n"
                    "# useradd -s /usr/sbin/nologin\nExecStart=/usr/local/bin/migratectl status\n")
    assert program_commands("/opt/my venv")["migrated"] == "'/opt/my venv/bin/migrated'"


def test_install_units_from_the_checkout(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "migrated.cli.main", "install-units", "--dest", str(tmp_path / "u"),
                        "--sysusers-dest", str(tmp_path / "s"), "--prefix", "/opt/migrated"],
                       env=repo_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ExecStart=/opt/migrated/bin/migrated run" in (tmp_path / "u" / "migrated.service").read_text()
    assert not (tmp_path / "u" / "migrated.service.d").exists()  # the cutover drop-in only when asked
    assert (tmp_path / "s" / "migrated.conf").read_text() == (REPO / "systemd/sysusers.d/migrated.conf").read_text()
    assert r.stderr == ""  # /opt is not hidden by the sandbox
