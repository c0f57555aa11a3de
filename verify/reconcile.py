"""Table reconciliation: do two databases of the same engine hold the same rows?

How it compares. Each database computes, inside itself, a row count and a content checksum (the
sum of 64-bit row hashes) per key range. Both sides run at once, each on its own connection in its
own thread. Ranges whose count or checksum differ are split again (64 ways, by integer arithmetic
on an integer leading key column, else at key quantiles read from the side with more rows), until
a differing range holds at most ``LEAF_ROWS`` rows; then the keys and row hashes of just those
ranges are fetched and matched, naming each differing row as missing on one side or changed.

Memory stays flat whatever the table size: Python holds two numbers per key range of the level
being compared (at most ``BATCH_RANGES`` at a time), the rows of at most ``LEAF_BATCH_ROWS``
leaf rows at a time, and at most ``max_diffs`` differences per table. Nothing grows with the row
count.

What a row hash covers (PostgreSQL):

- ``record`` mode, when both servers run the same major version (14 or later), use the same
  server encoding and agree on a probe: ``hash_record_extended(ROW(c1, c2, ...), 0)``. Built-in
  types are hashed as values; numeric without a fixed scale, interval, enums, domains, arrays,
  json, and every other type are hashed by their text form (``c::text``), so equal means "prints
  the same". About twice as fast as hashing the row's text.
- ``text`` mode otherwise: ``hashtextextended(ROW(...)::text, 0)``.
- ``md5`` mode when even that is not comparable (different encodings, very old servers):
  the first 64 bits of ``md5(convert_to(ROW(...)::text, 'UTF8'))``.

Each session pins what the text form of a value depends on (DateStyle, IntervalStyle, TimeZone,
extra_float_digits, bytea_output, search_path, ...), and runs every query in one ``REPEATABLE
READ, READ ONLY`` transaction, so each side is compared as of one snapshot and nothing is ever
written. The two snapshots are taken a few milliseconds apart on two servers: rows changing
meanwhile show up as differences.

Key ranges are always explicit ``WHERE`` conditions on the primary key (row comparisons for a
composite key), never ``GROUP BY key / N``, which the planner mistakes for millions of groups and
sorts to disk. A table without a primary key is compared by its count and whole-table checksum,
and its result says so.

Oracle: the same algorithm, with the SQL of :mod:`verify.reconcile_oracle`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

import psycopg
from psycopg import conninfo, sql
from pydantic import BaseModel, ConfigDict, Field

from drills.executors.postgres import redact
from drills.model.errors import CommandFailed, CommandTimeout, ConnectionFailed, InputError
from verify.result import Observation

if TYPE_CHECKING:
    from verify.result import Probe

Side = Literal["source", "target"]
DiffKind = Literal["missing_in_target", "missing_in_source", "changed"]
Method = Literal["keyed", "whole-table"]
Engine = Literal["postgresql", "oracle"]
HashMode = Literal["record", "text", "md5", "ora_hash", "ora_hash_utf8"]
Bound = tuple[str, ...]  # a key value (or a prefix of one) in its normalised text form

FANOUT = 64  # ranges per split
LEAF_ROWS = 4096  # a differing range this small has its rows fetched and matched
BATCH_RANGES = 256  # ranges per statement
LEAF_BATCH_ROWS = 32768  # rows fetched per statement, at most
SAMPLE_PAGES = 128  # pages TABLESAMPLE reads to place the first boundaries of a non-integer key
CONNECT_TIMEOUT = 10  # seconds, unless the DSN says otherwise
LOCK_TIMEOUT_MS = 30_000  # a table locked by DDL fails the comparison rather than hang it

KIND_TEXT: dict[str, str] = {
    "changed": "changed",
    "missing_in_target": "missing in target",
    "missing_in_source": "missing in source",
}


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RowDiff:
    """One row that differs, named by its primary key."""

    table: str
    key: tuple[object, ...]
    kind: DiffKind
    key_columns: tuple[str, ...] = ()

    def key_text(self) -> str:
        """``id=5``, or ``(a=1, b=x)`` for a composite key."""
        names = self.key_columns or tuple(f"k{i + 1}" for i in range(len(self.key)))
        parts = [f"{name}={_show(value)}" for name, value in zip(names, self.key, strict=False)]
        return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "kind": self.kind,
            "key": [_json_value(v) for v in self.key],
            "key_columns": list(self.key_columns),
        }


@dataclass(frozen=True)
class TableResult:
    """How one table compared."""

    table: str
    identical: bool
    source_rows: int
    target_rows: int
    method: Method
    diffs: list[RowDiff]
    note: str = ""
    key_columns: tuple[str, ...] = ()
    truncated: bool = False  # stopped at max_diffs: there may be more differences
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        found = {kind: 0 for kind in KIND_TEXT}
        for diff in self.diffs:
            found[diff.kind] += 1
        return found

    def summary(self, *, keys: int = 3) -> str:
        """``public.t: 1 changed (id=5), 1 missing in target (id=9)``."""
        if self.identical:
            return f"{self.table}: identical ({self.source_rows} rows)"
        parts = []
        for kind, label in KIND_TEXT.items():
            of_kind = [d for d in self.diffs if d.kind == kind]
            if not of_kind:
                continue
            shown = ", ".join(d.key_text() for d in of_kind[:keys])
            more = f", +{len(of_kind) - keys} more" if len(of_kind) > keys else ""
            parts.append(f"{len(of_kind)}{'+' if self.truncated else ''} {label} ({shown}{more})")
        if not parts:
            if self.source_rows != self.target_rows:
                parts.append(f"{self.source_rows} rows in source, {self.target_rows} in target")
            else:
                parts.append(f"same row count ({self.source_rows}), different checksum")
        text = f"{self.table}: " + ", ".join(parts)
        return f"{text} ({self.note})" if self.note else text

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "identical": self.identical,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "method": self.method,
            "key_columns": list(self.key_columns),
            "differences": self.counts(),
            "truncated": self.truncated,
            "note": self.note,
            "seconds": round(self.seconds, 3),
            "diffs": [d.as_dict() for d in self.diffs],
        }


@dataclass(frozen=True)
class ReconcileReport:
    """The comparison of every table asked for."""

    identical: bool
    tables: list[TableResult]
    seconds: float
    engine: Engine = "postgresql"
    source: str = ""  # the DSNs, without passwords
    target: str = ""
    hash_mode: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``3 tables identical``, or what differs, table by table."""
        if self.identical:
            count = len(self.tables)
            return f"{count} table{'s' if count != 1 else ''} identical"
        return "; ".join(t.summary() for t in self.tables if not t.identical)

    def as_dict(self) -> dict[str, object]:
        return {
            "identical": self.identical,
            "summary": self.summary(),
            "engine": self.engine,
            "source": self.source,
            "target": self.target,
            "hash_mode": self.hash_mode,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
            "tables": [t.as_dict() for t in self.tables],
        }


