"""The Oracle SQL of table reconciliation, as pure functions of tables and columns (no I/O).

The algorithm is the one of :mod:`verify.reconcile.engine`; this module only says it in Oracle's
SQL (the session that runs it is :mod:`verify.reconcile.dialects.oracle`):

- Row hash: the row is first normalised into one string, column by column, each value as
  ``<byte length>:<text>`` (``~`` for NULL, so that NULL, '' and a value containing the
  separator cannot be confused), numbers with ``TO_CHAR(c, 'TM9')`` and ``.`` as the decimal
  point, dates and timestamps in ISO order with the sign of the year, ``TIMESTAMP WITH [LOCAL]
  TIME ZONE`` converted to UTC first (``SYS_EXTRACT_UTC``), RAW as hex. Two ``ORA_HASH`` calls
  with different seeds (``ORA_HASH(s, 4294967295, 0) * 4294967296 + ORA_HASH(s, 4294967295, 1)``)
  give a 64-bit row hash; ranges sum them in a NUMBER, which holds the sum exactly.
- A row's string must fit a ``VARCHAR2`` (4000 bytes unless ``MAX_STRING_SIZE = EXTENDED``): when
  the declared widths could exceed ``ROW_STRING_LIMIT``, wide character columns are replaced by
  their own 64-bit ``ORA_HASH`` digest. ``NCHAR``/``NVARCHAR2`` are always digested (their
  national character set is hashed as is). ``CLOB``/``BLOB``/``NCLOB`` are digested with
  ``DBMS_CRYPTO.HASH(c, 2)`` (MD5), which needs ``GRANT EXECUTE ON SYS.DBMS_CRYPTO``. ``LONG``,
  ``LONG RAW``, ``BFILE``, ``XMLTYPE`` and object types are refused with a clear error.
- When the two databases' character sets differ (e.g. ZHS16GBK against AL32UTF8 after a
  migration), character values are hashed as ``CONVERT(c, 'AL32UTF8')`` on both sides.
- Key ranges: Oracle has no row-value ``>=``, so a composite key bound is spelled out
  lexicographically: ``(k1 > :a OR (k1 = :a AND k2 >= :b))``. Bounds travel as the key's
  normalised text and are converted back (``TO_NUMBER``, ``TO_DATE``, ``TO_TIMESTAMP``,
  ``HEXTORAW``) in the statement.
- Metadata: ``ALL_TAB_COLUMNS`` (columns, types), ``ALL_CONSTRAINTS``/``ALL_CONS_COLUMNS``
  (primary key, ``CONSTRAINT_TYPE = 'P'``), ``ALL_TABLES``/``ALL_OBJECTS`` (what a name is),
  ``NLS_DATABASE_PARAMETERS`` (character sets). The first ranges of a non-integer key come
  from ``SAMPLE BLOCK``.
- Session: ``NLS_NUMERIC_CHARACTERS``, date and timestamp formats, ``TIME_ZONE = '+00:00'`` and
  ``NLS_SORT``/``NLS_COMP = BINARY`` (so text key ranges follow the index order) are pinned, and
  every query runs in one ``SET TRANSACTION READ ONLY`` transaction: one snapshot, no writes.

Sources: Oracle Database SQL Language Reference (ORA_HASH, TO_CHAR number and datetime format
models, SYS_EXTRACT_UTC, CONVERT, sample_clause, SET TRANSACTION), Oracle Database Reference
(ALL_TAB_COLUMNS, ALL_CONSTRAINTS, ALL_CONS_COLUMNS, ALL_TABLES, NLS_DATABASE_PARAMETERS), PL/SQL
Packages and Types Reference (DBMS_CRYPTO.HASH), python-oracledb documentation (connect, output
type handlers, Connection.cancel). No Oracle database runs where this was written: the SQL text is
tested as pure functions, and a docker-marked test runs it against Oracle Database Free where a
Docker engine answers (tests/test_reconcile.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drills.model.errors import InputError
from verify.reconcile.model import Bound, Column, KeyRange, TableRef

ROW_STRING_LIMIT = 3900  # bytes a row's normalised string may take (VARCHAR2 in SQL: 4000)
WIDE_COLUMN = 200  # bytes above which a character column is digested when rows are too wide

HASH64 = "(ORA_HASH({0}, 4294967295, 0) * 4294967296 + ORA_HASH({0}, 4294967295, 1))"
NUMBER_TEXT = "TO_CHAR({}, 'TM9', 'NLS_NUMERIC_CHARACTERS=''.,''')"
DATE_FORMAT = "SYYYY-MM-DD HH24:MI:SS"  # in row strings: the sign keeps BC dates apart
TIMESTAMP_FORMAT = "SYYYY-MM-DD HH24:MI:SS.FF9"
KEY_DATE_FORMAT = "YYYY-MM-DD HH24:MI:SS"  # key bounds, read back by TO_DATE/TO_TIMESTAMP
KEY_TIMESTAMP_FORMAT = "YYYY-MM-DD HH24:MI:SS.FF9"

ORACLE_SESSION = [
    "ALTER SESSION SET NLS_NUMERIC_CHARACTERS = '.,'",
    f"ALTER SESSION SET NLS_DATE_FORMAT = '{DATE_FORMAT}'",
    f"ALTER SESSION SET NLS_TIMESTAMP_FORMAT = '{TIMESTAMP_FORMAT}'",
    f"ALTER SESSION SET NLS_TIMESTAMP_TZ_FORMAT = '{TIMESTAMP_FORMAT} TZH:TZM'",
    "ALTER SESSION SET TIME_ZONE = '+00:00'",
    "ALTER SESSION SET NLS_SORT = BINARY",
    "ALTER SESSION SET NLS_COMP = BINARY",
]

ORACLE_COLUMNS = """
SELECT COLUMN_NAME, DATA_TYPE, DATA_LENGTH, DATA_PRECISION, DATA_SCALE, CHAR_LENGTH, CHAR_USED
FROM ALL_TAB_COLUMNS WHERE OWNER = :owner AND TABLE_NAME = :name ORDER BY COLUMN_ID
"""
ORACLE_PRIMARY_KEY = """
SELECT cc.COLUMN_NAME
FROM ALL_CONSTRAINTS c
JOIN ALL_CONS_COLUMNS cc
  ON cc.OWNER = c.OWNER AND cc.CONSTRAINT_NAME = c.CONSTRAINT_NAME AND cc.TABLE_NAME = c.TABLE_NAME
