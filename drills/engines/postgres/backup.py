"""Backups that really restore.

Physical (``playbooks/pg-backup-verify.yaml``)::

    pg.basebackup       take a plain-format backup (pg_basebackup -X stream -c fast) into
                        $DRCTL_HOME/backups/<env>/<node>/base/<UTC stamp>/, or find the newest
                        one in a directory; its age against ``max_backup_age``
    pg.verifybackup     pg_verifybackup: every file against the backup's manifest, and the WAL
    pg.restore_scratch  copy it into a scratch server on a free 127.0.0.1 port and recover it
                        exactly to the backup's end (recovery_target = 'immediate'), then promote
    pg.reconcile_scratch  compare the scratch server's tables with the source's
    pg.drop_scratch     stop and remove the scratch server (also the rollback step)

Logical (``playbooks/pg-dump-restore-verify.yaml``): ``pg.dump`` (pg_dump -Fc, with a sha256
file next to it), ``pg.verifydump`` (the checksum, and pg_restore --list),
``pg.restore_dump_scratch`` (initdb a scratch server, pg_restore into it), then the same
reconcile and drop.

"At the backup's point": a physical backup is consistent at its end LSN (the manifest's
WAL-Ranges End-LSN); the scratch server is recovered to exactly that point and the LSN it stopped
at is read back from its timeline history and recorded. A dump is consistent at its snapshot,
taken between the two source LSNs the step records. The source is compared *now*: tables written
on the source after the backup's point differ legitimately, so the drill is meant for tables at
rest during the drill (or a quiesced source), and drctl's own schema (``drctl``: heartbeats and
canaries) is left out of the comparison.

Every step records what it measured in its ``data`` (path, label, LSNs, size, age, seconds,
port, the comparison per table); a step that finds a fault fails with one sentence naming the
file, table or host, and keeps its measurements.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engines.postgres.scratch import (
    MIB,
    SCRATCH_PREFIX,
    STAMP_RE,
    ActionFailed,
    Instance,
    Params,
    free_bytes,
    free_port,
    load_state,
    lsn_int,
    mib,
    mtime,
    owned_dir,
    processes_in,
    remove_state,
    run_as,
    size_bytes,
    stamp,
    state_dir,
    update_state,
)
from drills.executors.local import describe as describe_argv
from drills.executors.postgres import SqlExecutor, node_dsn, redact
from drills.home import drctl_home
from drills.model.durations import Duration, format_seconds
from drills.model.environment import Node, PostgresAccess, read_password
from drills.model.errors import (
    CommandFailed,
    CommandTimeout,
    ConnectionFailed,
    DrillError,
    InputError,
)

if TYPE_CHECKING:
    from drills.engine.actions import ActionResult, ActionSpec
    from drills.engine.targets import Targets
    from verify.reconcile import ReconcileReport

DEFAULT_HEADROOM_MIB = 64
CLUSTER_OVERHEAD = 64 * MIB  # what a fresh initdb'd cluster with its first WAL segment takes
DIFFS_KEPT = 20  # differing rows kept per table in a record


def action_result(output: str, data: dict[str, Any]) -> ActionResult:
    from drills.engine.actions import ActionResult

    return ActionResult(output, data)


# -- parameters ----------------------------------------------------------------------------------


class TakeParams(Params):
    reuse_latest: bool = Field(
        default=False,
        description="Find the newest backup in the backup directory instead of taking one "
        "(fails when there is none).",
    )
    max_backup_age: Duration | None = Field(
        default=None,
        description="A backup older than this (from its end) fails the drill, with that reason.",
    )
    backup_dir: str | None = Field(
        default=None,
        description="Where backups are (one subdirectory each); default "
        "$DRCTL_HOME/backups/<environment>/<node>/base (or .../dump for dumps).",
    )
    keep: int = Field(
        default=3, ge=1, description="Backups drctl took that are kept; older ones are removed."
    )


class DumpParams(TakeParams):
    database: str | None = Field(default=None, description="Database to dump; default the node's.")
    exclude_schemas: list[str] = Field(
        default_factory=lambda: ["drctl"],
        description="Schemas left out of the dump (drctl's own bookkeeping by default).",
    )


class RestoreParams(Params):
    scratch_dir: str | None = Field(
        default=None,
        description="Directory under which the scratch server is made (on the node's host; the "
        "node's OS user must be able to write there); default $DRCTL_HOME/scratch/<env>/<node>.",
    )
    headroom_mib: int = Field(
        default=DEFAULT_HEADROOM_MIB,
        ge=0,
        description="Free space required beyond the data itself (WAL, logs), in MiB.",
    )


class ReconcileParams(Params):
    tables: list[str] | None = Field(
        default=None, description="Tables to compare (schema.table); default every table."
    )
    schemas: list[str] | None = Field(
        default=None, description="Schemas whose tables are compared; default every schema."
    )
    exclude_schemas: list[str] = Field(
        default_factory=lambda: ["drctl"], description="Schemas never compared."
    )
    max_diffs: int = Field(default=1000, ge=1, description="Differing rows looked for per table.")


class ScratchReconcileParams(ReconcileParams):
    database: str | None = Field(
        default=None,
        description="Database compared (a physical backup holds them all); default the node's, "
        "or the dumped one.",
    )


# -- small helpers -------------------------------------------------------------------------------


def node_of(targets: Targets, role: str) -> tuple[str, Node, PostgresAccess, str]:
    name, node, pg = targets.postgres(role)
    return name, node, pg, targets.env.name


def password_env(node: Node) -> dict[str, str]:
    """PGPASSWORD for a client program, when the node's password is configured."""
    if node.postgres is None:
        return {}
    password = read_password(node.postgres)
    return {"PGPASSWORD": password} if password is not None else {}


