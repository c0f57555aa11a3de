"""The drill flow: one playbook run is one flow run; each step is a task run named after it.

The flow only wires the runner to Prefect: it passes an invoker that wraps every step in a task,
and tells the record which Prefect API watched the run. The runner's own clock and journal are the
proof; Prefect's run history is for watching.

Prefect's bookkeeping of a task run (creating it, its Pending, Running and Completed states, their
events, and the API server's work on each event) costs a few milliseconds of CPU per step in this
process, and more in the API server's, far more on a loaded machine. Done in line it sat between
every two steps (a switchover's write outage spans three of them), and done at the same moment
it competed for the CPU with the servers being switched. So ``StepTasks`` keeps it off that path:

- the step runs at once in the flow's own thread (where signals, interrupts and the runner's
  clock are), with no Prefect call before or after it;
- one companion thread, in the flow run's context, opens each step's task run ``OPEN_AFTER``
  seconds after the step began (at once if a step waiting for a person comes, or the run ends),
  holds it Running until the step's outcome is handed over, and closes it with that outcome: a
  step that raised fails its task run, an interrupt crashes it. A quick succession of steps (stop,
  confirm, promote) is thus shown a moment later, after the switch; a long step is shown Running
  while it runs;
- task runs are opened and closed in step order, one at a time, and every one is closed before
  the flow run ends;
- steps that wait for a person (``pause_flow_run`` from inside the step) run inside their task
  run, in line, after the task runs before them are closed.

The times that count are the runner's own (``started_at`` ... ``ended_at`` in the journal): a
task run's start and end in Prefect's history lag them by up to ``OPEN_AFTER``.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from prefect.tasks import Task

from drills.engine.human import HUMAN_ACTIONS
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


# One Prefect task per step id, made once: building a Task reads the function's source and
# hashes its code, which is too slow to do between two steps.
_tasks: dict[str, Task[[StepFn], StepRecord]] = {}
_tasks_lock = threading.Lock()
CLOSE_TIMEOUT = 30.0  # seconds the flow waits for the last task runs to be closed
OPEN_AFTER = 0.5  # seconds after a step began that its task run is opened


def _run_step(step: StepFn) -> StepRecord:
    return step()


def step_task(step_id: str) -> Task[[StepFn], StepRecord]:
    """The task whose run stands for step ``step_id`` (its name and its task run's name)."""
    with _tasks_lock:
        found = _tasks.get(step_id)
        if found is None:
            found = _tasks[step_id] = task(
                name=step_id,
                task_run_name=step_id,
                cache_policy=NO_CACHE,
                persist_result=False,
                retries=0,
                log_prints=False,
            )(_run_step)
        return found


def step_as_task(step_id: str, fn: StepFn) -> StepRecord:
    """Run the step inside its task run, in this thread."""
    result: StepRecord = step_task(step_id)(fn)
    return result


class StepCrashed(BaseException):
    """What a step's task run is told when the step was interrupted (it shows as Crashed)."""


class StepRaised(Exception):
    """What a step's task run is told when the step raised (it shows as Failed)."""


class _Outcome:
    """One step's outcome, handed from the flow's thread to the step's task run."""

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id
        self.record: StepRecord | None = None
        self.error: BaseException | None = None
        self.began = time.monotonic()
        self.done = threading.Event()  # the step ended
        self.closed = threading.Event()  # its task run ended

    def finish(self, record: StepRecord | None, error: BaseException | None = None) -> None:
        self.record, self.error = record, error
        self.done.set()

    def wait(self) -> StepRecord:
        """The step's record, once it has ended (this is the task run's body)."""
        self.done.wait()
        if self.error is not None:
            what = f"step {self.step_id} ended with {type(self.error).__name__}: {self.error}"
            if isinstance(self.error, Exception):
                raise StepRaised(what)
            raise StepCrashed(what)
        assert self.record is not None
        return self.record


class StepTasks:
    """The flow's invoker: each step is a task run, with Prefect's bookkeeping kept off the
    path between steps (see the module docstring). ``inline`` names the steps that must run
    inside their task run (those that pause the flow run for a person)."""

    def __init__(self) -> None:
        self.inline: set[str] = set()
        self._queue: queue.SimpleQueue[_Outcome | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._last: _Outcome | None = None
        self._hurry = threading.Event()  # open the waiting task runs now

    def __call__(self, step_id: str, fn: StepFn) -> StepRecord:
        if self._thread is None or step_id in self.inline:
            self.wait_closed()
            return step_as_task(step_id, fn)
        outcome = _Outcome(step_id)
        self._last = outcome
        self._queue.put(outcome)  # the companion opens its task run a moment later
        try:
            record = fn()
        except BaseException as exc:
            outcome.finish(None, exc)
            raise
        outcome.finish(record)
        return record

    @contextmanager
    def running(self) -> Iterator[None]:
        """Start the companion thread in the current (flow run's) context; at the end, close
        every task run still open before returning."""
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._serve,), name="drctl-step-tasks", daemon=True
        )
        self._thread.start()
        try:
            yield
        finally:
            last = self._last
            if last is not None and not last.done.is_set():
                # Interrupted between handing the step over and starting it.
                last.finish(None, StepCrashed(f"the flow ended before step {last.step_id} did"))
            self._hurry.set()
            self._queue.put(None)
            self._thread.join(CLOSE_TIMEOUT)
            self._thread = None

    def wait_closed(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the task runs of the steps so far now, and wait for it (a step run in line comes
        after them in Prefect's view too)."""
        if self._last is not None:
            self._hurry.set()
            self._last.closed.wait(timeout)
            self._hurry.clear()

    def _serve(self) -> None:
        while True:
            outcome = self._queue.get()
            if outcome is None:
                return
            self._hurry.wait(max(0.0, outcome.began + OPEN_AFTER - time.monotonic()))
            try:
                step_task(outcome.step_id)(outcome.wait)
            except BaseException:
                pass  # Prefect recorded it in the task run; the flow's thread raised it already
            finally:
                outcome.closed.set()


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
    step_tasks = StepTasks()
    runner = Runner(
        request,
        invoke=step_tasks,
        progress=listeners,
        orchestrator=orchestrator,
        # Prefect turns SIGTERM (a cancelled or stopped worker) into TerminationSignal.
        interrupts=(KeyboardInterrupt, SystemExit, TerminationSignal),
        approver=approval_from_ui,
        human=acknowledgement_from_ui,
    )
    every_step = [*runner.playbook.steps, *runner.playbook.rollback]
    step_tasks.inline = {s.id for s in every_step if s.action in HUMAN_ACTIONS}
    started = run_ids_var.get()
    if started is not None:
        started.append(runner.run_id)
    with step_tasks.running():
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
