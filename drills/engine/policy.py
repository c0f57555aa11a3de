"""The runner's decisions that need no I/O: what a request may do, which targets objectives
get, what a failed step means, which rollback steps run and in what order.

Each decision is one sentence; the runner logs it once and keeps it in the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drills.engine.catalogue import Catalogue, default_catalogue, node_engine
from drills.engine.loader import LoadedPlaybook
from drills.engine.neutral import neutral_problems
from drills.engine.roles import required_roles_problem
from drills.model.durations import parse_duration
from drills.model.environment import Environment
from drills.model.errors import InputError, RefusedError, ValidationFailed
from drills.model.playbook import Objective, OnFailure, Step
from drills.model.record import ObjectiveResult
from drills.model.request import RunRequest


def check_request(
    loaded: LoadedPlaybook,
    env: Environment,
    request: RunRequest,
    catalogue: Catalogue | None = None,
) -> None:
    """Refuse, before anything starts, what this request must not do."""
    problem = required_roles_problem(env, loaded.playbook.roles)
    if problem:
        raise InputError(problem)
    problem = service_http_problem(loaded, env)
    if problem:
        raise InputError(problem)
    problem = engine_problem(loaded, env)
    if problem:
        raise ValidationFailed([loaded.doc.problem(("engines",), problem)])
    problems = neutral_problems(loaded.playbook, loaded.doc, env, catalogue or default_catalogue())
    if problems:  # a db.* step whose node's engine has no equivalent: located at the step
        raise ValidationFailed(problems)
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


def service_http_problem(loaded: LoadedPlaybook, env: Environment) -> str | None:
    """Why the service probe could not reach the application, or None: every node of the
    playbook's ``measurements.service_role`` needs an ``http`` section when the probe runs."""
    m = loaded.playbook.measurements
    if not m.service_probe:
        return None
    bare = [name for name in env.nodes_with_role(m.service_role) if env.nodes[name].http is None]
    if not bare:
        return None
    return (
        f"playbook {loaded.playbook.name} probes the service through role {m.service_role} "
        f"(measurements.service_role), but node {', '.join(bare)} of environment {env.name!r} "
        "has no http section (base_url: where the application answers)"
    )


def engine_problem(loaded: LoadedPlaybook, env: Environment) -> str | None:
    """Why the playbook cannot run on this environment's databases, or None: the database nodes
    of the roles it needs must be of an engine in its ``engines`` (empty: any)."""
    supported = loaded.playbook.engines
    if not supported:
        return None
    roles = set(loaded.playbook.roles)
    others = {
        name: engine
        for name, node in env.nodes.items()
        if node.role in roles and (engine := node_engine(node)) and engine not in supported
    }
    if not others:
        return None
    nodes = ", ".join(f"{name} ({engine})" for name, engine in others.items())
    return (
        f"playbook {loaded.playbook.name} supports engine {', '.join(supported)} (`engines`), "
        f"but environment {env.name!r} has database node {nodes}"
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