WHERE c.OWNER = :owner AND c.TABLE_NAME = :name AND c.CONSTRAINT_TYPE = 'P'
ORDER BY cc.POSITION
"""
ORACLE_KIND = """
SELECT CASE WHEN EXISTS (SELECT 1 FROM ALL_TABLES WHERE OWNER = :owner AND TABLE_NAME = :name)
            THEN 'TABLE'
            ELSE (SELECT MIN(OBJECT_TYPE) FROM ALL_OBJECTS WHERE OWNER = :owner
                  AND OBJECT_NAME = :name AND SUBOBJECT_NAME IS NULL) END
FROM DUAL
"""
ORACLE_TABLES = """
SELECT OWNER, TABLE_NAME FROM ALL_TABLES
WHERE NESTED = 'NO' AND SECONDARY = 'N' AND TEMPORARY = 'N' AND DROPPED = 'NO'
  AND (IOT_TYPE IS NULL OR IOT_TYPE = 'IOT') AND {where}
ORDER BY OWNER, TABLE_NAME
"""
ORACLE_PROBE = """
SELECT ORA_HASH('drctl reconcile', 4294967295, 0),
       (SELECT VALUE FROM NLS_DATABASE_PARAMETERS WHERE PARAMETER = 'NLS_CHARACTERSET'),
       (SELECT VALUE FROM NLS_DATABASE_PARAMETERS WHERE PARAMETER = 'NLS_NCHAR_CHARACTERSET')
