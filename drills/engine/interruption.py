"""What an interrupted run left, and what may come next.

A run stopped by a signal (``drills.engine.stopping``) or killed leaves its journal. From the
journal alone this module says where the run was (``position_of``: the steps finished, the step in
progress, whether it was rolling back); from the servers, what state it left (``left_state``:
each node's role as it says now, the nodes that are down, the roles of the pair nobody fills);
and from the playbook, what can follow (``next_commands``): ``drctl resume RUN`` continues it,
``drctl abort RUN`` rolls back what it did (only while the playbook would still roll back: past
a step that changes something and does not roll back on failure, a promotion for instance, there
is no way back), and ``drctl unlock ENV`` gives the environment back after a person has checked
it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drills.engine.catalogue import Catalogue
from drills.engine.human import HUMAN_ACTIONS
from drills.engine.policy import rollback_plan
from drills.engine.roles import observe_roles
from drills.engine.stopping import StopRequested, describe_signal
from drills.engine.targets import Connector, Targets
from drills.model.environment import Environment
from drills.model.errors import DrillError
from drills.model.playbook import OnFailure, Playbook, Step
from drills.model.record import StepRecord

PAIR_ROLES = ("primary", "standby")


@dataclass
class RunPosition:
    """Where a run was when it stopped, read from its journal."""

    finished: list[str] = field(default_factory=list)  # main steps journaled, in order
    started: set[str] = field(default_factory=set)  # main steps begun (skipped ones excluded)
    in_progress: str | None = None  # begun and not journaled (the outcome is unknown)
    in_progress_phase: str = "main"
    rolled_back: list[str] = field(default_factory=list)  # rollback steps journaled
    failures: list[StepRecord] = field(default_factory=list)  # main steps that failed
    last: StepRecord | None = None  # the last main step journaled

    @property
    def rolling_back(self) -> bool:
        return bool(self.rolled_back) or self.in_progress_phase == "rollback"


def position_of(events: list[dict[str, Any]]) -> RunPosition:
    position = RunPosition()
    for event in events:
        kind = event.get("event")
        if kind == "step_started":
            position.in_progress = str(event.get("step"))
            position.in_progress_phase = str(event.get("phase") or "main")
        elif kind == "step":
            record = StepRecord.model_validate(event["step"])
            position.in_progress, position.in_progress_phase = None, "main"
            if record.phase == "rollback":
                position.rolled_back.append(record.id)
                continue
            position.finished.append(record.id)
            position.last = record
            if record.status != "skipped":
                position.started.add(record.id)
            if record.status == "failed":
                position.failures.append(record)
    if position.in_progress is not None and position.in_progress_phase == "main":
        position.started.add(position.in_progress)
    return position


def changes_something(step: Step, catalogue: Catalogue) -> bool:
    if step.action in HUMAN_ACTIONS:
        return False
    spec = catalogue.actions.get(step.action)
    return True if spec is None else spec.changes


def no_way_back(playbook: Playbook, started: set[str], catalogue: Catalogue) -> Step | None:
    """The first begun step past which the playbook does not roll back: one that changes
    something and whose failure does not roll back (a promotion); None while it still would."""
    for step in playbook.steps:
        if (
            step.id in started
            and step.on_failure != OnFailure.rollback
            and changes_something(step, catalogue)
        ):
            return step
    return None


def state_of(env: Environment, observed: dict[str, str]) -> dict[str, Any]:
    """The nodes that are down and the pair's roles that no node fills, from what they said."""
    pair = [n for n, node in env.nodes.items() if node.role in PAIR_ROLES]
    down = [n for n in pair if observed.get(n) == "down"]
    unfilled = [r for r in PAIR_ROLES if pair and not any(observed.get(n) == r for n in pair)]
    return {"observed": observed, "down": down, "unfilled": unfilled}


def left_state(
    env: Environment, connector: Connector | None, catalogue: Catalogue
) -> dict[str, Any]:
    """What each node says it is now, the nodes that are down, and the pair's roles that no node
    fills; asked through executors of its own (the run's may be half-way through a call)."""
    targets = Targets(env, {}, connector)
    try:
        return state_of(env, observe_roles(targets, catalogue))
    except DrillError as exc:
        return {"observed": {}, "down": [], "unfilled": [], "problem": str(exc)}
    finally:
        targets.close()


