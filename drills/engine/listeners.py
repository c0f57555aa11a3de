"""Who hears about a run as it goes: the terminal, notifications, logs, Prefect artifacts.

A listener implements any of the ``Progress`` methods. ``Fanout`` passes each event to every
listener, and a listener that fails is logged and skipped: hearing about a drill must never
change how the drill runs or what its record says.

``step_lines`` and ``check_lines`` say what a step did as log lines (the commands it ran, each
check's observed value, expectation and verdict, its attempts, its output's last lines, its
verdict), redacted; ``LogListener`` writes them to a logger as the run goes. The Prefect flow
writes the same lines on each step's task run (``flows.drill``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from drills.model.durations import format_seconds
from drills.model.redact import redact

if TYPE_CHECKING:
    from drills.engine.loader import LoadedPlaybook
    from drills.engine.roles import RoleMap
    from drills.model.environment import Environment
    from drills.model.playbook import Step
    from drills.model.record import Record, StepRecord
    from verify.result import CheckResult

log = logging.getLogger("drctl")

LOG_OUTPUT_EXCERPT = 1500  # characters of a step's output in its log (the record keeps more)
LogLine = tuple[int, str]  # (logging level, text)


class Progress(Protocol):
    def started(self, run_id: str, loaded: LoadedPlaybook, env: Environment) -> None: ...
    def roles(self, role_map: RoleMap) -> None: ...
    def preconditions(self, checks: list[CheckResult]) -> None: ...
    def step_started(self, step: Step, node: str, phase: str) -> None: ...
    def step_ended(self, record: StepRecord) -> None: ...
    def note(self, text: str) -> None: ...
    def approval_needed(self, run_id: str, environment: str, playbook: str) -> None: ...
    def finished(self, record: Record) -> None: ...


class Listener:
    """A Progress that ignores every event; subclass it and override what you need."""

    def started(self, run_id: str, loaded: LoadedPlaybook, env: Environment) -> None:
        pass

    def roles(self, role_map: RoleMap) -> None:
        pass

    def preconditions(self, checks: list[CheckResult]) -> None:
        pass

    def step_started(self, step: Step, node: str, phase: str) -> None:
        pass

    def step_ended(self, record: StepRecord) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def approval_needed(self, run_id: str, environment: str, playbook: str) -> None:
        pass

    def finished(self, record: Record) -> None:
        pass


class Fanout(Listener):
    def __init__(self, listeners: list[Progress]) -> None:
        self.listeners = listeners

    def _each(self, method: str, *args: Any) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, method)(*args)
            except Exception:
                log.exception("listener %s failed on %s", type(listener).__name__, method)

    def started(self, run_id: str, loaded: LoadedPlaybook, env: Environment) -> None:
        self._each("started", run_id, loaded, env)

    def roles(self, role_map: RoleMap) -> None:
        self._each("roles", role_map)

    def preconditions(self, checks: list[CheckResult]) -> None:
        self._each("preconditions", checks)

    def step_started(self, step: Step, node: str, phase: str) -> None:
        self._each("step_started", step, node, phase)

    def step_ended(self, record: StepRecord) -> None:
        self._each("step_ended", record)

    def note(self, text: str) -> None:
        self._each("note", text)

    def approval_needed(self, run_id: str, environment: str, playbook: str) -> None:
        self._each("approval_needed", run_id, environment, playbook)

    def finished(self, record: Record) -> None:
        self._each("finished", record)


# -- what a step did, as log lines -------------------------------------------------------------


def check_lines(checks: list[CheckResult], what: str = "check") -> list[LogLine]:
    """One line per check: what it asked of which node, what it saw, what it expected, and its
    verdict (a check that did not hold is a warning)."""
    lines: list[LogLine] = []
    for c in checks:
        text = (
            f"{what} {c.check} on {c.node}: observed {c.observed!r}, expected {c.expected}: "
            f"{'held' if c.held else c.verdict}"
        )
        if c.detail:
            text += f" ({c.detail})"
        lines.append((logging.INFO if c.held else logging.WARNING, redact(text)))
    return lines


def command_lines(step: Step, node: str, commands: list[str]) -> list[LogLine]:
    """What the step runs, on which node (each command or SQL as ``drctl plan`` shows it)."""
    head = f"step {step.id}: {step.action} on {step.target} ({node})"
    if step.retries:
        head += f", up to {step.retries + 1} attempts"
    lines: list[LogLine] = [(logging.INFO, redact(head))]
    lines += [(logging.INFO, redact(f"  $ {command}")) for command in commands]
    return lines


def step_lines(record: StepRecord) -> list[LogLine]:
    """What became of a step: its attempts, error, checks, output excerpt and verdict."""
    lines: list[LogLine] = []
    if record.attempts > 1:
        lines.append((logging.WARNING, f"step {record.id} took {record.attempts} attempts"))
    if record.error:
        lines.append((logging.WARNING, redact(f"step {record.id}: {record.error}")))
    lines += check_lines(record.checks)
    output = record.output.strip()
    if output:
        excerpt = output[-LOG_OUTPUT_EXCERPT:]
        cut = "…" if len(output) > len(excerpt) else ""
        lines.append((logging.INFO, redact(f"step {record.id} output:\n{cut}{excerpt}")))
    verdict = f"step {record.id} {record.status} in {format_seconds(record.duration_seconds)}"
    if record.reason:
        verdict += f": {record.reason}"
    failed = record.status == "failed"
    lines.append((logging.ERROR if failed else logging.INFO, redact(verdict)))
    return lines


class LogListener(Listener):
    """Writes what each step ran and what became of it to a logger, as the run goes."""

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        describe: Callable[[Step], list[str]] | None = None,
    ) -> None:
        self.logger = logger
        self.describe = describe  # the commands a step runs (``drctl plan``'s lines)

    def _write(self, lines: list[LogLine]) -> None:
        for level, text in lines:
            self.logger.log(level, "%s", text)

    def preconditions(self, checks: list[CheckResult]) -> None:
        self._write(check_lines(checks, "precondition"))

    def step_started(self, step: Step, node: str, phase: str) -> None:
        self._write(command_lines(step, node, self.describe(step) if self.describe else []))

    def step_ended(self, record: StepRecord) -> None:
        self._write(step_lines(record))

    def note(self, text: str) -> None:
        self._write([(logging.INFO, redact(text))])

    def finished(self, record: Record) -> None:
        self._write([(logging.INFO, redact(f"{record.status}: {record.reason} ({record.id})"))])
