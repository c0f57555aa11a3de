"""Who hears about a run as it goes: the terminal, notifications, Prefect artifacts.

A listener implements any of the ``Progress`` methods. ``Fanout`` passes each event to every
listener, and a listener that fails is logged and skipped: hearing about a drill must never
change how the drill runs or what its record says.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from drills.engine.loader import LoadedPlaybook
    from drills.engine.roles import RoleMap
    from drills.model.environment import Environment
    from drills.model.playbook import Step
    from drills.model.record import Record, StepRecord
    from verify.result import CheckResult

log = logging.getLogger("drctl")


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
