"""The Oracle engine: its SQL-level actions, its checks (role and readiness, Data Guard, RMAN,
inspection), its role observer and its canary writer, registered into a catalogue by
``register``.

Everything here reaches the database through the node's executors: SQL through
``drills.executors.oracle`` (python-oracledb, thin mode), the server's own tools (dgmgrl, rman,
Data Pump) through the node's host executor, as ``oracle.os_user``.

Adding actions: SQL-level ones go in ``actions.oracle_actions``; the Data Guard broker, RMAN and
Data Pump actions, which run the server's tools on the node's host, go in ``toolset.tool_actions``
and are registered below, in the place marked for them.
"""

from __future__ import annotations

from typing import Any

from drills.engine.catalogue import Catalogue, Equivalent, check_spec
from verify import oracle

ENGINE = "oracle"


def register(catalogue: Catalogue) -> None:
    from drills.engines.oracle.actions import oracle_actions
    from drills.engines.oracle.canary import OracleInstruments
    from drills.engines.oracle.checks import oracle_checks

    catalogue.add_actions(*oracle_actions())
    # -- the tool actions (dgmgrl, rman, Data Pump) are registered here: ----------------------
    from drills.engines.oracle.toolset import register_tools

    register_tools(catalogue)
    catalogue.add_checks(*(check_spec(n, p, f, ENGINE) for n, p, f in oracle_checks()))
    catalogue.observe_roles_with(ENGINE, oracle.server_role)
    catalogue.measure_with(ENGINE, OracleInstruments())
    equate_neutral(catalogue)


def _to_itself(role: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """db.failover on the standby: DGMGRL FAILOVER TO that standby, run on its own host."""
    return role, {"to": role}


def _without_params(role: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Redo Apply runs on the standby, whichever primary ships it the redo."""
    return role, {}


def equate_neutral(catalogue: Catalogue) -> None:
    """What Oracle runs for the engine-neutral actions and checks (``drills.engine.neutral``)."""
    for neutral, *own in (
        ("db.crash", Equivalent("oracle.shutdown_abort")),
        ("db.fence", Equivalent("oracle.fence")),
        ("db.failover", Equivalent("oracle.dg_failover", _to_itself)),
        ("db.rejoin", Equivalent("oracle.rejoin_as_standby")),
        # Not a count: the transactions the old primary committed and had not shipped would
        # need its redo read (LogMiner) past STANDBY_BECAME_PRIMARY_SCN before it is
        # reinstated, which drctl does not do. oracle.account_for_loss records what is known
        # instead: that SCN (exact), the window of possible loss from the standby's transport
        # lag before the failover (a bound, when oracle.record_lag_before_failover ran), the
        # canary's lost rows (a lower bound).
        ("db.record_lag", Equivalent("oracle.record_lag_before_failover")),
        ("db.count_lost_transactions", Equivalent("oracle.account_for_loss")),
        ("db.is_primary", Equivalent("oracle.is_primary")),
        ("db.is_standby", Equivalent("oracle.is_standby")),
        ("db.takes_writes", Equivalent("oracle.takes_writes")),
        ("db.rejects_writes", Equivalent("oracle.rejects_writes")),
        # fenced: it takes no writes (V$DATABASE, or no session at all) and its instance is
        # down on its host (SQL*Plus finds an idle instance)
        ("db.fenced", Equivalent("oracle.rejects_writes"), Equivalent("sqlplus.instance_down")),
        ("db.replicating", Equivalent("oracle.apply_running", _without_params)),
    ):
        catalogue.equate(ENGINE, neutral, *own)
