"""The runner's decisions that need no I/O: what a request may do, which targets objectives
get, what a failed step means, which rollback steps run and in what order.

Each decision is one sentence; the runner logs it once and keeps it in the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drills.engine.loader import LoadedPlaybook
from drills.engine.roles import required_roles_problem
from drills.model.durations import parse_duration
from drills.model.environment import Environment
from drills.model.errors import InputError, RefusedError
from drills.model.playbook import Objective, OnFailure, Step
from drills.model.record import ObjectiveResult
from drills.model.request import RunRequest


def check_request(loaded: LoadedPlaybook, env: Environment, request: RunRequest) -> None:
    """Refuse, before anything starts, what this request must not do."""
    problem = required_roles_problem(env, loaded.playbook.roles)
    if problem:
        raise InputError(problem)
    offered = {s.override for s in loaded.playbook.steps if s.override}
    unknown = [o for o in request.overrides if o not in offered]
    if unknown:
        raise InputError(
            f"override {', '.join(unknown)} is not offered by playbook {loaded.playbook.name} "
            f"(it offers: {', '.join(sorted(offered)) or 'none'})"
        )
    objectives_with_targets(loaded.playbook.objectives, request.objectives)
    if env.protected and request.mode == "drill":
        raise RefusedError(
            f"environment {env.name!r} is protected: drills may not touch it "
            "(a real run with an approval is the only way)"
        )


def objectives_with_targets(
    objectives: dict[str, Objective], targets: dict[str, str | float]
) -> dict[str, Objective]:
    """The playbook's objectives with the request's targets in place of theirs, by name."""
    unknown = [name for name in targets if name not in objectives]
    if unknown:
        raise InputError(
            f"objective {', '.join(unknown)} is not one of the playbook's "
            f"({', '.join(objectives) or 'it has none'}): the run request cannot set its target"
        )
    result = dict(objectives)
    for name, target in targets.items():
        try:
            seconds = parse_duration(target)
        except ValueError as exc:
            raise InputError(f"objective {name}: {exc}") from None
        old = objectives[name]
        result[name] = old.model_copy(
            update={
                "target": seconds,
                "source": f"run request (the playbook's target: {old.target:g}s"
                + (f", {old.source}" if old.source else "")
                + ")",
            }
        )
    return result


@dataclass(frozen=True)
class AfterFailure:
    """What a failed step means for the run: go on, roll back, or stop here."""

    then: Literal["continue", "rollback", "abort"]
    sentence: str


def after_failure(step: Step, why: str) -> AfterFailure:
    if step.on_failure == OnFailure.continue_:
        return AfterFailure(
            "continue", f"step {step.id} failed ({why}); continuing as the playbook says"
        )
    if step.on_failure == OnFailure.rollback:
        return AfterFailure("rollback", f"step {step.id} failed ({why}); rolling back")
    return AfterFailure("abort", f"step {step.id} failed ({why}); aborted, later steps not run")


def rollback_plan(rollback: list[Step], started: set[str]) -> list[Step]:
    """The rollback steps to run, last declared first; a step that undoes a step that never
    started is left out."""
    return [s for s in reversed(rollback) if s.undoes is None or s.undoes in started]


def missed_sentence(missed: list[ObjectiveResult]) -> str:
    parts = []
    for o in missed:
        measured = "not measured" if o.measured_seconds is None else f"{o.measured_seconds:g}s"
        parts.append(f"{o.name} {measured} against a target of {o.target_seconds:g}s")
    return "objectives missed: " + "; ".join(parts)
