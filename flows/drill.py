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
from prefect.exceptions import TerminationSignal
from prefect.states import Completed, Failed

from drills.listeners import Progress
from drills.record import StepRecord
from drills.runner import Runner, RunRequest, StepFn

# The CLI's progress display, handed to the flow in-process (it is not a flow parameter: the UI
# has no terminal to draw on).
progress_var: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "drctl_progress", default=None
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
    }
    runner = Runner(
        request,
        invoke=step_as_task,
        progress=progress_var.get(),
        orchestrator=orchestrator,
        # Prefect turns SIGTERM (a cancelled or stopped worker) into TerminationSignal.
        interrupts=(KeyboardInterrupt, SystemExit, TerminationSignal),
    )
    record = runner.run()
    message = f"{record.status}: {record.reason} (record {record.id})"
    if record.status == "passed":
        return Completed(message=message, data={"record": record.id, "status": record.status})
    return Failed(message=message, data={"record": record.id, "status": record.status})


def run_drill(request: RunRequest, progress: Progress | None = None) -> str:
    """Run the flow in this process and return the record id."""
    token = progress_var.set(progress)
    try:
        state = drill(request, return_state=True)
    finally:
        progress_var.reset(token)
    data = state.result(raise_on_failure=False)
    if isinstance(data, dict) and "record" in data:
        return str(data["record"])
    if isinstance(data, BaseException):
        raise data
    raise RuntimeError(f"the drill flow ended without a record: {state.message}")
