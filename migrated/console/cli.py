"""``migrate-console``: run the console, and administer it through its own signed API.

::

    migrate-console serve --config /etc/migrate-console/console.yaml
    migrate-console check-config --config /etc/migrate-console/console.yaml   (the unit's ExecStartPre)
    migrate-console storage upgrade --config /etc/migrate-console/console.yaml
    migrate-console keys create --local --config console.yaml --role admin --name ops \
        --save ~/.config/migrate-console/credentials.yaml
    migrate-console keys create --role agent --name fleet
    migrate-console keys list | keys revoke AKID...
    migrate-console sources [--json] | sources remove SRC
    migrate-console tasks create --source SRC --name web01 --region ap-guangzhou --target-type instance \\
        --target-instance ins-abc --target-ssh root@203.0.113.7:22 --target-host-key "ssh-ed25519 AAAA..."
    migrate-console tasks list | show ID | start ID | pause ID | retry ID | delete ID
    migrate-console tasks set-bandwidth ID RATE | events ID      # RATE: 20MiB/s, 160Mbit; bare = KB/s
    migrate-console tasks set-rounds ID [--round-interval S] [--read-limit RATE]

Every admin subcommand is a client of the same signed API the agents use. Credentials
(never on the command line): ``--credentials FILE`` (YAML ``endpoint``/``secret_id``/
``secret_key``, mode 0600), else ``MIGRATE_CONSOLE_SECRET_ID`` + ``MIGRATE_CONSOLE_SECRET_KEY``,
else ``~/.config/migrate-console/credentials.yaml``, else a prompt on the terminal. The
endpoint: ``--endpoint``, else ``MIGRATE_CONSOLE_ENDPOINT``, else the credentials file,
else ``http://127.0.0.1:8930``. ``keys create --local`` writes to the database named in
``--config`` directly: that is how the first admin key is made.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import ipaddress
import json
import os
import signal
import ssl
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from migrated.cli.options import add_common_options, add_log_options, configure_logging
from migrated.errors import ConfigError, ConsoleError, MigratedError, UsageError
from migrated.model import bandwidth
from migrated.model.bandwidth import format_kbps
from migrated.model.lvmsize import DEFAULT_SNAPSHOT_SIZE
from migrated.model.taskspec import (
    CHECKS,
    DEFAULT_FREEZE_BUDGET_SECONDS,
    DEFAULT_HOOK_TIMEOUT_SECONDS,
    DEFAULT_QUIESCE,
    DEFAULT_ROUND_INTERVAL_SECONDS,
    checks_hint,
    unknown_checks,
)

DEFAULT_ENDPOINT = "http://127.0.0.1:8930"
DEFAULT_CREDENTIALS = Path("~/.config/migrate-console/credentials.yaml")
ENV_ID, ENV_KEY = "MIGRATE_CONSOLE_SECRET_ID", "MIGRATE_CONSOLE_SECRET_KEY"
ENV_ENDPOINT, ENV_CREDS = "MIGRATE_CONSOLE_ENDPOINT", "MIGRATE_CONSOLE_CREDENTIALS"


# ---------------------------------------------------------------- credentials


def _read_credentials_file(path: Path) -> dict[str, str]:
    from migrated.store import read_private_file

    raw = read_private_file(path)
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with secret_id and secret_key")
    unknown = set(data) - {"endpoint", "secret_id", "secret_key"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]} (endpoint, secret_id, secret_key)")
    for k in ("secret_id", "secret_key"):
        if not isinstance(data.get(k), str) or not data[k]:
            raise ConfigError(f"{path}: {k} is missing")
    return {k: str(v) for k, v in data.items()}


def resolve_credentials(args: argparse.Namespace) -> tuple[str, str, str]:
    """(endpoint, secret_id, secret_key) from --credentials, env, the default file, or a prompt."""
    creds: dict[str, str] = {}
    explicit = args.credentials or os.environ.get(ENV_CREDS)
    if explicit:
        creds = _read_credentials_file(Path(explicit).expanduser())
    elif os.environ.get(ENV_ID) or os.environ.get(ENV_KEY):
        if not (os.environ.get(ENV_ID) and os.environ.get(ENV_KEY)):
            raise UsageError(f"set both {ENV_ID} and {ENV_KEY}")
        creds = {"secret_id": os.environ[ENV_ID], "secret_key": os.environ[ENV_KEY]}
    elif DEFAULT_CREDENTIALS.expanduser().exists():
        creds = _read_credentials_file(DEFAULT_CREDENTIALS.expanduser())
    elif sys.stdin.isatty():
        creds = {"secret_id": input("SecretId: ").strip(), "secret_key": getpass.getpass("SecretKey: ").strip()}
    else:
        raise UsageError(
            f"no console credentials: use --credentials FILE (mode 0600), or set {ENV_ID} and {ENV_KEY}")
    endpoint = args.endpoint or os.environ.get(ENV_ENDPOINT) or creds.get("endpoint") or DEFAULT_ENDPOINT
    return endpoint, creds["secret_id"], creds["secret_key"]


async def _call(args: argparse.Namespace, action: str, params: dict[str, Any]) -> dict[str, Any]:
    from migrated.console.client import ConsoleClient

    endpoint, sid, skey = resolve_credentials(args)
    async with ConsoleClient(endpoint, sid, skey, timeout=args.timeout) as c:
        # a refusal is a ConsoleError whose exit code follows its code (migrated.errors.exit_code_for)
        return await c.call(action, params)


def call(args: argparse.Namespace, action: str, params: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_call(args, action, params))


# ---------------------------------------------------------------- output


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(human)


def table(rows: list[list[str]], header: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*[str(x) for x in r]).rstrip() for r in [header, *rows])


def _fmt_bytes(n: float) -> str:
    from migrated.model.status import format_bytes

    return format_bytes(n)


def rounds_line(p: dict[str, Any]) -> str:
    """The continuous-sync line of a task view's ``Progress`` ("" before the first round)."""
    from migrated.model.status import TaskProgress, continuous_line

    return continuous_line(TaskProgress.from_api(p))