def _json_value(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Decimal | UUID | timedelta):
        return str(value)
    return str(value)


def _show(value: object) -> str:
    shown = _json_value(value)
    return shown if isinstance(shown, str) else repr(shown)


# ---------------------------------------------------------------------------------- params/check


class TablesMatchParams(BaseModel):
    """Parameters of the ``pg.tables_match`` check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        description="Role of the node holding the reference copy; the step's target is the other."
    )
    tables: list[str] = Field(
        default_factory=list,
        description="Tables to compare (schema.table, or table in the first of schemas); "
        "empty: every table of the schemas.",
    )
    schemas: list[str] = Field(default_factory=lambda: ["public"])
    database: str | None = Field(
        default=None, description="Database on the target node (default: the node's)."
    )
    source_database: str | None = Field(
        default=None, description="Database on the source node (default: the node's)."
    )
    max_diffs: int = Field(default=1000, ge=0, description="Differing rows listed per table.")


def tables_match(probe: Probe, role: str, params: TablesMatchParams) -> Observation:
    """The tables hold the same rows as on the source role's node (keyed reconciliation)."""
    from drills.executors.postgres import node_dsn

    _, source_node = probe.node(params.source)
    _, target_node = probe.node(role)
    source_extra = {"dbname": params.source_database} if params.source_database else {}
    target_extra = {"dbname": params.database} if params.database else {}
    report = reconcile(
        node_dsn(source_node, with_password=True, **source_extra),
        node_dsn(target_node, with_password=True, **target_extra),
        tables=params.tables or None,
        schemas=params.schemas,
        max_diffs=params.max_diffs,
    )
    where = ", ".join(params.tables) if params.tables else "schemas " + ", ".join(params.schemas)
    detail = (
        f"{len(report.tables)} table(s) compared in {report.seconds:.2f}s (hash {report.hash_mode})"
    )
    for table in report.tables:
        if not table.identical:
            detail += "\n" + table.summary(keys=20)
    for note in report.notes:
        detail += "\n" + note
    return Observation(
        report.summary(), f"same rows as {params.source} in {where}", report.identical, detail
    )


# ---------------------------------------------------------------------------------- names


@dataclass(frozen=True)
class TableRef:
    schema: str
    name: str

    @property
    def display(self) -> str:
        return f"{_display_ident(self.schema)}.{_display_ident(self.name)}"


_SIMPLE = re.compile(r"^[a-z_][a-z0-9_$]*$|^[A-Z_][A-Z0-9_$#]*$")
_PART = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^".\s]+))\s*')


def _display_ident(name: str) -> str:
    return name if _SIMPLE.match(name) else '"' + name.replace('"', '""') + '"'


