"""Stopping writes to a database without stopping its server, and letting them in again.

    pg.freeze_writes   ALTER DATABASE ... SET default_transaction_read_only = on, and end the
                       database's sessions so that every new one is read-only: a migration's
                       downtime starts here
    pg.release_writes  undo the freeze: the rollback, and the end of a drill

The freeze is a default, not a lock: a session that sets default_transaction_read_only = off
itself can still write. It is what stops well-behaved applications (and their pools, whose
sessions are ended) without stopping the server, so the source can be released at once when
anything fails. Both are SQL from drctl to the node's address; the database frozen and when are
kept in the run's state (``drills.engines.postgres.scratch``) for the release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from drills.engine.catalogue import Params
from drills.engines.postgres.runstate import load_state, update_state
from drills.engines.postgres.scratch import (
    action_result,
    node_of,
    where,
)
from drills.engines.postgres.servers import connect, quote_ident, quote_literal
from drills.model.durations import Duration
from drills.model.errors import InputError

if TYPE_CHECKING:
    from drills.engine.catalogue import ActionResult
    from drills.engine.targets import Targets

SETTING = "default_transaction_read_only"
# The sessions are chosen first (materialized), so that ours is never among those ended.
_TERMINATE = (
    "with others as materialized (select a.pid from pg_stat_activity a where a.datname = %s"
    " and a.pid <> pg_backend_pid() and a.backend_type = 'client backend'"
    " and a.backend_start >= %s::timestamptz)"
    " select count(*) from others o where pg_terminate_backend(o.pid, %s)"
)


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
    admin = connect(name, node, pg.database, "source", writable=True)
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
        where(targets, role)
        | {
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
    admin = connect(name, node, pg.database, "source", writable=True)
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
        where(targets, role) | {"database": database, "setting": how, "ended_sessions": ended},
    )


def release_describe(targets: Targets, role: str, params: ReleaseParams) -> list[str]:
    name, _, pg, _ = node_of(targets, role)
    database = params.database or pg.database
    return [
        f"SQL on {name}: alter database {quote_ident(database)} reset {SETTING} (or its earlier "
        "value); end the read-only sessions opened during the freeze"
    ]
