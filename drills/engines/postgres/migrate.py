"""Migrating a database to another server (``playbooks/pg-migrate.yaml``): dump and restore with
writes stopped, every table reconciled, the downtime measured.

    pg.migration_preflight  both servers answer, the named tables exist on the source, the
                            target database is absent or empty, the target's PostgreSQL is not
                            older than the source's; nothing is changed yet
    pg.freeze_writes        (drills.engines.postgres.freeze, on the source) new sessions are
                            read-only and the database's sessions are ended: the downtime starts
    pg.dump                 (drills.engines.postgres.dump) pg_dump -Fc on the SOURCE's host
    pg.restore_dump         pg_restore on the TARGET's host, into the target database
    pg.reconcile            every table, row by row, against the source
    pg.release_writes       (drills.engines.postgres.freeze) undo the freeze

Where each command runs: ``pg_dump`` on the source's host, writing the dump there;
``pg_restore`` on the target's host, as its OS user, reading a file on that host. When the two
nodes are on different hosts (their executors' addresses differ) or run as different OS users,
``pg.restore_dump`` first copies the dump to the target's host through drctl itself, chunk by
chunk over the two executors, and checks its sha256 there (``drills.engines.postgres.transfer``;
up to ``max_transfer_mib``, default 2 GiB); the copy is removed after the restore. On one host
as one user (the local lab) the dump is restored where it is. The SQL steps (preflight,
freeze, reconcile, release) are sessions from drctl to each node's address.

A bigger database than the copy suits would be better served by running ``pg_dump | pg_restore``
on the target's host against the source's address (no file, no copy), at the price of the target
host reaching the source's server and of the dump step's checksum; that is not built yet.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engine.catalogue import ActionSpec, Params
from drills.engines.postgres.compare import ReconcileParams, differ_sentence, run_reconcile
from drills.engines.postgres.freeze import (
    FreezeParams,
    ReleaseParams,
    freeze_describe,
    freeze_run,
    release_describe,
    release_run,
)
from drills.engines.postgres.restore import restore_argv
from drills.engines.postgres.runstate import load_state
from drills.engines.postgres.scratch import (
    MIB,
    ActionFailed,
    action_result,
    client_conninfo,
    default_backup_dir,
    free_bytes,
    last_line,
    make_owned_dir,
    mib,
    node_of,
    password_env,
    where,
)
from drills.engines.postgres.servers import (
    admin_session,
    connect,
    quote_ident,
    quote_literal,
    user_tables,
)
from drills.engines.postgres.transfer import DEFAULT_MAX_MIB, copy_file, same_place
from drills.executors.postgres import SqlExecutor, node_dsn
from drills.model.errors import InputError

if TYPE_CHECKING:
    from drills.engine.catalogue import ActionResult
    from drills.engine.targets import Targets

ENGINE = "postgres"


# -- pg.migration_preflight ----------------------------------------------------------------------


class PreflightParams(Params):
    source: str = Field(description="Role of the server the database moves from.")
    database: str | None = Field(default=None, description="Database; default the source's.")
    tables: list[str] | None = Field(
        default=None, description="Tables that must exist on the source (schema.table)."
    )
    exclude_schemas: list[str] = Field(default_factory=lambda: ["drctl"])


def preflight_run(
    targets: Targets, role: str, params: PreflightParams, timeout: float
) -> ActionResult:
    tname, tnode, tpg, _ = node_of(targets, role)
    sname, snode, spg, _ = node_of(targets, params.source)
    database = params.database or spg.database
    source = connect(sname, snode, database, "source")
    copied = not same_place(
        targets.host(params.source), spg.os_user, targets.host(role), tpg.os_user
    )
    missing = [
        t for t in params.tables or [] if source.scalar("select to_regclass(%s)", (t,)) is None
    ]
    if missing:
        raise InputError(
            f"table(s) {', '.join(missing)} do not exist in database {database} on the source "
            f"{sname}; nothing was changed",
            host=sname,
        )
    tables = user_tables(source, list(params.exclude_schemas))
    source_version = int(source.scalar("show server_version_num"))
    source_bytes = int(source.scalar("select pg_database_size(current_database())"))
    admin = admin_session(tname, tnode, "target")
    target_version = int(admin.scalar("show server_version_num"))
    exists = bool(admin.scalar("select count(*) from pg_database where datname = %s", (database,)))
    data: dict[str, Any] = where(targets, role) | {
        "source": sname,
        "target": tname,
        "database": database,
        "source_version": source_version,
        "target_version": target_version,
        "source_tables": len(tables),
        "source_bytes": source_bytes,
        "target_database_exists": exists,
        "dump_copied_between_hosts": copied,
    }
    if target_version // 10000 < source_version // 10000:
        raise ActionFailed(
            f"the target {tname} runs PostgreSQL {target_version // 10000}, older than the "
            f"source's {source_version // 10000}: a dump does not restore into an older server; "
            "nothing was changed",
            host=tname,
            data=data,
        )
    if exists:
        present = user_tables(
            connect(tname, tnode, database, "target"), list(params.exclude_schemas)
        )
        if present:
            shown = ", ".join(present[:5]) + (
                f" and {len(present) - 5} more" if len(present) > 5 else ""
            )
            raise ActionFailed(
                f"the target database {database} on {tname} is not empty (it has {shown}): a "
                "migration restores into an absent or empty database; nothing was changed",
                host=tname,
                data=data | {"target_tables": present[:50]},
            )
    return action_result(
        f"source {sname} (PostgreSQL {source_version}) has {len(tables)} table(s) in {database}; "
        f"target {tname} (PostgreSQL {target_version}) "
        + ("has it empty" if exists else "does not have it yet"),
        data,
    )


def preflight_describe(targets: Targets, role: str, params: PreflightParams) -> list[str]:
    tname, _, _, _ = node_of(targets, role)
    sname, _, spg, _ = node_of(targets, params.source)
    database = params.database or spg.database
    tables = f"; tables {', '.join(params.tables)} exist on {sname}" if params.tables else ""
    return [
        f"connect to {sname} and {tname} (database {database}){tables}; the target database is "
        "absent or empty; the target's PostgreSQL is not older (reads only)"
    ]


# -- pg.restore_dump -----------------------------------------------------------------------------


class RestoreDumpParams(Params):
    source: str = Field(description="Role of the node whose pg.dump made the dump.")
    database: str | None = Field(
        default=None, description="Target database; default the dumped database's name."
    )
    keep_owners: bool = Field(
        default=False,
        description="Restore owners and privileges (the roles must exist on the target); "
        "by default objects belong to the connecting user.",
    )
    transfer_dir: str | None = Field(
        default=None,
        description="Where the dump is copied on the target's host when it is another host "
        "(removed after the restore); default <parent of the target's postgres.data_dir>/"
        "drctl-backups/<environment>/<target node>/migration.",
    )
    max_transfer_mib: int = Field(
        default=DEFAULT_MAX_MIB,
        ge=1,
        description="Largest dump copied from the source's host to the target's through drctl "
        "(in chunks over the two executors), in MiB; a bigger one fails before copying.",
    )


def _create_database(
    admin: SqlExecutor, source: SqlExecutor, source_db: str, database: str
) -> None:
    encoding, collate, ctype, provider = source.query(
        "select pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider::text"
        " from pg_database where datname = %s",
        (source_db,),
    )[0]
    statement = (
        f"create database {quote_ident(database)} template template0"
        f" encoding {quote_literal(encoding)}"
    )
    if provider == "c":
        statement += f" lc_collate {quote_literal(collate)} lc_ctype {quote_literal(ctype)}"
    admin.query(statement, timeout=120)


def _bring_dump(
    targets: Targets, role: str, params: RestoreDumpParams, dump: dict[str, Any], deadline: float
) -> tuple[str, dict[str, Any]]:
    """The dump's path on the target's host: where it is when that is the source's host (as the
    same OS user), else a copy made there through the two executors."""
    tname, tnode, tpg, env = node_of(targets, role)
    sname, _, spg, _ = node_of(targets, params.source)
    source, target = targets.host(params.source), targets.host(role)
    path, size = str(dump["path"]), int(dump["size_bytes"])
    if same_place(source, spg.os_user, target, tpg.os_user):
        return path, {"how": f"none: {sname} and {tname} are on the same host", "bytes": 0}
    if size > params.max_transfer_mib * MIB:
        raise ActionFailed(
            f"the dump {path} on {sname} is {mib(size)}, more than max_transfer_mib "
            f"{params.max_transfer_mib} MiB that drctl copies to {tname} through its executors; "
            "nothing was restored",
            host=tname,
            data=where(targets, role) | {"dump_path": path, "size_bytes": size},
        )
    directory = (params.transfer_dir or "").rstrip("/") or default_backup_dir(
        env, tname, tnode, "migration"
    )
    make_owned_dir(target, directory, tpg.os_user)
    available, place = free_bytes(target, directory, tpg.os_user)
    if available < size:
        raise ActionFailed(
            f"not enough space on {tname} for the dump: {place} has {mib(available)} free, the "
            f"dump is {mib(size)}; nothing was restored",
            host=tname,
            data=where(targets, role)
            | {"dump_path": path, "size_bytes": size, "free_bytes": available},
        )
    expected = (
        dump.get("sha256")
        or (source.run(["sha256sum", "--", path], user=spg.os_user, timeout=600).stdout.split()[0])
    )
    copied = copy_file(
        source,
        path,
        spg.os_user,
        target,
        f"{directory}/{path.rsplit('/', 1)[-1]}",
        tpg.os_user,
        size=size,
        expected_sha256=str(expected),
        deadline=deadline,
    )
    how = f"copied from {sname} ({source.address}) to {tname} ({target.address}) through drctl"
    return copied.target_path, {"how": how, **copied.as_data()}


def restore_dump_run(
    targets: Targets, role: str, params: RestoreDumpParams, timeout: float
) -> ActionResult:
    tname, tnode, tpg, env = node_of(targets, role)
    sname, snode, spg, _ = node_of(targets, params.source)
    deadline = time.monotonic() + timeout
    dump = load_state(env, sname).get("dump")
    if not isinstance(dump, dict):
        raise InputError(
            f"no dump of {sname} is known to this run: pg.dump must run on it earlier in the "
            "playbook",
            host=sname,
        )
    database = params.database or str(dump["database"])
    admin = admin_session(tname, tnode, "target")
    exists = bool(admin.scalar("select count(*) from pg_database where datname = %s", (database,)))
    if exists:
        present = user_tables(connect(tname, tnode, database, "target"), ["drctl"])
        if present:
            raise InputError(
                f"the target database {database} on {tname} is not empty (it has "
                f"{', '.join(present[:5])}); refusing to restore over it",
                host=tname,
            )
    path, transfer = _bring_dump(targets, role, params, dump, deadline)
    data: dict[str, Any] = where(targets, role) | {
        "dump_path": dump["path"],
        "restored_from": path,
        "database": database,
        "target": tname,
        "created_database": not exists,
        "transfer": transfer,
    }
    try:
        if not exists:
            source = connect(sname, snode, spg.database, "source")
            _create_database(admin, source, str(dump["database"]), database)
        started = time.monotonic()
        # pg_restore runs on the target's host, as its OS user, into its own address.
        argv = restore_argv(
            tpg.bin_dir,
            client_conninfo(tnode, dbname=database),
            path,
            keep_owners=params.keep_owners,
        )
        result = targets.host(role).run(
            argv,
            user=tpg.os_user,
            timeout=max(1.0, deadline - time.monotonic()),
            env=password_env(tnode),
            check=False,
        )
        data["restore_seconds"] = round(time.monotonic() - started, 3)
    finally:
        if path != dump["path"]:
            targets.host(role).run(["rm", "-f", "--", path], user=tpg.os_user, check=False)
    if result.returncode != 0:
        raise ActionFailed(
            f"pg_restore of {dump['path']} into database {database} on {tname} failed: "
            f"{last_line(result.output)}",
            host=tname,
            data=data,
        )
    data["tables_restored"] = len(user_tables(connect(tname, tnode, database, "target"), ["drctl"]))
    moved = f" (copied from {sname} in {transfer['seconds']:g}s)" if "seconds" in transfer else ""
    return action_result(
        f"restored {dump['path']} into database {database} on {tname} in "
        f"{data['restore_seconds']:g}s{moved} ({data['tables_restored']} tables)",
        data,
    )


def restore_dump_describe(targets: Targets, role: str, params: RestoreDumpParams) -> list[str]:
    tname, tnode, tpg, env = node_of(targets, role)
    sname, _, spg, _ = node_of(targets, params.source)
    database = params.database or spg.database
    path = "<the dump>"
    lines = [
        f"SQL on {tname}: create database {database} (template0, the source's encoding) unless "
        "it exists empty",
    ]
    if not same_place(targets.host(params.source), spg.os_user, targets.host(role), tpg.os_user):
        directory = params.transfer_dir or default_backup_dir(env, tname, tnode, "migration")
        path = f"{directory}/<the dump's name>"
        lines.append(
            f"copy the dump from {sname} to {path} on {tname} through drctl (up to "
            f"{params.max_transfer_mib} MiB, in 512 KiB chunks), check its sha256 there"
        )
    argv = restore_argv(
        tpg.bin_dir, client_conninfo(tnode, dbname=database), path, keep_owners=params.keep_owners
    )
    lines.append(targets.describe(role, argv))
    return lines


# -- pg.reconcile --------------------------------------------------------------------------------


class PairReconcileParams(ReconcileParams):
    source: str = Field(description="Role of the server compared with (the reference).")
    database: str | None = Field(
        default=None, description="Database compared on both; default the source node's."
    )


def reconcile_run(
    targets: Targets, role: str, params: PairReconcileParams, timeout: float
) -> ActionResult:
    tname, tnode, _, _ = node_of(targets, role)
    sname, snode, spg, _ = node_of(targets, params.source)
    database = params.database or spg.database
    data = run_reconcile(
        node_dsn(snode, with_password=True, dbname=database),
        node_dsn(tnode, with_password=True, dbname=database),
        params,
    )
    data |= where(targets, role) | {
        "source": sname,
        "target": tname,
        "database": database,
        "excluded_schemas": list(params.exclude_schemas),
    }
    if not data["identical"]:
        raise ActionFailed(differ_sentence(data, sname, tname), host=tname, data=data)
    return action_result(
        f"{data['tables_compared']} table(s), {data['rows_compared']} row(s) of {database} "
        f"identical on {sname} and {tname} in {data['seconds']:g}s",
        data,
    )


def reconcile_describe(targets: Targets, role: str, params: PairReconcileParams) -> list[str]:
    tname, _, _, _ = node_of(targets, role)
    sname, _, _, _ = node_of(targets, params.source)
    which = ", ".join(params.tables) if params.tables else "every table"
    return [
        f"reconcile {which} of {sname} and {tname} row by row (reads only; schemas "
        f"{', '.join(params.exclude_schemas) or 'none'} left out)"
    ]


# -- the catalogue -------------------------------------------------------------------------------


def migration_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            "pg.migration_preflight",
            PreflightParams,
            preflight_run,
            preflight_describe,
            False,
            "Before a migration: both servers answer, the tables exist, the target is empty.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.freeze_writes",
            FreezeParams,
            freeze_run,
            freeze_describe,
            True,
            "Make a database read-only for new sessions and end its sessions.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.release_writes",
            ReleaseParams,
            release_run,
            release_describe,
            True,
            "Undo pg.freeze_writes: the database takes writes again.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.restore_dump",
            RestoreDumpParams,
            restore_dump_run,
            restore_dump_describe,
            True,
            "pg_restore the source's dump into the target's database (absent or empty), on the "
            "target's host; the dump is copied there first when it is another host.",
            engine=ENGINE,
        ),
        ActionSpec(
            "pg.reconcile",
            PairReconcileParams,
            reconcile_run,
            reconcile_describe,
            False,
            "Compare tables of two servers row by row.",
            engine=ENGINE,
        ),
    ]
