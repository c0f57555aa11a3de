"""Logical backups (``playbooks/pg-dump-restore-verify.yaml``, and the migration's dump), made
and checked on the node's host.

    pg.dump        pg_dump -Fc of a database into the node's backup directory (``backupdir``,
                   kind ``dump``), with a sha256 file next to it, or find the newest dump there;
                   its age against ``max_backup_age``
    pg.verifydump  the dump against its sha256 file, and its table of contents (pg_restore --list)

``pg_dump`` runs on the host of the step's target node, as its database OS user, connecting to
that node's own address; the dump stays there (``pg.restore_dump`` moves it to a migration's
target through the executors). A dump is one snapshot of the database, taken between the two
source LSNs the step records.
"""

from __future__ import annotations

import posixpath
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engine.catalogue import Params
from drills.engines.postgres.backupdir import (
    TakeParams,
    age_check,
    age_phrase,
    backup_root,
    latest,
    prune,
    ready_root,
)
from drills.engines.postgres.runstate import state_entry, update_state
from drills.engines.postgres.scratch import (
    ActionFailed,
    action_result,
    client_conninfo,
    iso,
    last_line,
    mib,
    mtime,
    node_of,
    password_env,
    run_on,
    size_bytes,
    stamp,
    where,
)
from drills.executors.postgres import SqlExecutor, node_dsn
from drills.model.durations import format_seconds
from drills.model.environment import Node, PostgresAccess
from drills.model.errors import DrillError

if TYPE_CHECKING:
    from drills.engine.catalogue import ActionResult
    from drills.engine.targets import Targets

# Where the server is in its WAL now: a dump's snapshot lies between two such readings.
CURRENT_LSN = (
    "select case when pg_is_in_recovery() then pg_last_wal_replay_lsn()"
    " else pg_current_wal_lsn() end::text"
)


class DumpParams(TakeParams):
    database: str | None = Field(default=None, description="Database to dump; default the node's.")
    exclude_schemas: list[str] = Field(
        default_factory=lambda: ["drctl"],
        description="Schemas left out of the dump (drctl's own bookkeeping by default).",
    )


