"""``migrate-cloud check``: before creating tasks, try the console's cloud key.

Reads the console config's ``cloud:`` section (:func:`migrated.cloud.config.load_cloud_section`:
the console's model) and opens the provider it names with its credentials, exactly as the console
does (:func:`migrated.cloud.provider.open_provider`), then makes the read-only calls the console
makes: DescribeInstances, DescribeImages and, with
``--instance``, the full target validation and the security-group check of ``--ssh-port``. Each
line says what was called and whether it worked, with Tencent's code when it did not (a missing
CAM permission shows as ``AuthFailure.UnauthorizedOperation``). Exit 0 when every check passed,
9 (checks failed) otherwise; ``--json`` prints one object for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from migrated.cli.options import add_common_options, configure_logging
from migrated.cloud.config import load_cloud_section
from migrated.cloud.provider import CloudProvider, InstanceInvalid, open_provider
from migrated.errors import ChecksFailed, CloudError, ConfigError, ExitCode, MigratedError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warnings: list[str]


async def run_checks(cloud: CloudProvider, region: str, instance: str, ssh_port: int) -> list[Check]:
    out: list[Check] = []
    calls = cloud.traits.calls

    async def attempt(name: str, coro: Any) -> Any:
        try:
            result = await coro
        except (CloudError, InstanceInvalid) as exc:
            out.append(Check(name, False, str(exc), []))
            return None
        return result

    n = await attempt(calls.instances, cloud.probe_instances(region))
    if n is not None:
        out.append(Check(calls.instances, True, f"{n} instance(s) in {region}", []))
    imgs = await attempt(calls.images, cloud.find_images(region, name="migrated-permission-check"))
    if imgs is not None:
        out.append(Check(calls.images, True, "image names can be checked", []))
    if instance:
        info = await attempt(f"target {instance}", cloud.validate_instance(region, instance, []))
        if info is not None:
            out.append(Check(f"target {instance}", True, f"{info.state}, {info.os_name}, system disk "
                             f"{info.system_disk_gb} GB, data disks {list(info.data_disks_gb)} GB", []))
            warns = await attempt(calls.security_groups, cloud.ssh_port_warnings(region, info, ssh_port))
            if warns is not None:
                out.append(Check(calls.security_groups, True,
                                 f"TCP {ssh_port}: " + ("open to all" if not warns else "see warnings"), warns))
    return out


async def _check(args: argparse.Namespace) -> list[Check]:
    section = load_cloud_section(args.config)
    if section is None:
        raise ConfigError(f"{args.config}: no cloud: section; see docs/cloud.md")
    cloud = open_provider(section)
    try:
        return await run_checks(cloud, args.region, args.instance, args.ssh_port)
    finally:
        await cloud.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migrate-cloud", description="Check the console's cloud access.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="try the read-only calls the console makes")
    c.add_argument("--config", default="/etc/migrate-console/console.yaml", help="the console config file")
    c.add_argument("--region", required=True, help="e.g. ap-guangzhou")
    c.add_argument("--instance", default="", help="also validate this target instance (an instance ID, e.g. ins-...)")
    c.add_argument("--ssh-port", type=int, default=22, help="the target's SSH port to look for (default 22)")
    c.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_common_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args, level="error", fmt="console")  # stderr; stdout is the report (or JSON)
    try:
        checks = asyncio.run(_check(args))
    except MigratedError as exc:
        print(f"migrate-cloud: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "region": args.region, "checks": [asdict(c) for c in checks]}))
    else:
        for c in checks:
            print(f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
            for w in c.warnings:
                print(f"      warning: {w}")
    return int(ExitCode.OK) if ok else int(ChecksFailed.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