def _cutover_lines(t: dict[str, Any], p: dict[str, Any], lines: list[str]) -> None:
    """The rounds (ContinuousSync) and cutover lines of ``tasks show``."""
    if t.get("ContinuousSync"):
        every = t.get("RoundIntervalSeconds")
        lines.append("Continuous    incremental rounds until cutover"
                     + f", every {every if every is not None else DEFAULT_ROUND_INTERVAL_SECONDS} s"
                     + (f", source read limit {format_kbps(t['ReadLimitKBps'])}" if t.get("ReadLimitKBps") else ""))
        now_every, now_limit = p.get("RoundIntervalSeconds"), p.get("ReadLimitKBps")
        if now_every is not None:
            lines.append(f"In effect     a round every {now_every:g} s, source read limit "
                         + format_kbps(now_limit) + " (as the agent last reported)")
    hooks = [f"{n} hook set" for n, k in (("pre", "PreHook"), ("post", "PostHook")) if t.get(k)]
    snap = (f" (snapshot size {t.get('SnapshotSize') or DEFAULT_SNAPSHOT_SIZE})"
            if t.get("Quiesce") == "lvm" else "")
    lines.append(f"Cutover       quiesce {t.get('Quiesce') or DEFAULT_QUIESCE}{snap}, freeze budget "
                 f"{t.get('FreezeBudgetSeconds') or DEFAULT_FREEZE_BUDGET_SECONDS} s"
                 + (f", {', '.join(hooks)}" if hooks else "")
                 + (f" (timeout {t.get('HookTimeoutSeconds') or DEFAULT_HOOK_TIMEOUT_SECONDS} s)" if hooks else "")
                 + " (--json shows the hook commands)" * bool(hooks))
    rounds = rounds_line(p) if t.get("ContinuousSync") else ""
    if rounds:
        lines.append(f"Rounds        {rounds}")
    elif p.get("DowntimeSeconds") is not None:
        lines.append(f"Downtime      {p['DowntimeSeconds']:.2f} s (the freeze of the final pass)")