def parse_table_name(text: str, *, fold: Callable[[str], str] = str.lower) -> TableRef | str:
    """``schema.table`` or ``table`` (schema ``""``), as SQL reads it: unquoted names are folded
    (``fold``: lower case for PostgreSQL, upper case for Oracle), quoted ones kept. A problem is
    returned as a string."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _PART.match(text, pos)
        if not match or match.end() == pos:
            return f"cannot read table name {text!r}"
        quoted, plain = match.group(1), match.group(2)
        parts.append(quoted.replace('""', '"') if quoted is not None else fold(plain))
        pos = match.end()
        if pos == len(text):
            break
        if text[pos] != ".":
            return f"cannot read table name {text!r}"
        pos += 1
    if len(parts) == 1:
        return TableRef("", parts[0])
    if len(parts) == 2:
        return TableRef(parts[0], parts[1])
    return f"table name {text!r} has more than two parts (schema.table)"


# ---------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Column:
    """A column as one side describes it."""

    name: str
    type: str  # the type as the database prints it: compared between sides, used in casts
    base: str = ""  # the underlying type name (PostgreSQL typname, Oracle DATA_TYPE)
    native: bool = False  # hashed as a value, not by its text form
    integer: bool = False  # an integer type: a key range can be split arithmetically
    width: int = 0  # declared size in bytes where it matters (Oracle), else 0


@dataclass(frozen=True)
class TableMeta:
    ref: TableRef
    kind: str  # "table", "partitioned table", "view", ...
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # primary key columns, in key order


@dataclass(frozen=True)
class TablePlan:
    """What is compared for one table, agreed between the sides."""

    ref: TableRef
    columns: tuple[Column, ...]
    key: tuple[Column, ...]  # () without a primary key common to both sides
    note: str = ""
    missing_on: Side | None = None  # schema mode: the table exists on one side only
    target_ref: TableRef | None = None  # the target's table, when its schema is another

    @property
    def display(self) -> str:
        if self.target_ref is not None and self.target_ref != self.ref:
            return f"{self.ref.display} (target {self.target_ref.display})"
        return self.ref.display

    def on(self, side: Side) -> TablePlan:
        """The plan with ``ref`` naming the table on ``side``."""
        if side == "target" and self.target_ref is not None:
            return replace(self, ref=self.target_ref, target_ref=None)
        return self


@dataclass(frozen=True)
class KeyRange:
    """Keys from ``lower`` (inclusive) to ``upper`` (exclusive); ``None`` is unbounded.

    A bound may be a prefix of the key: ``("5",)`` on key ``(a, b)`` is ``(5, -infinity)``.
    ``lo``/``hi``: the leading key column's integer range, when it is known.
    """

    lower: Bound | None = None
    upper: Bound | None = None
    lo: int | None = None
    hi: int | None = None


Stat = tuple[int, Any]  # (row count, checksum)
LeafRow = tuple[int, Bound, tuple[object, ...], Any]  # (range index, key text, key, row hash)


# ---------------------------------------------------------------------------------- sessions


class Session(ABC):
    """One side's connection: one read-only snapshot, the SQL of one engine."""

    side: Side
    hash_mode: HashMode
    label: str  # the DSN without its password

    @abstractmethod
    def probe(self) -> Any:
        """What decides whether both sides' row hashes are comparable (see ``hash_mode_for``)."""

    @staticmethod
    @abstractmethod
    def hash_mode_for(source: Any, target: Any) -> tuple[HashMode, str]:
        """The row hash both sides use, from their probes, and a note of why when not the best."""

    @abstractmethod
    def describe(self, ref: TableRef) -> TableMeta | None: ...

    @abstractmethod
    def missing_schemas(self, schemas: list[str]) -> list[str]: ...

    @abstractmethod
    def list_tables(self, schemas: list[str] | None, exclude: Sequence[str]) -> list[TableRef]: ...

    @abstractmethod
    def default_schema(self) -> str: ...

    @abstractmethod
    def count(self, plan: TablePlan) -> int: ...

    @abstractmethod
    def whole(self, plan: TablePlan) -> Stat: ...

    @abstractmethod
    def int_bounds(self, plan: TablePlan) -> tuple[int, int] | None: ...

    @abstractmethod
    def sample_bounds(self, plan: TablePlan, parts: int) -> list[Bound]: ...

    @abstractmethod
    def range_stats(self, plan: TablePlan, ranges: Sequence[KeyRange]) -> list[Stat]: ...

    @abstractmethod
    def split_points(
        self, plan: TablePlan, requests: Sequence[tuple[KeyRange, int, int]]
    ) -> list[list[Bound]]:
        """For each (range, step, rows): the keys at every ``step``-th row, the last excluded."""

    @abstractmethod
    def leaf_rows(
        self, plan: TablePlan, ranges: Sequence[tuple[KeyRange, int | None]]
    ) -> list[LeafRow]:
        """Keys and row hashes of the rows in each range (at most the given limit, in key
        order)."""

    @abstractmethod
    def cancel(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- PostgreSQL --------------------------------------------------------------------------------

# Built-in types hashed as values in record mode: their equality is their text form's.
# numeric only with a fixed scale (1.0 = 1.00 as values); interval never ('1 day' = '24 hours').
PG_NATIVE = {
    "bool",
    "bytea",
    "char",
    "name",
    "int2",
    "int4",
    "int8",
    "text",
    "varchar",
    "bpchar",
    "float4",
    "float8",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "uuid",
    "jsonb",
    "inet",
    "cidr",
    "macaddr",
    "numeric",
}
PG_INTEGER = {"int2", "int4", "int8"}

PG_SESSION = [
    "SET application_name = 'drctl reconcile'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET TimeZone = 'UTC'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
    "SET xmlbinary = 'base64'",
    "SET xmloption = 'content'",
    "SET lc_monetary = 'C'",
    "SET standard_conforming_strings = on",
    "SET client_encoding = 'UTF8'",
    "SET search_path = pg_catalog, pg_temp",
    "SET statement_timeout = 0",
    "SET idle_in_transaction_session_timeout = 0",
    f"SET lock_timeout = {LOCK_TIMEOUT_MS}",
    "SET default_transaction_read_only = on",
]

PG_COLUMNS = """
select a.attname, format_type(a.atttypid, a.atttypmod), t.typname, t.typtype, a.atttypmod
from pg_attribute a join pg_type t on t.oid = a.atttypid
where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
order by a.attnum
"""
PG_PRIMARY_KEY = """
select a.attname
from pg_constraint c
cross join lateral unnest(c.conkey) with ordinality k(attnum, ord)
join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
where c.conrelid = %s and c.contype = 'p'
order by k.ord
"""
PG_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
    "i": "index",
    "I": "partitioned index",
    "c": "composite type",
    "t": "TOAST table",
}


def pg_column(name: str, type_text: str, typname: str, typtype: str, typmod: int) -> Column:
    """A PostgreSQL column, and how it is hashed in record mode."""
    native = typtype == "b" and typname in PG_NATIVE and not (typname == "numeric" and typmod < 0)
    return Column(
        name=name,
        type=type_text,
        base=typname,
        native=native,
        integer=typtype == "b" and typname in PG_INTEGER,
    )


def pg_row_hash(columns: Sequence[Column], mode: HashMode) -> sql.Composable:
    """The SQL of one row's 64-bit hash, the same on both sides for the same values."""
    if mode == "record":
        items = [
            sql.Identifier(c.name)
            if c.native
            else sql.SQL("{}::text").format(sql.Identifier(c.name))
            for c in columns
        ]
        return sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(items))
    row = sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    )
    if mode == "text":
        return sql.SQL("hashtextextended({}, 0)").format(row)
    return sql.SQL("('x' || left(md5(convert_to({}, 'UTF8')), 16))::bit(64)::bigint").format(row)


def _pg_table(ref: TableRef) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(ref.schema), sql.Identifier(ref.name))


def _pg_cmp(key: Sequence[Column], bound: Bound, op: str) -> sql.Composable:
    cols = key[: len(bound)]
    # Integer bounds as bigint (an index still serves int2/int4 against int8), so that a
    # range's end one past an int4 column's largest value is still a valid literal.
    values = [
        sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL("bigint" if c.integer else c.type))
        for c, v in zip(cols, bound, strict=True)
    ]
    names = [sql.Identifier(c.name) for c in cols]
    if len(cols) == 1:
        return sql.SQL("{} {} {}").format(names[0], sql.SQL(op), values[0])
    return sql.SQL("({}) {} ({})").format(
        sql.SQL(", ").join(names), sql.SQL(op), sql.SQL(", ").join(values)
    )


def pg_range_where(key: Sequence[Column], r: KeyRange) -> sql.Composable:
    """``WHERE`` condition of a key range: explicit bounds, a row comparison for a composite key."""
    parts = []
    if r.lower is not None:
        parts.append(_pg_cmp(key, r.lower, ">="))
    if r.upper is not None:
        parts.append(_pg_cmp(key, r.upper, "<"))
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


def pg_range_stats_sql(plan: TablePlan, ranges: Sequence[KeyRange], mode: HashMode) -> sql.Composed:
    """One statement: count and checksum of each range, one row per range."""
    table, row_hash = _pg_table(plan.ref), pg_row_hash(plan.columns, mode)
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}::int4, count(*), sum({}) FROM {} WHERE {}").format(
            sql.Literal(i), row_hash, table, pg_range_where(plan.key, r)
        )
        for i, r in enumerate(ranges)
    )


