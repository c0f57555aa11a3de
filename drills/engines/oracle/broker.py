"""The Data Guard broker (DGMGRL) on the database host: the role changes and the checks.

    oracle.dg_show_configuration  SHOW CONFIGURATION: the broker's status and each member's role
    oracle.dg_switchover          SWITCHOVER TO the standby, run on the primary's host
    oracle.dg_failover            FAILOVER TO the standby, run on the standby's host
    oracle.dg_reinstate           the old primary STARTUP MOUNT and, with FLASHBACK_ON, REINSTATE
                                  DATABASE from the new primary; otherwise it needs rebuilding
    dgmgrl.validate      (check)  VALIDATE DATABASE VERBOSE: ready for switchover / failover
    dgmgrl.configuration (check)  SHOW CONFIGURATION's status is SUCCESS
    dgmgrl.primary       (check)  the broker names the given node the primary

DGMGRL runs as :mod:`drills.engines.oracle.tools` runs every tool: on the node's host, as the
Oracle OS user, ``dgmgrl -silent`` with ``CONNECT`` and the commands on its standard input (the
password, if any, from ``dgmgrl_password_env``). What it prints is parsed by
:mod:`drills.engines.oracle.parsers` and kept in the step's data and output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, CheckSpec, Params, check_spec
from drills.engines.oracle import parsers
from drills.engines.oracle.tools import (
    ENGINE,
    NoParams,
    describe_dgmgrl,
    describe_sqlplus,
    dgmgrl,
    instance_state,
    last_line,
    login_checked,
    oracle_node,
    sql_checked,
    sqlplus,
    tool_failed,
)
from drills.model.durations import Duration, format_seconds
from verify.result import Observation, Probe

if TYPE_CHECKING:
    from drills.engine.targets import Targets


# oracle.dg_show_configuration ------------------------------------------------------------------


def show_run(targets: Targets, role: str, params: NoParams, timeout: float) -> ActionResult:
    on = oracle_node(targets, role)
    run = dgmgrl(on, "SHOW CONFIGURATION", timeout=timeout)
    login_checked(run, "SHOW CONFIGURATION")
    show = parsers.parse_show_configuration(run.output)
    data = {"configuration": show.as_dict(), "host": on.name, "address": on.host.address}
    if show.status is None:
        raise tool_failed(run, "SHOW CONFIGURATION", show.errors, data)
    return ActionResult(run.output, data)


def show_describe(targets: Targets, role: str, params: NoParams) -> list[str]:
    return describe_dgmgrl(targets, role, "SHOW CONFIGURATION")


# oracle.dg_switchover / oracle.dg_failover ----------------------------------------------------


class RoleChangeParams(Params):
    to: str = Field(description="Role of the standby that becomes the primary.")


def _role_change(
    targets: Targets,
    role: str,
    to_role: str,
    operation: Literal["switchover", "failover"],
    timeout: float,
) -> ActionResult:
    on = oracle_node(targets, role)
    target = oracle_node(targets, to_role)
    command = f"{operation.upper()} TO {target.unique_name}"
    run = dgmgrl(on, command, timeout=timeout)
    change = parsers.parse_role_change(run.output, operation)
    data = {
        "change": change.as_dict(),
        "command": command,
        "ran_on": on.name,
        "address": on.host.address,
        "seconds": round(run.seconds, 3),
    }
    if not change.succeeded:
        raise tool_failed(run, command, change.errors, data)
    if change.new_primary and change.new_primary.lower() != target.unique_name.lower():
        raise tool_failed(
            run,
            command,
            change.errors,
            {**data, "unexpected": f"the broker names {change.new_primary} the new primary"},
        )
    return ActionResult(run.output, data)


def switchover_run(
    targets: Targets, role: str, params: RoleChangeParams, timeout: float
) -> ActionResult:
    return _role_change(targets, role, params.to, "switchover", timeout)


def failover_run(
    targets: Targets, role: str, params: RoleChangeParams, timeout: float
) -> ActionResult:
    return _role_change(targets, role, params.to, "failover", timeout)


def switchover_describe(targets: Targets, role: str, params: RoleChangeParams) -> list[str]:
    target = oracle_node(targets, params.to)
    return describe_dgmgrl(targets, role, f"SWITCHOVER TO {target.unique_name}")


def failover_describe(targets: Targets, role: str, params: RoleChangeParams) -> list[str]:
    target = oracle_node(targets, params.to)
    return describe_dgmgrl(targets, role, f"FAILOVER TO {target.unique_name}")


# oracle.dg_reinstate ---------------------------------------------------------------------------


class ReinstateParams(Params):
    database: str = Field(description="Role of the old primary to reinstate as a standby.")
    startup_timeout: Duration = Field(default=300.0, description="For its STARTUP MOUNT.")


FLASHBACK_SQL = "SELECT flashback_on FROM v$database;"


def reinstate_run(
    targets: Targets, role: str, params: ReinstateParams, timeout: float
) -> ActionResult:
    """On the old primary's host: STARTUP MOUNT (if down) and read FLASHBACK_ON; YES: REINSTATE
    DATABASE from the new primary (the step's target); otherwise shut it down again and say it
    needs rebuilding (from a backup or RMAN DUPLICATE) — the record shows which."""
    new_primary = oracle_node(targets, role)
    old = oracle_node(targets, params.database)
    log: list[str] = []
    state = instance_state(old, timeout=60)
    if state == "down":
        started = sqlplus(old, "STARTUP MOUNT", timeout=params.startup_timeout)
        sql_checked(started, "STARTUP MOUNT")
        log.append(f"started {old.name} MOUNT: {last_line(started.output)}")
    flashback = sqlplus(old, "SET HEADING OFF FEEDBACK OFF PAGESIZE 0", FLASHBACK_SQL, timeout=60)
    sql_checked(flashback, "SELECT flashback_on")
    words = [w for w in flashback.output.split() if w in ("YES", "NO", "RESTORE")]
    flashback_on = words[-1] if words else "?"
    data: dict[str, Any] = {"old_primary": old.name, "flashback_on": flashback_on}
    if flashback_on != "YES":
        down = sqlplus(old, "SHUTDOWN ABORT", timeout=120)
        log.append(
            f"{old.name} has FLASHBACK_ON={flashback_on}: it cannot be reinstated and needs "
            "rebuilding as a standby (RMAN DUPLICATE FOR STANDBY, or a restore); it was shut "
            f"down again ({last_line(down.output)})"
        )
        data.update(reinstated=False, needs_rebuild=True)
        return ActionResult("\n".join(log), data)
    command = f"REINSTATE DATABASE {old.unique_name}"
    run = dgmgrl(new_primary, command, timeout=timeout)
    change = parsers.parse_role_change(run.output, "reinstate")
    data.update(change=change.as_dict(), command=command, ran_on=new_primary.name)
    if not change.succeeded:
        raise tool_failed(run, command, change.errors, {**data, "reinstated": False})
    data.update(reinstated=True, needs_rebuild=False)
    return ActionResult("\n".join([*log, run.output]), data)


def reinstate_describe(targets: Targets, role: str, params: ReinstateParams) -> list[str]:
    old = oracle_node(targets, params.database)
    return [
        f"if {old.name} is down:",
        *describe_sqlplus(targets, params.database, "STARTUP MOUNT"),
        *describe_sqlplus(
            targets, params.database, "SET HEADING OFF FEEDBACK OFF PAGESIZE 0", FLASHBACK_SQL
        ),
        "if FLASHBACK_ON is YES:",
        *describe_dgmgrl(targets, role, f"REINSTATE DATABASE {old.unique_name}"),
        f"otherwise: SHUTDOWN ABORT on {old.name}, and the record says it needs rebuilding",
    ]


# -- the broker's checks -------------------------------------------------------------------------


class BrokerReadyParams(Params):
    database: str | None = Field(
        default=None, description="Role of the database validated; default: the check's target."
    )
    for_: Literal["switchover", "failover"] = Field(default="switchover", alias="for")
    max_apply_lag: Duration | None = Field(
        default=None, description="Largest apply lag the broker may report; none: not judged."
    )


def broker_ready(probe: Probe, role: str, params: BrokerReadyParams) -> Observation:
    """The broker validates the standby as ready (DGMGRL VALIDATE DATABASE VERBOSE)."""
    targets: Targets = probe  # type: ignore[assignment]  # the run's Targets
    on = oracle_node(targets, role)
    subject = oracle_node(targets, params.database or role)
    run = dgmgrl(on, f"VALIDATE DATABASE VERBOSE {subject.unique_name}", timeout=120)
    login_checked(run, "VALIDATE DATABASE")
    v = parsers.parse_validate_database(run.output)
    ready = v.ready_for_switchover if params.for_ == "switchover" else v.ready_for_failover
    expected = f"Ready for {params.for_.capitalize()}: Yes"
    if params.max_apply_lag is not None:
        expected += f", apply lag <= {format_seconds(params.max_apply_lag)}"
    held = ready is True
    why = []
    if ready is not True:
        why.append(
            f"Ready for {params.for_.capitalize()}: "
            f"{(v.switchover_line if params.for_ == 'switchover' else v.failover_line) or '?'}"
        )
    if params.max_apply_lag is not None and (
        v.apply_lag_seconds is None or v.apply_lag_seconds > params.max_apply_lag
    ):
        held = False
        why.append(f"apply lag {v.apply_lag or 'not reported'}")
    observed = {
        "ready_for_switchover": v.ready_for_switchover,
        "ready_for_failover": v.failover_line,
        "apply_lag_seconds": v.apply_lag_seconds,
        "transport_lag_seconds": v.transport_lag_seconds,
        "gap_status": v.gap_status,
        "flashback": v.flashback,
        "warnings": list(v.warnings),
        "errors": [str(e) for e in v.errors],
    }
    detail = "; ".join(why) if why else f"validated {subject.unique_name} on {on.name}"
    if v.warnings or v.errors:
        detail += " | " + "; ".join([*v.warnings, *(str(e) for e in v.errors)])
    if not held:  # what the broker printed, for whoever must decide what to do
        detail += "\n" + run.excerpt(800)
    elif v.apply_lag:
        detail += f"; apply lag {v.apply_lag}"
    return Observation(observed, expected, held, detail)


class BrokerStatusParams(Params):
    accept: list[str] = Field(
        default_factory=lambda: ["SUCCESS"],
        description="Configuration statuses that hold (SUCCESS; WARNING to tolerate warnings).",
    )


def broker_status(probe: Probe, role: str, params: BrokerStatusParams) -> Observation:
    """The broker's configuration status is SUCCESS (DGMGRL SHOW CONFIGURATION)."""
    targets: Targets = probe  # type: ignore[assignment]
    on = oracle_node(targets, role)
    run = dgmgrl(on, "SHOW CONFIGURATION", timeout=60)
    login_checked(run, "SHOW CONFIGURATION")
    show = parsers.parse_show_configuration(run.output)
    accept = [a.upper() for a in params.accept]
    observed = {
        "status": show.status,
        "members": {m.name: m.role for m in show.members},
        "errors": [str(e) for e in show.errors],
    }
    held = show.status in accept
    members = ", ".join(f"{m.name} {m.role}" for m in show.members)
    return Observation(observed, " or ".join(accept), held, f"{show.status_line or '?'}; {members}")


class BrokerRoleParams(Params):
    primary: str = Field(description="Role of the node the broker must name the primary.")


def broker_primary(probe: Probe, role: str, params: BrokerRoleParams) -> Observation:
    """The broker names the given node the primary (DGMGRL SHOW CONFIGURATION)."""
    targets: Targets = probe  # type: ignore[assignment]
    on = oracle_node(targets, role)
    wanted = oracle_node(targets, params.primary).unique_name
    run = dgmgrl(on, "SHOW CONFIGURATION", timeout=60)
    login_checked(run, "SHOW CONFIGURATION")
    show = parsers.parse_show_configuration(run.output)
    seen = show.primary
    return Observation(
        seen,
        f"{wanted} is the primary",
        bool(seen and seen.lower() == wanted.lower()),
        show.status_line or "",
    )


def broker_actions() -> list[ActionSpec]:
    spec = ActionSpec
    return [
        spec(
            "oracle.dg_show_configuration",
            NoParams,
            show_run,
            show_describe,
            False,
            "DGMGRL SHOW CONFIGURATION on the node's host: the broker's status and roles.",
            ENGINE,
        ),
        spec(
            "oracle.dg_switchover",
            RoleChangeParams,
            switchover_run,
            switchover_describe,
            True,
            "DGMGRL SWITCHOVER TO the standby (run on the primary's host).",
            ENGINE,
        ),
        spec(
            "oracle.dg_failover",
            RoleChangeParams,
            failover_run,
            failover_describe,
            True,
            "DGMGRL FAILOVER TO the standby (run on the standby's host).",
            ENGINE,
        ),
        spec(
            "oracle.dg_reinstate",
            ReinstateParams,
            reinstate_run,
            reinstate_describe,
            True,
            "Reinstate the old primary as a standby when FLASHBACK_ON; else say it needs "
            "rebuilding.",
            ENGINE,
        ),
    ]


def broker_checks() -> list[CheckSpec]:
    return [
        check_spec("dgmgrl.validate", BrokerReadyParams, broker_ready, ENGINE),
        check_spec("dgmgrl.configuration", BrokerStatusParams, broker_status, ENGINE),
        check_spec("dgmgrl.primary", BrokerRoleParams, broker_primary, ENGINE),
    ]