FROM DUAL
"""

CHARACTER = {"CHAR", "VARCHAR2", "VARCHAR"}
NATIONAL = {"NCHAR", "NVARCHAR2"}
LOBS = {"CLOB", "BLOB", "NCLOB"}
NUMERIC = {"NUMBER", "FLOAT", "BINARY_FLOAT", "BINARY_DOUBLE", "INTEGER"}
UNSUPPORTED = {"LONG", "LONG RAW", "BFILE", "XMLTYPE", "ANYDATA", "SDO_GEOMETRY"}


# ---------------------------------------------------------------------------------- pure SQL


def quote(name: str) -> str:
    """An Oracle identifier, quoted (names are stored as written: unquoted ones upper case)."""
    return '"' + name.replace('"', '""') + '"'


def table_sql(ref: TableRef) -> str:
    return f"{quote(ref.schema)}.{quote(ref.name)}"


def oracle_column(
    name: str,
    data_type: str,
    data_length: int | None,
    precision: int | None,
    scale: int | None,
    char_length: int | None,
    char_used: str | None,
) -> Column:
    """A column from ALL_TAB_COLUMNS: its type as compared between sides, and its width."""
    base = data_type
    if data_type == "NUMBER":
        if precision is not None:
            shown = f"NUMBER({precision},{scale or 0})"
        elif scale is not None:
            shown = f"NUMBER(*,{scale})"
        else:
            shown = "NUMBER"
    elif data_type == "FLOAT":
        shown = f"FLOAT({precision})" if precision is not None else "FLOAT"
    elif data_type in CHARACTER | NATIONAL:
        unit = "CHAR" if char_used == "C" else "BYTE"
        size = char_length if char_used == "C" else data_length
        shown = f"{data_type}({size} {unit})"
    elif data_type == "RAW":
        shown = f"RAW({data_length})"
    else:
        shown = data_type
    width = {
        "DATE": 21,
        "RAW": 2 * (data_length or 0),
    }.get(data_type, 0)
    if data_type in CHARACTER:
        width = data_length or 0
    elif data_type in NUMERIC:
        width = 45
    elif data_type.startswith(("TIMESTAMP", "INTERVAL")):
        width = 40
    elif data_type in NATIONAL | LOBS:
        width = 32
    integer = (data_type == "NUMBER" and scale == 0) or data_type == "INTEGER"
    return Column(name, shown, base=base, native=False, integer=integer, width=width)


def value_text(column: Column, *, utf8: bool = False) -> str:
    """The normalised text of one column's value (a VARCHAR2 expression)."""
    c, t = quote(column.name), column.base
    if t in UNSUPPORTED:
        raise InputError(
            f"column {column.name} has type {column.type}, which the comparison does not support"
        )
    if t in NUMERIC:
        return NUMBER_TEXT.format(c)
    if t == "DATE":
        return f"TO_CHAR({c}, '{DATE_FORMAT}')"
    if t.startswith("TIMESTAMP") and t.endswith("WITH LOCAL TIME ZONE"):
        return (
            f"TO_CHAR(SYS_EXTRACT_UTC(CAST({c} AS TIMESTAMP WITH TIME ZONE)), '{TIMESTAMP_FORMAT}')"
        )
    if t.startswith("TIMESTAMP") and t.endswith("WITH TIME ZONE"):
        return f"TO_CHAR(SYS_EXTRACT_UTC({c}), '{TIMESTAMP_FORMAT}')"
    if t.startswith("TIMESTAMP"):
        return f"TO_CHAR({c}, '{TIMESTAMP_FORMAT}')"
    if t.startswith("INTERVAL"):
        return f"TO_CHAR({c})"
    if t == "RAW":
        return f"RAWTOHEX({c})"
    if t in ("ROWID", "UROWID"):
        return f"ROWIDTOCHAR({c})"
    if t in CHARACTER:
        return f"CONVERT({c}, 'AL32UTF8')" if utf8 else c
    if t in NATIONAL:
        return "TO_CHAR(" + HASH64.format(c) + ")"
    if t == "NCLOB":
        return f"RAWTOHEX(DBMS_CRYPTO.HASH(TO_CLOB({c}), 2))"
    if t in ("CLOB", "BLOB"):
        return f"RAWTOHEX(DBMS_CRYPTO.HASH({c}, 2))"
    raise InputError(
        f"column {column.name} has type {column.type}, which the comparison does not support"
    )


