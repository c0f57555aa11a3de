"""The drill flow: one playbook run is one flow run; each step is a task run named after it.

The flow only wires the runner to Prefect: it passes an invoker that wraps every step in a task,
and tells the record which Prefect API watched the run. The runner's own clock and journal are the
proof; Prefect's run history is for watching.
"""

from __future__ import annotations

import contextvars
import os
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout, TerminationSignal
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed

from drills.engine.listeners import Progress
from drills.engine.runner import Runner, RunRequest, StepFn
from drills.model.approval import Approval
from drills.model.errors import DrillError
from drills.model.record import StepRecord
from drills.ops.notify import configured_notifier
from flows.artifacts import PrefectArtifacts
from flows.human import acknowledgement_from_ui

# The CLI's progress display, handed to the flow in-process (it is not a flow parameter: the UI
# has no terminal to draw on).
progress_var: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "drctl_progress", default=None
)


# What the CLI adds to the record's ``orchestrator`` (in-process only, like the progress).
orchestrator_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "drctl_orchestrator", default=None
)


# The ids of the runs the flow started in this process, so the caller finds the record even when
# Prefect's final state does not carry it.
run_ids_var: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "drctl_run_ids", default=None
)


def step_as_task(step_id: str, fn: StepFn) -> StepRecord:
    step_task = task(
        name=step_id,
        task_run_name=step_id,
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=0,
        log_prints=False,
    )(fn)
    result: StepRecord = step_task()
    return result


class ApprovalForm(RunInput, Approval):
    """The form the Prefect UI shows on a paused real run."""


def approval_from_ui(request: RunRequest, run_id: str) -> Approval | None:
    """Pause the flow run for the approval form; None when nobody answered in time."""
    get_run_logger().warning(
        "run %s: real run on protected environment %s waits for an approval (resume the flow "
        "run with the form: approver, ticket, the environment's name, reason)",
        run_id,
        request.environment,
    )
    try:
        form = pause_flow_run(
            wait_for_input=ApprovalForm.with_initial_data(via="prefect-ui", approve=True),
            timeout=request.approval_timeout,
            poll_interval=1,
        )
    except FlowPauseTimeout:
        return None
    if form is None:
        return None
    return Approval.model_validate(
        {**form.model_dump(include=set(Approval.model_fields)), "via": "prefect-ui"}
    )


def prefect_api() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    return str(configured) if configured else "ephemeral"


@flow(
    name="drill",
    flow_run_name="{request.playbook} on {request.environment} ({request.mode})",
    persist_result=False,
    log_prints=False,
    validate_parameters=True,
)
def drill(request: RunRequest) -> State[Any]:
    """Run one playbook against one environment and write its drill record."""
    context = get_run_context()
    flow_run = getattr(context, "flow_run", None)
    orchestrator = {
        "prefect_flow_run_id": str(flow_run.id) if flow_run else None,
        "prefect_api": prefect_api(),
        **(orchestrator_var.get() or {}),
    }
    listeners = [p for p in (progress_var.get(), configured_notifier()) if p is not None]
    listeners.append(PrefectArtifacts())  # the summary and the steps, in the Prefect UI
    runner = Runner(
        request,
        invoke=step_as_task,
        progress=listeners,
        orchestrator=orchestrator,
        # Prefect turns SIGTERM (a cancelled or stopped worker) into TerminationSignal.
        interrupts=(KeyboardInterrupt, SystemExit, TerminationSignal),
        approver=approval_from_ui,
        human=acknowledgement_from_ui,
    )
    started = run_ids_var.get()
    if started is not None:
        started.append(runner.run_id)
    record = runner.run()
    message = f"{record.status}: {record.reason} (record {record.id})"
    if record.status == "passed":
        return Completed(message=message, data={"record": record.id, "status": record.status})
    return Failed(message=message, data={"record": record.id, "status": record.status})


def run_drill(
    request: RunRequest,
    progress: Progress | None = None,
    orchestrator: dict[str, Any] | None = None,
) -> str:
    """Run the flow in this process and return the record id. ``orchestrator`` adds to what
    the record says about Prefect (e.g. that the CLI fell back to the ephemeral API)."""
    token = progress_var.set(progress)
    orchestrator_token = orchestrator_var.set(orchestrator)
    started: list[str] = []
    ids_token = run_ids_var.set(started)
    try:
        state = drill(request, return_state=True)
    finally:
        progress_var.reset(token)
        orchestrator_var.reset(orchestrator_token)
        run_ids_var.reset(ids_token)
    data = state.result(raise_on_failure=False)
    if isinstance(data, dict) and "record" in data:
        return str(data["record"])
    if isinstance(data, DrillError):
        raise data  # refused before it began (a busy environment, bad input): no record
    if started:
        # The runner wrote its record, but Prefect's final state lost it: for instance an
        # approval pause that timed out makes the server fail the flow run by itself.
        return started[-1]
    if isinstance(data, BaseException):
        raise data
    raise RuntimeError(f"the drill flow ended without a record: {state.message}")