def _pg_key_list(key: Sequence[Column]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in key)


def _pg_key_text(key: Sequence[Column]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{}::text AS {}").format(sql.Identifier(c.name), sql.Identifier(f"kt{i}"))
        for i, c in enumerate(key)
    )


def pg_leaf_sql(
    plan: TablePlan, ranges: Sequence[tuple[KeyRange, int | None]], mode: HashMode
) -> sql.Composed:
    """One statement: range index, key, key as text and row hash of each row of the ranges."""
    table, row_hash = _pg_table(plan.ref), pg_row_hash(plan.columns, mode)
    keys, texts = _pg_key_list(plan.key), _pg_key_text(plan.key)
    branches = []
    for i, (r, limit) in enumerate(ranges):
        limit_sql = (
            sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL("")
        )
        branches.append(
            sql.SQL("(SELECT {}::int4, {}, {}, {} FROM {} WHERE {} ORDER BY {}{})").format(
                sql.Literal(i),
                keys,
                texts,
                row_hash,
                table,
                pg_range_where(plan.key, r),
                keys,
                limit_sql,
            )
        )
    return sql.SQL(" UNION ALL ").join(branches)


def pg_split_sql(plan: TablePlan, requests: Sequence[tuple[KeyRange, int, int]]) -> sql.Composed:
    """One statement: the key (as text) of every ``step``-th row of each range, in key order."""
    table, keys, texts = _pg_table(plan.ref), _pg_key_list(plan.key), _pg_key_text(plan.key)
    branches = [
        sql.SQL(
            "(SELECT {}::int4, rn, {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS rn "
            "FROM {} WHERE {}) q WHERE rn % {} = 0 AND rn < {})"
        ).format(
            sql.Literal(i),
            texts,
            keys,
            keys,
            table,
            pg_range_where(plan.key, r),
            sql.Literal(step),
            sql.Literal(rows),
        )
        for i, (r, step, rows) in enumerate(requests)
    ]
    return sql.SQL(" UNION ALL ").join(branches)


def pg_sample_sql(plan: TablePlan, percent: float, parts: int) -> sql.Composed:
    """Boundaries for the first ranges of a non-integer key: quantiles of a block sample."""
    keys, texts = _pg_key_list(plan.key), _pg_key_text(plan.key)
    return sql.SQL(
        "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS rn, count(*) OVER () AS n "
        "FROM {} TABLESAMPLE SYSTEM ({}) REPEATABLE (7)) q "
        "WHERE rn % greatest((n + {} - 1) / {}, 1) = 0 ORDER BY rn"
    ).format(
        texts,
        keys,
        keys,
        _pg_table(plan.ref),
        sql.Literal(percent),
        sql.Literal(parts),
        sql.Literal(parts),
    )