def client_conninfo(node: Node, **overrides: Any) -> str:
    """A DSN for a client program's command line: never with the password (that goes in
    PGPASSWORD)."""
    return redact(node_dsn(node, application_name="drctl", **overrides))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _backup_root(targets: Targets, role: str, configured: str | None, kind: str) -> str:
    name, _, pg, env = node_of(targets, role)
    if configured:
        return configured.rstrip("/") or "/"
    return str(owned_dir(drctl_home() / "backups" / env / name / kind, pg.os_user))


def _describe_root(targets: Targets, role: str, configured: str | None, kind: str) -> str:
    name, _, _, env = node_of(targets, role)
    return configured or f"$DRCTL_HOME/backups/{env}/{name}/{kind}"


def _latest(
    targets: Targets, role: str, root: str, *, kind: str, pattern: str = "*.dump"
) -> tuple[str, int]:
    """The newest backup in ``root`` (by the time it was finished) and how many were there."""
    name, _, pg, _ = node_of(targets, role)
    if kind == "base":
        argv = ["find", root, "-mindepth", "2", "-maxdepth", "2", "-name", "backup_manifest"]
        argv += ["-printf", "%T@ %h\\n"]
    else:
        argv = ["find", root, "-mindepth", "1", "-maxdepth", "1", "-type", "f", "-name", pattern]
        argv += ["-printf", "%T@ %p\\n"]
    result = run_as(targets.host(role), argv, pg.os_user, timeout=60, check=False)
    if result.returncode != 0 and not result.stdout.strip():
        raise InputError(
            f"cannot look for backups in {root} on {name}: {result.output or 'find failed'}",
            host=name,
        )
    found = sorted(
        (float(when), path)
        for when, _, path in (line.partition(" ") for line in result.stdout.splitlines())
        if path
    )
    if not found:
        what = "a plain-format backup with a backup_manifest" if kind == "base" else pattern
        raise InputError(f"no backup found in {root} on {name} (looked for {what})", host=name)
    return found[-1][1], len(found)


def _prune(targets: Targets, role: str, root: str, keep: int, *, dirs: bool) -> list[str]:
    """Remove the oldest of the backups drctl took (named by their stamp) beyond ``keep``."""
    _, _, pg, _ = node_of(targets, role)
    kind = ["-type", "d"] if dirs else ["-type", "f", "-name", "*.dump"]
    listing = run_as(
        targets.host(role),
        ["find", root, "-mindepth", "1", "-maxdepth", "1", *kind, "-printf", "%f\\n"],
        pg.os_user,
        timeout=60,
        check=False,
    ).stdout
    ours = sorted(n for n in listing.splitlines() if STAMP_RE.match(n))
    removed = []
    for entry in ours[: max(0, len(ours) - keep)]:
        paths = [f"{root}/{entry}"] + ([] if dirs else [f"{root}/{entry}.sha256"])
        run_as(targets.host(role), ["rm", "-rf", "--", *paths], pg.os_user, timeout=300)
        removed.append(f"{root}/{entry}")
    return removed


def _age_check(info: dict[str, Any], params: TakeParams, name: str, what: str) -> dict[str, Any]:
    limit = params.max_backup_age
    info["max_backup_age_seconds"] = limit
    if limit is not None and info["age_seconds"] > limit:
        raise ActionFailed(
            f"{what} {info['path']} is {format_seconds(info['age_seconds'])} old (finished "
            f"{info['ended_at']}), older than max_backup_age {format_seconds(limit)}",
            host=name,
            data=info,
        )
    return info


# -- pg.basebackup -------------------------------------------------------------------------------


def _basebackup_argv(pg: PostgresAccess, node: Node, path: str, label: str) -> list[str]:
    return [
        f"{pg.bin_dir}/pg_basebackup",
        "-d",
        client_conninfo(node),
        "-D",
        path,
        "-Fp",
        "-X",
        "stream",
        "-c",
        "fast",
        "-l",
        label,
        "--no-password",
    ]


def backup_info(targets: Targets, role: str, path: str) -> dict[str, Any]:
    """What a plain-format backup says of itself: label, LSNs, size, when it finished."""
    name, _, pg, _ = node_of(targets, role)
    executor = targets.host(role)
    label_text = targets.read_file(role, f"{path}/backup_label") or ""
    label = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in label_text.splitlines())
    )
    manifest_text = targets.read_file(role, f"{path}/backup_manifest")
    if manifest_text is None:
        raise InputError(
            f"{path} on {name} has no backup_manifest: it cannot be verified "
            "(take plain-format backups with a manifest)",
            host=name,
        )
    try:
        manifest = json.loads(manifest_text)
        wal = manifest["WAL-Ranges"][-1]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ActionFailed(
            f"the manifest {path}/backup_manifest on {name} cannot be read: {exc!r}", host=name
        ) from exc
    ended = mtime(executor, f"{path}/backup_manifest", pg.os_user)
    return {
        "path": path,
        "label": label.get("LABEL", ""),
        "start_time": label.get("START TIME", ""),
        "start_lsn": wal.get("Start-LSN") or label.get("START WAL LOCATION", "").split(" ")[0],
        "end_lsn": wal.get("End-LSN"),
        "timeline": wal.get("Timeline"),
        "system_identifier": manifest.get("System-Identifier"),
        "files": len(manifest.get("Files", [])),
        "size_bytes": size_bytes(executor, path, pg.os_user),
        "ended_at": _iso(ended),
        "age_seconds": round(max(0.0, time.time() - ended), 3),
    }