def state_sentence(state: dict[str, Any]) -> str:
    if state.get("problem"):
        return f"the state it left could not be observed ({state['problem']})"
    observed = state.get("observed") or {}
    seen = ", ".join(f"{n} {r}" for n, r in observed.items() if r != "n/a") or "nothing"
    parts = [f"nodes now: {seen}"]
    if state.get("down"):
        parts.append(f"down: {', '.join(state['down'])}")
    for role in state.get("unfilled") or []:
        what = "no node accepts writes" if role == "primary" else "no node replicates"
        parts.append(f"role {role} unfilled ({what})")
    return "; ".join(parts)


def next_step(playbook: Playbook, position: RunPosition) -> Step | None:
    """The step a resumed run begins with (the one in progress, if any, is asked again)."""
    for step in playbook.steps:
        if step.id not in position.finished:
            return step
    return None


def next_commands(
    run_id: str,
    environment: str,
    playbook: Playbook,
    position: RunPosition,
    catalogue: Catalogue,
) -> list[dict[str, str]]:
    """The commands that may come next, each with what it does (the record and the terminal
    show them)."""
    found: list[dict[str, str]] = []
    if not position.rolling_back:
        step = next_step(playbook, position)
        does = f"continues from step {step.id}" if step else "ends the run (every step finished)"
        found.append({"command": f"drctl resume {run_id}", "does": does})
    blocked = None if position.rolling_back else no_way_back(playbook, position.started, catalogue)
    if blocked is None:
        undo = [
            s.id
            for s in rollback_plan(playbook.rollback, position.started)
            if s.id not in position.rolled_back
        ]
        does = f"rolls back: {', '.join(undo)}" if undo else "nothing to roll back; seals it"
        found.append({"command": f"drctl abort {run_id}", "does": does})
    found.append(
        {
            "command": f"drctl unlock {environment}",
            "does": "after you checked the environment by hand: releases it, seals the record",
        }
    )
    return found


def commands_sentence(commands: list[dict[str, str]]) -> str:
    return "next: " + "; or ".join(f"`{c['command']}` ({c['does']})" for c in commands)


def stopped_by(exc: BaseException) -> str:
    if isinstance(exc, StopRequested):
        return describe_signal(exc.signal)
    if isinstance(exc, KeyboardInterrupt):
        return describe_signal("SIGINT")
    return f"a signal ({type(exc).__name__})"


def place_of(exc: BaseException, position: RunPosition) -> str:
    """Where the run stopped, as a sentence's end."""
    where = exc.where if isinstance(exc, StopRequested) else ""
    if where:
        return where
    if position.in_progress is not None:
        how = "a second signal stopped it hard" if getattr(exc, "hard", False) else "stopped"
        return f"in the middle of step {position.in_progress} ({how}): its outcome is unknown"
    if position.last is not None:
        return f"after step {position.last.id}"
    return "before the first step; nothing was changed"


def interruption_event(
    exc: BaseException,
    position: RunPosition,
    run_id: str,
    env: Environment,
    playbook: Playbook,
    connector: Connector | None,
    catalogue: Catalogue,
) -> tuple[str, dict[str, Any], str]:
    """For an interrupted run: the note its lock keeps, the fields of its ``interrupted``
    journal event, and the reason its record gives (where, the state left, what next)."""
    signal = stopped_by(exc)
    where = place_of(exc, position)
    state = left_state(env, connector, catalogue)
    commands = next_commands(run_id, env.name, playbook, position, catalogue)
    note = f"stopped by {signal} {where}"
    fields = {
        "signal": signal,
        "hard": bool(getattr(exc, "hard", False)),
        "where": where,
        "step": position.in_progress,
        "last_finished": position.last.id if position.last else None,
        "state": state,
        "next": commands,
    }
    reason = f"{note}; {state_sentence(state)}; {commands_sentence(commands)}"
    return note, fields, reason
