"""Migrating a database to another server (``playbooks/pg-migrate.yaml``): dump and restore with
writes stopped, every table reconciled, the downtime measured.

    pg.migration_preflight  (on the target) both servers answer, the named tables exist on the
                            source, the target database is absent or empty, the target's
                            PostgreSQL is not older than the source's; nothing is changed yet
    pg.freeze_writes        (on the source) ALTER DATABASE ... SET default_transaction_read_only
                            = on, and end the database's sessions so that every new one is
                            read-only: the downtime starts here
    pg.dump                 (drills.engines.postgres.backup) pg_dump -Fc of the frozen database
    pg.restore_dump         (on the target) pg_restore into the target database
    pg.reconcile            (on the target) every table, row by row, against the source
    pg.release_writes       (on the source) undo the freeze: the rollback, and the end of a drill

The freeze is a default, not a lock: a session that sets default_transaction_read_only = off
itself can still write. It is what stops well-behaved applications (and their pools, whose
sessions are ended) without stopping the server, so the source can be released at once when
anything fails.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engines.postgres.backup import (
    ReconcileParams,
    action_result,
    client_conninfo,
    differ_sentence,
    node_of,
    password_env,
    restore_argv,
    run_reconcile,
)
from drills.engines.postgres.scratch import ActionFailed, Params, load_state, run_as, update_state
from drills.executors.local import describe as describe_argv
from drills.executors.postgres import SqlExecutor, node_dsn
from drills.model.durations import Duration
from drills.model.environment import Node
from drills.model.errors import ConnectionFailed, InputError

if TYPE_CHECKING:
    from drills.engine.actions import ActionResult, ActionSpec
    from drills.engine.targets import Targets

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
SETTING = "default_transaction_read_only"
# The sessions are chosen first (materialized), so that ours is never among those ended.
_TERMINATE = (
    "with others as materialized (select a.pid from pg_stat_activity a where a.datname = %s"
    " and a.pid <> pg_backend_pid() and a.backend_type = 'client backend'"
    " and a.backend_start >= %s::timestamptz)"
    " select count(*) from others o where pg_terminate_backend(o.pid, %s)"
)
# drctl's own administrative sessions may write whatever the database's default says.
_WRITABLE = "-c default_transaction_read_only=off"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def user_tables(sql: SqlExecutor, excluded: list[str]) -> list[str]:
    rows = sql.query(
        "select n.nspname || '.' || c.relname from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('r', 'p') and n.nspname <> all(%s)"
        " and n.nspname not like 'pg\\_toast%%' and n.nspname not like 'pg\\_temp%%'"
        " order by 1",
        ([*SYSTEM_SCHEMAS, *excluded],),
        timeout=30,
    )
    return [str(row[0]) for row in rows]


def _connect(
    name: str, node: Node, database: str, what: str, *, writable: bool = False
) -> SqlExecutor:
    """A one-off connection that says which server of the migration could not be reached."""
    options = {"options": _WRITABLE} if writable else {}
    sql = SqlExecutor(node_dsn(node, with_password=True, dbname=database, **options), host=name)
    try:
        sql.scalar("select 1", timeout=10)
    except ConnectionFailed as exc:
        raise ConnectionFailed(
            f"the {what} {name} ({node.host}:{node.port}, database {database}) cannot be "
            f"reached: {exc.message}",
            host=name,
        ) from exc
    return sql


def _admin(name: str, node: Node, what: str) -> SqlExecutor:
    """A connection for server-wide questions: to the node's database, or, when that does not
    exist yet (a migration's target), to postgres or template1."""
    assert node.postgres is not None
    tried: list[str] = []
    for database in dict.fromkeys([node.postgres.database, "postgres", "template1"]):
        try:
            return _connect(name, node, database, what)
        except ConnectionFailed as exc:
            if "does not exist" not in exc.message:
                raise
            tried.append(database)
    raise ConnectionFailed(
        f"the {what} {name} ({node.host}:{node.port}) has none of the databases "
        f"{', '.join(tried)} to connect to",
        host=name,
    )


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
    tname, tnode, _, _ = node_of(targets, role)
    sname, snode, spg, _ = node_of(targets, params.source)
    database = params.database or spg.database
    source = _connect(sname, snode, database, "source")
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
    admin = _admin(tname, tnode, "target")
    target_version = int(admin.scalar("show server_version_num"))
    exists = bool(admin.scalar("select count(*) from pg_database where datname = %s", (database,)))
    data: dict[str, Any] = {
        "source": sname,
        "target": tname,
        "database": database,
        "source_version": source_version,
        "target_version": target_version,
        "source_tables": len(tables),
        "source_bytes": source_bytes,
        "target_database_exists": exists,
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
            _connect(tname, tnode, database, "target"), list(params.exclude_schemas)
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


# -- pg.freeze_writes / pg.release_writes --------------------------------------------------------


class FreezeParams(Params):
    database: str | None = Field(default=None, description="Database; default the node's.")
    terminate_sessions: bool = Field(
        default=True,
        description="End the database's other sessions, so that every session is read-only.",
    )
    wait: Duration = Field(default=5.0, description="How long to wait for each session to end.")


def freeze_run(targets: Targets, role: str, params: FreezeParams, timeout: float) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    database = params.database or pg.database
    admin = _connect(name, node, pg.database, "source", writable=True)
    if not admin.scalar("select count(*) from pg_database where datname = %s", (database,)):
        raise InputError(f"database {database} does not exist on {name}", host=name)
    previous = admin.scalar(
        "select s from pg_db_role_setting r join pg_database d on d.oid = r.setdatabase,"
        " unnest(r.setconfig) s where d.datname = %s and r.setrole = 0"
        f" and s like '{SETTING}=%%'",
        (database,),
    )
    since = admin.scalar("select clock_timestamp()::text")
    admin.query(f"alter database {quote_ident(database)} set {SETTING} = on")
    update_state(env, name, frozen={"database": database, "previous": previous, "since": since})
    terminated = 0
    if params.terminate_sessions:
        terminated = int(
            admin.scalar(
                _TERMINATE,
                (database, "-infinity", max(1, int(params.wait * 1000))),
                timeout=timeout,
            )
        )
    # Our own kept connection to it (checks) must see the new default too.
    targets.sql(role).close()
    return action_result(
        f"database {database} on {name} is read-only for new sessions; ended {terminated} "
        "session(s)",
        {
            "database": database,
            "since": since,
            "terminated_sessions": terminated,
            "previous": previous,
        },
    )


def freeze_describe(targets: Targets, role: str, params: FreezeParams) -> list[str]:
    name, _, pg, _ = node_of(targets, role)
    database = params.database or pg.database
    end = (
        f"; SQL on {name}: select pg_terminate_backend(pid) for the other sessions of {database}"
        if params.terminate_sessions
        else ""
    )
    return [f"SQL on {name}: alter database {quote_ident(database)} set {SETTING} = on{end}"]


class ReleaseParams(Params):
    database: str | None = Field(
        default=None, description="Database; default the one frozen in this run, or the node's."
    )


def release_run(targets: Targets, role: str, params: ReleaseParams, timeout: float) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    frozen = load_state(env, name).get("frozen") or {}
    database = params.database or frozen.get("database") or pg.database
    admin = _connect(name, node, pg.database, "source", writable=True)
    previous = frozen.get("previous")
    if previous:
        value = str(previous).partition("=")[2]
        admin.query(
            f"alter database {quote_ident(database)} set {SETTING} = {quote_literal(value)}"
        )
        how = f"set back to {value}"
    else:
        admin.query(f"alter database {quote_ident(database)} reset {SETTING}")
        how = "reset"
    ended = 0
    if frozen.get("since"):
        # Sessions that began during the freeze are read-only for good: end them, they reconnect.
        ended = int(
            admin.scalar(
                _TERMINATE,
                (database, frozen["since"], 5000),
                timeout=timeout,
            )
        )
    update_state(env, name, frozen=None)
    targets.sql(role).close()
    return action_result(
        f"database {database} on {name} takes writes again ({SETTING} {how}); ended {ended} "
        "read-only session(s) opened during the freeze",
        {"database": database, "setting": how, "ended_sessions": ended},
    )


def release_describe(targets: Targets, role: str, params: ReleaseParams) -> list[str]:
    name, _, pg, _ = node_of(targets, role)
    database = params.database or pg.database
    return [
        f"SQL on {name}: alter database {quote_ident(database)} reset {SETTING} (or its earlier "
        "value); end the read-only sessions opened during the freeze"
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


def restore_dump_run(
    targets: Targets, role: str, params: RestoreDumpParams, timeout: float
) -> ActionResult:
    tname, tnode, _, env = node_of(targets, role)
    sname, snode, spg, _ = node_of(targets, params.source)
    dump = load_state(env, sname).get("dump")
    if not isinstance(dump, dict):
        raise InputError(
            f"no dump of {sname} is known to this run: pg.dump must run on it earlier in the "
            "playbook",
            host=sname,
        )
    database = params.database or str(dump["database"])
    admin = _admin(tname, tnode, "target")
    exists = bool(admin.scalar("select count(*) from pg_database where datname = %s", (database,)))
    if exists:
        present = user_tables(_connect(tname, tnode, database, "target"), ["drctl"])
        if present:
            raise InputError(
                f"the target database {database} on {tname} is not empty (it has "
                f"{', '.join(present[:5])}); refusing to restore over it",
                host=tname,
            )
    else:
        source = _connect(sname, snode, spg.database, "source")
        _create_database(admin, source, str(dump["database"]), database)
    started = time.monotonic()
    # pg_restore runs where the dump is (the source's host), as its OS user, over TCP.
    result = run_as(
        targets.host(params.source),
        restore_argv(
            spg.bin_dir,
            client_conninfo(tnode, dbname=database),
            str(dump["path"]),
            keep_owners=params.keep_owners,
        ),
        spg.os_user,
        timeout=timeout,
        env=password_env(tnode),
        check=False,
    )
    seconds = round(time.monotonic() - started, 3)
    data: dict[str, Any] = {
        "dump_path": dump["path"],
        "database": database,
        "target": tname,
        "created_database": not exists,
        "restore_seconds": seconds,
    }
    if result.returncode != 0:
        lines = [line for line in result.output.splitlines() if line.strip()]
        raise ActionFailed(
            f"pg_restore of {dump['path']} into database {database} on {tname} failed: "
            f"{lines[-1] if lines else 'no output'}",
            host=tname,
            data=data,
        )
    data["tables_restored"] = len(
        user_tables(_connect(tname, tnode, database, "target"), ["drctl"])
    )
    return action_result(
        f"restored {dump['path']} into database {database} on {tname} in {seconds:g}s "
        f"({data['tables_restored']} tables)",
        data,
    )


def restore_dump_describe(targets: Targets, role: str, params: RestoreDumpParams) -> list[str]:
    tname, tnode, _, _ = node_of(targets, role)
    sname, _, spg, _ = node_of(targets, params.source)
    database = params.database or spg.database
    return [
        f"SQL on {tname}: create database {database} (template0, the source's encoding) unless "
        "it exists empty",
        f"on {sname}: "
        + describe_argv(
            restore_argv(
                spg.bin_dir,
                client_conninfo(tnode, dbname=database),
                "<the dump>",
                keep_owners=params.keep_owners,
            ),
            spg.os_user,
        ),
    ]


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
    data |= {
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
    from drills.engine.actions import ActionSpec

    return [
        ActionSpec(
            "pg.migration_preflight",
            PreflightParams,
            preflight_run,
            preflight_describe,
            False,
            "Before a migration: both servers answer, the tables exist, the target is empty.",
        ),
        ActionSpec(
            "pg.freeze_writes",
            FreezeParams,
            freeze_run,
            freeze_describe,
            True,
            "Make a database read-only for new sessions and end its sessions.",
        ),
        ActionSpec(
            "pg.release_writes",
            ReleaseParams,
            release_run,
            release_describe,
            True,
            "Undo pg.freeze_writes: the database takes writes again.",
        ),
        ActionSpec(
            "pg.restore_dump",
            RestoreDumpParams,
            restore_dump_run,
            restore_dump_describe,
            True,
            "pg_restore the source's dump into the target's database (absent or empty).",
        ),
        ActionSpec(
            "pg.reconcile",
            PairReconcileParams,
            reconcile_run,
            reconcile_describe,
            False,
            "Compare tables of two servers row by row.",
        ),
    ]