def dump_argv(
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


def sha256(targets: Targets, role: str, path: str) -> str:
    """The sha256 of a file on the role's host, computed there."""
    return run_on(targets, role, ["sha256sum", "--", path], timeout=600).stdout.split()[0]


def dump_database(node: Node, configured: str | None) -> str:
    assert node.postgres is not None
    return configured or node.postgres.database


# -- pg.dump -------------------------------------------------------------------------------------


def dump_run(targets: Targets, role: str, params: DumpParams, timeout: float) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    database = dump_database(node, params.database)
    sql = SqlExecutor(node_dsn(node, with_password=True, dbname=database), host=name)
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if params.reuse_latest:
        root = backup_root(targets, role, params.backup_dir, "dump")
        path, count = latest(targets, role, root, kind="dump")
        notes.append(f"newest of {count} dump(s) in {root} on {name}")
        sidecar = targets.read_file(role, f"{path}.sha256")
        extra = {"taken": False, "seconds": None, "lsn_before": None, "lsn_after": None}
        extra["sha256"] = sidecar.split()[0] if sidecar and sidecar.split() else None
    else:
        root = ready_root(targets, role, params.backup_dir, "dump")
        path = f"{root}/{stamp()}-{database}.dump"
        lsn_before = sql.scalar(CURRENT_LSN, timeout=10)
        started = time.monotonic()
        argv = dump_argv(pg, node, database, path, list(params.exclude_schemas))
        try:
            run_on(targets, role, argv, timeout=timeout, env=password_env(node))
        except DrillError:
            run_on(targets, role, ["rm", "-f", "--", path], timeout=60, check=False)
            raise
        seconds = round(time.monotonic() - started, 3)
        lsn_after = sql.scalar(CURRENT_LSN, timeout=10)
        digest = sha256(targets, role, path)
        targets.host(role).write_file(
            f"{path}.sha256",
            f"{digest}  {posixpath.basename(path)}\n",
            user=targets.os_user(role),
            mode=0o600,
        )
        extra = {
            "taken": True,
            "seconds": seconds,
            "lsn_before": lsn_before,
            "lsn_after": lsn_after,
            "sha256": digest,
        }
        notes.append(f"dumped database {database} to {path} on {name} in {seconds:g}s")
        notes += [
            f"removed old dump {p}" for p in prune(targets, role, root, params.keep, dirs=False)
        ]
    host = targets.host(role)
    ended = mtime(host, path, pg.os_user)
    info: dict[str, Any] = (
        where(targets, role)
        | {
            "path": path,
            "database": database,
            "size_bytes": size_bytes(host, path, pg.os_user),
            "database_size_bytes": sql.scalar(
                "select pg_database_size(current_database())", timeout=10
            ),
            "ended_at": iso(ended),
            "age_seconds": round(max(0.0, time.time() - ended), 3),
            "excluded_schemas": list(params.exclude_schemas),
        }
        | extra
    )
    age_check(info, params, name, "dump")
    update_state(env, name, dump=info)
    notes.append(
        f"dump of {database}: {mib(info['size_bytes'])}, {format_seconds(info['age_seconds'])} old"
    )
    return action_result("; ".join(notes), info)


def dump_describe(targets: Targets, role: str, params: DumpParams) -> list[str]:
    name, node, pg, _ = node_of(targets, role)
    root = backup_root(targets, role, params.backup_dir, "dump")
    database = dump_database(node, params.database)
    age = age_phrase(params)
    if params.reuse_latest:
        return [f"on {name}: find the newest *.dump in {root}{age}"]
    path = f"{root}/<UTC stamp>-{database}.dump"
    return [
        targets.describe(role, dump_argv(pg, node, database, path, list(params.exclude_schemas)))
        + age,
        targets.describe(role, ["sha256sum", "--", path]) + f" > {path}.sha256",
        f"on {name}: keep the newest {params.keep} in {root}",
    ]


# -- pg.verifydump -------------------------------------------------------------------------------


def verifydump_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _, pg, _ = node_of(targets, role)
    dump = state_entry(targets, role, "dump", "pg.dump")
    path = str(dump["path"])
    data: dict[str, Any] = where(targets, role) | {"path": path}
    sidecar = targets.read_file(role, f"{path}.sha256")
    if sidecar and sidecar.split():
        recorded, actual = sidecar.split()[0], sha256(targets, role, path)
        data |= {
            "sha256_recorded": recorded,
            "sha256": actual,
            "checksum_matches": recorded == actual,
        }
        if recorded != actual:
            raise ActionFailed(
                f"dump {path} on {name} does not match its checksum file {path}.sha256 (recorded "
                f"{recorded[:16]}…, now {actual[:16]}…): the file changed or is damaged",
                host=name,
                data=data,
            )
    else:
        data["checksum_matches"] = None
    result = run_on(
        targets, role, [f"{pg.bin_dir}/pg_restore", "--list", path], timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise ActionFailed(
            f"pg_restore cannot read dump {path} on {name}: {last_line(result.output)}",
            host=name,
            data=data,
        )
    entries = [line for line in result.stdout.splitlines() if line and not line.startswith(";")]
    data |= {
        "toc_entries": len(entries),
        "tables_with_data": sum(1 for line in entries if " TABLE DATA " in line),
        "verified": True,
    }
    checked = "its sha256 and " if data["checksum_matches"] else "(no checksum file) "
    return action_result(
        f"{path} on {name}: {checked}its table of contents ({len(entries)} entries) read", data
    )


def verifydump_describe(targets: Targets, role: str, params: Params) -> list[str]:
    _, _, pg, _ = node_of(targets, role)
    return [
        targets.describe(role, ["sha256sum", "--", "<the dump>"]) + " (against <the dump>.sha256)",
        targets.describe(role, [f"{pg.bin_dir}/pg_restore", "--list", "<the dump>"]),
    ]