class PgSession(Session):
    def __init__(self, side: Side, dsn: str) -> None:
        self.side = side
        self.label = redact(dsn)
        self.hash_mode = "text"
        self._lock = threading.Lock()
        try:
            params = conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise InputError(f"invalid {side} DSN: {_first_line(exc)}") from exc
        extra: dict[str, Any] = {}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = CONNECT_TIMEOUT
        try:
            self.conn = psycopg.connect(dsn, autocommit=True, **extra)
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(
                f"cannot connect to the {side} database ({self.label}): {_first_line(exc)}"
            ) from exc
        except psycopg.Error as exc:
            raise InputError(f"invalid {side} DSN ({self.label}): {_first_line(exc)}") from exc
        try:
            with self._errors():
                for statement in PG_SESSION:
                    self.conn.execute(statement)
                self.version = int(self.conn.info.server_version)
                self.encoding = str(self.conn.execute("SHOW server_encoding").fetchone()[0])  # type: ignore[index]
                self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                self.conn.read_only = True
                self.conn.autocommit = False
                # The snapshot is taken by the first query of the transaction: this one.
                self.conn.execute("SELECT 1")
        except BaseException:
            self.close()
            raise

    # -- plumbing

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.QueryCanceled as exc:
            raise CommandTimeout(f"{self.side} database: {_first_line(exc)}") from exc
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(
                f"lost the {self.side} database ({self.label}): {_first_line(exc)}"
            ) from exc
        except psycopg.Error as exc:
            raise CommandFailed(f"{self.side} database: {_first_line(exc)}", returncode=1) from exc

    def _rows(self, query: sql.Composable | str, params: Sequence[Any] | None = None) -> list[Any]:
        with self._errors():
            cur = self.conn.execute(query, params)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    @staticmethod
    def hash_mode_for(source: Any, target: Any) -> tuple[HashMode, str]:
        return pg_hash_mode(source, target)

    def probe(self) -> tuple[int, str, int, int | None]:
        """Major version, encoding, and two hashes of fixed values: whether hashes compare."""
        text_hash = int(self._rows("SELECT hashtextextended('drctl reconcile', 0)")[0][0])
        record_hash = None
        if self.version >= 140000:
            record_hash = int(
                self._rows(
                    "SELECT hash_record_extended(ROW(1::int8, 'x'::text, true, "
                    "'2020-02-03'::date, 1.5::float8, '2020-02-03 04:05:06+00'::timestamptz, "
                    "12.34::numeric(6,2), '{\"a\": 1}'::jsonb), 0)"
                )[0][0]
            )
        return self.version // 10000, self.encoding, text_hash, record_hash

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.cancel_safe(timeout=5)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    # -- catalog

    def describe(self, ref: TableRef) -> TableMeta | None:
        rows = self._rows(
            "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (ref.schema, ref.name),
        )
        if not rows:
            return None
        oid, relkind = rows[0]
        columns = tuple(pg_column(*row) for row in self._rows(PG_COLUMNS, (oid,)))
        key = tuple(str(r[0]) for r in self._rows(PG_PRIMARY_KEY, (oid,)))
        return TableMeta(ref, PG_KINDS.get(str(relkind), str(relkind)), columns, key)

    def missing_schemas(self, schemas: list[str]) -> list[str]:
        found = {
            r[0]
            for r in self._rows(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)
            )
        }
        return [s for s in schemas if s not in found]

    def list_tables(self, schemas: list[str] | None, exclude: Sequence[str]) -> list[TableRef]:
        base = (
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND "
        )
        if schemas is not None:
            rows = self._rows(base + "n.nspname = ANY(%s) ORDER BY 1, 2", (schemas,))
        else:
            rows = self._rows(
                base + "n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg\\_%%' AND NOT n.nspname = ANY(%s) ORDER BY 1, 2",
                (list(exclude),),
            )
        return [TableRef(str(s), str(t)) for s, t in rows]

    def default_schema(self) -> str:
        return "public"

    # -- data

    def count(self, plan: TablePlan) -> int:
        plan = plan.on(self.side)
        query = sql.SQL("SELECT count(*) FROM {}").format(_pg_table(plan.ref))
        return int(self._rows(query)[0][0])

    def whole(self, plan: TablePlan) -> Stat:
        plan = plan.on(self.side)
        query = sql.SQL("SELECT count(*), sum({}) FROM {}").format(
            pg_row_hash(plan.columns, self.hash_mode), _pg_table(plan.ref)
        )
        count, checksum = self._rows(query)[0]
        return int(count), checksum

    def int_bounds(self, plan: TablePlan) -> tuple[int, int] | None:
        plan = plan.on(self.side)
        first = sql.Identifier(plan.key[0].name)
        query = sql.SQL("SELECT min({}), max({}) FROM {}").format(first, first, _pg_table(plan.ref))
        low, high = self._rows(query)[0]
        return None if low is None else (int(low), int(high))

    def sample_bounds(self, plan: TablePlan, parts: int) -> list[Bound]:
        plan = plan.on(self.side)
        pages = self._rows(
            "SELECT coalesce(sum(pg_relation_size(relid)), 0) / current_setting('block_size')::int8"
            " FROM pg_partition_tree((SELECT c.oid FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s))",
            (plan.ref.schema, plan.ref.name),
        )[0][0]
        percent = min(100.0, 100.0 * SAMPLE_PAGES / max(int(pages), 1))
        rows = self._rows(pg_sample_sql(plan, percent, parts))
        return [tuple(str(v) for v in row) for row in rows]

    def range_stats(self, plan: TablePlan, ranges: Sequence[KeyRange]) -> list[Stat]:
        plan = plan.on(self.side)
        rows = self._rows(pg_range_stats_sql(plan, ranges, self.hash_mode))
        stats: list[Stat] = [(0, None)] * len(ranges)
        for index, count, checksum in rows:
            stats[index] = (int(count), checksum)
        return stats

    def split_points(
        self, plan: TablePlan, requests: Sequence[tuple[KeyRange, int, int]]
    ) -> list[list[Bound]]:
        plan = plan.on(self.side)
        found: list[list[tuple[int, Bound]]] = [[] for _ in requests]
        for row in self._rows(pg_split_sql(plan, requests)):
            found[row[0]].append((int(row[1]), tuple(str(v) for v in row[2:])))
        return [[bound for _, bound in sorted(points)] for points in found]

    def leaf_rows(
        self, plan: TablePlan, ranges: Sequence[tuple[KeyRange, int | None]]
    ) -> list[LeafRow]:
        plan = plan.on(self.side)
        n = len(plan.key)
        return [
            (row[0], tuple(str(v) for v in row[1 + n : 1 + 2 * n]), tuple(row[1 : 1 + n]), row[-1])
            for row in self._rows(pg_leaf_sql(plan, ranges, self.hash_mode))
        ]


def pg_hash_mode(
    source: tuple[int, str, int, int | None], target: tuple[int, str, int, int | None]
) -> tuple[HashMode, str]:
    """How rows are hashed, from both sides' probes, and why."""
    (s_major, s_enc, s_text, s_rec), (t_major, t_enc, t_text, t_rec) = source, target
    if s_enc != t_enc:
        return "md5", f"server encodings differ ({s_enc} vs {t_enc}): rows hashed with md5 of UTF-8"
    if s_text != t_text:
        return "md5", "the servers' text hashes differ: rows hashed with md5"
    if s_major != t_major:
        return "text", f"major versions differ ({s_major} vs {t_major}): rows hashed by their text"
    if s_rec is None or t_rec is None or s_rec != t_rec:
        return "text", "record hashes not available or not comparable: rows hashed by their text"
    return "record", ""


# ---------------------------------------------------------------------------------- the pair

T = TypeVar("T")
U = TypeVar("U")


class Pair:
    """Both sides, and the two threads that query them at once."""

    def __init__(self, source: Session, target: Session, pool: ThreadPoolExecutor) -> None:
        self.source = source
        self.target = target
        self._pool = pool

    def both(
        self, on_source: Callable[[Session], T], on_target: Callable[[Session], U]
    ) -> tuple[T, U]:
        """Run one query on each side at once; if either fails, cancel the other."""
        futures: list[Future[Any]] = [
            self._pool.submit(on_source, self.source),
            self._pool.submit(on_target, self.target),
        ]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C while waiting
            self._cancel(futures, [self.source, self.target])
            raise
        failed = [f.exception() for f in futures if f in done and f.exception() is not None]
        if failed:
            self._cancel(futures, [self.source, self.target])
            raise failed[0]  # type: ignore[misc]
        return futures[0].result(), futures[1].result()

    def same(self, fn: Callable[[Session], T]) -> tuple[T, T]:
        return self.both(fn, fn)

    @staticmethod
    def _cancel(futures: list[Future[Any]], sessions: list[Session]) -> None:
        for future, session in zip(futures, sessions, strict=True):
            if not future.done():
                session.cancel()
        wait(futures)


@contextlib.contextmanager
def open_pair(engine: Engine, source_dsn: str, target_dsn: str) -> Iterator[Pair]:
    """Connect to both sides at once; errors name the side."""
    opener: Callable[[Side, str], Session]
    if engine == "postgresql":
        opener = PgSession
    elif engine == "oracle":
        from verify.reconcile_oracle import OracleSession

        opener = OracleSession
    else:
        raise InputError(f"engine must be postgresql or oracle, not {engine!r}")
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="reconcile") as pool:
        futures = {
            "source": pool.submit(opener, "source", source_dsn),
            "target": pool.submit(opener, "target", target_dsn),
        }
        wait(list(futures.values()))
        errors = [f.exception() for f in futures.values() if f.exception() is not None]
        sessions = [f.result() for f in futures.values() if f.exception() is None]
        if errors:
            for session in sessions:
                session.close()
            if len(errors) == 2 and all(isinstance(e, ConnectionFailed) for e in errors):
                raise ConnectionFailed(f"{errors[0]}; and {errors[1]}") from errors[0]
            raise errors[0]  # type: ignore[misc]
        pair = Pair(sessions[0], sessions[1], pool)
        try:
            yield pair
        finally:
            for session in sessions:
                session.close()