def row_string(columns: Sequence[Column], *, utf8: bool = False) -> str:
    """The row as one unambiguous VARCHAR2: ``<bytes>:<text>`` per value, ``~`` for NULL,
    values joined with ``|``. Wide character columns are digested when the row could not fit."""
    total = sum(c.width + 8 for c in columns)
    parts = []
    for column in columns:
        text = value_text(column, utf8=utf8)
        if total > ROW_STRING_LIMIT and column.base in CHARACTER and column.width > WIDE_COLUMN:
            text = "TO_CHAR(" + HASH64.format(text) + ")"
        parts.append(f"NVL2({quote(column.name)}, LENGTHB({text}) || ':' || {text}, '~')")
    return " || '|' || ".join(parts)


def from_text(column: Column, bind: str) -> str:
    """A key bound's text (as ``value_text`` makes it) back into the column's type."""
    t = column.base
    if t in NUMERIC:
        return f"TO_NUMBER(:{bind})"
    if t == "DATE":
        return f"TO_DATE(:{bind}, '{KEY_DATE_FORMAT}')"
    if t.startswith("TIMESTAMP"):
        return f"TO_TIMESTAMP(:{bind}, '{KEY_TIMESTAMP_FORMAT}')"
    if t == "RAW":
        return f"HEXTORAW(:{bind})"
    return f":{bind}"


KEY_TYPES = NUMERIC | CHARACTER | {"DATE", "RAW"}


def key_usable(column: Column) -> bool:
    """Whether ranges can be placed on this key column (plain timestamps too; zoned ones not)."""
    return column.base in KEY_TYPES or (
        column.base.startswith("TIMESTAMP") and "ZONE" not in column.base
    )


def key_text(column: Column) -> str:
    """A key column as text that ``from_text`` reads back."""
    c = quote(column.name)
    if column.base in CHARACTER:
        return c  # fetched as a Python str whatever the database's character set
    if column.base == "DATE":
        return f"TO_CHAR({c}, '{KEY_DATE_FORMAT}')"
    if column.base.startswith("TIMESTAMP"):
        return f"TO_CHAR({c}, '{KEY_TIMESTAMP_FORMAT}')"
    return value_text(column)


class Binds:
    """Named bind variables for one statement."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"b{len(self.values)}"
        self.values[name] = value
        return name


def _compare(key: Sequence[Column], bound: Bound, op: str, binds: Binds) -> str:
    """``key op bound`` in lexicographic order, without row-value comparison."""
    cols = key[: len(bound)]
    names = [binds.add(v) for v in bound]
    strict = op.rstrip("=")  # ">=" -> ">", "<" -> "<"
    expr = f"{quote(cols[-1].name)} {op} {from_text(cols[-1], names[-1])}"
    for column, name in zip(reversed(cols[:-1]), reversed(names[:-1]), strict=True):
        value = from_text(column, name)
        c = quote(column.name)
        expr = f"({c} {strict} {value} OR ({c} = {value} AND {expr}))"
    return expr


def range_where(key: Sequence[Column], r: KeyRange, binds: Binds) -> str:
    parts = []
    if r.lower is not None:
        parts.append(_compare(key, r.lower, ">=", binds))
    if r.upper is not None:
        parts.append(_compare(key, r.upper, "<", binds))
    return " AND ".join(parts) if parts else "1 = 1"


def range_stats_sql(
    ref: TableRef,
    columns: Sequence[Column],
    key: Sequence[Column],
    ranges: Sequence[KeyRange],
    *,
    utf8: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Count and checksum per range: one statement, one row per range."""
    binds, table, row = Binds(), table_sql(ref), row_string(columns, utf8=utf8)
    branches = [
        f"SELECT {i} AS ri, COUNT(*) AS n, TO_CHAR(SUM({HASH64.format('x.rs')})) AS h "
        f"FROM (SELECT {row} AS rs FROM {table} WHERE {range_where(key, r, binds)}) x"
        for i, r in enumerate(ranges)
    ]
    return "\nUNION ALL\n".join(branches), binds.values