def basebackup_run(targets: Targets, role: str, params: TakeParams, timeout: float) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    root = _backup_root(targets, role, params.backup_dir, "base")
    notes: list[str] = []
    seconds: float | None = None
    if params.reuse_latest:
        path, count = _latest(targets, role, root, kind="base")
        notes.append(f"newest of {count} backup(s) in {root}")
    else:
        path = f"{root}/{stamp()}"
        label = f"drctl {env}/{name} {Path(path).name}"
        started = time.monotonic()
        try:
            run_as(
                targets.host(role),
                _basebackup_argv(pg, node, path, label),
                pg.os_user,
                timeout=timeout,
                env=password_env(node),
            )
        except DrillError:
            run_as(
                targets.host(role), ["rm", "-rf", "--", path], pg.os_user, timeout=60, check=False
            )
            raise
        seconds = round(time.monotonic() - started, 3)
        notes.append(f"took {path} in {seconds:g}s")
        notes += [
            f"removed old backup {p}" for p in _prune(targets, role, root, params.keep, dirs=True)
        ]
    info = backup_info(targets, role, path) | {"taken": not params.reuse_latest, "seconds": seconds}
    _age_check(info, params, name, "backup")
    update_state(env, name, backup=info)
    notes.append(
        f"backup {info['label']!r}: {mib(info['size_bytes'])}, {info['files']} files, "
        f"LSN {info['start_lsn']}..{info['end_lsn']}, {format_seconds(info['age_seconds'])} old"
    )
    return action_result("; ".join(notes), info)


def basebackup_describe(targets: Targets, role: str, params: TakeParams) -> list[str]:
    name, node, pg, env = node_of(targets, role)
    root = _describe_root(targets, role, params.backup_dir, "base")
    age = (
        f"; fail if it finished more than {format_seconds(params.max_backup_age)} ago"
        if params.max_backup_age is not None
        else ""
    )
    if params.reuse_latest:
        return [f"find the newest backup (with a backup_manifest) in {root} on {name}{age}"]
    argv = _basebackup_argv(pg, node, f"{root}/<UTC stamp>", f"drctl {env}/{name} <UTC stamp>")
    return [describe_argv(argv, pg.os_user) + age, f"keep the newest {params.keep} in {root}"]


# -- pg.verifybackup -----------------------------------------------------------------------------

_QUOTED = re.compile(r'"([^"]+)"')


def _state_entry(targets: Targets, role: str, key: str, made_by: str) -> dict[str, Any]:
    name, _, _, env = node_of(targets, role)
    entry = load_state(env, name).get(key)
    if not isinstance(entry, dict):
        raise InputError(
            f"no {key} of {name} is known to this run: {made_by} must run earlier in the playbook",
            host=name,
        )
    return entry


def verifybackup_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _, pg, _ = node_of(targets, role)
    path = str(_state_entry(targets, role, "backup", "pg.basebackup")["path"])
    started = time.monotonic()
    result = run_as(
        targets.host(role),
        [f"{pg.bin_dir}/pg_verifybackup", path],
        pg.os_user,
        timeout=timeout,
        check=False,
    )
    seconds = round(time.monotonic() - started, 3)
    problems = [
        line.split("error:", 1)[1].strip()
        for line in result.output.splitlines()
        if "error:" in line
    ]
    files = [f"{path}/{m}" for p in problems for m in _QUOTED.findall(p) if not m.startswith("/")]
    data: dict[str, Any] = {
        "path": path,
        "verified": result.returncode == 0,
        "seconds": seconds,
        "problems": problems[:50],
        "files": files[:50],
    }
    if result.returncode != 0:
        first = problems[0] if problems else (result.output.splitlines() or ["failed"])[-1]
        where = f" ({files[0]})" if files else ""
        more = f"; {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
        raise ActionFailed(
            f"pg_verifybackup rejected backup {path}: {first}{where}{more}", host=name, data=data
        )
    return action_result(result.output, data)


def verifybackup_describe(targets: Targets, role: str, params: Params) -> list[str]:
    _, _, pg, _ = node_of(targets, role)
    return [describe_argv([f"{pg.bin_dir}/pg_verifybackup", "<the backup>"], pg.os_user)]


# -- scratch servers -----------------------------------------------------------------------------


def _instance_for(
    targets: Targets, role: str, scratch_dir: str | None, *, kind: str, database: str
) -> Instance:
    name, _, pg, env = node_of(targets, role)
    root = (
        scratch_dir.rstrip("/") if scratch_dir else str(owned_dir(state_dir(env, name), pg.os_user))
    )
    return Instance(
        directory=f"{root}/{SCRATCH_PREFIX}{env}-{name}",
        port=free_port(),
        bin_dir=pg.bin_dir,
        os_user=pg.os_user,
        host=name,
        database=database,
        kind=kind,
    )


def _describe_instance(targets: Targets, role: str, scratch_dir: str | None) -> str:
    name, _, _, env = node_of(targets, role)
    root = scratch_dir or f"$DRCTL_HOME/scratch/{env}/{name}"
    return f"{root}/{SCRATCH_PREFIX}{env}-{name}"


