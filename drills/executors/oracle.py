"""Run SQL on Oracle with python-oracledb in thin mode (no Oracle Client libraries needed).
oracledb's errors become ours here and only here, naming the host and the ORA-/DPY- code.

    conn = connect("db1:1521/HISPDB", user="his", password=..., side="source")
    conn.execute("ALTER SESSION SET TIME_ZONE = '+00:00'")
    rows = conn.rows("SELECT ... WHERE OWNER = :owner", {"owner": "HIS"})

NUMBER values are fetched as ``decimal.Decimal`` (exact, whatever their precision) unless
``decimal_numbers=False``.

A node's session (``OracleSession``, what ``Targets.sql`` gives checks and actions for a node with
an ``oracle:`` section) is kept for the run and answers ``query(sql, binds, timeout=)`` and
``scalar(...)`` with ``:name`` binds (a dict) or positional ``:1`` binds (a sequence); every
statement runs under a call timeout and commits on its own (autocommit). Every error names the
node and the ORA-/DPY- code, and for the common ones what to do (``ADVICE``): a wrong password
(ORA-01017), a service the listener does not know (ORA-12514), no listener (ORA-12541), no
connection at all (DPY-6005).
"""

from __future__ import annotations

import contextlib
import decimal
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import oracledb

from drills.model.environment import read_secret_env
from drills.model.errors import (
    AuthenticationFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionFailed,
    DrillError,
    InputError,
)

if TYPE_CHECKING:
    from drills.model.environment import Node, OracleAccess

Row = tuple[Any, ...]
Connect = Callable[..., Any]  # oracledb.connect, or a stand-in's
CONNECT_TIMEOUT = 10.0  # seconds to open the TCP connection
ARRAYSIZE = 1000  # rows fetched per round trip

_CODE = re.compile(r"\b(?:ORA|DPY|DPI)-\d{4,5}\b")
CANCELLED = "ORA-01013"  # user requested cancel of current operation
# bad login, locked, no privilege; no password given at all (thin mode)
REFUSED_LOGIN = {"ORA-01017", "ORA-01005", "ORA-28000", "ORA-01045", "DPY-4001"}
CALL_TIMEOUT = {"DPY-4024", "DPI-1067", "ORA-03156"}  # the statement ran past call_timeout
# The session is gone (or never was): the instance went down, or is going.
LOST = {
    "DPY-4011", "DPY-1001", "ORA-03113", "ORA-03114", "ORA-03135", "ORA-01089", "ORA-01092",
    "ORA-01033", "ORA-01034", "ORA-12514", "ORA-12528", "ORA-12537",
}  # fmt: skip

# What to do about the common errors, most specific first: the first code of a message found
# here is the advice given (thin mode puts its own DPY- code before the database's).
ADVICE: dict[str, str] = {
    "ORA-01017": "wrong user or password: check the node's `user` and its password_env / "
    "password_file (or the wallet in wallet_dir)",
    "ORA-28000": "the account is locked: unlock it (ALTER USER ... ACCOUNT UNLOCK)",
    "ORA-28001": "the password has expired: set a new one and update password_env/password_file",
    "ORA-01045": "the user may not log on: GRANT CREATE SESSION (and SYSDG for a mounted standby)",
    "ORA-01031": "insufficient privileges: grant what the check needs (SELECT_CATALOG_ROLE, or "
    "SYSDG with `privilege: sysdg`)",
    "ORA-01033": "the database is starting, stopping or only mounted: a mounted standby answers "
    "only privileged sessions (`privilege: sysdg`)",
    "ORA-01034": "the instance is not running (ORACLE not available): start it, or the node "
    "is down",
    "ORA-12514": "the listener does not know the service: check `service` or the connect "
    "descriptor; `lsnrctl services` on the host lists the services it knows (a database that "
    "is down registers none)",
    "DPY-6001": "the listener does not know the service: check `service` or the connect "
    "descriptor; `lsnrctl services` on the host lists the services it knows (a database that "
    "is down registers none)",
    "ORA-12505": "the listener does not know the SID: connect by service name",
    "ORA-12541": "no listener at that host:port: check `host` and `port`; `lsnrctl status` on "
    "the host",
    "ORA-12170": "the connection timed out: check the network, host, port and any firewall",
    "ORA-16000": "the database is open read-only (a standby): write on the primary",
    "DPY-4024": "the statement ran past its timeout and was cancelled",
    "DPY-6005": "cannot connect: check the network, the host and port, and any firewall between "
    "drctl and the node",
    "DPY-4001": "no password to log in with: thin mode logs in with the user's password "
    "(password_env or password_file) even through a wallet, whose ewallet.pem carries the TLS "
    "certificates only (a password stored in a wallet, cwallet.sso, needs Oracle Client)",
}
REFUSED_CONNECTION = re.compile(r"Errno 111|Connection refused", re.IGNORECASE)
_NOISE = re.compile(r"\s*\(CONNECTION_ID=[^)]*\)|^Help: \S+$", re.MULTILINE)


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


