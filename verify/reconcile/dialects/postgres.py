"""The PostgreSQL dialect of table reconciliation: its SQL (``psycopg.sql`` composition) and
``PostgresSession``, whose connection comes from the executors (``open_snapshot``).

What a row hash covers:

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
sorts to disk. A table without a primary key is compared by its count and whole-table checksum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from drills.executors.postgres import SnapshotConnection, open_snapshot
from verify.reconcile.model import (
    Bound,
    Column,
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

SAMPLE_PAGES = 128  # pages TABLESAMPLE reads to place the first boundaries of a non-integer key
LOCK_TIMEOUT_MS = 30_000  # a table locked by DDL fails the comparison rather than hang it
APPLICATION_NAME = "drctl reconcile"


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


class PostgresSession:
    """One side of a PostgreSQL comparison: a read-only snapshot, and the SQL above."""

    engine: Engine = "postgresql"

    def __init__(self, side: Side, dsn: str, *, host: str | None = None) -> None:
        self.side: Side = side
        self.hash_mode: HashMode = "text"
        self.conn: SnapshotConnection = open_snapshot(
            dsn, application_name=APPLICATION_NAME, host=host, side=side, setup=PG_SESSION
        )
        self.label = self.conn.label
        try:
            self.version = self.conn.server_version
            self.encoding = str(self.rows("SHOW server_encoding")[0][0])
        except BaseException:
            self.close()
            raise

    def rows(
        self, query: sql.Composable | str, params: Sequence[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        return self.conn.rows(query, params)

    @staticmethod
    def fold(name: str) -> str:
        return name.lower()

    @staticmethod
    def hash_mode_for(source: Any, target: Any) -> tuple[HashMode, str]:
        return pg_hash_mode(source, target)

    def probe(self) -> tuple[int, str, int, int | None]:
        """Major version, encoding, and two hashes of fixed values: whether hashes compare."""
        text_hash = int(self.rows("SELECT hashtextextended('drctl reconcile', 0)")[0][0])
        record_hash = None
        if self.version >= 140000:
            record_hash = int(
                self.rows(
                    "SELECT hash_record_extended(ROW(1::int8, 'x'::text, true, "
                    "'2020-02-03'::date, 1.5::float8, '2020-02-03 04:05:06+00'::timestamptz, "
                    "12.34::numeric(6,2), '{\"a\": 1}'::jsonb), 0)"
                )[0][0]
            )
        return self.version // 10000, self.encoding, text_hash, record_hash

    def cancel(self) -> None:
        self.conn.cancel()

    def close(self) -> None:
        self.conn.close()

    # -- catalog

    def describe(self, ref: TableRef) -> TableMeta | None:
        rows = self.rows(
            "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (ref.schema, ref.name),
        )
        if not rows:
            return None
        oid, relkind = rows[0]
        columns = tuple(pg_column(*row) for row in self.rows(PG_COLUMNS, (oid,)))
        key = tuple(str(r[0]) for r in self.rows(PG_PRIMARY_KEY, (oid,)))
        return TableMeta(ref, PG_KINDS.get(str(relkind), str(relkind)), columns, key)

    def missing_schemas(self, schemas: list[str]) -> list[str]:
        found = {
            r[0]
            for r in self.rows(
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
            rows = self.rows(base + "n.nspname = ANY(%s) ORDER BY 1, 2", (schemas,))
        else:
            rows = self.rows(
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
        return int(self.rows(query)[0][0])

    def whole(self, plan: TablePlan) -> Stat:
        plan = plan.on(self.side)
        query = sql.SQL("SELECT count(*), sum({}) FROM {}").format(
            pg_row_hash(plan.columns, self.hash_mode), _pg_table(plan.ref)
        )
        count, checksum = self.rows(query)[0]
        return int(count), checksum

    def int_bounds(self, plan: TablePlan) -> tuple[int, int] | None:
        plan = plan.on(self.side)
        first = sql.Identifier(plan.key[0].name)
        query = sql.SQL("SELECT min({}), max({}) FROM {}").format(first, first, _pg_table(plan.ref))
        low, high = self.rows(query)[0]
        return None if low is None else (int(low), int(high))

    def sample_bounds(self, plan: TablePlan, parts: int) -> list[Bound]:
        plan = plan.on(self.side)
        pages = self.rows(
            "SELECT coalesce(sum(pg_relation_size(relid)), 0) / current_setting('block_size')::int8"
            " FROM pg_partition_tree((SELECT c.oid FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s))",
            (plan.ref.schema, plan.ref.name),
        )[0][0]
        percent = min(100.0, 100.0 * SAMPLE_PAGES / max(int(pages), 1))
        rows = self.rows(pg_sample_sql(plan, percent, parts))
        return [tuple(str(v) for v in row) for row in rows]

    def range_stats(self, plan: TablePlan, ranges: Sequence[KeyRange]) -> list[Stat]:
        plan = plan.on(self.side)
        rows = self.rows(pg_range_stats_sql(plan, ranges, self.hash_mode))
        stats: list[Stat] = [(0, None)] * len(ranges)
        for index, count, checksum in rows:
            stats[index] = (int(count), checksum)
        return stats

    def split_points(
        self, plan: TablePlan, requests: Sequence[tuple[KeyRange, int, int]]
    ) -> list[list[Bound]]:
        plan = plan.on(self.side)
        found: list[list[tuple[int, Bound]]] = [[] for _ in requests]
        for row in self.rows(pg_split_sql(plan, requests)):
            found[row[0]].append((int(row[1]), tuple(str(v) for v in row[2:])))
        return [[bound for _, bound in sorted(points)] for points in found]

    def leaf_rows(
        self, plan: TablePlan, ranges: Sequence[tuple[KeyRange, int | None]]
    ) -> list[LeafRow]:
        plan = plan.on(self.side)
        n = len(plan.key)
        return [
            (row[0], tuple(str(v) for v in row[1 + n : 1 + 2 * n]), tuple(row[1 : 1 + n]), row[-1])
            for row in self.rows(pg_leaf_sql(plan, ranges, self.hash_mode))
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
