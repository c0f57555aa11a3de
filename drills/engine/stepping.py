"""One step of a run: its action, with retries, then its checks polled until they hold or its
deadline passes; the record of what happened, journaled with the milestones it marks.

A step that only waits (``wait``, a person's acknowledgement, a retry's delay) is stopped at once
by a stop request (``drills.engine.stopping``); any other is never cut in the middle. ``invoke``
wraps each step: the Prefect flow passes one that makes each step a task run named after the
step; tests and the benchmark's baseline call steps directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from drills.engine.catalogue import Catalogue
from drills.engine.checking import run_check
from drills.engine.human import HUMAN_ACTIONS, HumanHook, run_human_step
from drills.engine.journaling import RunJournaling
from drills.engine.listeners import Fanout
from drills.engine.stopping import STOP, WAITING_ACTIONS
from drills.engine.targets import Targets
from drills.model.check import CheckResult
from drills.model.clock import Stamp
from drills.model.errors import DrillError
from drills.model.playbook import Mode, Step
from drills.model.record import StepOffsets, StepRecord
from drills.model.redact import redact_model
from drills.model.request import RunRequest

OUTPUT_EXCERPT = 2000

StepFn = Callable[[], StepRecord]
Invoker = Callable[[str, StepFn], StepRecord]


class StepExecution(RunJournaling):
    """The running of a run's steps (a part of ``drills.engine.runner.Runner``)."""

    request: RunRequest
    run_id: str
    catalogue: Catalogue
    targets: Targets | None
    progress: Fanout
    invoke: Invoker
    human: HumanHook | None  # asks a person (drills.engine.human); None: drctl ack's file only

    def _run_step(self, step: Step, phase: Literal["main", "rollback"]) -> StepRecord:
        assert self.targets is not None and self.journal is not None
        moves_before = len(self.journal.moves)
        node = self.targets.roles.get(step.target, "?")
        self.progress.step_started(step, node, phase)
        if Mode(self.request.mode) not in step.modes:
            now = self.clock.now()
            only = " and ".join(m.value for m in step.modes)
            record = StepRecord(
                **step_identity(step, phase, node),
                status="skipped",
                attempts=0,
                started_at=now.at,
                ended_at=now.at,
                offsets=StepOffsets(started=now.offset, ended=now.offset),
                duration_seconds=0.0,
                reason=f"runs only in {only} mode",
            )
        else:
            # A run killed during the step leaves this: its journal says which step was going.
            self._event("step_started", step=step.id, phase=phase)
            if len(self.journal.moves) == moves_before:
                record = redact_model(
                    self.invoke(step.id, lambda: self._execute(step, phase, node))
                )
            else:  # the journal failed as the step began: it is not run, and it has failed
                record = _not_run(step, phase, node, self.clock.now())
        record = self._journal_step(step, record, moves_before)  # its milestones too
        self.progress.step_ended(record)
        return record

    def _execute(self, step: Step, phase: Literal["main", "rollback"], node: str) -> StepRecord:
        """One step: the action with its retries, then its checks until they hold."""
        assert self.targets is not None
        if step.action in HUMAN_ACTIONS:
            with STOP.waiting(f"while step {step.id} waited for a person; it did not finish"):
                return run_human_step(self, step, phase, node)
        spec = self.catalogue.action(step.action)
        params = spec.params.model_validate(step.with_)
        started = self.clock.now()
        attempts, output, error = 0, "", None
        data: dict[str, Any] = {}
        while True:
            attempts += 1
            try:
                if step.action in WAITING_ACTIONS:  # it only waits: a stop ends it at once
                    with STOP.waiting(f"while step {step.id} waited; it did not finish"):
                        result = spec.run(self.targets, step.target, params, step.timeout)
                else:
                    result = spec.run(self.targets, step.target, params, step.timeout)
                output, data = result.output, result.data
                error = None
                break
            except DrillError as exc:
                error = str(exc) if exc.host else f"{node}: {exc}"
                # An action that found a fault may say what it measured (scratch.ActionFailed).
                data = dict(getattr(exc, "data", None) or {})
                if attempts > step.retries:
                    break
                STOP.pause(step.retry_delay, f"while step {step.id} waited to retry ({error})")
        returned = self.clock.now()
        checks: list[CheckResult] = []
        converged: Stamp | None = None
        if error is None:
            # The first poll follows the action at once; each next one starts `poll` after the
            # previous one started (not after it ended), so the time a check takes is not added
            # to every interval, and one that takes longer than `poll` is asked again at once.
            deadline = time.monotonic() + step.within
            while True:
                polled = time.monotonic()
                checks = [
                    run_check(
                        c.check,
                        c.target or step.target,
                        c.with_,
                        self.targets,
                        self.clock,
                        self.catalogue,
                    )
                    for c in step.verify
                ]
                if all(c.held for c in checks):
                    converged = self.clock.now() if step.verify else returned
                    break
                now = time.monotonic()
                if now >= deadline:
                    break
                # The last poll is at the deadline itself, not up to `poll` before it.
                pause = min(polled + step.poll, deadline) - now
                if pause > 0:
                    time.sleep(pause)
        ended = self.clock.now()
        status: Literal["passed", "failed", "overridden"] = "passed"
        reason = ""
        if error is not None:
            status, reason = "failed", f"action failed after {attempts} attempt(s): {error}"
        elif converged is None:
            bad = next(c for c in checks if not c.held)
            reason = (
                f"{bad.check} on {bad.node} did not hold within {step.within:g}s "
                f"(observed {bad.observed!r}, expected {bad.expected})"
            )
            status = "failed"
            if step.override and step.override in self.request.overrides:
                status = "overridden"
                reason = self._decide(
                    f"{reason}; went on under override {step.override}, given by "
                    f"{self.request.operator}"
                )
        return StepRecord(
            **step_identity(step, phase, node),
            status=status,
            attempts=attempts,
            started_at=started.at,
            returned_at=returned.at,
            converged_at=converged.at if converged else None,
            ended_at=ended.at,
            offsets=StepOffsets(
                started=started.offset,
                returned=returned.offset,
                converged=converged.offset if converged else None,
                ended=ended.offset,
            ),
            duration_seconds=round(ended.offset - started.offset, 6),
            output=output[-OUTPUT_EXCERPT:],
            data=data,
            error=error,
            checks=checks,
            milestone=step.milestone,
            override=step.override if status == "overridden" else None,
            reason=reason,
        )


def _not_run(step: Step, phase: str, node: str, now: Stamp) -> StepRecord:
    """A step not run because the journal failed as it began (its reason says so after)."""
    return StepRecord(
        **step_identity(step, phase, node),
        status="failed",
        attempts=0,
        started_at=now.at,
        ended_at=now.at,
        offsets=StepOffsets(started=now.offset, ended=now.offset),
        duration_seconds=0.0,
        reason="not run",
    )


def step_identity(step: Step, phase: str, node: str) -> dict[str, Any]:
    """The fields of a step record that say which step it is, whatever became of it."""
    return {
        "id": step.id,
        "phase": phase,
        "title": step.title.model_dump() if step.title else None,
        "action": step.action,
        "target": step.target,
        "node": node,
    }
