"""The entry points: compare two databases given their DSNs (``reconcile``), or given how to open
each side's session (``reconcile_sessions``, which the ``pg.tables_match`` check uses with the
nodes of a run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from drills.model.errors import InputError
from verify.reconcile.engine import compare_table, open_pair
from verify.reconcile.model import Engine, ReconcileReport, Session, SessionOpener, Side
from verify.reconcile.plan import plan_tables

ENGINES: tuple[Engine, ...] = ("postgresql", "oracle")


def session_class(engine: Engine) -> Callable[[Side, str], Session]:
    """The session of one engine's dialect, opened from a side and a DSN."""
    if engine == "postgresql":
        from verify.reconcile.dialects.postgres import PostgresSession

        return PostgresSession
    if engine == "oracle":
        from verify.reconcile.dialects.oracle import OracleSession

        return OracleSession
    raise InputError(f"engine must be {' or '.join(ENGINES)}, not {engine!r}")


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
    opener = session_class(engine)
    return reconcile_sessions(
        lambda: opener("source", source_dsn),
        lambda: opener("target", target_dsn),
        tables=tables,
        schemas=schemas,
        max_diffs=max_diffs,
        exclude_schemas=exclude_schemas,
    )


def reconcile_sessions(
    open_source: SessionOpener,
    open_target: SessionOpener,
    *,
    tables: list[str] | None = None,
    schemas: list[str] | None = None,
    max_diffs: int = 1000,
    exclude_schemas: Sequence[str] = ("drctl",),
) -> ReconcileReport:
    """``reconcile`` with the sessions opened by the callers' openers (both of one engine)."""
    if max_diffs < 0:
        raise InputError(f"max_diffs must be 0 or more, not {max_diffs}")
    started = time.monotonic()
    with open_pair(open_source, open_target) as pair:
        if pair.source.engine != pair.target.engine:
            raise InputError(
                f"both sides must be of one engine, not {pair.source.engine} "
                f"and {pair.target.engine}"
            )
        s_probe, t_probe = pair.same(lambda s: s.probe())
        mode, why = pair.source.hash_mode_for(s_probe, t_probe)
        notes = [why] if why else []
        pair.source.hash_mode = pair.target.hash_mode = mode
        plans = plan_tables(pair, tables, schemas, exclude_schemas, pair.source.fold)
        results = [compare_table(pair, plan, max_diffs) for plan in plans]
        engine = pair.source.engine
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
