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

from drills.engine.catalogue import Catalogue, check_spec
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
