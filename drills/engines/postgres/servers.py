"""The two servers of a migration, as drctl reaches them: one-off SQL sessions that say which
server (source or target) could not be reached, the tables a database holds, and SQL quoting.

Every session goes through ``SqlExecutor`` (``drills.executors.postgres``), which translates the
driver's errors; drctl connects from where it runs to each node's address.
"""

from __future__ import annotations

from drills.executors.postgres import SqlExecutor, node_dsn
from drills.model.environment import Node
from drills.model.errors import ConnectionFailed

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
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


def connect(
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


def admin_session(name: str, node: Node, what: str) -> SqlExecutor:
    """A connection for server-wide questions: to the node's database, or, when that does not
    exist yet (a migration's target), to postgres or template1."""
    assert node.postgres is not None
    tried: list[str] = []
    for database in dict.fromkeys([node.postgres.database, "postgres", "template1"]):
        try:
            return connect(name, node, database, what)
        except ConnectionFailed as exc:
            if "does not exist" not in exc.message:
                raise
            tried.append(database)
    raise ConnectionFailed(
        f"the {what} {name} ({node.host}:{node.port}) has none of the databases "
        f"{', '.join(tried)} to connect to",
        host=name,
    )
