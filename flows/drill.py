"""The drill flow: one playbook run is one flow run; each step is a task run named after it.

The flow only wires the runner to Prefect: it passes an invoker that wraps every step in a task,
and a gate that does the same for the preconditions (task runs ``preconditions`` and
``preconditions_after_approval``), and tells the record which Prefect API watched the run. The
runner's own clock and journal are the proof; Prefect's run history is for watching.

Its parameters are the run form (``flows.form``): top-level fields with Chinese and English
titles, the playbook and environment as choices, the operator and the ticket required. Two flows
share the name ``drill``: ``drill`` and ``activation``, which adds the incident's fields
(``incident_declared_at``, ``declared_by``) for the emergency activation's deployment.

What a run says in Prefect:

- a step that passed is a Completed task run; one that was overridden is Completed named
  "Overridden"; one skipped in this mode is Completed named "Skipped"; one that failed is a Failed
  task run whose message is the step's sentence (the record's ``reason``);
- each step's task run logs the commands or SQL it ran (as ``drctl plan`` shows them, redacted),
  each check's observed value, expectation and verdict, its attempts, its output's last lines
  and its verdict (``drills.engine.listeners.step_lines``);
- a drill that did not pass ends Failed with its reason as the message (its data a
  ``DrillEnded``), one refused before it began ends Failed with the refusal, and neither logs a
  traceback: Prefect 3.9 raises a failed final state's exception once the flow function has
  returned, and logs it with its traceback ("Engine execution exited with unexpected
  exception"); those records are dropped for these two outcomes, which the state's message
  already says (``QuietOutcomes``).

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
  while it runs. The task run's logs are written there too, off the steps' path;
- task runs are opened and closed in step order, one at a time, and every one is closed before
  the flow run ends;
- steps that wait for a person (``pause_flow_run`` from inside the step) run inside their task
  run, in line, after the task runs before them are closed.

The times that count are the runner's own (``started_at`` ... ``ended_at`` in the journal): a
task run's start and end in Prefect's history lag them by up to ``OPEN_AFTER``.
"""

from __future__ import annotations

import contextvars
import getpass
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

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
from pydantic import ValidationError

from drills.engine.human import HUMAN_ACTIONS
from drills.engine.listeners import (
    Listener,
    LogLine,
    Progress,
    check_lines,
    command_lines,
    step_lines,
)
from drills.engine.runner import Runner, RunRequest, StepFn
from drills.engine.stopping import StopRequested, handlers_for_the_run
from drills.model.approval import Approval
from drills.model.check import CheckResult
from drills.model.errors import DrillError, InputError
from drills.model.playbook import Step
from drills.model.record import StepRecord
from drills.model.redact import redact
from drills.ops.notify import configured_notifier
from flows.artifacts import PrefectArtifacts
from flows.form import form_field
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


# An approval the CLI took up front (in-process only: the UI's run asks for it by pausing).
approval_var: contextvars.ContextVar[Approval | None] = contextvars.ContextVar(
    "drctl_approval", default=None
)


# The ids of the runs the flow started in this process, so the caller finds the record even when
# Prefect's final state does not carry it.
run_ids_var: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "drctl_run_ids", default=None
)


Body = Callable[[], State[Any]]

# One Prefect task per task run name, made once: building a Task reads the function's source and
# hashes its code, which is too slow to do between two steps.
_tasks: dict[str, Task[[Body], State[Any]]] = {}
_tasks_lock = threading.Lock()
CLOSE_TIMEOUT = 30.0  # seconds the flow waits for the last task runs to be closed
OPEN_AFTER = 0.5  # seconds after a step began that its task run is opened


# -- how a run ends, without a traceback ---------------------------------------------------------


class DrillEnded(Exception):
    """The data of a drill's Failed state: the drill ran and did not pass (its record says why)."""

    def __init__(self, record_id: str, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason} (record {record_id})")
        self.record_id, self.status, self.reason = record_id, status, reason


