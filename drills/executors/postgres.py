"""Run SQL on PostgreSQL with psycopg 3. psycopg's errors become ours here and only here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg.sql import Composable

from drills.model.environment import Node, read_password
from drills.model.errors import (
    CommandFailed,
    CommandTimeout,
    ConnectionFailed,
    DrillError,
    ExecutorError,
    InputError,
)

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
        except LIBRARY_ERRORS as exc:
            raise translate(exc, host=self.host) from exc

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


# -- read-only snapshots (table reconciliation) ------------------------------------------------

SNAPSHOT_CONNECT_TIMEOUT = 10  # seconds, unless the DSN says otherwise


def _database(side: str | None) -> str:
    return f"{side} database" if side else "database"


@contextmanager
def errors(*, host: str | None = None, side: str | None = None, label: str = "") -> Iterator[None]:
    """psycopg's errors inside the block become ours.

    ``side`` names the database in messages (``"source"``: "the source database"), ``label`` is
    its DSN without the password (``redact``), ``host`` the node, when there is one.
    """
    what = _database(side)
    where = f" ({label})" if label else ""
    try:
        yield
    except LIBRARY_ERRORS as exc:
        lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        text = f"lost the {what}{where}: " if lost else f"{what}: "
        raise translate(exc, host=host, message=text + _first_line(exc)) from exc


class SnapshotConnection:
    """One ``REPEATABLE READ, READ ONLY`` transaction, kept open: every query sees the snapshot
    its first one took, and nothing can be written. Errors are ours (``errors``)."""

    def __init__(
        self, conn: psycopg.Connection, *, host: str | None, side: str | None, label: str
    ) -> None:
        self._conn = conn
        self.host = host
        self.side = side
        self.label = label

    @property
    def server_version(self) -> int:
        """The server's version as a number (``180001`` for 18.1)."""
        return int(self._conn.info.server_version)

    def rows(self, query: str | Composable, params: Sequence[Any] | None = None) -> list[Row]:
        """The rows of one statement (none for a statement without a result)."""
        with errors(host=self.host, side=self.side, label=self.label):
            cur = self._conn.execute(query, params)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def cancel(self) -> None:
        """Cancel the running statement, from another thread; never raises."""
        with contextlib.suppress(Exception):
            self._conn.cancel_safe(timeout=5)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


def open_snapshot(
    dsn: str,
    *,
    application_name: str,
    host: str | None = None,
    side: str | None = None,
    setup: Sequence[str] = (),
    connect_timeout: int = SNAPSHOT_CONNECT_TIMEOUT,
) -> SnapshotConnection:
    """Connect and start one read-only ``REPEATABLE READ`` transaction, its snapshot taken.

    ``setup``: session statements (``SET ...``) run first, outside the transaction. Raises
    ``InputError`` for a DSN that cannot be read, ``ConnectionFailed`` (naming ``side`` and the
    DSN without its password) when the server cannot be reached.
    """
    label, what = redact(dsn), _database(side)
    invalid = f"invalid {side} DSN" if side else "invalid connection string"
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise InputError(f"{invalid}: {_first_line(exc)}", host=host) from exc
    extra: dict[str, Any] = {"application_name": application_name}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = connect_timeout
    try:
        conn = psycopg.connect(dsn, autocommit=True, **extra)
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"cannot connect to the {what} ({label}): {_first_line(exc)}", host=host
        ) from exc
    except psycopg.Error as exc:
        raise InputError(f"{invalid} ({label}): {_first_line(exc)}", host=host) from exc
    snapshot = SnapshotConnection(conn, host=host, side=side, label=label)
    try:
        with errors(host=host, side=side, label=label):
            conn.execute("SET default_transaction_read_only = on")
            for statement in setup:
                conn.execute(statement)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.autocommit = False
            conn.execute("SELECT 1")  # the transaction's first query takes its snapshot
    except BaseException:
        snapshot.close()
        raise
    return snapshot


# psycopg's public exception classes and what each becomes: the first that matches wins.
ERROR_TABLE: tuple[tuple[type[BaseException], type[DrillError]], ...] = (
    (psycopg.errors.QueryCanceled, CommandTimeout),
    (psycopg.OperationalError, ConnectionFailed),
    (psycopg.InterfaceError, ConnectionFailed),
    (psycopg.Error, CommandFailed),
    (psycopg.Warning, CommandFailed),
)
LIBRARY_ERRORS = (psycopg.Error, psycopg.Warning)
# Public exception classes that are not errors: ``Rollback`` is raised by code inside
# ``conn.transaction()`` to end it, and psycopg itself catches it there.
CONTROL_FLOW: tuple[type[BaseException], ...] = (psycopg.Rollback,)


def translate(exc: BaseException, *, host: str | None, message: str | None = None) -> DrillError:
    """The one mapping from a psycopg error to ours (``ERROR_TABLE``)."""
    text = message or _first_line(exc)
    for library_class, ours in ERROR_TABLE:
        if isinstance(exc, library_class):
            if issubclass(ours, CommandFailed):
                return ours(text, returncode=1, host=host)
            return ours(text, host=host)
    return ExecutorError(text, host=host)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class WriterConnection:
    """An autocommit connection for a background writer; knows which server it reached, by the
    host and port libpq connected to (a multi-host DSN picks one)."""

    def __init__(self, conn: psycopg.Connection, host: str) -> None:
        self._conn = conn
        self.host = host
        self.endpoint: tuple[str, int] = (conn.info.host, int(conn.info.port))

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[Row]:
        try:
            cur = self._conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
        except LIBRARY_ERRORS as exc:
            raise translate(exc, host=self.host) from exc

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()


def open_writer(dsn: str, *, host: str = "writer") -> WriterConnection:
    try:
        return WriterConnection(psycopg.connect(dsn, autocommit=True), host)
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(_first_line(exc), host=host) from exc
    except psycopg.ProgrammingError as exc:
        raise InputError(f"invalid connection string: {_first_line(exc)}") from exc


def open_connection(dsn: str, *, host: str, connect_timeout: int = 10) -> Any:
    """A plain autocommit connection (the record store's PostgreSQL back end), its connect
    errors ours; run its statements inside ``errors(host=...)``."""
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
    except LIBRARY_ERRORS as exc:
        raise translate(exc, host=host) from exc


def parse_dsn(dsn: str, what: str) -> dict[str, Any]:
    """A DSN or URL as its parameters; an unreadable one is an InputError naming ``what``."""
    try:
        return dict(conninfo.conninfo_to_dict(dsn))
    except psycopg.ProgrammingError as exc:
        raise InputError(f"{what} is not a valid PostgreSQL URL: {_first_line(exc)}") from exc


def make_dsn(**params: Any) -> str:
    return conninfo.make_conninfo("", **params)
