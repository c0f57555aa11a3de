"""What every engine shares: commands on a host, waits, observation steps, the application's
HTTP checks and the human steps. Registered into every catalogue before the engines."""

from __future__ import annotations

import shlex
import time

from pydantic import Field

from drills.engine.catalogue import (
    ActionResult,
    ActionSpec,
    Catalogue,
    Params,
    check_spec,
)
from drills.engine.human import human_actions
from drills.engine.targets import Targets
from drills.model.durations import Duration
from verify import http


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
    )
    catalogue.add_checks(
        check_spec("http.answers", http.HttpParams, http.answers),
        check_spec(
            "his.registration_roundtrip", http.RegistrationParams, http.registration_roundtrip
        ),
    )