def task_lines(t: dict[str, Any]) -> str:
    from migrated.model.status import format_duration

    p = t["Progress"]
    lines = [
        f"Task          {t['TaskId']}  ({t['TaskName']})",
        f"Source        {t['SourceId']}",
        f"State         {t['State']}" + (f"  stage {t['Stage']}" if t["Stage"] else ""),
        f"Target        {t['TargetType']} "
        + (t["ImageName"] if t["TargetType"] == "image" else t["TargetInstanceId"]) + f" in {t['Region']}",
        f"Target SSH    {t['TargetSsh']}",
        f"Bandwidth     {format_kbps(t['BandwidthLimitKBps'])}",
        f"Checksum      {'yes' if t['Checksum'] else 'no'}",
        "Disks         " + ", ".join(f"{m['Source']} -> {m['Target']}" for m in t["DiskMapping"]),
    ]
    if t.get("IgnoreChecks"):
        lines.append(f"Skip checks   {', '.join(t['IgnoreChecks'])}")
    if t["ScheduledStartTime"]:
        lines.append(f"Scheduled     {t['ScheduledStartTime']}")
    if p["BytesTotal"]:
        lines.append(f"Progress      {p['Percent']:.1f}%  {_fmt_bytes(p['BytesDone'])} / {_fmt_bytes(p['BytesTotal'])}"
                     f"  {_fmt_bytes(p['RateBps'])}/s  ETA {format_duration(p['EtaSeconds'])}")
    if t.get("ConsistentFinish"):
        lines.append("Finish        consistent: cutover right after the full pass (source quiesced for the final "
                     "pass, every block verified)")
    if t.get("ContinuousSync") or t.get("ConsistentFinish"):
        _cutover_lines(t, p, lines)
    if t["Message"]:
        lines.append(f"Message       {t['Message']}")
    lines.append(f"Actions       {', '.join(t['AllowedActions']) or '(none)'}")
    if t["Description"]:
        lines.append(f"Description   {t['Description']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- serve


def cmd_check_config(args: argparse.Namespace) -> int:
    """What ``serve`` would refuse before it listens: the config, the TLS files it names, a database
    path it cannot create or write (under the unit's sandbox, where ExecStartPre runs too), a
    PostgreSQL server it cannot reach or log in to, a cloud provider it cannot open."""
    from migrated.console.config import load_config

    cfg = load_config(args.config)
    _ssl_context(cfg)
    schema = ""
    if cfg.storage.backend == "sqlite":
        _check_storage_path(Path(cfg.storage.path))
    else:  # the password is readable and the server answers it (errors name storage.<key>); changes nothing
        from migrated.console.storage import BACKENDS
        from migrated.console.storage.postgresql import SCHEMA_VERSION

        have = asyncio.run(BACKENDS["postgresql"](**cfg.storage.backend_options()).check())
        schema = (f", schema version {have}" if have == SCHEMA_VERSION
                  else f", schema version {have}: serve will upgrade it to {SCHEMA_VERSION}")
    if cfg.cloud is not None:  # its SDK installed and its key readable, as serve opens it
        from migrated.cloud.config import check_cloud

        check_cloud(cfg.cloud)
    scheme = "https" if cfg.listen.tls is not None else "http"
    if warning := plain_http_warning(cfg.listen.host, cfg.listen.tls is not None):
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    print(f"{args.config}: OK (listen {scheme}://{cfg.listen.host}:{cfg.listen.port}, {cfg.storage.describe()}"
          f"{schema})")
    return 0


def plain_http_warning(host: str, tls: bool) -> str | None:
    """A console serving plain HTTP beyond loopback sends admin keys' signatures and web logins in the
    clear: legal (a TLS proxy may sit in front), worth a line."""
    if tls:
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (f"listen.host {host} serves plain HTTP beyond this machine; set listen.tls, or put a TLS proxy "
            "in front and listen on 127.0.0.1")


async def _open_storage(cfg: Any, then: Any) -> Any:
    """Open the configured backend bare (its schema upgrade runs), call ``then(store)``, close."""
    from migrated.console.storage import BACKENDS

    store = BACKENDS[cfg.storage.backend](**cfg.storage.backend_options())
    await store.open()
    try:
        return then(store)
    finally:
        await store.close()


def cmd_storage_upgrade(args: argparse.Namespace) -> int:
    """Apply the schema upgrades the database lacks (``serve`` does too, at start) and say what happened."""
    from migrated.console.config import load_config

    cfg = load_config(args.config)
    before, now = asyncio.run(_open_storage(cfg, lambda s: (s.schema_upgraded_from, s.schema_version)))
    print(f"{cfg.storage.describe()}: " + (f"schema upgraded from version {before} to {now}" if before is not None
                                           else f"schema version {now}, up to date"))
    return 0


def _check_storage_path(db: Path) -> None:
    """The database file, or the nearest directory above it that exists (storage creates the rest),
    must be writable: SQLite writes the file and its -wal/-shm files beside it."""
    existing = next(p for p in (db.parent, *db.parent.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise ConfigError(f"{existing} is not a directory, so {db} cannot be created", path="storage.path")
    for p in (existing, db) if db.exists() else (existing,):
        if not os.access(p, os.W_OK):
            raise ConfigError(f"{p} is not writable by this user (uid {os.getuid()})", path="storage.path")
    # access() says yes to root almost everywhere (/proc, a read-only mount): create a file to be sure
    try:
        fd, probe = tempfile.mkstemp(prefix=".check-config-", dir=existing)
    except OSError as e:
        raise ConfigError(f"cannot create files in {existing}, so {db} cannot be created: {e.strerror}",
                          path="storage.path") from None
    os.close(fd)
    os.unlink(probe)


def _ssl_context(cfg: Any) -> ssl.SSLContext | None:
    if cfg.listen.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cfg.listen.tls.cert_file, cfg.listen.tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"listen.tls: cannot load {cfg.listen.tls.cert_file}: {exc}") from None
    return ctx


def cmd_serve(args: argparse.Namespace) -> int:
    from migrated.console.config import load_config
    from migrated.logs import configure

    cfg = load_config(args.config)
    configure(level=args.log_level or cfg.log.level, fmt=args.log_format or cfg.log.format)
    return asyncio.run(_serve(cfg))


async def _serve(cfg: Any) -> int:
    import structlog
    from aiohttp import web

    from migrated.console.app import create_app

    log = structlog.get_logger("migrated.console")
    from migrated.agent.notify import Notifier

    notifier = Notifier.from_environ()  # Type=notify: READY=1 once listening, STOPPING=1 on SIGTERM
    ssl_ctx = _ssl_context(cfg)
    app = create_app(cfg)
    runner = web.AppRunner(app, shutdown_timeout=2, handler_cancellation=True, access_log=None)
    await runner.setup()
    # everything loaded so far lives as long as the process: keep it out of full collections,
    # which otherwise walk it all and stall every held long-poll (measured: hundreds of ms)
    gc.collect()
    gc.freeze()
    # Every held long-poll keeps its request objects for up to 30 s, so they reach the oldest
    # generation and a full collection (which walks every live object) came every few seconds.
    # Fewer, later collections: cycles are still collected, memory grows a little.
    gc.set_threshold(700, 10, 1000)
    # the storage thread gives up the GIL at every SQLite call; let it have it back quickly
    sys.setswitchinterval(0.001)
    try:
        site = web.TCPSite(runner, cfg.listen.host, cfg.listen.port, ssl_context=ssl_ctx)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"listen: cannot listen on {cfg.listen.host}:{cfg.listen.port}: {exc.strerror}") from None
        host, port = runner.addresses[0][:2]
        scheme = "https" if ssl_ctx else "http"
        print(f"migrate-console listening on {scheme}://{host}:{port}", flush=True)
        log.info("console listening", url=f"{scheme}://{host}:{port}", db=cfg.storage.describe())
        if warning := plain_http_warning(cfg.listen.host, cfg.listen.tls is not None):
            log.warning(warning)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        notifier.ready(f"listening on {scheme}://{host}:{port}")
        await stop.wait()
        notifier.stopping("stopping")
        log.info("console stopping")
    finally:
        await runner.cleanup()
    return 0


# ---------------------------------------------------------------- keys


def cmd_keys_create(args: argparse.Namespace) -> int:
    if args.local:
        if not args.config:
            raise UsageError("keys create --local needs --config (the console's config file)")
        res = asyncio.run(_local_create_key(args))
    else:
        res = call(args, "CreateKey", {"Role": args.role, "Name": args.name})
    if args.save:
        from migrated.store import atomic_write

        endpoint = args.endpoint or os.environ.get(ENV_ENDPOINT) or DEFAULT_ENDPOINT
        doc = {"endpoint": endpoint, "secret_id": res["SecretId"], "secret_key": res["SecretKey"]}
        atomic_write(Path(args.save).expanduser(), yaml.safe_dump(doc).encode(), mode=0o600)
    human = (f"SecretId:  {res['SecretId']}\nSecretKey: {res['SecretKey']}\nRole:      {res['Role']}\n"
             "The SecretKey is shown only now; keep it safe."
             + (f"\nSaved to {args.save} (mode 0600)." if args.save else ""))
    emit(args, {k: res[k] for k in ("SecretId", "SecretKey", "Role", "Name")}, human)
    return 0


async def _local_create_key(args: argparse.Namespace) -> dict[str, Any]:
    from migrated.console.app import make_storage
    from migrated.console.config import load_config
    from migrated.console.params import CreateKey
    from migrated.console.service import ConsoleService

    cfg = load_config(args.config)
    store = make_storage(cfg)
    await store.open()
    try:
        return await ConsoleService(store, cfg).create_key(None, CreateKey(Role=args.role, Name=args.name))
    finally:
        await store.close()


def cmd_keys_list(args: argparse.Namespace) -> int:
    res = call(args, "DescribeKeys", {})
    rows = [[k["SecretId"], k["Role"], k["Name"], k["Status"], k["CreatedTime"]] for k in res["KeySet"]]
    emit(args, res, table(rows, ["SECRET ID", "ROLE", "NAME", "STATUS", "CREATED"]))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    res = call(args, "RevokeKey", {"SecretId": args.secret_id})
    emit(args, res, f"{res['SecretId']} revoked")
    return 0


# ---------------------------------------------------------------- sources


def cmd_sources_list(args: argparse.Namespace) -> int:
    res = call(args, "DescribeSources", {})
    rows = [[s["SourceId"], s["Hostname"], s["Status"], s["LastHeartbeatTime"] or "-", s["OsName"],
             s["AgentVersion"], s["CurrentTaskId"] or "-"] for s in res["SourceSet"]]
    emit(args, res, table(rows, ["SOURCE", "HOSTNAME", "STATUS", "LAST HEARTBEAT", "OS", "AGENT", "TASK"]))
    return 0


def cmd_sources_remove(args: argparse.Namespace) -> int:
    res = call(args, "RemoveSource", {"SourceId": args.source_id})
    emit(args, res, f"source {res['SourceId']} removed")
    return 0


# ---------------------------------------------------------------- tasks


def _schedule(value: str) -> str:
    """--schedule: ISO 8601; without an offset it is the operator's local time."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--schedule {value!r}: use YYYY-MM-DDTHH:MM (local time) or add an offset") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return dt.isoformat()


def _hook_arg(value: str | None, flag: str) -> str | None:
    """A hook command as given, or ``@FILE``: the command read from FILE (keeps a password in the
    command out of the process list and the shell history)."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except OSError as e:
        raise UsageError(f"{flag} {value}: cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {value}: {path} is not UTF-8 text") from None


def cmd_tasks_create(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {
        "SourceId": args.source, "TaskName": args.name, "Description": args.description, "Region": args.region,
        "TargetType": args.target_type, "TargetSsh": args.target_ssh, "TargetHostKey": args.target_host_key,
        "BandwidthLimitKBps": args.bandwidth_limit, "Checksum": args.checksum,
    }
    if args.image_name:
        params["ImageName"] = args.image_name
    if args.target_instance:
        params["TargetInstanceId"] = args.target_instance
    if args.schedule:
        params["ScheduledStartTime"] = _schedule(args.schedule)
    continuous_flags = {"RoundIntervalSeconds": args.round_interval, "ReadLimitKBps": args.read_limit,
                        "Quiesce": args.quiesce, "PreHook": _hook_arg(args.pre_hook, "--pre-hook"),
                        "PostHook": _hook_arg(args.post_hook, "--post-hook"), "FreezeBudgetSeconds": args.freeze_budget,
                        "SnapshotSize": args.snapshot_size, "HookTimeoutSeconds": args.hook_timeout}
    if args.continuous and args.consistent_finish:
        raise UsageError("--consistent-finish is for a one-shot task; a --continuous task always ends with a cutover")
    if args.continuous:
        params["ContinuousSync"] = True
        params.update({k: v for k, v in continuous_flags.items() if v is not None})
    elif args.consistent_finish:
        if args.round_interval is not None or args.read_limit is not None:
            raise UsageError("--round-interval and --read-limit need --continuous (a consistent finish has no rounds)")
        params["ConsistentFinish"] = True
        params.update({k: v for k, v in continuous_flags.items() if v is not None})
    elif any(v is not None for v in continuous_flags.values()):
        raise UsageError("--round-interval, --read-limit, --quiesce, --pre-hook, --post-hook, --hook-timeout, "
                         "--freeze-budget and --snapshot-size need --continuous (or, all but the first two, "
                         "--consistent-finish)")
    if args.ignore_check:
        bad = unknown_checks(args.ignore_check)
        if bad:
            raise UsageError(f"--ignore-check {bad[0]!r}: unknown check; {checks_hint()}")
        params["IgnoreChecks"] = list(dict.fromkeys(args.ignore_check))
    if args.disk:
        mapping = []
        for d in args.disk:
            src, sep, tgt = d.partition("=")
            if not sep or not src or not tgt:
                raise UsageError(f"--disk {d!r}: use SOURCE=TARGET, e.g. /dev/vdb=/dev/vdb")
            mapping.append({"Source": src, "Target": tgt})
        params["DiskMapping"] = mapping
    res = call(args, "CreateTask", params)
    emit(args, res, f"task {res['TaskId']} created ({res['State']})"
         + (f", image name {res['ImageName']}" if res.get("ImageName") else ""))
    return 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"Limit": args.limit}
    if args.source:
        params["SourceId"] = args.source
    if args.state:
        params["States"] = args.state
    res = call(args, "DescribeTasks", params)
    rows = []
    for t in res["TaskSet"]:
        p = t["Progress"]
        rows.append([t["TaskId"], t["TaskName"], t["SourceId"], t["State"], t["Stage"] or "-",
                     f"{p['Percent']:.1f}%" if p["BytesTotal"] else "-", t["UpdatedTime"]])
    emit(args, res, table(rows, ["TASK", "NAME", "SOURCE", "STATE", "STAGE", "DONE", "UPDATED"])
         + (f"\n({len(rows)} of {res['TotalCount']})" if res["TotalCount"] > len(rows) else ""))
    return 0


def cmd_tasks_show(args: argparse.Namespace) -> int:
    res = call(args, "DescribeTasks", {"TaskIds": [args.task_id]})
    if not res["TaskSet"]:
        raise ConsoleError("ResourceNotFound.Task", f"task {args.task_id} does not exist")
    t = res["TaskSet"][0]
    emit(args, t, task_lines(t))
    return 0


def _task_action(action: str, verb: str):
    def run(args: argparse.Namespace) -> int:
        res = call(args, action, {"TaskId": args.task_id})
        note = f" (command {res['CommandId']} queued)" if res.get("CommandId") else ""
        emit(args, res, f"task {res['TaskId']} {verb}: now {res['State']}{note}")
        return 0

    return run


RATE_HELP = "e.g. 20MiB/s, 20480K, 160Mbit; a bare number is KB/s (1 KB = 1024 bytes); 0 = none"


def kbps_arg(text: str) -> int:
    """A bandwidth or read limit option -> the API's KB/s (a bare number is KB/s, as it always was)."""
    try:
        return bandwidth.parse_kbps(text, bandwidth.KB)
    except bandwidth.RateError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_tasks_set_bandwidth(args: argparse.Namespace) -> int:
    res = call(args, "ModifyTaskBandwidth", {"TaskId": args.task_id, "BandwidthLimitKBps": args.kbps})
    emit(args, res, f"task {res['TaskId']} bandwidth limit: {format_kbps(res['BandwidthLimitKBps'])}"
         + (f" (command {res['CommandId']} queued)" if res.get("CommandId") else ""))
    return 0


def cmd_tasks_set_rounds(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"TaskId": args.task_id}
    if args.round_interval is not None:
        params["RoundIntervalSeconds"] = args.round_interval
    if args.read_limit is not None:
        params["ReadLimitKBps"] = args.read_limit
    if len(params) == 1:
        raise UsageError("set-rounds: give --round-interval and/or --read-limit")
    res = call(args, "ModifyTaskRounds", params)
    every = res["RoundIntervalSeconds"]
    emit(args, res, f"task {res['TaskId']}: a round every {every if every is not None else 60} s, source read "
         f"limit {format_kbps(res['ReadLimitKBps'])}"
         + (f" (command {res['CommandId']} queued)" if res.get("CommandId") else ""))
    return 0


def cmd_tasks_events(args: argparse.Namespace) -> int:
    res = call(args, "DescribeTaskEvents", {"TaskId": args.task_id, "AfterEventId": args.after, "Limit": args.limit})
    rows = [[str(e["EventId"]), e["Time"], e["Level"], e["Stage"] or "-", e["Message"]] for e in res["EventSet"]]
    emit(args, res, table(rows, ["ID", "TIME", "LEVEL", "STAGE", "MESSAGE"]))
    return 0


# ---------------------------------------------------------------- argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migrate-console", description="The migrated console: control plane and admin.")
    add_common_options(p)  # `serve` falls back to log: in its config, the admin commands to info / console
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--endpoint", help=f"console URL (env {ENV_ENDPOINT}; default {DEFAULT_ENDPOINT})")
    api.add_argument("--credentials", help=f"YAML file with secret_id/secret_key, mode 0600 (env {ENV_CREDS})")
    api.add_argument("--timeout", type=float, default=40.0, help="seconds per API call (default 40)")
    api.add_argument("--json", action="store_true", help="print the API's JSON reply")

    s = sub.add_parser("check-config", help="validate console.yaml and its TLS files (for ExecStartPre)")
    s.add_argument("--config", required=True, help="console.yaml")
    s.set_defaults(func=cmd_check_config)

    st = sub.add_parser("storage", help="the console's database").add_subparsers(dest="storage_cmd", required=True,
                                                                                metavar="ACTION")
    s = st.add_parser("upgrade", help="apply the schema upgrades the database lacks (serve applies them at start)")
    s.add_argument("--config", required=True, help="console.yaml")
    s.set_defaults(func=cmd_storage_upgrade)

    s = sub.add_parser("serve", help="run the console")
    s.add_argument("--config", required=True, help="console.yaml")
    add_log_options(s, subcommand=True)  # also accepted after `serve`
    s.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    k = keys.add_parser("create", parents=[api], help="create a key; prints the SecretKey once")
    k.add_argument("--role", required=True, choices=["admin", "agent"])
    k.add_argument("--name", required=True)
    k.add_argument("--local", action="store_true", help="write to the database of --config directly (first key)")
    k.add_argument("--config", help="console.yaml (with --local)")
    k.add_argument("--save", help="also write a 0600 credentials file usable with --credentials")
    k.set_defaults(func=cmd_keys_create)
    k = keys.add_parser("list", parents=[api], help="list keys (never their secrets)")
    k.set_defaults(func=cmd_keys_list)
    k = keys.add_parser("revoke", parents=[api], help="revoke a key; it stops working at once")
    k.add_argument("secret_id")
    k.set_defaults(func=cmd_keys_revoke)

    src = sub.add_parser("sources", parents=[api], help="source servers (default: list)")
    src.set_defaults(func=cmd_sources_list)
    ssub = src.add_subparsers(dest="sources_cmd", required=False, metavar="ACTION")
    x = ssub.add_parser("list", parents=[api], help="list sources: online/offline, last heartbeat")
    x.set_defaults(func=cmd_sources_list)
    x = ssub.add_parser("remove", parents=[api], help="forget a source (no unfinished task)")
    x.add_argument("source_id")
    x.set_defaults(func=cmd_sources_remove)

    tasks = sub.add_parser("tasks", help="migration tasks").add_subparsers(dest="tasks_cmd", required=True,
                                                                           metavar="ACTION")
    t = tasks.add_parser("create", parents=[api], help="create a task")
    t.add_argument("--source", required=True, help="source ID")
    t.add_argument("--name", required=True)
    t.add_argument("--description", default="")
    t.add_argument("--region", required=True, help="destination region, e.g. ap-guangzhou")
    t.add_argument("--target-type", required=True, choices=["image", "instance"])
    t.add_argument("--image-name", help="required for --target-type image")
    t.add_argument("--target-instance", help="instance ID, required for --target-type instance")
    t.add_argument("--target-ssh", required=True, help="user@host:port of the target")
    t.add_argument("--target-host-key", required=True, help="the target's SSH host key line ('ssh-ed25519 AAAA...')")
    t.add_argument("--bandwidth-limit", type=kbps_arg, default=0, metavar="RATE", help=RATE_HELP)
    t.add_argument("--checksum", action="store_true", help="verify every block after the transfer")
    t.add_argument("--schedule", help="start time, ISO 8601 (local time unless an offset is given), >= 10 min ahead")
    t.add_argument("--disk", action="append", metavar="SRC=TGT",
                   help="disk mapping, repeatable (default: system disk and every mounted disk)")
    t.add_argument("--continuous", action="store_true",
                   help="incremental sync until cutover: rounds after the full pass until 'tasks cutover'")
    t.add_argument("--consistent-finish", action="store_true",
                   help="one-shot task that ends with a cutover right after its full pass: the source quiesced "
                        "for a short final pass, every block verified (takes the cutover options below)")
    t.add_argument("--round-interval", type=int, metavar="S", help="seconds between rounds (default 60)")
    t.add_argument("--read-limit", type=kbps_arg, metavar="RATE", help="source read limit during the rounds: "
                                                                      + RATE_HELP)
    t.add_argument("--quiesce", help="cutover: freeze (default), hooks, none, lvm (LVM snapshot of the source "
                                     "volume, docs/consistency.md)")
    t.add_argument("--snapshot-size", metavar="SIZE",
                   help=f"--quiesce lvm: the snapshot's copy-on-write space, e.g. 2G or 20%%ORIGIN "
                        f"(default {DEFAULT_SNAPSHOT_SIZE.replace('%', '%%')})")
    t.add_argument("--pre-hook", metavar="CMD|@FILE",
                   help="cutover: shell command run as root on the source before the final pass (stop services); "
                        "@FILE reads it from FILE")
    t.add_argument("--post-hook", metavar="CMD|@FILE",
                   help="cutover: shell command run as root on the source after it (start services); always runs "
                        "once the pre hook ran")
    t.add_argument("--freeze-budget", type=int, metavar="S", help="cutover: hard limit of the freeze, 1-600 s "
                                                                  "(default 30)")
    t.add_argument("--hook-timeout", type=int, metavar="S",
                   help="cutover: seconds each hook may run before it is killed, 1-3600 (default 300)")
    t.add_argument("--ignore-check", action="append", metavar="NAME",
                   help=f"skip this pre-migration check on the agent, repeatable: {', '.join(CHECKS)}")
    t.set_defaults(func=cmd_tasks_create)
    t = tasks.add_parser("list", parents=[api], help="list tasks")
    t.add_argument("--source")
    t.add_argument("--state", action="append", help="filter by state (repeatable)")
    t.add_argument("--limit", type=int, default=100)
    t.set_defaults(func=cmd_tasks_list)
    t = tasks.add_parser("show", parents=[api], help="one task with its progress")
    t.add_argument("task_id")
    t.set_defaults(func=cmd_tasks_show)
    for name, action, verb in [("start", "StartTask", "started"), ("pause", "PauseTask", "pause requested"),
                               ("retry", "RetryTask", "retried"), ("delete", "DeleteTask", "deleted"),
                               ("cutover", "CutoverTask", "cutover requested")]:
        t = tasks.add_parser(name, parents=[api], help=f"{name} a task")
        t.add_argument("task_id")
        t.set_defaults(func=_task_action(action, verb))
    t = tasks.add_parser("set-bandwidth", parents=[api], help="change the bandwidth limit, also while running")
    t.add_argument("task_id")
    t.add_argument("kbps", type=kbps_arg, metavar="RATE", help=RATE_HELP)
    t.set_defaults(func=cmd_tasks_set_bandwidth)
    t = tasks.add_parser("set-rounds", parents=[api],
                         help="continuous task: change the round interval / source read limit, also while running")
    t.add_argument("task_id")
    t.add_argument("--round-interval", type=int, metavar="S", help="seconds between rounds (0-86400)")
    t.add_argument("--read-limit", type=kbps_arg, metavar="RATE", help="source read limit: " + RATE_HELP)
    t.set_defaults(func=cmd_tasks_set_rounds)
    t = tasks.add_parser("events", parents=[api], help="a task's events (errors, warnings, stage changes)")
    t.add_argument("task_id")
    t.add_argument("--after", type=int, default=0, help="only events after this ID")
    t.add_argument("--limit", type=int, default=100)
    t.set_defaults(func=cmd_tasks_events)
    return p


def main(argv: list[str] | None = None) -> int:

    args = build_parser().parse_args(argv)
    try:
        # Log lines go to stderr from the start, so stdout carries only the command's output
        # (`--json` included); `serve` configures again from its config file.
        configure_logging(args, level="info", fmt="console")
        return int(args.func(args))
    except MigratedError as exc:
        print(f"migrate-console: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