# ---------------------------------------------------------------------------------- planning


def plan_tables(
    pair: Pair,
    tables: list[str] | None,
    schemas: list[str] | None,
    exclude_schemas: Sequence[str],
    fold: Callable[[str], str],
) -> list[TablePlan]:
    """The tables to compare, checked on both sides. Every problem is reported at once."""
    problems: list[str] = []
    only_on: dict[TableRef, Side] = {}
    if schemas is not None and not schemas:
        schemas = None
    if schemas:
        missing = pair.same(lambda s: s.missing_schemas(list(schemas)))
        for side, gone in zip(("source", "target"), missing, strict=True):
            problems += [f"schema {name!r} does not exist in the {side}" for name in gone]
        if problems:
            raise InputError("\n".join(problems))
    named: list[tuple[TableRef, TableRef]] = []  # (source's table, target's table)
    if tables:
        defaults = pair.source.default_schema(), pair.target.default_schema()
        for text in tables:
            parsed = parse_table_name(text, fold=fold)
            if isinstance(parsed, str):
                problems.append(parsed)
            elif parsed.schema:
                named.append((parsed, parsed))
            elif not schemas:
                # Each side's own default schema (Oracle: the user's; PostgreSQL: public).
                named.append(
                    (TableRef(defaults[0], parsed.name), TableRef(defaults[1], parsed.name))
                )
            else:
                for schema in schemas:
                    if pair.source.describe(TableRef(schema, parsed.name)) is not None:
                        named.append((TableRef(schema, parsed.name),) * 2)
                        break
                else:
                    problems.append(
                        f"table {parsed.name} does not exist in the source "
                        f"({pair.source.label}; searched schema {', '.join(schemas)})"
                    )
    else:
        listed_source, listed_target = pair.same(lambda s: s.list_tables(schemas, exclude_schemas))
        in_source, in_target = set(listed_source), set(listed_target)
        named = [(r, r) for r in sorted(in_source | in_target, key=lambda r: (r.schema, r.name))]
        only_on = {r: "source" for r in in_source - in_target}
        only_on.update({r: "target" for r in in_target - in_source})
        if not named:
            where = f"schema(s) {', '.join(schemas)}" if schemas else "any schema"
            problems.append(f"no tables to compare: none in {where} on either side")
    plans: list[TablePlan] = []
    seen: set[tuple[TableRef, TableRef]] = set()
    for ref, target_ref in named:
        if (ref, target_ref) in seen:
            continue
        seen.add((ref, target_ref))
        if ref in only_on:
            present: Side = only_on[ref]
            absent: Side = "target" if present == "source" else "source"
            plans.append(
                TablePlan(ref, (), (), f"the table does not exist in the {absent}", absent)
            )
            continue
        source_meta, target_meta = pair.both(
            lambda s, ref=ref: s.describe(ref),  # type: ignore[misc]
            lambda s, ref=target_ref: s.describe(ref),  # type: ignore[misc]
        )
        for side, meta, session, side_ref in (
            ("source", source_meta, pair.source, ref),
            ("target", target_meta, pair.target, target_ref),
        ):
            if meta is None:
                problems.append(
                    f"table {side_ref.display} does not exist in the {side} ({session.label})"
                )
            elif meta.kind not in ("table", "partitioned table"):
                problems.append(f"{side_ref.display} in the {side} is a {meta.kind}, not a table")
        if source_meta is None or target_meta is None:
            continue
        plan = agree(source_meta, target_meta)
        if isinstance(plan, str):
            problems.append(plan)
        else:
            plans.append(plan)
    if problems:
        raise InputError("\n".join(problems))
    return plans


def agree(source: TableMeta, target: TableMeta) -> TablePlan | str:
    """The plan both sides' descriptions allow, or why the table cannot be compared."""
    name = source.ref.display
    s_cols = {c.name: c for c in source.columns}
    t_cols = {c.name: c for c in target.columns}
    only_source = [c for c in s_cols if c not in t_cols]
    only_target = [c for c in t_cols if c not in s_cols]
    types = [
        f"{c} (source {s_cols[c].type}, target {t_cols[c].type})"
        for c in s_cols
        if c in t_cols and s_cols[c].type != t_cols[c].type
    ]
    if only_source or only_target or types:
        parts = []
        if only_source:
            parts.append("only in the source: " + ", ".join(only_source))
        if only_target:
            parts.append("only in the target: " + ", ".join(only_target))
        if types:
            parts.append("different types: " + ", ".join(types))
        return f"table {name}: the columns differ: " + "; ".join(parts)
    if not source.columns:
        return f"table {name} has no columns to compare"
    columns = source.columns  # the source's order, on both sides
    if not source.key and not target.key:
        return TablePlan(
            source.ref,
            columns,
            (),
            "no primary key: compared by row count and whole-table checksum; "
            "differing rows cannot be named",
            target_ref=target.ref,
        )
    if source.key != target.key:
        return TablePlan(
            source.ref,
            columns,
            (),
            f"the primary keys differ (source: {', '.join(source.key) or 'none'}; target: "
            f"{', '.join(target.key) or 'none'}): compared by row count and whole-table checksum",
            target_ref=target.ref,
        )
    return TablePlan(
        source.ref, columns, tuple(s_cols[k] for k in source.key), target_ref=target.ref
    )


# ---------------------------------------------------------------------------------- comparing


def _differ(a: Stat, b: Stat) -> bool:
    return a[0] != b[0] or (a[1] or 0) != (b[1] or 0)


INT8_MAX = 2**63 - 1