def whole_sql(ref: TableRef, columns: Sequence[Column], *, utf8: bool = False) -> str:
    row = row_string(columns, utf8=utf8)
    return (
        f"SELECT COUNT(*), TO_CHAR(SUM({HASH64.format('x.rs')})) "
        f"FROM (SELECT {row} AS rs FROM {table_sql(ref)}) x"
    )


def leaf_sql(
    ref: TableRef,
    columns: Sequence[Column],
    key: Sequence[Column],
    ranges: Sequence[tuple[KeyRange, int | None]],
    *,
    utf8: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Range index, key, key text and row hash of each row of each range, at most ``limit``."""
    binds, table, row = Binds(), table_sql(ref), row_string(columns, utf8=utf8)
    keys = ", ".join(quote(c.name) for c in key)
    texts = ", ".join(f"{key_text(c)} AS kt{i}" for i, c in enumerate(key))
    outer_keys = ", ".join(quote(c.name) for c in key)
    outer_texts = ", ".join(f"kt{i}" for i in range(len(key)))
    branches = []
    for i, (r, limit) in enumerate(ranges):
        inner = (
            f"SELECT {keys}, {texts}, {row} AS rs FROM {table} "
            f"WHERE {range_where(key, r, binds)} ORDER BY {keys}"
        )
        cap = f" WHERE ROWNUM <= {int(limit)}" if limit is not None else ""
        branches.append(
            f"SELECT {i} AS ri, {outer_keys}, {outer_texts}, "
            f"TO_CHAR({HASH64.format('y.rs')}) AS h FROM ({inner}) y{cap}"
        )
    return "\nUNION ALL\n".join(branches), binds.values


def split_sql(
    ref: TableRef, key: Sequence[Column], requests: Sequence[tuple[KeyRange, int, int]]
) -> tuple[str, dict[str, Any]]:
    """The key text of every ``step``-th row of each range (the last row excluded), with its
    row number for ordering."""
    binds, table = Binds(), table_sql(ref)
    keys = ", ".join(quote(c.name) for c in key)
    texts = ", ".join(f"{key_text(c)} AS kt{i}" for i, c in enumerate(key))
    outer = ", ".join(f"kt{i}" for i in range(len(key)))
    branches = [
        f"SELECT {i} AS ri, rn, {outer} FROM (SELECT {texts}, ROW_NUMBER() OVER (ORDER BY {keys})"
        f" AS rn FROM {table} WHERE {range_where(key, r, binds)}) "
        f"WHERE MOD(rn, {int(step)}) = 0 AND rn < {int(rows)}"
        for i, (r, step, rows) in enumerate(requests)
    ]
    return "\nUNION ALL\n".join(branches), binds.values


def sample_sql(ref: TableRef, key: Sequence[Column], percent: float, parts: int) -> str:
    """Quantiles of a block sample: the first boundaries of a non-integer key."""
    keys = ", ".join(quote(c.name) for c in key)
    texts = ", ".join(f"{key_text(c)} AS kt{i}" for i, c in enumerate(key))
    outer = ", ".join(f"kt{i}" for i in range(len(key)))
    sample = f" SAMPLE BLOCK ({percent:.6f}) SEED (7)" if percent < 100 else ""
    return (
        f"SELECT {outer} FROM (SELECT {texts}, ROW_NUMBER() OVER (ORDER BY {keys}) AS rn, "
        f"COUNT(*) OVER () AS n FROM {table_sql(ref)}{sample}) "
        f"WHERE MOD(rn, GREATEST(CEIL(n / {int(parts)}), 1)) = 0 ORDER BY rn"
    )
