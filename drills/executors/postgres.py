"""Run SQL on PostgreSQL with psycopg 3. psycopg's errors become ours here and only here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo

from drills.model.environment import Node, read_password
from drills.model.errors import CommandFailed, CommandTimeout, ConnectionFailed, InputError

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
    """Connects to one PostgreSQL server. ``host`` names it in errors.

    With ``keep_open`` the connection is kept between queries, which a check polled every few
    milliseconds needs; a kept connection that fails is replaced once by a fresh one before the
    failure counts, so a server restarted under it is never mistaken for one that is down.
    """

    def __init__(self, dsn: str, *, host: str, keep_open: bool = False) -> None:
        self.dsn = dsn
        self.host = host
        self.keep_open = keep_open
        self._conn: psycopg.Connection | None = None
        self._timeout_ms: int | None = None

    @classmethod
    def for_node(cls, name: str, node: Node, *, keep_open: bool = False) -> SqlExecutor:
        return cls(node_dsn(node, with_password=True), host=name, keep_open=keep_open)

    def _open(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(_first_line(exc), host=self.host) from exc
        except psycopg.ProgrammingError as exc:
            raise InputError(f"invalid connection string: {_first_line(exc)}") from exc

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.QueryCanceled as exc:
            raise CommandTimeout(_first_line(exc), host=self.host) from exc
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(_first_line(exc), host=self.host) from exc
        except psycopg.Error as exc:
            raise CommandFailed(_first_line(exc), returncode=1, host=self.host) from exc

    def _run(
        self, conn: psycopg.Connection, sql: str, params: Sequence[Any] | None, timeout: float
    ) -> list[Row]:
        with self._translated():
            timeout_ms = int(timeout * 1000)
            if timeout_ms != self._timeout_ms or not self.keep_open:
                conn.execute(f"SET statement_timeout = {timeout_ms}")
                self._timeout_ms = timeout_ms
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> list[Row]:
        if not self.keep_open:
            conn = self._open()
            try:
                return self._run(conn, sql, params, timeout)
            finally:
                conn.close()
        while True:
            fresh = self._conn is None
            if self._conn is None:
                self._conn = self._open()
                self._timeout_ms = None
            try:
                return self._run(self._conn, sql, params, timeout)
            except ConnectionFailed:
                self.close()
                if fresh:
                    raise

    def scalar(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        rows = self.query(sql, params, timeout=timeout)
        return rows[0][0] if rows else None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