def _drop_leftover(targets: Targets, role: str) -> list[str]:
    """A scratch server an earlier (crashed) run left: stop and remove it first."""
    name, _, _, env = node_of(targets, role)
    left = load_state(env, name).get("scratch")
    if not isinstance(left, dict):
        return []
    done = Instance.from_state(left).stop_and_remove()
    update_state(env, name, scratch=None)
    return [f"an earlier run left a scratch server: {'; '.join(done) or 'nothing was running'}"]


def _space_check(
    targets: Targets, role: str, instance: Instance, data_bytes: int, headroom: int, what: str
) -> dict[str, Any]:
    name, _, pg, _ = node_of(targets, role)
    needed = data_bytes + headroom
    available, place = free_bytes(targets.host(role), instance.directory, pg.os_user)
    facts = {"scratch_dir": instance.directory, "free_bytes": available, "needed_bytes": needed}
    if available < needed:
        raise ActionFailed(
            f"not enough space for the scratch server: {place} on {name} has {mib(available)} "
            f"free, and restoring {what} needs {mib(needed)} ({mib(data_bytes)} of data and "
            f"{mib(headroom)} headroom); nothing was written",
            host=name,
            data=facts,
        )
    return facts


def scratch_dsn(node: Node, instance: Instance, *, password: bool = True) -> str:
    return node_dsn(
        node,
        with_password=password,
        host="127.0.0.1",
        port=instance.port,
        dbname=instance.database,
        application_name="drctl",
    )


def _write_file(instance: Instance, path: str, text: str, *, append: bool = False) -> None:
    script = 'cat >> "$1"' if append else 'cat > "$1"'
    run_as(
        instance.executor(),
        ["sh", "-c", script, "sh", path],
        instance.os_user,
        timeout=10,
        input=text,
    )


_OVERRIDDEN = re.compile(
    r"\s*(port|listen_addresses|unix_socket_directories|primary_conninfo|primary_slot_name|"
    r"restore_command|recovery_target\w*|archive_mode|archive_command|synchronous_standby_names|"
    r"logging_collector|log_directory|log_filename)\s*="
)


def _recovery_conf(existing: str, port: int) -> str:
    """postgresql.auto.conf of a scratch copy: its own port on 127.0.0.1, no replication, no
    archiving, and recovery that stops where the backup became consistent, then promotes."""
    kept = [line for line in existing.splitlines() if not _OVERRIDDEN.match(line)]
    return "\n".join(
        [
            *kept,
            "# ---- drctl scratch restore ----",
            f"port = {port}",
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            "primary_conninfo = ''",
            "primary_slot_name = ''",
            "archive_mode = off",
            "synchronous_standby_names = ''",
            "logging_collector = off",
            # Archive recovery needs a restore_command; WAL comes from the backup's own pg_wal.
            "restore_command = 'false'",
            "recovery_target = 'immediate'",
            "recovery_target_action = 'promote'",
            "",
        ]
    )


def _wait_promoted(node: Node, instance: Instance, deadline: float) -> None:
    executor = SqlExecutor(scratch_dsn(node, instance), host=instance.host)
    last = "no answer"
    while True:
        try:
            if executor.scalar("select pg_is_in_recovery()", timeout=5) is False:
                return
            last = "still in recovery"
        except (ConnectionFailed, CommandFailed, CommandTimeout) as exc:
            last = exc.message
        if time.monotonic() > deadline:
            tail = instance.log_tail()
            raise ActionFailed(
                f"the scratch server on port {instance.port} did not finish recovering ({last})"
                + (f"; its log ends: {' | '.join(tail.splitlines())}" if tail else ""),
                host=instance.host,
            )
        time.sleep(0.05)


def _restored_to(instance: Instance) -> str | None:
    """The LSN recovery stopped at, from the newest timeline history file the promotion wrote."""
    listing = instance.run(
        ["find", f"{instance.data_dir}/pg_wal", "-maxdepth", "1", "-name", "*.history"],
        timeout=10,
        check=False,
    ).stdout.split()
    if not listing:
        return None
    text = instance.run(["cat", sorted(listing)[-1]], timeout=10).stdout
    lines = [line.split("\t") for line in text.splitlines() if line.strip()]
    return lines[-1][1].strip() if lines and len(lines[-1]) > 1 else None


