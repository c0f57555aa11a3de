"""What every engine shares: commands on a host, waits, observation steps, the application's
HTTP checks, the human steps, the host checks of an inspection (``host.*``, ``app.*``) and the
actions and checks of a change (``files.backup``, ``release.*``, ``sql.returns``). Registered into
every catalogue before the engines.

"Since the last inspection" (``host.log_errors``, ``host.last_reboot``, and the engines' own log
checks through ``previous_inspection``) is the end of the newest sealed record of kind
``inspection`` on the same environment, read from the record store here: the checks themselves
(``verify``) know no records."""

from __future__ import annotations

import json
import shlex
import time
from datetime import datetime

from pydantic import Field

from drills.engine.catalogue import (
    ActionResult,
    ActionSpec,
    Catalogue,
    Params,
    check_spec,
)
from drills.engine.human import human_actions
from drills.engine.release import change_actions
from drills.engine.targets import Targets
from drills.model.durations import Duration
from drills.model.errors import DrillError
from verify import app, change, host, http
from verify.host import Since
from verify.result import Observation, Probe


class ShellParams(Params):
    command: list[str] | str = Field(
        description="The command: a list of arguments, or a string "
        "split like a shell would (no shell runs it)."
    )
    as_user: str | None = None


class WaitParams(Params):
    seconds: Duration


# -- generic actions -------------------------------------------------------------------------


def _shell_argv(params: ShellParams) -> list[str]:
    return shlex.split(params.command) if isinstance(params.command, str) else params.command


def shell_run(targets: Targets, role: str, params: ShellParams, timeout: float) -> ActionResult:
    result = targets.host(role).run(_shell_argv(params), user=params.as_user, timeout=timeout)
    return ActionResult(result.output)


def shell_describe(targets: Targets, role: str, params: ShellParams) -> list[str]:
    return [targets.describe(role, _shell_argv(params), user=params.as_user)]


def wait_run(targets: Targets, role: str, params: WaitParams, timeout: float) -> ActionResult:
    time.sleep(min(params.seconds, timeout))
    return ActionResult(f"waited {params.seconds:g}s")


def wait_describe(targets: Targets, role: str, params: WaitParams) -> list[str]:
    return [f"wait {params.seconds:g}s"]


def observe_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    return ActionResult()


def observe_describe(targets: Targets, role: str, params: Params) -> list[str]:
    return ["(no action: the step's checks are the point)"]


# -- since the last inspection ----------------------------------------------------------------

SCANNED = 2000  # newest sealed entries looked through for the previous inspection


def previous_inspection(probe: Probe) -> Since | None:
    """The end of the newest sealed inspection (a record of kind ``inspection``, passed or
    failed) of the probe's environment, or None: no record store, or no such record."""
    from drills.home import drctl_home
    from drills.records.store import RecordStore

    env = getattr(probe.env, "name", None)
    records = drctl_home() / "records"
    if not isinstance(env, str) or not records.is_dir():
        return None
    try:
        store = RecordStore(records, drctl_home() / "locks")
        entries = [
            e
            for e in store.entries(with_body=True)
            if e.kind == "drill"
            and e.summary.get("environment") == env
            and e.summary.get("status") in ("passed", "failed")
        ]
        for entry in reversed(entries[-SCANNED:]):
            body = json.loads(entry.body or b"{}")
            ended = body.get("ended_at")
            if (body.get("playbook") or {}).get("kind") != "inspection" or not ended:
                continue
            moment = datetime.fromisoformat(str(ended).replace("Z", "+00:00"))
            name = (body.get("playbook") or {}).get("name", "")
            return Since(moment.timestamp(), f"previous inspection {entry.id} ({name})", entry.id)
    except (DrillError, OSError, ValueError):
        return None
    return None


def host_log_errors(probe: Probe, role: str, params: host.LogErrorsParams) -> Observation:
    """No line matching the patterns in the named log files since the last inspection."""
    return host.log_errors(probe, role, params, previous_inspection(probe))


def host_last_reboot(probe: Probe, role: str, params: host.RebootParams) -> Observation:
    """When the host last booted: no reboot since the previous inspection."""
    return host.last_reboot(probe, role, params, previous_inspection(probe))


def register(catalogue: Catalogue) -> None:
    catalogue.add_actions(
        ActionSpec(
            "shell",
            ShellParams,
            shell_run,
            shell_describe,
            True,
            "Run a command on the role's host.",
        ),
        ActionSpec("wait", WaitParams, wait_run, wait_describe, False, "Wait a while."),
        ActionSpec(
            "observe",
            Params,
            observe_run,
            observe_describe,
            False,
            "Do nothing; the step exists for its checks (a gate such as fencing).",
        ),
        *human_actions(),
        *change_actions(),
    )
    catalogue.add_checks(
        check_spec("http.answers", http.HttpParams, http.answers),
        check_spec(
            "his.registration_roundtrip", http.RegistrationParams, http.registration_roundtrip
        ),
        # the inspection of every host: engine-neutral, through the node's host executor
        check_spec("host.cpu_load", host.CpuParams, host.cpu_load),
        check_spec("host.memory", host.MemoryParams, host.memory),
        check_spec("host.filesystems", host.FilesystemsParams, host.filesystems),
        check_spec("host.clock_offset", host.ClockParams, host.clock_offset),
        check_spec("host.failed_units", host.FailedUnitsParams, host.failed_units),
        check_spec("host.last_reboot", host.RebootParams, host_last_reboot),
        check_spec("host.log_errors", host.LogErrorsParams, host_log_errors),
        # the application tier, as its clients see it
        check_spec("app.response_time", app.ResponseTimeParams, app.response_time),
        check_spec("app.tls_certificate", app.TlsParams, app.tls_certificate),
        # what a change names to verify itself and its rollback
        check_spec("sql.returns", change.SqlReturnsParams, change.sql_returns),
        check_spec("release.current", change.ReleaseCurrentParams, change.release_current),
    )