def _int_split(lo: int, hi: int, parts: int) -> list[KeyRange]:
    """[lo, hi) in at most ``parts`` ranges of equal width, on the leading key column. The last
    end, one past the largest key, is left open when it is past the largest bigint."""
    parts = max(1, min(parts, hi - lo))
    width = math.ceil((hi - lo) / parts)
    edges = [*range(lo, hi, width), hi]
    return [
        KeyRange((str(a),), None if b == hi and b > INT8_MAX else (str(b),), a, b)
        for a, b in itertools.pairwise(edges)
    ]


def _between(r: KeyRange, points: list[Bound]) -> list[KeyRange]:
    edges: list[Bound | None] = [r.lower, *points, r.upper]
    return [
        KeyRange(a, b) for a, b in itertools.pairwise(edges) if a is None or b is None or a != b
    ]


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Diffs:
    """Differences found in one table, at most ``limit`` of them."""

    def __init__(self, plan: TablePlan, limit: int) -> None:
        self.plan = plan
        self.limit = limit
        self.changed: dict[Bound, tuple[object, ...]] = {}
        self.only_source: dict[Bound, tuple[tuple[object, ...], Any]] = {}
        self.only_target: dict[Bound, tuple[tuple[object, ...], Any]] = {}
        self.truncated = False

    @property
    def room(self) -> int:
        return self.limit - len(self.changed) - len(self.only_source) - len(self.only_target)

    def add_rows(self, source: list[LeafRow], target: list[LeafRow]) -> None:
        # A key normally falls in the same range on both sides; matching across the whole batch
        # (and ``finish`` across batches) also covers sides that order text keys differently.
        s_rows = {text: (key, h) for _, text, key, h in source}
        t_rows = {text: (key, h) for _, text, key, h in target}
        for text, (key, h) in s_rows.items():
            other = t_rows.get(text)
            if other is None:
                self._put(self.only_source, text, key, h)
            elif other[1] != h:
                self._put_changed(text, key)
        for text, (key, h) in t_rows.items():
            if text not in s_rows:
                self._put(self.only_target, text, key, h)

    def _put(self, into: dict[Bound, Any], text: Bound, key: tuple[object, ...], h: Any) -> None:
        if self.room > 0:
            into[text] = (key, h)
        else:
            self.truncated = True

    def _put_changed(self, text: Bound, key: tuple[object, ...]) -> None:
        if self.room > 0:
            self.changed[text] = key
        else:
            self.truncated = True

    def finish(self) -> list[RowDiff]:
        for text in [t for t in self.only_source if t in self.only_target]:
            (key, s_hash), (_, t_hash) = self.only_source.pop(text), self.only_target.pop(text)
            if s_hash != t_hash:
                self.changed[text] = key
        names = tuple(c.name for c in self.plan.key)
        table = self.plan.display
        found = [
            *(RowDiff(table, key, "changed", names) for key in self.changed.values()),
            *(RowDiff(table, k, "missing_in_target", names) for k, _ in self.only_source.values()),
            *(RowDiff(table, k, "missing_in_source", names) for k, _ in self.only_target.values()),
        ]
        try:
            found.sort(key=lambda d: d.key)
        except TypeError:
            found.sort(key=lambda d: tuple(str(v) for v in d.key))
        return found


def compare_table(pair: Pair, plan: TablePlan, max_diffs: int) -> TableResult:
    started = time.monotonic()
    names = tuple(c.name for c in plan.key)
    if plan.missing_on is not None:
        present = pair.target if plan.missing_on == "source" else pair.source
        rows = present.count(plan)
        source_rows, target_rows = (rows, 0) if plan.missing_on == "target" else (0, rows)
        return TableResult(
            plan.display,
            False,
            source_rows,
            target_rows,
            "whole-table",
            [],
            plan.note,
            seconds=time.monotonic() - started,
        )
    if not plan.key:
        s_stat, t_stat = pair.same(lambda s: s.whole(plan))
        return TableResult(
            plan.display,
            not _differ(s_stat, t_stat),
            s_stat[0],
            t_stat[0],
            "whole-table",
            [],
            plan.note,
            seconds=time.monotonic() - started,
        )

    # Level 0: the whole key space in up to FANOUT explicit ranges.
    ranges: list[KeyRange]
    if plan.key[0].integer:
        s_bounds, t_bounds = pair.same(lambda s: s.int_bounds(plan))
        known = [b for b in (s_bounds, t_bounds) if b is not None]
        if known:
            lo = min(b[0] for b in known)
            hi = max(b[1] for b in known) + 1
            ranges = _int_split(lo, hi, FANOUT)
        else:
            ranges = [KeyRange()]
    else:
        ranges = _between(KeyRange(), pair.source.sample_bounds(plan, FANOUT))
    differing: list[tuple[KeyRange, Stat, Stat]] = []
    source_rows = target_rows = 0
    for batch in _batches(ranges, BATCH_RANGES):
        s_stats, t_stats = pair.same(lambda s, batch=batch: s.range_stats(plan, batch))  # type: ignore[misc]
        for r, s_stat, t_stat in zip(batch, s_stats, t_stats, strict=True):
            source_rows += s_stat[0]
            target_rows += t_stat[0]
            if _differ(s_stat, t_stat):
                differing.append((r, s_stat, t_stat))

    checksums_differ = bool(differing)
    diffs = _Diffs(plan, max_diffs)
    if differing and max_diffs == 0:
        diffs.truncated = True
    while differing and diffs.room > 0:
        if len(differing) > diffs.room:
            differing, diffs.truncated = differing[: diffs.room], True
        leaves: list[tuple[KeyRange, Stat, Stat]] = []
        to_split: list[tuple[KeyRange, Stat, Stat]] = []
        for item in differing:
            _, (sc, _), (tc, _) = item
            (leaves if max(sc, tc) <= LEAF_ROWS or min(sc, tc) == 0 else to_split).append(item)
        _match_leaves(pair, plan, leaves, diffs)
        differing = _split_level(pair, plan, to_split, diffs) if diffs.room > 0 else []
        if to_split and diffs.room <= 0:
            diffs.truncated = True
    found = diffs.finish()
    truncated = diffs.truncated
    notes = [plan.note] if plan.note else []
    if truncated:
        notes.append(
            f"stopped after {len(found)} differences (max_diffs {max_diffs}): there may be more"
        )
    elif checksums_differ and not found:
        notes.append("checksums differ but no differing row was located")
    note = "; ".join(notes)
    identical = not checksums_differ
    return TableResult(
        plan.display,
        identical,
        source_rows,
        target_rows,
        "keyed",
        found,
        note,
        names,
        truncated,
        time.monotonic() - started,
    )