def restore_scratch_run(
    targets: Targets, role: str, params: RestoreParams, timeout: float
) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    backup = _state_entry(targets, role, "backup", "pg.basebackup")
    deadline = time.monotonic() + timeout
    notes = _drop_leftover(targets, role)
    instance = _instance_for(
        targets,
        role,
        params.scratch_dir,
        kind="backup",
        database=pg.database,
    )
    facts = _space_check(
        targets,
        role,
        instance,
        int(backup["size_bytes"]),
        params.headroom_mib * MIB,
        f"backup {backup['path']}",
    )
    update_state(env, name, scratch=instance.as_state())  # first: the rollback must find it
    started = time.monotonic()
    try:
        instance.make_directory()
        instance.run(["cp", "-a", "--", str(backup["path"]), instance.data_dir], timeout=timeout)
        instance.run(["chmod", "0700", instance.data_dir], timeout=10)
        auto_conf = f"{instance.data_dir}/postgresql.auto.conf"
        existing = instance.run(["cat", auto_conf], timeout=10, check=False).stdout
        _write_file(instance, auto_conf, _recovery_conf(existing, instance.port))
        instance.run(["rm", "-f", f"{instance.data_dir}/standby.signal"], timeout=10)
        instance.run(["touch", f"{instance.data_dir}/recovery.signal"], timeout=10)
        copied = time.monotonic()
        instance.start(max(1.0, deadline - time.monotonic()))
        _wait_promoted(node, instance, deadline)
        ready = time.monotonic()
        restored_to = _restored_to(instance)
        end_lsn = str(backup["end_lsn"])
        data: dict[str, Any] = facts | {
            "backup_path": backup["path"],
            "scratch_port": instance.port,
            "scratch_dsn": redact(scratch_dsn(node, instance, password=False)),
            "data_dir": instance.data_dir,
            "copy_seconds": round(copied - started, 3),
            "recovery_seconds": round(ready - copied, 3),
            "restore_seconds": round(ready - started, 3),
            "backup_end_lsn": end_lsn,
            "restored_to_lsn": restored_to,
            "at_backup_end": restored_to is not None and lsn_int(restored_to) == lsn_int(end_lsn),
        }
        if not data["at_backup_end"]:
            raise ActionFailed(
                f"the scratch copy of {backup['path']} recovered to {restored_to}, not to the "
                f"backup's end {end_lsn}",
                host=name,
                data=data,
            )
    except BaseException:
        instance.stop_and_remove()
        update_state(env, name, scratch=None)
        raise
    notes.append(
        f"restored {backup['path']} into a scratch server on 127.0.0.1:{instance.port} in "
        f"{data['restore_seconds']:g}s (copy {data['copy_seconds']:g}s, recovery "
        f"{data['recovery_seconds']:g}s), recovered to the backup's end {end_lsn}"
    )
    return action_result("; ".join(notes), data)


def restore_scratch_describe(targets: Targets, role: str, params: RestoreParams) -> list[str]:
    _, _, pg, _ = node_of(targets, role)
    where = _describe_instance(targets, role, params.scratch_dir)
    return [
        f"check free space in {where} (backup size + {params.headroom_mib} MiB)",
        describe_argv(["cp", "-a", "<the backup>", f"{where}/data"], pg.os_user),
        f"{where}/data/postgresql.auto.conf: port = <free port>, listen_addresses = "
        "'127.0.0.1', recovery_target = 'immediate', recovery_target_action = 'promote'; "
        "touch recovery.signal",
        describe_argv(
            [f"{pg.bin_dir}/pg_ctl", "start", "-D", f"{where}/data", "-l", f"{where}/server.log"],
            pg.os_user,
        ),
        "wait until it is promoted; read the LSN it recovered to from its timeline history",
    ]


# -- pg.reconcile_scratch ------------------------------------------------------------------------


def report_data(report: ReconcileReport) -> dict[str, Any]:
    """A ReconcileReport as plain values for the record, with a few differing rows per table."""
    data = report.as_dict()
    data["source_dsn"] = data.pop("source", "")
    data["target_dsn"] = data.pop("target", "")
    tables: list[dict[str, Any]] = []
    for table in report.tables:
        entry = table.as_dict()
        entry["differing_rows"] = len(table.diffs)
        entry["diffs"] = [d.as_dict() for d in table.diffs[:DIFFS_KEPT]]
        tables.append(entry)
    data["tables"] = tables
    data["tables_compared"] = len(tables)
    data["tables_differing"] = sum(1 for t in report.tables if not t.identical)
    data["rows_compared"] = sum(t.source_rows for t in report.tables)
    return data


def differ_sentence(data: dict[str, Any], source: str, copy: str) -> str:
    return (
        f"{data['tables_differing']} of {data['tables_compared']} table(s) differ between "
        f"{source} and {copy}: {data['summary']}"
    )


def run_reconcile(source_dsn: str, target_dsn: str, params: ReconcileParams) -> dict[str, Any]:
    from verify.reconcile import reconcile

    try:
        report = reconcile(
            source_dsn,
            target_dsn,
            tables=params.tables,
            schemas=params.schemas,
            max_diffs=params.max_diffs,
            exclude_schemas=list(params.exclude_schemas),
        )
    except InputError as exc:
        # Every problem at once, on one line: the record's reason is one sentence.
        problems = "; ".join(line.strip() for line in exc.message.splitlines() if line.strip())
        raise InputError(f"cannot compare: {problems}", host=exc.host) from exc
    return report_data(report)


def reconcile_scratch_run(
    targets: Targets, role: str, params: ScratchReconcileParams, timeout: float
) -> ActionResult:
    name, node, _, env = node_of(targets, role)
    state = load_state(env, name)
    scratch = _state_entry(
        targets, role, "scratch", "pg.restore_scratch or pg.restore_dump_scratch"
    )
    instance = Instance.from_state(scratch)
    if params.database and instance.kind == "backup":
        instance = replace(instance, database=params.database)
    elif params.database and params.database != instance.database:
        raise InputError(
            f"the scratch server holds only the dumped database {instance.database}, not "
            f"{params.database}",
            host=name,
        )
    source_dsn = node_dsn(node, with_password=True, dbname=instance.database)
    point: dict[str, Any] = {}
    if instance.kind == "backup" and isinstance(state.get("backup"), dict):
        point = {"point": "backup end", "point_lsn": state["backup"].get("end_lsn")}
    elif isinstance(state.get("dump"), dict):
        dump = state["dump"]
        point = {
            "point": "dump snapshot",
            "point_lsn_between": [dump.get("lsn_before"), dump.get("lsn_after")],
        }
    source_lsn = SqlExecutor(source_dsn, host=name).scalar(
        "select case when pg_is_in_recovery() then pg_last_wal_replay_lsn()"
        " else pg_current_wal_lsn() end::text",
        timeout=10,
    )
    if instance.kind == "dump" and isinstance(state.get("dump"), dict):
        # What the dump left out cannot be in the copy: leave it out of the comparison too.
        left_out = [s for s in state["dump"].get("excluded_schemas", []) if isinstance(s, str)]
        excluded = list(dict.fromkeys([*params.exclude_schemas, *left_out]))
        params = params.model_copy(update={"exclude_schemas": excluded})
    data = run_reconcile(source_dsn, scratch_dsn(node, instance), params)
    data |= point | {
        "source": name,
        "database": instance.database,
        "copy": f"scratch server on 127.0.0.1:{instance.port}",
        "source_lsn_at_compare": source_lsn,
        "excluded_schemas": list(params.exclude_schemas),
    }
    copy = f"its restored copy ({instance.kind}, database {instance.database})"
    if not data["identical"]:
        raise ActionFailed(differ_sentence(data, name, copy), host=name, data=data)
    return action_result(
        f"{data['tables_compared']} table(s), {data['rows_compared']} row(s) identical between "
        f"{name} and {copy} in {data['seconds']:g}s",
        data,
    )


