"""The Oracle session of table reconciliation: the DSN a user gives, and ``OracleSession``, which
runs the SQL of :mod:`verify.reconcile.dialects.oracle_sql` on a connection from the executors
(:mod:`drills.executors.oracle`: python-oracledb in thin mode, its errors translated there).

The session pins ``NLS_NUMERIC_CHARACTERS``, the date and timestamp formats, ``TIME_ZONE =
'+00:00'`` and ``NLS_SORT``/``NLS_COMP = BINARY``, and runs every query in one ``SET TRANSACTION
READ ONLY`` transaction: one snapshot, no writes.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from drills.model.errors import InputError
from verify.reconcile.dialects.oracle_sql import (
    ORACLE_COLUMNS,
    ORACLE_KIND,
    ORACLE_PRIMARY_KEY,
    ORACLE_PROBE,
    ORACLE_SESSION,
    ORACLE_TABLES,
    key_usable,
    leaf_sql,
    oracle_column,
    quote,
    range_stats_sql,
    sample_sql,
    split_sql,
    table_sql,
    whole_sql,
)
from verify.reconcile.model import (
    Bound,
    Engine,
    HashMode,
    KeyRange,
    LeafRow,
    Side,
    Stat,
    TableMeta,
    TablePlan,
    TableRef,
)

SAMPLE_BLOCKS = 128
CONNECT_TIMEOUT = 10.0
TRANSACTION = "SET TRANSACTION READ ONLY NAME 'drctl reconcile'"

# ---------------------------------------------------------------------------------- DSN


@dataclass(frozen=True)
class OracleDsn:
    user: str
    password: str | None
    connect: str  # host:port/service, or a TNS alias

    @property
    def shown(self) -> str:
        return f"{self.user}@{self.connect}"


def parse_dsn(text: str) -> OracleDsn:
    """``user/password@host:port/service``, or ``oracle://user:password@host:port/service``."""
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("oracle", "oracle+oracledb") or not parts.hostname:
            raise InputError("an Oracle DSN is oracle://user:password@host:port/service")
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        return OracleDsn(
            unquote(parts.username or ""),
            unquote(parts.password) if parts.password else None,
            host + parts.path,
        )
    creds, at, connect = text.rpartition("@")
    if not at or not creds or not connect:
        raise InputError("an Oracle DSN is user/password@host:port/service")
    user, slash, password = creds.partition("/")
    return OracleDsn(user, password if slash else None, connect)


def redact_dsn(text: str) -> str:
    try:
        return parse_dsn(text).shown
    except InputError:
        return "<unparsable dsn>"


