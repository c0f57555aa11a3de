"""The Oracle engine's SQL-level actions: a statement, a switchover verification, a log switch;
and what it runs for two engine-neutral actions (``drills.engine.neutral``): the fence of a
failover (confirmed, never forced) and the rejoin of the old primary (reinstated, or a failure).

Each runs through the node's session (``Targets.sql``: python-oracledb, the node's user and
privilege); ``describe`` says what would run where, for ``drctl plan``. Actions that run the
server's tools (dgmgrl, rman, expdp/impdp) on the node's host are in ``tools``; both lists are
registered by ``drills.engines.oracle.register``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engine.targets import Targets
from drills.engines.oracle.broker import ReinstateParams, reinstate_describe, reinstate_run
from drills.engines.oracle.loss import loss_actions
from drills.engines.oracle.tools import ToolFailed
from drills.model.errors import InputError
from verify.oracle import oracle_access

ENGINE = "oracle"
SHOWN_ROWS = 20  # rows of a query kept in the step's output


class SqlParams(Params):
    statement: str = Field(min_length=1, description="One SQL statement or PL/SQL block.")
    binds: dict[str, str | int | float | None] = Field(
        default_factory=dict, description="Values for its :name binds."
    )


class SwitchoverVerifyParams(Params):
    to: str = Field(description="Role of the standby that would become primary.")


def _where(targets: Targets, role: str) -> str:
    name, access = oracle_access(targets, role)
    privilege = f" as {access.privilege.upper()}" if access.privilege else ""
    return f"SQL on {name} ({access.user}{privilege})"


# -- oracle.sql ----------------------------------------------------------------------------------


def sql_run(targets: Targets, role: str, params: SqlParams, timeout: float) -> ActionResult:
    session: Any = targets.sql(role)  # an OracleSession: :name binds are a dict
    rows = session.query(params.statement, params.binds or None, timeout=timeout)
    shown = "\n".join(" | ".join(str(v) for v in row) for row in rows[:SHOWN_ROWS])
    return ActionResult(shown, {"rows": len(rows)})


def sql_describe(targets: Targets, role: str, params: SqlParams) -> list[str]:
    return [f"{_where(targets, role)}: {params.statement}"]


# -- oracle.switchover_verify ------------------------------------------------------------------


def _target_name(targets: Targets, to: str) -> str:
    name, access = oracle_access(targets, to)
    if not access.db_unique_name:
        raise InputError(
            f"node {name} has no oracle.db_unique_name: the switchover target is named by it",
            host=name,
        )
    return str(access.db_unique_name)


def _verify_statement(targets: Targets, params: SwitchoverVerifyParams) -> str:
    # An identifier cannot be a bind; db_unique_name is validated by the environment model.
    return f"ALTER DATABASE SWITCHOVER TO {_target_name(targets, params.to)} VERIFY"


def switchover_verify_run(
    targets: Targets, role: str, params: SwitchoverVerifyParams, timeout: float
) -> ActionResult:
    statement = _verify_statement(targets, params)
    targets.sql(role).query(statement, timeout=timeout)
    target, _ = targets.node(params.to)
    return ActionResult(f"switchover to {target} verified: {statement}")


def switchover_verify_describe(
    targets: Targets, role: str, params: SwitchoverVerifyParams
) -> list[str]:
    return [f"{_where(targets, role)}: {_verify_statement(targets, params)}"]


# -- oracle.archive_log_current ----------------------------------------------------------------

ARCHIVE_SQL = "ALTER SYSTEM ARCHIVE LOG CURRENT"


def archive_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    targets.sql(role).query(ARCHIVE_SQL, timeout=timeout)
    return ActionResult("the current online log was archived (and sent to the standbys)")


def archive_describe(targets: Targets, role: str, params: Params) -> list[str]:
    return [f"{_where(targets, role)}: {ARCHIVE_SQL}"]


# -- oracle.fence ------------------------------------------------------------------------------
# What Oracle runs for db.fence. An Oracle primary is not stopped by drctl to fence it: the
# fence is what the step's checks confirm (its instance down on its host, no session that could
# write); while it is still open read write they do not hold, and the failover does not start
# unless the run carries the step's override.


def _fence_sentence(name: str) -> str:
    return (
        f"nothing is stopped or killed on {name}: the fence is confirmed by the step's checks "
        "(its instance down on its host, no session that could write), never forced"
    )


def fence_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _ = targets.node(role)
    return ActionResult(_fence_sentence(name), {"node": name, "forced": False})


def fence_describe(targets: Targets, role: str, params: Params) -> list[str]:
    return [_fence_sentence(targets.node(role)[0])]


# -- oracle.rejoin_as_standby ----------------------------------------------------------------
# What Oracle runs for db.rejoin: oracle.dg_reinstate from the new primary (``source``). There
# an old primary without FLASHBACK_ON passes, saying it needs rebuilding (the failover drill's
# outcome); a rejoin that did not rejoin fails, saying the same, so a playbook's checks are not
# left polling for a standby that will not come.


class RejoinParams(Params):
    source: str = Field(description="Role of the new primary, which reinstates this one.")


def rejoin_run(targets: Targets, role: str, params: RejoinParams, timeout: float) -> ActionResult:
    result = reinstate_run(targets, params.source, ReinstateParams(database=role), timeout)
    if result.data.get("needs_rebuild"):
        name, _ = targets.node(role)
        raise ToolFailed(result.output, host=name, data=result.data)
    return result


def rejoin_describe(targets: Targets, role: str, params: RejoinParams) -> list[str]:
    return reinstate_describe(targets, params.source, ReinstateParams(database=role))


def oracle_actions() -> list[ActionSpec]:
    """The SQL-level actions of the Oracle engine (the tools' are ``toolset.tool_actions``)."""
    return [
        ActionSpec(
            "oracle.sql",
            SqlParams,
            sql_run,
            sql_describe,
            True,
            "Run one SQL statement or PL/SQL block on the role's Oracle database.",
            ENGINE,
        ),
        ActionSpec(
            "oracle.switchover_verify",
            SwitchoverVerifyParams,
            switchover_verify_run,
            switchover_verify_describe,
            False,
            "Ask the primary whether a switchover to the standby would succeed "
            "(ALTER DATABASE SWITCHOVER TO ... VERIFY, 12.1+); changes nothing.",
            ENGINE,
        ),
        ActionSpec(
            "oracle.archive_log_current",
            Params,
            archive_run,
            archive_describe,
            True,
            "Archive the current online log on the primary, so the standbys receive all redo.",
            ENGINE,
        ),
        ActionSpec(
            "oracle.fence",
            Params,
            fence_run,
            fence_describe,
            False,
            "Fence the old primary by confirmation only: nothing is stopped; the step's checks "
            "confirm its instance is down and it takes no writes.",
            ENGINE,
        ),
        ActionSpec(
            "oracle.rejoin_as_standby",
            RejoinParams,
            rejoin_run,
            rejoin_describe,
            True,
            "Reinstate the old primary as a standby of the new one (source) when FLASHBACK_ON; "
            "otherwise fail, saying it needs rebuilding.",
            ENGINE,
        ),
        # what a failover may have lost: the lag before it, the SCN and the bound after it
        *loss_actions(),
    ]
