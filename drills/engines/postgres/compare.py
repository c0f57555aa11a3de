"""Comparing a restored copy with its source, table by table and row by row.

    pg.reconcile_scratch  the scratch server's tables against the source's (``verify.reconcile``)

drctl connects to both from where it runs: the source at the node's address, the scratch server
at the same node's address on its own port (``drills.engines.postgres.scratch``). The source is
compared *now*: tables written on the source after the backup's point differ legitimately, so the
drill is meant for tables at rest during the drill (or a quiesced source), and drctl's own schema
(``drctl``: heartbeats and canaries) is left out of the comparison.

``run_reconcile`` is the one place this engine calls the reconciliation (the migration's
``pg.reconcile`` uses it too); what it returns is the record's plain-value form of the report.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engine.catalogue import Params
from drills.engines.postgres.dump import CURRENT_LSN
from drills.engines.postgres.runstate import load_state, state_entry
from drills.engines.postgres.scratch import (
    ActionFailed,
    Instance,
    action_result,
    node_of,
    scratch_dsn,
    where,
)
from drills.executors.postgres import SqlExecutor, node_dsn
from drills.model.errors import InputError

if TYPE_CHECKING:
    from drills.engine.catalogue import ActionResult
    from drills.engine.targets import Targets
    from verify.reconcile import ReconcileReport

DIFFS_KEPT = 20  # differing rows kept per table in a record


class ReconcileParams(Params):
    tables: list[str] | None = Field(
        default=None, description="Tables to compare (schema.table); default every table."
    )
    schemas: list[str] | None = Field(
        default=None, description="Schemas whose tables are compared; default every schema."
    )
    exclude_schemas: list[str] = Field(
        default_factory=lambda: ["drctl"], description="Schemas never compared."
    )
    max_diffs: int = Field(default=1000, ge=1, description="Differing rows looked for per table.")


class ScratchReconcileParams(ReconcileParams):
    database: str | None = Field(
        default=None,
        description="Database compared (a physical backup holds them all); default the node's, "
        "or the dumped one.",
    )


def report_data(report: ReconcileReport) -> dict[str, Any]:
    """A ReconcileReport as plain values for the record, with a few differing rows per table."""
    data = report.as_dict()
    data["source_dsn"] = data.pop("source", "")
    data["target_dsn"] = data.pop("target", "")
    tables: list[dict[str, Any]] = []
    for table in report.tables:
        entry = table.as_dict()
        entry["differing_rows"] = len(table.diffs)
        entry["diffs"] = [d.as_dict() for d in table.diffs[:DIFFS_KEPT]]
        tables.append(entry)
    data["tables"] = tables
    data["tables_compared"] = len(tables)
    data["tables_differing"] = sum(1 for t in report.tables if not t.identical)
    data["rows_compared"] = sum(t.source_rows for t in report.tables)
    return data


def differ_sentence(data: dict[str, Any], source: str, copy: str) -> str:
    return (
        f"{data['tables_differing']} of {data['tables_compared']} table(s) differ between "
        f"{source} and {copy}: {data['summary']}"
    )


def run_reconcile(source_dsn: str, target_dsn: str, params: ReconcileParams) -> dict[str, Any]:
    """Reconcile two PostgreSQL databases (read-only on both); the report as plain values."""
    from verify.reconcile import reconcile  # the one line that names the reconciliation

    try:
        report = reconcile(
            source_dsn,
            target_dsn,
            tables=params.tables,
            schemas=params.schemas,
            max_diffs=params.max_diffs,
            exclude_schemas=list(params.exclude_schemas),
        )
    except InputError as exc:
        # Every problem at once, on one line: the record's reason is one sentence.
        problems = "; ".join(line.strip() for line in exc.message.splitlines() if line.strip())
        raise InputError(f"cannot compare: {problems}", host=exc.host) from exc
    return report_data(report)


# -- pg.reconcile_scratch ------------------------------------------------------------------------


def reconcile_scratch_run(
    targets: Targets, role: str, params: ScratchReconcileParams, timeout: float
) -> ActionResult:
    name, node, _, env = node_of(targets, role)
    state = load_state(env, name)
    scratch = state_entry(targets, role, "scratch", "pg.restore_scratch or pg.restore_dump_scratch")
    instance = Instance.from_state(scratch)
    if params.database and instance.kind == "backup":
        instance = replace(instance, database=params.database)
    elif params.database and params.database != instance.database:
        raise InputError(
            f"the scratch server on {name} holds only the dumped database {instance.database}, "
            f"not {params.database}",
            host=name,
        )
    source_dsn = node_dsn(node, with_password=True, dbname=instance.database)
    point: dict[str, Any] = {}
    if instance.kind == "backup" and isinstance(state.get("backup"), dict):
        point = {"point": "backup end", "point_lsn": state["backup"].get("end_lsn")}
    elif isinstance(state.get("dump"), dict):
        dump = state["dump"]
        point = {
            "point": "dump snapshot",
            "point_lsn_between": [dump.get("lsn_before"), dump.get("lsn_after")],
        }
    source_lsn = SqlExecutor(source_dsn, host=name).scalar(CURRENT_LSN, timeout=10)
    if instance.kind == "dump" and isinstance(state.get("dump"), dict):
        # What the dump left out cannot be in the copy: leave it out of the comparison too.
        left_out = [s for s in state["dump"].get("excluded_schemas", []) if isinstance(s, str)]
        excluded = list(dict.fromkeys([*params.exclude_schemas, *left_out]))
        params = params.model_copy(update={"exclude_schemas": excluded})
    data = run_reconcile(source_dsn, scratch_dsn(node, instance), params)
    data |= (
        where(targets, role)
        | point
        | {
            "source": name,
            "database": instance.database,
            "copy": f"scratch server on {instance.endpoint} ({instance.node})",
            "source_lsn_at_compare": source_lsn,
            "excluded_schemas": list(params.exclude_schemas),
        }
    )
    copy = f"its restored copy ({instance.kind}, database {instance.database})"
    if not data["identical"]:
        raise ActionFailed(differ_sentence(data, name, copy), host=name, data=data)
    return action_result(
        f"{data['tables_compared']} table(s), {data['rows_compared']} row(s) identical between "
        f"{name} and {copy} in {data['seconds']:g}s",
        data,
    )


def reconcile_scratch_describe(
    targets: Targets, role: str, params: ScratchReconcileParams
) -> list[str]:
    name, node, _, _ = node_of(targets, role)
    which = ", ".join(params.tables) if params.tables else "every table"
    schemas = f" in schemas {', '.join(params.schemas)}" if params.schemas else ""
    return [
        f"reconcile {which}{schemas} of {name} ({node.endpoint}) with the scratch server on "
        f"{node.host}:<its port> (read-only on both; schemas "
        f"{', '.join(params.exclude_schemas) or 'none'} left out)"
    ]
