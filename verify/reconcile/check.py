"""The ``pg.tables_match`` check: the target role's tables hold the same rows as the source
role's, by keyed reconciliation.

Both sessions are opened from the run's nodes (``probe.postgres(role)``), through the executors'
read-only snapshot (``drills.executors.postgres.open_snapshot``); errors name the node.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from drills.executors.postgres import node_dsn
from verify.reconcile.compare import reconcile_sessions
from verify.reconcile.dialects.postgres import PostgresSession
from verify.reconcile.model import SessionOpener, Side
from verify.result import Observation, Probe


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


def node_session(probe: Probe, role: str, side: Side, database: str | None) -> SessionOpener:
    """How to open a reconciliation session on the role's node (its database, or
    ``database``); the node is resolved now, the connection made when the opener is called."""
    name, node, _ = probe.postgres(role)
    extra = {"dbname": database} if database else {}
    dsn = node_dsn(node, with_password=True, **extra)
    return lambda: PostgresSession(side, dsn, host=name)


def tables_match(probe: Probe, role: str, params: TablesMatchParams) -> Observation:
    """The tables hold the same rows as on the source role's node (keyed reconciliation)."""
    report = reconcile_sessions(
        node_session(probe, params.source, "source", params.source_database),
        node_session(probe, role, "target", params.database),
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
