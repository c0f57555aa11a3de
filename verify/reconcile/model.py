"""The reconciliation's vocabulary: tables, columns, key ranges, the reports, and what a side's
session must answer (``Session``). Pure: no I/O, no database library.

A ``Session`` is one side's connection in one engine's SQL (``verify.reconcile.dialects``); the
algorithm (``verify.reconcile.engine``) talks to sessions only, so it knows no engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Literal, Protocol
from uuid import UUID

Side = Literal["source", "target"]
DiffKind = Literal["missing_in_target", "missing_in_source", "changed"]
Method = Literal["keyed", "whole-table"]
Engine = Literal["postgresql", "oracle"]
HashMode = Literal["record", "text", "md5", "ora_hash", "ora_hash_utf8"]
Bound = tuple[str, ...]  # a key value (or a prefix of one) in its normalised text form

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


class Session(Protocol):
    """One side's connection: one read-only snapshot, the SQL of one engine.

    Errors are the executors' (``ConnectionFailed``, ``CommandFailed``, ``CommandTimeout``),
    naming the side; ``cancel`` may be called from another thread while a query runs.
    """

    side: Side
    engine: Engine
    hash_mode: HashMode
    label: str  # the DSN without its password

    @staticmethod
    def fold(name: str) -> str:
        """An unquoted name as the engine stores it (PostgreSQL: lower case; Oracle: upper)."""
        ...

    def probe(self) -> Any:
        """What decides whether both sides' row hashes are comparable (see ``hash_mode_for``)."""
        ...

    @staticmethod
    def hash_mode_for(source: Any, target: Any) -> tuple[HashMode, str]:
        """The row hash both sides use, from their probes, and a note of why when not the best."""
        ...

    def describe(self, ref: TableRef) -> TableMeta | None: ...

    def missing_schemas(self, schemas: list[str]) -> list[str]: ...

    def list_tables(self, schemas: list[str] | None, exclude: Sequence[str]) -> list[TableRef]: ...

    def default_schema(self) -> str: ...

    def count(self, plan: TablePlan) -> int: ...

    def whole(self, plan: TablePlan) -> Stat: ...

    def int_bounds(self, plan: TablePlan) -> tuple[int, int] | None: ...

    def sample_bounds(self, plan: TablePlan, parts: int) -> list[Bound]: ...

    def range_stats(self, plan: TablePlan, ranges: Sequence[KeyRange]) -> list[Stat]: ...

    def split_points(
        self, plan: TablePlan, requests: Sequence[tuple[KeyRange, int, int]]
    ) -> list[list[Bound]]:
        """For each (range, step, rows): the keys at every ``step``-th row, the last excluded."""
        ...

    def leaf_rows(
        self, plan: TablePlan, ranges: Sequence[tuple[KeyRange, int | None]]
    ) -> list[LeafRow]:
        """Keys and row hashes of the rows in each range (at most the given limit, in key
        order)."""
        ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


SessionOpener = Callable[[], Session]  # opens one side's session (errors name the side)
