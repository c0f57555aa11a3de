"""Run SQL on Oracle with python-oracledb in thin mode (no Oracle Client libraries needed).
oracledb's errors become ours here and only here, naming the host and the ORA-/DPY- code.

    conn = connect("db1:1521/HISPDB", user="his", password=..., side="source")
    conn.execute("ALTER SESSION SET TIME_ZONE = '+00:00'")
    rows = conn.rows("SELECT ... WHERE OWNER = :owner", {"owner": "HIS"})

NUMBER values are fetched as ``decimal.Decimal`` (exact, whatever their precision) unless
``decimal_numbers=False``.
"""

from __future__ import annotations

import contextlib
import decimal
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import oracledb

from drills.model.errors import (
    AuthenticationFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionFailed,
)

Row = tuple[Any, ...]
CONNECT_TIMEOUT = 10.0  # seconds to open the TCP connection
ARRAYSIZE = 1000  # rows fetched per round trip

_CODE = re.compile(r"\b(?:ORA|DPY|DPI)-\d{4,5}\b")
CANCELLED = "ORA-01013"  # user requested cancel of current operation
REFUSED_LOGIN = {"ORA-01017", "ORA-01005", "ORA-28000", "ORA-01045"}  # bad login, locked, no priv


def error_code(exc: BaseException) -> str | None:
    """The ``ORA-nnnnn`` / ``DPY-nnnn`` code of an oracledb error, when it has one."""
    detail = exc.args[0] if exc.args else None
    code = getattr(detail, "full_code", None)
    if isinstance(code, str) and code:
        return code
    found = _CODE.search(str(exc))
    return found.group(0) if found else None


def error_text(exc: BaseException) -> str:
    """One line: the error's first line (which starts with its code), and its cause when
    oracledb gives one on a later line (``[Errno 111] Connection refused``)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
    code = error_code(exc)
    return text if code is None or code in text else f"{code}: {text}"


def host_of(connect: str) -> str:
    """The host named by a connect string (``db1:1521/HIS``, ``tcps://db1/HIS``, a descriptor),
    or the string itself (a TNS alias)."""
    found = re.search(r"\(\s*HOST\s*=\s*([^)\s]+)", connect, re.IGNORECASE)
    if found:
        return found.group(1)
    text = re.sub(r"^[A-Za-z]+://", "", connect.strip()).removeprefix("//")
    if text.startswith("[") and "]" in text:
        return text[1 : text.index("]")]
    return re.split(r"[:/?]", text, maxsplit=1)[0] or connect


def _database(side: str | None) -> str:
    return f"{side} database" if side else "database"


@contextmanager
def errors(*, host: str | None = None, side: str | None = None, label: str = "") -> Iterator[None]:
    """oracledb's errors inside the block become ours. ``side`` names the database in messages
    (``"source"``: "the source database"), ``label`` is ``user@connect`` (no password)."""
    what, where = _database(side), f" ({label})" if label else ""
    try:
        yield
    except (oracledb.Error, oracledb.Warning) as exc:
        text = error_text(exc)
        if error_code(exc) == CANCELLED:
            raise CommandTimeout(f"{what}: {text}", host=host) from exc
        if isinstance(exc, oracledb.OperationalError | oracledb.InterfaceError):
            raise ConnectionFailed(f"lost the {what}{where}: {text}", host=host) from exc
        raise CommandFailed(f"{what}: {text}", returncode=1, host=host) from exc


def _decimal_numbers(cursor: Any, metadata: Any) -> Any:
    if metadata.type_code is oracledb.DB_TYPE_NUMBER:
        return cursor.var(decimal.Decimal, arraysize=cursor.arraysize)
    return None


class OracleConnection:
    """One Oracle session. ``host`` names the server in errors; ``label`` is ``user@connect``."""

    def __init__(
        self, conn: oracledb.Connection, *, host: str, side: str | None, label: str
    ) -> None:
        self._conn = conn
        self.host = host
        self.side = side
        self.label = label

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return errors(host=self.host, side=self.side, label=self.label)

    def execute(self, statement: str, binds: dict[str, Any] | None = None) -> None:
        with self._errors():
            self._conn.cursor().execute(statement, binds or {})

    def rows(self, statement: str, binds: dict[str, Any] | None = None) -> list[Row]:
        with self._errors():
            cursor = self._conn.cursor()
            cursor.arraysize = ARRAYSIZE
            cursor.execute(statement, binds or {})
            return [tuple(row) for row in cursor.fetchall()]

    def cancel(self) -> None:
        """Cancel the running statement, from another thread; never raises."""
        with contextlib.suppress(Exception):
            self._conn.cancel()

    def close(self) -> None:
        """Roll back whatever is open (a read-only transaction holds nothing) and disconnect."""
        with contextlib.suppress(Exception):
            self._conn.rollback()
        with contextlib.suppress(Exception):
            self._conn.close()


def connect(
    connect_string: str,
    *,
    user: str,
    password: str | None,
    host: str | None = None,
    side: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
    decimal_numbers: bool = True,
) -> OracleConnection:
    """Connect in thin mode. ``connect_string``: ``host:port/service``, a descriptor or a TNS
    alias; ``host`` names the server in errors (default: the host of ``connect_string``).

    Raises ``AuthenticationFailed`` when the login is refused, ``ConnectionFailed`` otherwise,
    naming ``side``, ``user@connect`` and the ORA-/DPY- code; never the password.
    """
    where = host or host_of(connect_string)
    label = f"{user}@{connect_string}"
    try:
        conn = oracledb.connect(
            user=user, password=password, dsn=connect_string, tcp_connect_timeout=timeout
        )
    except oracledb.Error as exc:
        message = f"cannot connect to the {_database(side)} ({label}): {error_text(exc)}"
        refused = error_code(exc) in REFUSED_LOGIN
        raise (AuthenticationFailed if refused else ConnectionFailed)(message, host=where) from exc
    if decimal_numbers:
        conn.outputtypehandler = _decimal_numbers
    return OracleConnection(conn, host=where, side=side, label=label)