def error_codes(exc: BaseException) -> list[str]:
    """Every ORA-/DPY- code in an error, in order, the driver's first (``DPY-6005`` before the
    ``ORA-12514`` it wraps; "Similar to ORA-12514" counts)."""
    found = []
    first = error_code(exc)
    if first:
        found.append(first)
    for code in _CODE.findall(str(exc)):
        if code not in found:
            found.append(code)
    return found


def advice(exc: BaseException) -> str:
    """What to do about an error, for the common ones; "" otherwise."""
    codes = error_codes(exc)
    for code in ADVICE:
        if code in codes:
            if code == "DPY-6005" and REFUSED_CONNECTION.search(str(exc)):
                return ADVICE["ORA-12541"]  # thin mode's "no listener"
            return ADVICE[code]
    return ""


def describe_error(exc: BaseException) -> str:
    """One line: the error's lines without the connection id and help links, and what to do."""
    lines = [line.strip() for line in _NOISE.sub("", str(exc)).splitlines() if line.strip()]
    text = " ".join(lines) or type(exc).__name__
    code = error_code(exc)
    if code and code not in text:
        text = f"{code}: {text}"
    hint = advice(exc)
    return f"{text}; {hint}" if hint else text


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
    arguments = {"user": user, "password": password, "dsn": connect_string}
    return connect_with(
        arguments | {"tcp_connect_timeout": timeout},
        host=host,
        side=side,
        decimal_numbers=decimal_numbers,
    )


def connect_with(
    arguments: dict[str, Any],
    *,
    host: str | None = None,
    side: str | None = None,
    decimal_numbers: bool = True,
    connect: Connect | None = None,
) -> OracleConnection:
    """``connect`` with the keyword arguments of ``oracledb.connect`` as they are (a node's
    ``connect_arguments``: its wallet's ``config_dir``, ``wallet_location`` and
    ``wallet_password`` with the user and password). ``connect`` stands in for
    ``oracledb.connect`` (the stand-in tests pass theirs). The same errors as ``connect``."""
    dsn = str(arguments.get("dsn", ""))
    where = host or host_of(dsn)
    label = f"{arguments.get('user')}@{dsn}"
    opener: Connect = connect or oracledb.connect  # looked up now: a test may record the calls
    try:
        conn = opener(**arguments)
    except oracledb.Error as exc:
        message = f"cannot connect to the {_database(side)} ({label}): {error_text(exc)}"
        hint = advice(exc)
        if hint:
            message += f"; {hint}"
        refused = error_code(exc) in REFUSED_LOGIN
        raise (AuthenticationFailed if refused else ConnectionFailed)(message, host=where) from exc
    if decimal_numbers:
        conn.outputtypehandler = _decimal_numbers
    return OracleConnection(conn, host=where, side=side, label=label)


# -- a node's session, for checks and actions (Targets.sql) --------------------------------------

Binds = Mapping[str, Any] | Sequence[Any] | None
MODES = {"sysdg": "AUTH_MODE_SYSDGD", "sysdba": "AUTH_MODE_SYSDBA", "sysbackup": "AUTH_MODE_SYSBKP"}


def oracle_password(access: OracleAccess) -> str | None:
    """The node's database password, from where its ``oracle:`` section names it (never logged)."""
    if access.password_env:
        return read_secret_env(access.password_env, "an Oracle password")
    if access.password_file:
        try:
            return Path(access.password_file).expanduser().read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read password file {access.password_file}: {exc}") from exc
    return None


def connect_arguments(access: OracleAccess, dsn: str, *, privileged: bool = True) -> dict[str, Any]:
    """The keyword arguments of ``oracledb.connect`` for a node's section (secrets read here).
    ``privileged=False`` leaves out ``privilege`` (the canary writes as a plain user)."""
    arguments: dict[str, Any] = {
        "user": access.user,
        "password": oracle_password(access),
        "dsn": dsn,
        "tcp_connect_timeout": access.connect_timeout,
        "retry_count": 0,
        "program": "drctl",
    }
    if privileged and access.privilege is not None:
        arguments["mode"] = getattr(oracledb, MODES[access.privilege])
    if access.wallet_dir is not None:
        wallet = str(Path(access.wallet_dir).expanduser())
        arguments.update(config_dir=wallet, wallet_location=wallet)
        if access.wallet_password_env:
            arguments["wallet_password"] = read_secret_env(
                access.wallet_password_env, "an Oracle wallet password"
            )
    return arguments