QUIET = (DrillEnded, DrillError, StopRequested)


class QuietOutcomes(logging.Filter):
    """Drops Prefect's traceback of a drill that ended Failed on purpose (its state's message
    says why), and the ``NoneType: None`` Prefect prints under a task run that returned a Failed
    state (it logs it "with" an exception that is not there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            if isinstance(record.exc_info[1], QUIET):
                return False
            if record.exc_info[1] is None:
                record.exc_info = None
        return True


for _name in ("prefect.flow_runs", "prefect.task_runs", "prefect.engine", "prefect.flow_engine"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, QuietOutcomes) for f in _logger.filters):
        _logger.addFilter(QuietOutcomes())


def _write(lines: list[LogLine]) -> None:
    logger = get_run_logger()
    for level, text in lines:
        logger.log(level, "%s", text)


def step_state(record: StepRecord) -> State[Any]:
    """A step's task run's final state: Failed with the step's sentence when it failed."""
    took = f"{record.status} in {record.duration_seconds:.3f}s"
    if record.status == "failed":
        return Failed(message=record.reason or record.error or "failed")
    if record.status == "skipped":
        return Completed(name="Skipped", message=record.reason or "skipped")
    if record.status == "overridden":
        return Completed(name="Overridden", message=record.reason or took)
    return Completed(message=took)


def precondition_state(checks: list[CheckResult]) -> State[Any]:
    failed = [c for c in checks if not c.held]
    if not failed:
        return Completed(message=f"{len(checks)} precondition(s) held")
    first = failed[0]
    return Failed(
        message=redact(
            f"precondition {first.check} on {first.node} did not hold (observed "
            f"{first.observed!r}, expected {first.expected}"
            f"{'; ' + first.detail if first.detail else ''})"
        )
    )


# -- the task runs -------------------------------------------------------------------------------


def _run_body(body: Body) -> State[Any]:
    return body()


def step_task(name: str) -> Task[[Body], State[Any]]:
    """The task whose run stands for step (or gate) ``name`` (its name and its task run's)."""
    with _tasks_lock:
        found = _tasks.get(name)
        if found is None:
            found = _tasks[name] = task(
                name=name,
                task_run_name=name,
                cache_policy=NO_CACHE,
                persist_result=False,
                retries=0,
                log_prints=False,
            )(_run_body)
        return found


class StepCrashed(BaseException):
    """What a step's task run is told when the step was interrupted (it shows as Crashed)."""


class StepRaised(Exception):
    """What a step's task run is told when the step raised (it shows as Failed)."""