def _match_leaves(
    pair: Pair, plan: TablePlan, leaves: list[tuple[KeyRange, Stat, Stat]], diffs: _Diffs
) -> None:
    """Fetch and match the rows of small differing ranges, a bounded batch at a time."""
    batch: list[tuple[KeyRange, Stat, Stat]] = []
    rows = 0

    def flush() -> None:
        nonlocal rows
        if not batch or diffs.room <= 0:
            if batch:
                diffs.truncated = True
            batch.clear()
            rows = 0
            return
        room = diffs.room
        # A range empty on one side: the other side's rows are all differences; fetch at most
        # as many as can still be listed.
        s_req = [(r, room if tc == 0 else None) for r, (sc, _), (tc, _) in batch]
        t_req = [(r, room if sc == 0 else None) for r, (sc, _), (tc, _) in batch]
        for (_, (sc, _), (tc, _)), (_, s_limit), (_, t_limit) in zip(
            batch, s_req, t_req, strict=True
        ):
            if (s_limit is not None and sc > s_limit) or (t_limit is not None and tc > t_limit):
                diffs.truncated = True
        s_rows, t_rows = pair.both(
            lambda s: s.leaf_rows(plan, s_req), lambda s: s.leaf_rows(plan, t_req)
        )
        diffs.add_rows(s_rows, t_rows)
        batch.clear()
        rows = 0

    for item in leaves:
        _, (sc, _), (tc, _) = item
        size = min(max(sc, tc), diffs.room) if min(sc, tc) == 0 else max(sc, tc)
        if batch and (rows + size > LEAF_BATCH_ROWS or len(batch) >= BATCH_RANGES):
            flush()
        batch.append(item)
        rows += size
    flush()


def _split_level(
    pair: Pair, plan: TablePlan, to_split: list[tuple[KeyRange, Stat, Stat]], diffs: _Diffs
) -> list[tuple[KeyRange, Stat, Stat]]:
    """Split each differing range into parts of about half a leaf (at most FANOUT of them);
    return the sub-ranges that still differ."""
    differing: list[tuple[KeyRange, Stat, Stat]] = []
    explored = 0
    # A handful of parents at a time, so that the sub-ranges held stay few.
    for parents in _batches(to_split, max(1, BATCH_RANGES // FANOUT) * 4):
        children: list[KeyRange] = []
        s_requests: list[tuple[int, KeyRange, int, int]] = []
        t_requests: list[tuple[int, KeyRange, int, int]] = []
        slots: list[list[KeyRange]] = []
        for index, (r, (sc, _), (tc, _)) in enumerate(parents):
            slots.append([])
            rows = max(sc, tc)
            parts = min(FANOUT, max(2, math.ceil(2 * rows / LEAF_ROWS)))
            if r.lo is not None and r.hi is not None and r.hi - r.lo >= 2:
                slots[index] = _int_split(r.lo, r.hi, parts)
                continue
            step = max(1, math.ceil(rows / parts))
            (s_requests if sc >= tc else t_requests).append((index, r, step, rows))
        if s_requests or t_requests:
            s_asks = [q[1:] for q in s_requests]
            t_asks = [q[1:] for q in t_requests]
            s_points, t_points = pair.both(
                lambda s, asks=s_asks: s.split_points(plan, asks) if asks else [],  # type: ignore[misc]
                lambda s, asks=t_asks: s.split_points(plan, asks) if asks else [],  # type: ignore[misc]
            )
            for requests, points in ((s_requests, s_points), (t_requests, t_points)):
                for (index, r, _, _), found in zip(requests, points, strict=True):
                    slots[index] = _between(r, found)
        for slot in slots:
            children += slot
        for batch in _batches(children, BATCH_RANGES):
            s_stats, t_stats = pair.same(lambda s, batch=batch: s.range_stats(plan, batch))  # type: ignore[misc]
            for r, s_stat, t_stat in zip(batch, s_stats, t_stats, strict=True):
                if _differ(s_stat, t_stat):
                    differing.append((r, s_stat, t_stat))
        explored += len(parents)
        if len(differing) >= diffs.room and explored < len(to_split):
            # Each differing range holds a difference: these are already more than can be
            # listed, and the parents left unexplored hold more.
            diffs.truncated = True
            break
    return differing


# ---------------------------------------------------------------------------------- entry point


def reconcile(
    source_dsn: str,
    target_dsn: str,
    *,
    tables: list[str] | None = None,
    schemas: list[str] | None = None,
    engine: Engine = "postgresql",
    max_diffs: int = 1000,
    exclude_schemas: Sequence[str] = ("drctl",),
) -> ReconcileReport:
    """Compare tables between two databases of the same engine, read-only on both.

    ``tables``: names (``schema.table``, or ``table`` looked up in ``schemas`` in order, else in
    the default schema); ``schemas`` alone: every table in them; neither: every table outside the
    system schemas and ``exclude_schemas``. In schema mode a table present on one side only is a
    difference; a named table missing on either side is an error.

    Raises ``ConnectionFailed`` (which side, DSN without password) when a side cannot be reached,
    ``InputError`` for a missing table or schema or columns that differ (every problem at once),
    and ``CommandFailed`` when a query fails (e.g. no privilege to read a table).
    """
    if max_diffs < 0:
        raise InputError(f"max_diffs must be 0 or more, not {max_diffs}")
    started = time.monotonic()
    fold: Callable[[str], str] = str.upper if engine == "oracle" else str.lower
    with open_pair(engine, source_dsn, target_dsn) as pair:
        s_probe, t_probe = pair.same(lambda s: s.probe())
        mode, why = pair.source.hash_mode_for(s_probe, t_probe)
        notes = [why] if why else []
        pair.source.hash_mode = pair.target.hash_mode = mode
        plans = plan_tables(pair, tables, schemas, exclude_schemas, fold)
        results = [compare_table(pair, plan, max_diffs) for plan in plans]
        source_label, target_label = pair.source.label, pair.target.label
    return ReconcileReport(
        identical=all(r.identical for r in results),
        tables=results,
        seconds=time.monotonic() - started,
        engine=engine,
        source=source_label,
        target=target_label,
        hash_mode=mode,
        notes=notes,
    )