def node_label(access: OracleAccess, dsn: str) -> str:
    """``user@connect`` and the privilege: how a node's session is named in messages."""
    privilege = f" as {access.privilege.upper()}" if access.privilege else ""
    return f"{access.user}@{dsn}{privilege}"


class OracleSession:
    """A session on one node's Oracle database, kept for the run; ``host`` (the node's name)
    names it in every error.

    The connection is opened at the first statement. A kept connection that fails is replaced
    once by a fresh one before the failure counts (``reconnect``), so a database restarted under
    it is not mistaken for one that is down. Each statement commits on its own.
    """

    def __init__(
        self,
        arguments: dict[str, Any],
        *,
        host: str,
        label: str,
        reconnect: bool = True,
        connect: Connect | None = None,
    ) -> None:
        self._arguments = arguments
        self.host = host
        self.label = label
        self.reconnect = reconnect
        self._connect: Connect = connect or oracledb.connect
        self._conn: Any = None
        self._writer: OracleSession | None = None

    @classmethod
    def for_node(cls, name: str, node: Node, *, connect: Connect | None = None) -> OracleSession:
        """The session of a node with an ``oracle:`` section (its password read now).
        ``connect`` stands in for ``oracledb.connect`` (tests pass a stand-in database's)."""
        if node.oracle is None:
            raise InputError(f"node {name} has no oracle section", host=name)
        dsn = node.oracle.dsn(node.host, node.port)
        return cls(
            connect_arguments(node.oracle, dsn),
            host=name,
            label=node_label(node.oracle, dsn),
            connect=connect,
        )

    def _open(self) -> Any:
        try:
            conn = self._connect(**self._arguments)
        except (oracledb.Error, oracledb.Warning) as exc:
            message = f"cannot connect to node {self.host} ({self.label}): {describe_error(exc)}"
            refused = error_code(exc) in REFUSED_LOGIN or "ORA-01017" in error_codes(exc)
            raise (AuthenticationFailed if refused else ConnectionFailed)(
                message, host=self.host
            ) from exc
        conn.autocommit = True
        return conn

    def translate(self, exc: BaseException) -> DrillError:
        """An oracledb error of a statement on this node, as ours."""
        codes = set(error_codes(exc))
        message = f"node {self.host}: {describe_error(exc)}"
        if codes & CALL_TIMEOUT or CANCELLED in codes:
            return CommandTimeout(message, host=self.host)
        if codes & LOST or isinstance(exc, oracledb.OperationalError | oracledb.InterfaceError):
            return ConnectionFailed(
                f"lost node {self.host} ({self.label}): {describe_error(exc)}", host=self.host
            )
        return CommandFailed(message, returncode=1, host=self.host)

    def _run(self, conn: Any, sql: str, binds: Binds, timeout: float) -> list[Row]:
        try:
            conn.call_timeout = max(1, int(timeout * 1000))
            cursor = conn.cursor()
            cursor.arraysize = ARRAYSIZE
            cursor.execute(sql, binds if binds is not None else [])
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        except (oracledb.Error, oracledb.Warning) as exc:
            error = self.translate(exc)
            if isinstance(error, ConnectionFailed | CommandTimeout):
                self.close()  # after a timeout or a lost session the connection is not reused
            raise error from exc

    def query(self, sql: str, params: Binds = None, *, timeout: float = 10.0) -> list[Row]:
        """The rows of one statement (none for a statement without a result), committed."""
        while True:
            fresh = self._conn is None
            if self._conn is None:
                self._conn = self._open()
            try:
                return self._run(self._conn, sql, params, timeout)
            except ConnectionFailed:
                if fresh or not self.reconnect:
                    raise

    def scalar(self, sql: str, params: Binds = None, *, timeout: float = 10.0) -> Any:
        rows = self.query(sql, params, timeout=timeout)
        return rows[0][0] if rows else None

    def writer(self) -> OracleSession:
        """A session for writes in the user's own schema: this one, or, when this one connects
        AS SYSDG/SYSDBA/SYSBACKUP (whose sessions work in SYS's schema), the same database and
        user without the privilege. Kept, and closed with this one."""
        if "mode" not in self._arguments:
            return self
        if self._writer is None:
            plain = {k: v for k, v in self._arguments.items() if k != "mode"}
            self._writer = OracleSession(
                plain,
                host=self.host,
                label=self.label.split(" as ")[0],
                reconnect=self.reconnect,
                connect=self._connect,
            )
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
