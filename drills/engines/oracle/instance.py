"""The instance itself, through SQL*Plus on its host: the drill's crash, a start, a check.

    oracle.shutdown_abort          SHUTDOWN ABORT (the failover drill's crash injection)
    oracle.startup                 STARTUP [MOUNT | OPEN | OPEN READ ONLY]
    sqlplus.instance_down (check)  the instance is down: '/ as sysdba' finds an idle instance

``sqlplus -S -L / as sysdba`` runs on the node's host as the Oracle OS user, the statements on
its standard input (:mod:`drills.engines.oracle.tools`): OS authentication, no password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from drills.engine.catalogue import ActionResult, ActionSpec, CheckSpec, Params, check_spec
from drills.engines.oracle.tools import (
    ENGINE,
    NoParams,
    describe_sqlplus,
    instance_state,
    last_line,
    oracle_node,
    sql_checked,
    sqlplus,
    tool_failed,
)
from verify.result import Observation, Probe

if TYPE_CHECKING:
    from drills.engine.targets import Targets


# oracle.shutdown_abort (the drill's crash injection) ------------------------------------------


def abort_run(targets: Targets, role: str, params: NoParams, timeout: float) -> ActionResult:
    on = oracle_node(targets, role)
    run = sqlplus(on, "SHUTDOWN ABORT", timeout=timeout)
    parsed = sql_checked(run, "SHUTDOWN ABORT")
    if not parsed.instance_shut_down:
        raise tool_failed(run, "SHUTDOWN ABORT", parsed.errors, {"sqlplus": parsed.as_dict()})
    return ActionResult(
        f"SHUTDOWN ABORT of {on.name} ({on.sid}) on {on.host.address}: {last_line(run.output)}",
        {"host": on.name, "address": on.host.address, "sid": on.sid},
    )


def abort_describe(targets: Targets, role: str, params: NoParams) -> list[str]:
    return describe_sqlplus(targets, role, "SHUTDOWN ABORT")


class StartupParams(Params):
    mode: Literal["MOUNT", "OPEN", "OPEN READ ONLY"] = "MOUNT"


def startup_run(targets: Targets, role: str, params: StartupParams, timeout: float) -> ActionResult:
    on = oracle_node(targets, role)
    statement = "STARTUP MOUNT" if params.mode == "MOUNT" else f"STARTUP {params.mode}"
    run = sqlplus(on, statement, timeout=timeout)
    sql_checked(run, statement)
    return ActionResult(run.output, {"host": on.name, "mode": params.mode})


def startup_describe(targets: Targets, role: str, params: StartupParams) -> list[str]:
    statement = "STARTUP MOUNT" if params.mode == "MOUNT" else f"STARTUP {params.mode}"
    return describe_sqlplus(targets, role, statement)


def instance_down(probe: Probe, role: str, params: NoParams) -> Observation:
    """The instance is down on its host: SQL*Plus '/ as sysdba' finds an idle instance."""
    targets: Targets = probe  # type: ignore[assignment]
    on = oracle_node(targets, role)
    state = instance_state(on)
    return Observation(
        state, "down (an idle instance)", state == "down", f"{on.sid} on {on.host.address}"
    )


def instance_actions() -> list[ActionSpec]:
    spec = ActionSpec
    return [
        spec(
            "oracle.shutdown_abort",
            NoParams,
            abort_run,
            abort_describe,
            True,
            "SHUTDOWN ABORT through SQL*Plus on the node's host (drill crash injection).",
            ENGINE,
        ),
        spec(
            "oracle.startup",
            StartupParams,
            startup_run,
            startup_describe,
            True,
            "STARTUP [MOUNT|OPEN] through SQL*Plus on the node's host.",
            ENGINE,
        ),
    ]


def instance_checks() -> list[CheckSpec]:
    return [check_spec("sqlplus.instance_down", NoParams, instance_down, ENGINE)]
