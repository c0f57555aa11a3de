"""Run SQL on PostgreSQL with psycopg 3. psycopg's errors become ours here and only here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo

from drills.environment import Node, read_password
from drills.errors import CommandFailed, CommandTimeout, ConnectionFailed, InputError

Row = tuple[Any, ...]


def node_dsn(node: Node, *, with_password: bool = False, **overrides: Any) -> str:
    """A libpq DSN for a node. The password is added only for the connection, never shown."""
    if node.postgres is None:
        raise InputError(f"node at {node.host}:{node.port} has no postgres section")
    params: dict[str, Any] = {
        "host": node.host,
        "port": node.port,
        "user": node.postgres.user,
        "dbname": node.postgres.database,
        "connect_timeout": node.postgres.connect_timeout,
    }
    if with_password:
        password = read_password(node.postgres)
        if password is not None:
            params["password"] = password
    params.update(overrides)
    return conninfo.make_conninfo("", **params)


def redact(dsn: str) -> str:
    """A DSN with any password removed, fit for a log line or a record."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable dsn>"
    params.pop("password", None)
    return conninfo.make_conninfo("", **params)


class SqlExecutor:
    """Connects to one PostgreSQL server. ``host`` names it in errors."""

    def __init__(self, dsn: str, *, host: str) -> None:
        self.dsn = dsn
        self.host = host

    @classmethod
    def for_node(cls, name: str, node: Node) -> SqlExecutor:
        return cls(node_dsn(node, with_password=True), host=name)

    @contextmanager
    def connect(self, *, statement_timeout: float | None = None) -> Iterator[psycopg.Connection]:
        try:
            conn = psycopg.connect(self.dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(_first_line(exc), host=self.host) from exc
        except psycopg.ProgrammingError as exc:
            raise InputError(f"invalid connection string: {_first_line(exc)}") from exc
        try:
            if statement_timeout is not None:
                conn.execute(f"SET statement_timeout = {int(statement_timeout * 1000)}")
            yield conn
        except psycopg.errors.QueryCanceled as exc:
            raise CommandTimeout(_first_line(exc), host=self.host) from exc
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(_first_line(exc), host=self.host) from exc
        except psycopg.Error as exc:
            raise CommandFailed(_first_line(exc), returncode=1, host=self.host) from exc
        finally:
            conn.close()

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> list[Row]:
        with self.connect(statement_timeout=timeout) as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def scalar(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        rows = self.query(sql, params, timeout=timeout)
        return rows[0][0] if rows else None

    def reachable(self) -> bool:
        try:
            self.scalar("SELECT 1", timeout=2)
        except ConnectionFailed:
            return False
        return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