class _Outcome:
    """One step's (or gate's) outcome, handed from the flow's thread to its task run."""

    def __init__(
        self,
        name: str,
        close: Callable[[Any], State[Any]],
        opening: Callable[[], list[LogLine]] | None = None,
    ) -> None:
        self.name = name
        self.close = close  # logs what became of it and says the task run's final state
        self.opening = opening  # what to log when its task run opens
        self.result: Any = None
        self.error: BaseException | None = None
        self.began = time.monotonic()
        self.done = threading.Event()  # the step ended
        self.closed = threading.Event()  # its task run ended

    def finish(self, result: Any, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()

    def body(self) -> State[Any]:
        """The task run's body: log, wait for the outcome, end as it did."""
        if self.opening is not None:
            _write(self.opening())
        self.done.wait()
        if self.error is not None:
            what = f"{self.name} ended with {type(self.error).__name__}: {self.error}"
            if isinstance(self.error, Exception):
                raise StepRaised(what)
            raise StepCrashed(what)
        return self.close(self.result)


def _close_step(record: StepRecord) -> State[Any]:
    _write(step_lines(record))
    return step_state(record)


def _close_gate(checks: list[CheckResult]) -> State[Any]:
    _write(check_lines(checks, "precondition"))
    if not checks:
        _write([(logging.INFO, "the playbook declares no precondition for this mode")])
    return precondition_state(checks)


class StepTasks(Listener):
    """The flow's invoker and gate: each step, and each asking of the preconditions, is a task
    run, with Prefect's bookkeeping kept off the path between steps (see the module docstring).
    ``inline`` names the steps that must run inside their task run (those that pause the flow
    run for a person). As a listener it gives a skipped step its task run too."""

    def __init__(self) -> None:
        self.inline: set[str] = set()
        self.steps: dict[str, Step] = {}
        self.describe: Callable[[Step], list[str]] = lambda step: []
        self.nodes: Callable[[Step], str] = lambda step: "?"
        self._queue: queue.SimpleQueue[_Outcome | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._last: _Outcome | None = None
        self._hurry = threading.Event()  # open the waiting task runs now

    def _opening(self, step_id: str) -> Callable[[], list[LogLine]] | None:
        step = self.steps.get(step_id)
        if step is None:
            return None
        return lambda: command_lines(step, self.nodes(step), self._commands(step))

    def _commands(self, step: Step) -> list[str]:
        try:
            return self.describe(step)
        except Exception as exc:  # the log says less; the step is not changed
            return [f"(the commands could not be described: {exc})"]

    def _run(self, name: str, fn: Callable[[], Any], outcome: _Outcome) -> Any:
        if self._thread is None or name in self.inline:
            return self._in_line(outcome, fn)
        self._last = outcome
        self._queue.put(outcome)  # the companion opens its task run a moment later
        try:
            result = fn()
        except BaseException as exc:
            outcome.finish(None, exc)
            raise
        outcome.finish(result)
        return result

    def __call__(self, step_id: str, fn: StepFn) -> StepRecord:
        record: StepRecord = self._run(
            step_id, fn, _Outcome(step_id, _close_step, self._opening(step_id))
        )
        return record

    def gate(self, name: str, fn: Callable[[], list[CheckResult]]) -> list[CheckResult]:
        checks: list[CheckResult] = self._run(name, fn, _Outcome(name, _close_gate))
        return checks

    def step_ended(self, record: StepRecord) -> None:
        if record.status != "skipped":
            return
        # The runner decides a skip without invoking the step: its task run is made here.
        self._run(record.id, lambda: record, _Outcome(record.id, _close_step))

    def before_pause(self, ask: Callable[[RunRequest, str], Approval | None]) -> Any:
        """``ask``, once the task runs so far are closed (it pauses the flow run)."""

        def asking(request: RunRequest, run_id: str) -> Approval | None:
            self.wait_closed()
            return ask(request, run_id)

        return asking

    def _in_line(self, outcome: _Outcome, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` inside its task run, in this thread, after the task runs before it."""
        self.wait_closed()

        def body() -> State[Any]:
            if outcome.opening is not None:
                _write(outcome.opening())
            try:
                result = fn()
            except BaseException as exc:
                outcome.finish(None, exc)
                raise
            outcome.finish(result)
            return outcome.close(result)

        step_task(outcome.name)(body, return_state=True)
        if outcome.error is not None:
            raise outcome.error
        if not outcome.done.is_set():
            raise RuntimeError(f"the task run of {outcome.name} ended before it ran")
        return outcome.result

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
                last.finish(None, StepCrashed(f"the flow ended before {last.name} did"))
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
                step_task(outcome.name)(outcome.body, return_state=True)
            except BaseException:
                pass  # Prefect recorded it in the task run; the flow's thread raised it already
            finally:
                outcome.closed.set()


# -- approvals -----------------------------------------------------------------------------------


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


# -- the flows -----------------------------------------------------------------------------------


def _run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return f"{p.get('playbook')} on {p.get('environment')} ({p.get('mode') or 'drill'})"


def started_by(flow_run: Any) -> str:
    """How the flow run came about, as far as Prefect knows."""
    if run_ids_var.get() is not None:
        return "drctl (in process)"
    if flow_run is None or flow_run.deployment_id is None:
        return "a direct flow call"
    if getattr(flow_run, "auto_scheduled", False):
        return "schedule"
    created = getattr(flow_run, "created_by", None)
    kind = str(getattr(created, "type", "") or "").upper()
    if kind == "AUTOMATION":
        return f"automation {getattr(created, 'display_value', '')}".strip()
    return "Prefect UI or API"


def _refused(exc: DrillError) -> State[Any]:
    get_run_logger().error("%s", redact(str(exc)))
    return Failed(message=redact(str(exc)), data=exc)


def run_flow_body(fields: dict[str, Any]) -> State[Any]:
    """Run one request (the flow's parameters) and say how it ended as the flow's state."""
    context = get_run_context()
    flow_run = getattr(context, "flow_run", None)
    for name in ("ticket", "incident_declared_at", "declared_by"):
        if name in fields and not fields[name]:
            fields[name] = None  # the form's empty field: not given
    try:
        request = RunRequest.model_validate({**fields, "approval": approval_var.get()})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}"
            for e in exc.errors()
        )
        return _refused(InputError(f"the run's parameters are not valid: {problems}"))
    orchestrator = {
        "prefect_flow_run_id": str(flow_run.id) if flow_run else None,
        "prefect_deployment_id": str(flow_run.deployment_id)
        if flow_run and flow_run.deployment_id
        else None,
        "prefect_api": prefect_api(),
        "watched_by": "prefect",
        "started_by": started_by(flow_run),
        "os_user": getpass.getuser(),
        **(orchestrator_var.get() or {}),
    }
    step_tasks = StepTasks()
    listeners = [p for p in (progress_var.get(), configured_notifier()) if p is not None]
    listeners.append(step_tasks)  # a skipped step's task run
    listeners.append(PrefectArtifacts())  # the summary and the steps, in the Prefect UI
    try:
        runner = Runner(
            request,
            invoke=step_tasks,
            gate=step_tasks.gate,
            progress=listeners,
            orchestrator=orchestrator,
            # Prefect turns SIGTERM (a cancelled or stopped worker) into TerminationSignal.
            interrupts=(KeyboardInterrupt, SystemExit, TerminationSignal),
            approver=step_tasks.before_pause(approval_from_ui),
            human=acknowledgement_from_ui,  # its step runs in line, after the others closed
        )
    except DrillError as exc:
        return _refused(exc)
    every_step = [*runner.playbook.steps, *runner.playbook.rollback]
    step_tasks.steps = {s.id: s for s in every_step}
    step_tasks.inline = {s.id for s in every_step if s.action in HUMAN_ACTIONS}
    step_tasks.describe = lambda step: describe_step(runner, step)
    step_tasks.nodes = lambda step: (runner.targets.roles if runner.targets else {}).get(
        step.target, "?"
    )
    get_run_logger().info(
        "%s on %s (%s), operator %s, ticket %s; run %s",
        runner.playbook.name,
        runner.env.name,
        request.mode,
        request.operator,
        request.ticket or "none",
        runner.run_id,
    )
    started = run_ids_var.get()
    if started is not None:
        started.append(runner.run_id)
    # Under drctl's CLI a signal stops the run as without Prefect (drills.engine.stopping):
    # Prefect's own SIGTERM handler would raise wherever the run is, in a promotion too.
    with step_tasks.running(), handlers_for_the_run():
        try:
            record = runner.run()
        except DrillError as exc:  # refused before it began (another run holds the environment)
            return _refused(exc)
    message = redact(f"{record.status}: {record.reason} (record {record.id})")
    if record.status == "passed":
        get_run_logger().info("%s", message)
        return Completed(message=message, data={"record": record.id, "status": record.status})
    get_run_logger().error("%s", message)
    return Failed(message=message, data=DrillEnded(record.id, record.status, record.reason))


def describe_step(runner: Runner, step: Step) -> list[str]:
    """The commands (or SQL) a step runs, as ``drctl plan`` shows them, redacted."""
    if runner.targets is None or step.action not in runner.catalogue.actions:
        return []  # a human step, or the run has not reached its hosts
    spec = runner.catalogue.action(step.action)
    params = spec.params.model_validate(step.with_)
    return [redact(line) for line in spec.describe(runner.targets, step.target, params)]


FLOW_OPTIONS: dict[str, Any] = {
    "name": "drill",
    "flow_run_name": _run_name,
    "persist_result": False,
    "log_prints": False,
    # The server checks a deployment's runs against the form's schema; the flow checks them with
    # RunRequest, so a run started in this process may name a playbook or environment file.
    "validate_parameters": False,
}


@flow(**FLOW_OPTIONS)
def drill(
    playbook: Annotated[str, form_field("playbook")],
    environment: Annotated[str, form_field("environment")],
    operator: Annotated[str, form_field("operator", min_length=1)],
    ticket: Annotated[str, form_field("ticket", min_length=1)],
    mode: Annotated[Literal["drill", "real"], form_field("mode")] = "drill",
    objectives: Annotated[dict[str, str], form_field("objectives")] = {},  # noqa: B006
    overrides: Annotated[list[str], form_field("overrides")] = [],  # noqa: B006
    approval_timeout: Annotated[int, form_field("approval_timeout", ge=1, le=86400)] = 900,
) -> State[Any]:
    """Run one playbook against one environment and write its drill record."""
    return run_flow_body(dict(locals()))


@flow(**FLOW_OPTIONS)
def activation(
    playbook: Annotated[str, form_field("playbook")],
    environment: Annotated[str, form_field("environment")],
    operator: Annotated[str, form_field("operator", min_length=1)],
    ticket: Annotated[str, form_field("ticket", min_length=1)],
    mode: Annotated[Literal["drill", "real"], form_field("mode")] = "drill",
    incident_declared_at: Annotated[str, form_field("incident_declared_at")] = "",
    declared_by: Annotated[str, form_field("declared_by")] = "",
    objectives: Annotated[dict[str, str], form_field("objectives")] = {},  # noqa: B006
    overrides: Annotated[list[str], form_field("overrides")] = [],  # noqa: B006
    approval_timeout: Annotated[int, form_field("approval_timeout", ge=1, le=86400)] = 900,
) -> State[Any]:
    """Run an emergency activation: the drill flow, with the incident's declaration."""
    return run_flow_body(dict(locals()))


def flow_parameters(request: RunRequest) -> tuple[Any, dict[str, Any]]:
    """The flow that runs ``request`` and its parameters (the approval goes apart)."""
    parameters: dict[str, Any] = request.model_dump(
        mode="json", exclude={"approval", "incident_declared_at", "declared_by"}
    )
    if request.incident_declared_at is None and request.declared_by is None:
        return drill, parameters
    parameters["incident_declared_at"] = (
        request.incident_declared_at.isoformat() if request.incident_declared_at else ""
    )
    parameters["declared_by"] = request.declared_by or ""
    return activation, parameters


def run_drill(
    request: RunRequest,
    progress: Progress | None = None,
    orchestrator: dict[str, Any] | None = None,
) -> str:
    """Run the flow in this process and return the record id. ``orchestrator`` adds to what
    the record says about Prefect."""
    chosen, parameters = flow_parameters(request)
    progress_token = progress_var.set(progress)
    orchestrator_token = orchestrator_var.set(orchestrator)
    approval_token = approval_var.set(request.approval)
    started: list[str] = []
    ids_token = run_ids_var.set(started)
    try:
        state = chosen(**parameters, return_state=True)
    finally:
        progress_var.reset(progress_token)
        orchestrator_var.reset(orchestrator_token)
        approval_var.reset(approval_token)
        run_ids_var.reset(ids_token)
    data = state.result(raise_on_failure=False)
    if isinstance(data, DrillEnded):
        return data.record_id
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
