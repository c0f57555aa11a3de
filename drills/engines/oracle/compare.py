"""Comparing two Oracle databases table by table, with the existing reconciliation SQL.

    oracle.reconcile            a migration's target against its source (both nodes' databases)
    (restore.reconcile_scratch) a scratch restore against the database it was backed up from

Each side is a :class:`verify.reconcile.dialects.oracle.OracleSession`: python-oracledb in thin
mode from where drctl runs, one read-only transaction, the row hashes computed inside the
database (``ORA_HASH`` over a canonical row string, ``verify/reconcile/dialects/oracle_sql.py``).
A node's side connects with the node's ``user`` and password to its ``connect`` (or
``host:port/service``); a scratch copy with the same user (it is a copy of the source's
dictionary) to the scratch instance's own service on the restore host's listener.

Each side logs in with the node's own connect arguments (``drills.executors.oracle.
connect_arguments``): its user and password, and, when it has ``wallet_dir``, the wallet
(``config_dir``, ``wallet_location``, ``wallet_password``) for a TCPS listener, exactly as the
node's checks connect. Thin mode still logs in with a password: a wallet's ewallet.pem carries
TLS certificates, and a node without password_env/password_file is refused by the driver
(DPY-4001, translated with what to do), as its checks are.

A ``Connector`` may offer ``reconcile_session(side, name, node, connect)`` to open the sessions
itself (the stand-in drill tests do, since the stand-in does not answer the reconciliation SQL),
or ``oracle_connect``, the ``oracledb.connect`` the thin sessions call (the stand-in's); the live
connector offers neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engines.oracle.tools import ENGINE, ToolFailed, oracle_node
from drills.engines.postgres.compare import differ_sentence, report_data
from drills.executors.oracle import connect_arguments
from drills.model.environment import Node
from drills.model.errors import InputError
from verify.reconcile import reconcile_sessions
from verify.reconcile.model import Session, SessionOpener, Side

if TYPE_CHECKING:
    from drills.engine.targets import Targets


class OracleReconcileParams(Params):
    tables: list[str] | None = Field(
        default=None,
        description="Tables to compare (SCHEMA.TABLE, or TABLE in the first of schemas); "
        "default every table of the schemas.",
    )
    schemas: list[str] = Field(
        default_factory=list,
        description="Schemas compared (upper case, as Oracle stores them). Give tables or "
        "schemas: an Oracle database holds many system schemas.",
    )
    max_diffs: int = Field(default=1000, ge=1, description="Differing rows named per table.")


def session_opener(
    targets: Targets, side: Side, name: str, node: Node, *, connect: str | None = None
) -> SessionOpener:
    """How to open one side's session: the connector's own, or a thin-mode OracleSession."""
    hook = getattr(targets.connector, "reconcile_session", None)
    if callable(hook):

        def opened() -> Session:
            session: Session = hook(side, name, node, connect)
            return session

        return opened
    if node.oracle is None:
        raise InputError(f"node {name} has no oracle section to compare", host=name)
    # The node's own connect arguments: its user and password, and its wallet (config_dir,
    # wallet_location, wallet_password) for a TCPS listener. As a plain user: the comparison
    # reads the node's tables, never as SYSDG. Secrets are read now, never put in a DSN string.
    arguments = connect_arguments(
        node.oracle, connect or node.oracle.dsn(node.host, node.port), privileged=False
    )
    stand_in = getattr(targets.connector, "oracle_connect", None)

    def thin() -> Session:
        from verify.reconcile.dialects.oracle import OracleSession

        return OracleSession(side, host=name, arguments=arguments, connect=stand_in)

    return thin


def compare(
    targets: Targets,
    source: tuple[str, Node, str | None],
    target: tuple[str, Node, str | None],
    params: OracleReconcileParams,
) -> dict[str, Any]:
    """Reconcile ``target`` against ``source`` (each ``(name, node, connect override)``)."""
    if not params.tables and not params.schemas:
        raise InputError(
            "name the tables or the schemas to compare (tables: [HIS.PATIENT], or schemas: "
            "[HIS]): an Oracle database holds many system schemas"
        )
    try:
        report = reconcile_sessions(
            session_opener(targets, "source", source[0], source[1], connect=source[2]),
            session_opener(targets, "target", target[0], target[1], connect=target[2]),
            tables=params.tables or None,
            schemas=[s.upper() for s in params.schemas] or None,
            max_diffs=params.max_diffs,
            exclude_schemas=("DRCTL",),
        )
    except InputError as exc:
        problems = "; ".join(line.strip() for line in exc.message.splitlines() if line.strip())
        raise InputError(f"cannot compare: {problems}", host=exc.host) from exc
    return report_data(report)


def reconcile_failed(data: dict[str, Any], source: str, copy: str, host: str) -> ToolFailed:
    return ToolFailed(differ_sentence(data, source, copy), host=host, data={"reconcile": data})


# -- oracle.reconcile (a migration's target against its source) ----------------------------------


class PairParams(OracleReconcileParams):
    source: str = Field(description="Role of the reference database.")


def reconcile_run(targets: Targets, role: str, params: PairParams, timeout: float) -> ActionResult:
    source, target = oracle_node(targets, params.source), oracle_node(targets, role)
    data = compare(
        targets, (source.name, source.node, None), (target.name, target.node, None), params
    )
    if data["tables_differing"]:
        raise reconcile_failed(data, source.name, target.name, target.name)
    return ActionResult(
        f"{data['tables_compared']} table(s), {data['rows_compared']} row(s): {data['summary']}",
        {"reconcile": data},
    )


def reconcile_describe(targets: Targets, role: str, params: PairParams) -> list[str]:
    source, target = oracle_node(targets, params.source), oracle_node(targets, role)
    what = ", ".join(params.tables or []) or "schemas " + ", ".join(params.schemas)
    return [
        f"SQL on {source.name} and {target.name} (thin mode, read-only transactions): count and "
        f"hash rows per key range ({what}), bisect the ranges that differ"
    ]


def compare_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            "oracle.reconcile",
            PairParams,
            reconcile_run,
            reconcile_describe,
            False,
            "Reconcile the target's tables with the source's, row by row (ORA_HASH).",
            ENGINE,
        )
    ]