class OracleSession:
    """One side of an Oracle comparison: a read-only transaction, and the SQL of ``oracle_sql``."""

    engine: Engine = "oracle"

    def __init__(
        self,
        side: Side,
        dsn: str | None = None,
        *,
        host: str | None = None,
        arguments: dict[str, Any] | None = None,
        connect: Any = None,
    ) -> None:
        """Connect with ``dsn`` (``user/password@connect``), or with ``arguments``, the keyword
        arguments of ``oracledb.connect`` as a node's section gives them (its wallet too:
        ``drills.executors.oracle.connect_arguments``); ``connect`` stands in for
        ``oracledb.connect``."""
        from drills.executors.oracle import connect_with

        self.side: Side = side
        self.hash_mode: HashMode = "ora_hash"
        if arguments is None:
            if dsn is None:
                raise InputError("an Oracle comparison needs a DSN or connect arguments")
            parsed = parse_dsn(dsn)
            arguments = {"user": parsed.user, "password": parsed.password, "dsn": parsed.connect}
            arguments["tcp_connect_timeout"] = CONNECT_TIMEOUT
        self.label = f"{arguments.get('user')}@{arguments.get('dsn')}"
        self.conn = connect_with(arguments, host=host, side=side, connect=connect)
        try:
            for statement in ORACLE_SESSION:
                self.conn.execute(statement)
            self.conn.execute(TRANSACTION)
            self.schema = str(
                self.rows("SELECT SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA') FROM DUAL")[0][0]
            )
        except BaseException:
            self.close()
            raise

    def rows(self, statement: str, binds: dict[str, Any] | None = None) -> list[Any]:
        return self.conn.rows(statement, binds)

    @property
    def utf8(self) -> bool:
        return self.hash_mode == "ora_hash_utf8"

    @staticmethod
    def fold(name: str) -> str:
        return name.upper()

    # -- hashing

    def probe(self) -> tuple[int, str, str]:
        value, charset, nchar = self.rows(ORACLE_PROBE)[0]
        return int(value), str(charset), str(nchar)

    @staticmethod
    def hash_mode_for(source: Any, target: Any) -> tuple[HashMode, str]:
        return oracle_hash_mode(source, target)

    def cancel(self) -> None:
        self.conn.cancel()

    def close(self) -> None:
        self.conn.close()

    # -- catalog

    def describe(self, ref: TableRef) -> TableMeta | None:
        names = {"owner": ref.schema, "name": ref.name}
        kind = self.rows(ORACLE_KIND, names)[0][0]
        if kind is None:
            return None
        columns = tuple(
            oracle_column(
                str(r[0]),
                str(r[1]),
                _int(r[2]),
                _int(r[3]),
                _int(r[4]),
                _int(r[5]),
                r[6],
            )
            for r in self.rows(ORACLE_COLUMNS, names)
        )
        key = tuple(str(r[0]) for r in self.rows(ORACLE_PRIMARY_KEY, names))
        return TableMeta(ref, "table" if kind == "TABLE" else str(kind).lower(), columns, key)

    def missing_schemas(self, schemas: list[str]) -> list[str]:
        binds = {f"s{i}": s for i, s in enumerate(schemas)}
        placeholders = ", ".join(f":{name}" for name in binds)
        found = {
            r[0]
            for r in self.rows(
                f"SELECT USERNAME FROM ALL_USERS WHERE USERNAME IN ({placeholders})", binds
            )
        }
        return [s for s in schemas if s not in found]

    def list_tables(self, schemas: list[str] | None, exclude: Sequence[str]) -> list[TableRef]:
        if schemas is not None:
            binds = {f"s{i}": s for i, s in enumerate(schemas)}
            where = "OWNER IN (" + ", ".join(f":{n}" for n in binds) + ")"
        else:
            binds = {f"x{i}": s for i, s in enumerate(exclude)}
            where = "OWNER NOT IN (SELECT USERNAME FROM ALL_USERS WHERE ORACLE_MAINTAINED = 'Y')"
            if binds:
                where += " AND OWNER NOT IN (" + ", ".join(f":{n}" for n in binds) + ")"
        rows = self.rows(ORACLE_TABLES.format(where=where), binds)
        return [TableRef(str(owner), str(name)) for owner, name in rows]

    def default_schema(self) -> str:
        return self.schema

    # -- data

    def _plan(self, plan: TablePlan) -> TablePlan:
        plan = plan.on(self.side)
        if plan.key and not all(key_usable(c) for c in plan.key):
            raise InputError(
                f"table {plan.display}: primary key columns of type "
                + ", ".join(c.type for c in plan.key if not key_usable(c))
                + " cannot be ranged"
            )
        return plan

    def count(self, plan: TablePlan) -> int:
        plan = plan.on(self.side)
        return int(self.rows(f"SELECT COUNT(*) FROM {table_sql(plan.ref)}")[0][0])

    def whole(self, plan: TablePlan) -> Stat:
        plan = plan.on(self.side)
        count, checksum = self.rows(whole_sql(plan.ref, plan.columns, utf8=self.utf8))[0]
        return int(count), checksum

    def int_bounds(self, plan: TablePlan) -> tuple[int, int] | None:
        plan = self._plan(plan)
        first = quote(plan.key[0].name)
        low, high = self.rows(f"SELECT MIN({first}), MAX({first}) FROM {table_sql(plan.ref)}")[0]
        return None if low is None else (int(low), int(high))

    def sample_bounds(self, plan: TablePlan, parts: int) -> list[Bound]:
        plan = self._plan(plan)
        blocks = self.rows(
            "SELECT BLOCKS FROM ALL_TABLES WHERE OWNER = :owner AND TABLE_NAME = :name",
            {"owner": plan.ref.schema, "name": plan.ref.name},
        )
        known = blocks[0][0] if blocks and blocks[0][0] is not None else None
        percent = 1.0 if known is None else min(100.0, 100.0 * SAMPLE_BLOCKS / max(int(known), 1))
        rows = self.rows(sample_sql(plan.ref, plan.key, percent, parts))
        return [tuple(_text(v) for v in row) for row in rows]

    def range_stats(self, plan: TablePlan, ranges: Sequence[KeyRange]) -> list[Stat]:
        plan = self._plan(plan)
        statement, binds = range_stats_sql(plan.ref, plan.columns, plan.key, ranges, utf8=self.utf8)
        stats: list[Stat] = [(0, None)] * len(ranges)
        for index, count, checksum in self.rows(statement, binds):
            stats[int(index)] = (int(count), checksum)
        return stats

    def split_points(
        self, plan: TablePlan, requests: Sequence[tuple[KeyRange, int, int]]
    ) -> list[list[Bound]]:
        plan = self._plan(plan)
        statement, binds = split_sql(plan.ref, plan.key, requests)
        found: list[list[tuple[int, Bound]]] = [[] for _ in requests]
        for row in self.rows(statement, binds):
            found[int(row[0])].append((int(row[1]), tuple(_text(v) for v in row[2:])))
        return [[bound for _, bound in sorted(points)] for points in found]

    def leaf_rows(
        self, plan: TablePlan, ranges: Sequence[tuple[KeyRange, int | None]]
    ) -> list[LeafRow]:
        plan = self._plan(plan)
        n = len(plan.key)
        statement, binds = leaf_sql(plan.ref, plan.columns, plan.key, ranges, utf8=self.utf8)
        return [
            (
                int(row[0]),
                tuple(_text(v) for v in row[1 + n : 1 + 2 * n]),
                tuple(_native(v) for v in row[1 : 1 + n]),
                row[-1],
            )
            for row in self.rows(statement, binds)
        ]


def oracle_hash_mode(
    source: tuple[int, str, str], target: tuple[int, str, str]
) -> tuple[HashMode, str]:
    (s_hash, s_charset, s_nchar), (t_hash, t_charset, t_nchar) = source, target
    if s_hash != t_hash:
        raise InputError("ORA_HASH gives different results on the two databases: cannot compare")
    notes = []
    mode: HashMode = "ora_hash"
    if s_charset != t_charset:
        mode = "ora_hash_utf8"
        notes.append(f"character sets differ ({s_charset} vs {t_charset}): text hashed as AL32UTF8")
    if s_nchar != t_nchar:
        notes.append(
            f"national character sets differ ({s_nchar} vs {t_nchar}): NCHAR/NVARCHAR2 values "
            "will all differ"
        )
    return mode, "; ".join(notes)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _native(value: Any) -> object:
    if isinstance(value, decimal.Decimal) and value == value.to_integral_value():
        return int(value)
    return value
