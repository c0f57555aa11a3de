"""RMAN on the database host: block validation and restore validation.

    oracle.rman_validate         BACKUP VALIDATE [CHECK LOGICAL] DATABASE [ARCHIVELOG ALL]:
                                 any corrupt block fails the step, named by file# and blocks
    oracle.rman_restore_validate RESTORE DATABASE PREVIEW SUMMARY, then RESTORE DATABASE VALIDATE:
                                 which backups a restore would read, the SCNs, and that they read

RMAN runs on the node the step names, through its executor, as the Oracle OS user, from
``$ORACLE_HOME/bin`` (:mod:`drills.engines.oracle.tools`), the script on its standard input after
``CONNECT TARGET /`` (OS authentication on the host): no password anywhere. The restore test is
in :mod:`drills.engines.oracle.restore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engines.oracle import parsers
from drills.engines.oracle.tools import (
    ENGINE,
    OracleNode,
    ToolFailed,
    ToolRun,
    describe_tool,
    oracle_node,
    run_tool,
    tool_failed,
)

if TYPE_CHECKING:
    from drills.engine.targets import Targets


def rman(
    on: OracleNode, script: str, *, timeout: float, sid: str | None = None
) -> tuple[ToolRun, parsers.RmanRun]:
    """One RMAN session (``CONNECT TARGET /`` first); a failed command raises with its stack."""
    run = run_tool(on, "rman", [], script, timeout=timeout, sid=sid)
    parsed = parsers.parse_rman(run.output)
    if parsed.failed or parsers.login_refused(run.output) or run.returncode != 0:
        lines = script.strip().splitlines()
        what = lines[1].strip() if len(lines) > 1 else "RMAN"
        raise tool_failed(run, what, parsed.stack or parsed.errors, {"rman": parsed.as_dict()})
    return run, parsed


def rman_script(*commands: str) -> str:
    return "CONNECT TARGET /\n" + "".join(f"{c}\n" for c in commands) + "EXIT\n"


# -- oracle.rman_validate ------------------------------------------------------------------------


class ValidateParams(Params):
    check_logical: bool = Field(default=True, description="CHECK LOGICAL as well as physical.")
    archivelog: bool = Field(default=True, description="Validate ARCHIVELOG ALL too.")


def _validate_command(params: ValidateParams) -> str:
    logical = " CHECK LOGICAL" if params.check_logical else ""
    logs = " ARCHIVELOG ALL" if params.archivelog else ""
    return f"BACKUP VALIDATE{logical} DATABASE{logs};"


def validate_run(
    targets: Targets, role: str, params: ValidateParams, timeout: float
) -> ActionResult:
    on = oracle_node(targets, role)
    command = _validate_command(params)
    run = run_tool(on, "rman", [], rman_script(command), timeout=timeout)
    check = parsers.parse_backup_validate(run.output)
    data = {
        "validate": check.as_dict(),
        "host": on.name,
        "address": on.host.address,
        "seconds": round(run.seconds, 3),
    }
    if parsers.login_refused(run.output) or parsers.rman_failed(check.errors):
        raise tool_failed(run, command, check.errors, data)
    findings = check.findings()
    if findings:
        raise ToolFailed(
            f"node {on.name}: {command} found corruption: " + "; ".join(findings),
            host=on.name,
            data=data,
        )
    if not check.clean:
        raise tool_failed(run, command, check.errors, data)
    files = len(check.datafiles)
    logs = len(check.archived_logs)
    return ActionResult(
        f"{files} datafile(s) and {logs} archived log(s) validated, no corrupt block\n"
        + run.excerpt(),
        data,
    )


def validate_describe(targets: Targets, role: str, params: ValidateParams) -> list[str]:
    return describe_tool(targets, role, "rman", [], rman_script(_validate_command(params)))


# -- oracle.rman_restore_validate ----------------------------------------------------------------


class RestoreValidateParams(Params):
    check_logical: bool = False


def restore_validate_run(
    targets: Targets, role: str, params: RestoreValidateParams, timeout: float
) -> ActionResult:
    on = oracle_node(targets, role)
    logical = " CHECK LOGICAL" if params.check_logical else ""
    preview_run = run_tool(
        on, "rman", [], rman_script("RESTORE DATABASE PREVIEW SUMMARY;"), timeout=timeout
    )
    preview = parsers.parse_restore_preview(preview_run.output)
    data: dict[str, Any] = {"preview": preview.as_dict(), "host": on.name}
    if parsers.rman_failed(preview.errors) or parsers.login_refused(preview_run.output):
        raise tool_failed(preview_run, "RESTORE DATABASE PREVIEW SUMMARY", preview.errors, data)
    _, validated = rman(on, rman_script(f"RESTORE DATABASE VALIDATE{logical};"), timeout=timeout)
    data["validate"] = validated.as_dict()
    return ActionResult(
        f"{len(preview.backups)} backup set(s) would be read; media recovery starts at SCN "
        f"{preview.media_recovery_start_scn}, must go beyond SCN {preview.recovery_beyond_scn}; "
        f"{len(validated.pieces)} piece(s) read and validated\n{preview_run.excerpt(800)}",
        data,
    )


def restore_validate_describe(
    targets: Targets, role: str, params: RestoreValidateParams
) -> list[str]:
    logical = " CHECK LOGICAL" if params.check_logical else ""
    return [
        *describe_tool(targets, role, "rman", [], rman_script("RESTORE DATABASE PREVIEW SUMMARY;")),
        *describe_tool(
            targets, role, "rman", [], rman_script(f"RESTORE DATABASE VALIDATE{logical};")
        ),
    ]


def rman_actions() -> list[ActionSpec]:
    spec = ActionSpec
    return [
        spec(
            "oracle.rman_validate",
            ValidateParams,
            validate_run,
            validate_describe,
            False,
            "RMAN BACKUP VALIDATE CHECK LOGICAL DATABASE ARCHIVELOG ALL; corruption fails.",
            ENGINE,
        ),
        spec(
            "oracle.rman_restore_validate",
            RestoreValidateParams,
            restore_validate_run,
            restore_validate_describe,
            False,
            "RMAN RESTORE DATABASE PREVIEW SUMMARY and RESTORE DATABASE VALIDATE.",
            ENGINE,
        ),
    ]