def reconcile_scratch_describe(
    targets: Targets, role: str, params: ScratchReconcileParams
) -> list[str]:
    name, _, _, _ = node_of(targets, role)
    which = ", ".join(params.tables) if params.tables else "every table"
    schemas = f" in schemas {', '.join(params.schemas)}" if params.schemas else ""
    return [
        f"reconcile {which}{schemas} of {name} with the scratch server (read-only on both; "
        f"schemas {', '.join(params.exclude_schemas) or 'none'} left out)"
    ]


# -- pg.drop_scratch -----------------------------------------------------------------------------


def drop_scratch_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _, _, env = node_of(targets, role)
    state = load_state(env, name)
    done: list[str] = []
    directory = None
    if isinstance(state.get("scratch"), dict):
        instance = Instance.from_state(state["scratch"])
        directory = instance.directory
        done = instance.stop_and_remove()
    update_state(env, name, scratch=None, backup=None, dump=None)
    if not load_state(env, name):
        remove_state(env, name)
    left = processes_in(f"{directory}/data") if directory else []
    if left or (directory and Path(directory).exists()):
        raise ActionFailed(
            f"the scratch server in {directory} is not gone (processes {left})",
            host=name,
            data={"directory": directory, "processes": left},
        )
    return action_result(
        "; ".join(done) or "no scratch server to remove",
        {"removed": directory, "actions": done},
    )


def drop_scratch_describe(targets: Targets, role: str, params: Params) -> list[str]:
    name, _, _, env = node_of(targets, role)
    return [
        f"stop the scratch server of {name} (pg_ctl stop -m fast, then immediate) and remove "
        f"its directory; forget $DRCTL_HOME/scratch/{env}/{name}/state.json"
    ]


# -- pg.dump -------------------------------------------------------------------------------------


def _dump_argv(
    pg: PostgresAccess, node: Node, database: str, path: str, excluded: list[str]
) -> list[str]:
    return [
        f"{pg.bin_dir}/pg_dump",
        "-Fc",
        "-d",
        client_conninfo(node, dbname=database),
        "-f",
        path,
        *[f"--exclude-schema={schema}" for schema in excluded],
        "--no-password",
    ]


def _sha256(targets: Targets, role: str, path: str) -> str:
    _, _, pg, _ = node_of(targets, role)
    out = run_as(targets.host(role), ["sha256sum", "--", path], pg.os_user, timeout=600).stdout
    return out.split()[0]


def _database(node: Node, configured: str | None) -> str:
    assert node.postgres is not None
    return configured or node.postgres.database


def dump_run(targets: Targets, role: str, params: DumpParams, timeout: float) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    database = _database(node, params.database)
    root = _backup_root(targets, role, params.backup_dir, "dump")
    sql = SqlExecutor(node_dsn(node, with_password=True, dbname=database), host=name)
    lsn_sql = (
        "select case when pg_is_in_recovery() then pg_last_wal_replay_lsn()"
        " else pg_current_wal_lsn() end::text"
    )
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if params.reuse_latest:
        path, count = _latest(targets, role, root, kind="dump")
        notes.append(f"newest of {count} dump(s) in {root}")
        sidecar = targets.read_file(role, f"{path}.sha256")
        extra = {"taken": False, "seconds": None, "lsn_before": None, "lsn_after": None}
        extra["sha256"] = sidecar.split()[0] if sidecar and sidecar.split() else None
    else:
        path = f"{root}/{stamp()}-{database}.dump"
        lsn_before = sql.scalar(lsn_sql, timeout=10)
        started = time.monotonic()
        try:
            run_as(
                targets.host(role),
                _dump_argv(pg, node, database, path, list(params.exclude_schemas)),
                pg.os_user,
                timeout=timeout,
                env=password_env(node),
            )
        except DrillError:
            run_as(
                targets.host(role), ["rm", "-f", "--", path], pg.os_user, timeout=60, check=False
            )
            raise
        seconds = round(time.monotonic() - started, 3)
        lsn_after = sql.scalar(lsn_sql, timeout=10)
        digest = _sha256(targets, role, path)
        run_as(
            targets.host(role),
            ["sh", "-c", 'cat > "$1"', "sh", f"{path}.sha256"],
            pg.os_user,
            timeout=10,
            input=f"{digest}  {Path(path).name}\n",
        )
        extra = {
            "taken": True,
            "seconds": seconds,
            "lsn_before": lsn_before,
            "lsn_after": lsn_after,
            "sha256": digest,
        }
        notes.append(f"dumped database {database} to {path} in {seconds:g}s")
        notes += [
            f"removed old dump {p}" for p in _prune(targets, role, root, params.keep, dirs=False)
        ]
    executor = targets.host(role)
    ended = mtime(executor, path, pg.os_user)
    info: dict[str, Any] = {
        "path": path,
        "database": database,
        "size_bytes": size_bytes(executor, path, pg.os_user),
        "database_size_bytes": sql.scalar(
            "select pg_database_size(current_database())", timeout=10
        ),
        "ended_at": _iso(ended),
        "age_seconds": round(max(0.0, time.time() - ended), 3),
        "excluded_schemas": list(params.exclude_schemas),
    } | extra
    _age_check(info, params, name, "dump")
    update_state(env, name, dump=info)
    notes.append(
        f"dump of {database}: {mib(info['size_bytes'])}, {format_seconds(info['age_seconds'])} old"
    )
    return action_result("; ".join(notes), info)


