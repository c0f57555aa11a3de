"""Table reconciliation: do two databases of the same engine hold the same rows?

Each database computes, inside itself, a row count and a content checksum (the sum of 64-bit row
hashes) per key range; ranges that differ are split again until the rows that differ are named,
as missing on one side or changed. Both sides are read in one read-only snapshot each; nothing is
ever written. Memory stays flat whatever the table size.

The package, in layers (each imports only those above it):

    model             TableRef, Column, KeyRange, the reports, the ``Session`` protocol (pure)
    engine            ``Pair`` (both sides at once) and the bisection (``compare_table``)
    plan              which tables, agreed between the sides (``plan_tables``)
    dialects.postgres the PostgreSQL SQL and ``PostgresSession`` (executors' ``open_snapshot``)
    dialects.oracle   the Oracle SQL (``oracle_sql``) and ``OracleSession`` (executors' oracle)
    compare           ``reconcile`` (two DSNs) and ``reconcile_sessions`` (two session openers)
    check             the ``pg.tables_match`` check, its sessions opened from the run's nodes

The engine and the planning talk to sessions only; the SQL, the drivers and their errors are the
dialects' and the executors' (``drills.executors.postgres``, ``drills.executors.oracle``).
"""

from verify.reconcile.check import TablesMatchParams, tables_match
from verify.reconcile.compare import reconcile, reconcile_sessions, session_class
from verify.reconcile.dialects.postgres import PostgresSession
from verify.reconcile.engine import Pair, compare_table, open_pair
from verify.reconcile.model import (
    Bound,
    Column,
    DiffKind,
    Engine,
    HashMode,
    KeyRange,
    LeafRow,
    Method,
    ReconcileReport,
    RowDiff,
    Session,
    SessionOpener,
    Side,
    Stat,
    TableMeta,
    TablePlan,
    TableRef,
    TableResult,
    parse_table_name,
)
from verify.reconcile.plan import agree, plan_tables

__all__ = [
    "Bound",
    "Column",
    "DiffKind",
    "Engine",
    "HashMode",
    "KeyRange",
    "LeafRow",
    "Method",
    "Pair",
    "PostgresSession",
    "ReconcileReport",
    "RowDiff",
    "Session",
    "SessionOpener",
    "Side",
    "Stat",
    "TableMeta",
    "TablePlan",
    "TableRef",
    "TableResult",
    "TablesMatchParams",
    "agree",
    "compare_table",
    "open_pair",
    "parse_table_name",
    "plan_tables",
    "reconcile",
    "reconcile_sessions",
    "session_class",
    "tables_match",
]