def dump_describe(targets: Targets, role: str, params: DumpParams) -> list[str]:
    name, node, pg, _ = node_of(targets, role)
    root = _describe_root(targets, role, params.backup_dir, "dump")
    database = _database(node, params.database)
    age = (
        f"; fail if it finished more than {format_seconds(params.max_backup_age)} ago"
        if params.max_backup_age is not None
        else ""
    )
    if params.reuse_latest:
        return [f"find the newest *.dump in {root} on {name}{age}"]
    path = f"{root}/<UTC stamp>-{database}.dump"
    return [
        describe_argv(
            _dump_argv(pg, node, database, path, list(params.exclude_schemas)), pg.os_user
        )
        + age,
        describe_argv(["sha256sum", path], pg.os_user) + f" > {path}.sha256",
        f"keep the newest {params.keep} in {root}",
    ]


# -- pg.verifydump -------------------------------------------------------------------------------


def verifydump_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _, pg, _ = node_of(targets, role)
    dump = _state_entry(targets, role, "dump", "pg.dump")
    path = str(dump["path"])
    data: dict[str, Any] = {"path": path}
    sidecar = targets.read_file(role, f"{path}.sha256")
    if sidecar and sidecar.split():
        recorded, actual = sidecar.split()[0], _sha256(targets, role, path)
        data |= {
            "sha256_recorded": recorded,
            "sha256": actual,
            "checksum_matches": recorded == actual,
        }
        if recorded != actual:
            raise ActionFailed(
                f"dump {path} does not match its checksum file {path}.sha256 (recorded "
                f"{recorded[:16]}…, now {actual[:16]}…): the file changed or is damaged",
                host=name,
                data=data,
            )
    else:
        data["checksum_matches"] = None
    result = run_as(
        targets.host(role),
        [f"{pg.bin_dir}/pg_restore", "--list", path],
        pg.os_user,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise ActionFailed(
            f"pg_restore cannot read dump {path}: {_last(result.output)}", host=name, data=data
        )
    entries = [line for line in result.stdout.splitlines() if line and not line.startswith(";")]
    data |= {
        "toc_entries": len(entries),
        "tables_with_data": sum(1 for line in entries if " TABLE DATA " in line),
        "verified": True,
    }
    checked = "its sha256 and " if data["checksum_matches"] else "(no checksum file) "
    return action_result(
        f"{path}: {checked}its table of contents ({len(entries)} entries) read", data
    )


def verifydump_describe(targets: Targets, role: str, params: Params) -> list[str]:
    _, _, pg, _ = node_of(targets, role)
    return [
        describe_argv(["sha256sum", "<the dump>"], pg.os_user) + " (against <the dump>.sha256)",
        describe_argv([f"{pg.bin_dir}/pg_restore", "--list", "<the dump>"], pg.os_user),
    ]


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# -- pg.restore_dump_scratch ---------------------------------------------------------------------


def init_instance(instance: Instance, *, user: str, password: str | None, timeout: float) -> None:
    """initdb a fresh server in ``instance.directory`` for scratch use, configured for
    127.0.0.1 on its port; fsync off (it is thrown away)."""
    instance.make_directory()
    argv = [
        f"{instance.bin_dir}/initdb",
        "-D",
        instance.data_dir,
        "-U",
        user,
        "-E",
        "UTF8",
        "--locale=C",
        "-N",
    ]
    pwfile = f"{instance.directory}/.pwfile"
    if password is not None:
        _write_file(instance, pwfile, password + "\n")
        argv += ["--auth-host=scram-sha-256", "--auth-local=peer", f"--pwfile={pwfile}"]
    else:
        argv += ["--auth=trust"]
    try:
        instance.run(argv, timeout=timeout)
    finally:
        if password is not None:
            instance.run(["rm", "-f", pwfile], timeout=10, check=False)
    _write_file(
        instance,
        f"{instance.data_dir}/postgresql.auto.conf",
        "\n".join(
            [
                "# ---- drctl scratch server ----",
                f"port = {instance.port}",
                "listen_addresses = '127.0.0.1'",
                "unix_socket_directories = ''",
                "fsync = off",
                "synchronous_commit = off",
                "full_page_writes = off",
                "logging_collector = off",
                "max_connections = 30",
                "",
            ]
        ),
        append=True,
    )


def restore_argv(bin_dir: str, dsn: str, path: str, *, keep_owners: bool) -> list[str]:
    owners = [] if keep_owners else ["--no-owner", "--no-privileges"]
    return [f"{bin_dir}/pg_restore", "--exit-on-error", *owners, "-d", dsn, "--no-password", path]


def restore_dump_scratch_run(
    targets: Targets, role: str, params: RestoreParams, timeout: float
) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    dump = _state_entry(targets, role, "dump", "pg.dump")
    database = str(dump["database"])
    deadline = time.monotonic() + timeout
    notes = _drop_leftover(targets, role)
    instance = _instance_for(targets, role, params.scratch_dir, kind="dump", database=database)
    facts = _space_check(
        targets,
        role,
        instance,
        int(dump.get("database_size_bytes") or dump["size_bytes"]) + CLUSTER_OVERHEAD,
        params.headroom_mib * MIB,
        f"dump {dump['path']} (database {database})",
    )
    update_state(env, name, scratch=instance.as_state())
    started = time.monotonic()
    password = read_password(pg)
    try:
        init_instance(instance, user=pg.user, password=password, timeout=timeout)
        initialised = time.monotonic()
        instance.start(max(1.0, deadline - time.monotonic()))
        if database != "postgres":
            SqlExecutor(
                node_dsn(node, with_password=True, host="127.0.0.1", port=instance.port),
                host=name,
            ).query(f'create database "{database.replace(chr(34), chr(34) * 2)}"', timeout=60)
        up = time.monotonic()
        result = instance.run(
            restore_argv(
                instance.bin_dir,
                redact(scratch_dsn(node, instance, password=False)),
                str(dump["path"]),
                keep_owners=False,
            ),
            timeout=max(1.0, deadline - time.monotonic()),
            env=password_env(node),
            check=False,
        )
        if result.returncode != 0:
            raise ActionFailed(
                f"pg_restore of {dump['path']} into the scratch server failed: "
                f"{_last(result.output)}",
                host=name,
                data=facts,
            )
        restored = time.monotonic()
    except BaseException:
        instance.stop_and_remove()
        update_state(env, name, scratch=None)
        raise
    data = facts | {
        "dump_path": dump["path"],
        "database": database,
        "scratch_port": instance.port,
        "scratch_dsn": redact(scratch_dsn(node, instance, password=False)),
        "data_dir": instance.data_dir,
        "initdb_seconds": round(initialised - started, 3),
        "start_seconds": round(up - initialised, 3),
        "pg_restore_seconds": round(restored - up, 3),
        "restore_seconds": round(restored - started, 3),
    }
    notes.append(
        f"restored {dump['path']} into database {database} of a scratch server on "
        f"127.0.0.1:{instance.port} in {data['restore_seconds']:g}s "
        f"(pg_restore {data['pg_restore_seconds']:g}s)"
    )
    return action_result("; ".join(notes), data)


def restore_dump_scratch_describe(targets: Targets, role: str, params: RestoreParams) -> list[str]:
    _, _, pg, _ = node_of(targets, role)
    where = _describe_instance(targets, role, params.scratch_dir)
    return [
        f"check free space in {where} (database size + 64 MiB + {params.headroom_mib} MiB)",
        describe_argv(
            [f"{pg.bin_dir}/initdb", "-D", f"{where}/data", "-U", pg.user, "-E", "UTF8"],
            pg.os_user,
        )
        + "; port = <free port> on 127.0.0.1",
        describe_argv([f"{pg.bin_dir}/pg_ctl", "start", "-D", f"{where}/data"], pg.os_user),
        describe_argv(
            restore_argv(pg.bin_dir, "<scratch server>", "<the dump>", keep_owners=False),
            pg.os_user,
        ),
    ]


# -- the catalogue -------------------------------------------------------------------------------


def backup_actions() -> list[ActionSpec]:
    from drills.engine.actions import ActionSpec

    return [
        ActionSpec(
            "pg.basebackup",
            TakeParams,
            basebackup_run,
            basebackup_describe,
            True,
            "Take a plain-format backup with pg_basebackup (or find the newest one); "
            "fail when it is older than max_backup_age.",
        ),
        ActionSpec(
            "pg.verifybackup",
            Params,
            verifybackup_run,
            verifybackup_describe,
            False,
            "Check the backup against its manifest with pg_verifybackup; name a damaged file.",
        ),
        ActionSpec(
            "pg.restore_scratch",
            RestoreParams,
            restore_scratch_run,
            restore_scratch_describe,
            True,
            "Restore the backup into a scratch server on a free 127.0.0.1 port, recovered to "
            "the backup's end.",
        ),
        ActionSpec(
            "pg.reconcile_scratch",
            ScratchReconcileParams,
            reconcile_scratch_run,
            reconcile_scratch_describe,
            False,
            "Compare the scratch server's tables with the source's, row by row.",
        ),
        ActionSpec(
            "pg.drop_scratch",
            Params,
            drop_scratch_run,
            drop_scratch_describe,
            True,
            "Stop and remove the scratch server of this run.",
        ),
        ActionSpec(
            "pg.dump",
            DumpParams,
            dump_run,
            dump_describe,
            True,
            "Dump a database with pg_dump -Fc and a sha256 file (or find the newest dump); "
            "fail when it is older than max_backup_age.",
        ),
        ActionSpec(
            "pg.verifydump",
            Params,
            verifydump_run,
            verifydump_describe,
            False,
            "Check the dump against its sha256 file and read its table of contents.",
        ),
        ActionSpec(
            "pg.restore_dump_scratch",
            RestoreParams,
            restore_dump_scratch_run,
            restore_dump_scratch_describe,
            True,
            "initdb a scratch server on a free 127.0.0.1 port and pg_restore the dump into it.",
        ),
    ]
