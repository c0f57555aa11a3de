"""What an interrupted run left, and what may come next.

A run stopped by a signal (``drills.engine.stopping``) or killed leaves its journal. From the
journal alone this module says where the run was (``position_of``: the steps finished, the step in
progress, whether it was rolling back); from the servers, what state it left (``left_state``:
each node's role as it says now, the nodes that are down, the roles of the pair nobody fills,
whether each standby streams);
and from the playbook, what can follow (``next_commands``): ``drctl resume RUN`` continues it,
``drctl abort RUN`` rolls back what it did (only while the playbook would still roll back: past
a step that changes something and does not roll back on failure, a promotion for instance, there
is no way back), and ``drctl unlock ENV`` gives the environment back after a person has checked
it by hand.

The same state is observed at the end of a run that changed something and did not pass (failed,
or aborted after a step began): its record says which node is down, which role nobody fills and
whether the standby streams, and what to run next (``after_run_commands``), since such a run is
sealed and its environment released, with the pair perhaps left without a primary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from drills.engine.catalogue import Catalogue
from drills.engine.checking import run_check
from drills.engine.human import HUMAN_ACTIONS
from drills.engine.policy import rollback_plan
from drills.engine.roles import observe_roles
from drills.engine.stopping import StopRequested, describe_signal
from drills.engine.targets import Connector, Targets
from drills.model.clock import Clock
from drills.model.environment import Environment
from drills.model.errors import DrillError
from drills.model.playbook import Kind, OnFailure, Playbook, Step
from drills.model.record import StepRecord

PAIR_ROLES = ("primary", "standby")
STREAMING_WITHIN = 5.0  # seconds a standby is given to stream again before it is said not to


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


def pair_of(env: Environment) -> list[str]:
    """The nodes of the primary/standby pair, as the environment configures them."""
    return [n for n, node in env.nodes.items() if node.role in PAIR_ROLES]


def state_of(
    env: Environment,
    observed: dict[str, str],
    streaming: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The nodes that are down and the pair's roles that no node fills, from what they said;
    with ``streaming`` (each standby: whether it streams, from which node, what it said)."""
    pair = pair_of(env)
    down = [n for n in pair if observed.get(n) == "down"]
    unfilled = [r for r in PAIR_ROLES if pair and not any(observed.get(n) == r for n in pair)]
    state: dict[str, Any] = {"observed": observed, "down": down, "unfilled": unfilled}
    primaries = [n for n in pair if observed.get(n) == "primary"]
    if len(primaries) > 1:
        state["split_brain"] = primaries  # more than one node accepts writes
    if streaming is not None:
        state["streaming"] = streaming
    state["pair"] = pair
    return state


def streaming_of(
    targets: Targets,
    observed: dict[str, str],
    pair: list[str],
    catalogue: Catalogue,
    within: float = 0.0,
) -> dict[str, dict[str, Any]] | None:
    """For each node of the pair that says it is a standby: whether it streams, from the node
    that is primary when there is exactly one (the engine's ``db.replicating``), asked again
    for up to ``within`` seconds while one does not (a standby rejoined a moment ago is still
    connecting). None when the catalogue cannot ask it."""
    if "db.replicating" not in catalogue.checks:
        return None
    primaries = [n for n in pair if observed.get(n) == "primary"]
    source = primaries[0] if len(primaries) == 1 else None
    by_name = targets.view({name: name for name in targets.env.nodes})
    standbys = [n for n in pair if observed.get(n) == "standby"]
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + within
    if source is None:  # no node of the pair takes writes: there is nothing to stream from
        return {
            name: {"held": False, "source": None, "observed": "no primary to stream from"}
            for name in standbys
        }
    while True:
        for name in standbys:
            if found.get(name, {}).get("held"):
                continue
            try:
                result = run_check(
                    "db.replicating", name, {"source": source}, by_name, Clock(), catalogue
                )
                said = result.observed if result.observed is not None else result.detail
                held = result.held
            except Exception as exc:  # an engine's check that could not be asked
                said, held = f"could not be asked: {type(exc).__name__}: {exc}", False
            found[name] = {"held": held, "source": source, "observed": str(said or "")}
        if all(f["held"] for f in found.values()) or time.monotonic() >= deadline:
            return found
        time.sleep(0.25)


def whole(state: dict[str, Any]) -> bool:
    """Whether the pair is as a drill must leave it: one primary, and every other node of the
    pair a standby that streams from it (when that could be asked)."""
    if state.get("problem"):
        return False
    observed = state.get("observed") or {}
    pair = state.get("pair") or []
    primaries = [n for n in pair if observed.get(n) == "primary"]
    standbys = [n for n in pair if observed.get(n) == "standby"]
    if len(primaries) != 1 or len(primaries) + len(standbys) != len(pair):
        return False
    streaming = state.get("streaming")
    return streaming is None or all(streaming.get(n, {}).get("held") for n in standbys)


def left_state(
    env: Environment,
    connector: Connector | None,
    catalogue: Catalogue,
    *,
    streaming_within: float = 0.0,
) -> dict[str, Any]:
    """What each node says it is now, the nodes that are down, the pair's roles that no node
    fills, and whether each standby streams (given ``streaming_within`` seconds to); asked
    through executors of its own (the run's may be half-way through a call). Never raises for
    what it finds: a state that could not be observed says why (``problem``), since it is
    asked while a record is being written."""
    targets = Targets(env, {}, connector)
    try:
        observed = observe_roles(targets, catalogue)
        streaming = streaming_of(targets, observed, pair_of(env), catalogue, streaming_within)
        return state_of(env, observed, streaming)
    except DrillError as exc:
        return {"observed": {}, "down": [], "unfilled": [], "problem": str(exc)}
    except Exception as exc:  # the record is written whatever happens here
        problem = f"{type(exc).__name__}: {exc}"
        return {"observed": {}, "down": [], "unfilled": [], "problem": problem}
    finally:
        targets.close()


def node_sentences(state: dict[str, Any]) -> list[str]:
    """One sentence per node of the pair: what it is now, and whether a standby streams."""
    observed = state.get("observed") or {}
    streaming = state.get("streaming") or {}
    pair = state.get("pair")
    names = [n for n in observed if observed[n] != "n/a" and (pair is None or n in pair)]
    said = []
    for name in names:
        role = observed[name]
        stream = streaming.get(name)
        if role == "standby" and stream is not None:
            if stream.get("held") and stream.get("source"):
                said.append(f"{name} is standby, streaming from {stream['source']}")
            elif stream.get("held"):
                said.append(f"{name} is standby, streaming ({stream.get('observed')})")
            else:
                said.append(f"{name} is standby, not streaming ({stream.get('observed')})")
        else:
            said.append(f"{name} is {role}")
    return said


def state_sentence(state: dict[str, Any]) -> str:
    if state.get("problem"):
        return f"the state it left could not be observed ({state['problem']})"
    parts = node_sentences(state) or ["no primary/standby pair to observe"]
    if state.get("split_brain"):
        parts.append(f"nodes {', '.join(state['split_brain'])} all accept writes (split brain)")
    for role in state.get("unfilled") or []:
        what = "no node accepts writes" if role == "primary" else "no node replicates"
        parts.append(f"role {role} unfilled ({what})")
    return "; ".join(parts)


def after_run_commands(
    env: Environment, playbook: Playbook, state: dict[str, Any]
) -> list[dict[str, str]]:
    """What to run after a run that changed something and did not pass (its record is sealed
    and the environment released: there is nothing to resume or abort), from the state it
    left: see what each node is now, once every node that is down is started again; and,
    when no node is primary but a standby is up and the playbook is a failover (or an
    emergency activation), that playbook in real mode, which starts from the state the pair
    is in."""
    down = list(state.get("down") or [])
    ask = (
        f"after starting the database of {', '.join(down)} again: asks every node its role and "
        "replication, changing nothing"
        if down
        else "asks every node its role and replication, changing nothing"
    )
    found = [{"command": f"drctl env check --env {env.name}", "does": ask}]
    observed = state.get("observed") or {}
    standbys = [n for n in state.get("pair") or [] if observed.get(n) == "standby"]
    promotes = playbook.kind in (Kind.failover, Kind.emergency)  # from what is, in real mode
    if "primary" in (state.get("unfilled") or []) and standbys and promotes:
        found.append(
            {
                "command": f"drctl run {playbook.name} --env {env.name} --mode real",
                "does": f"a real failover from the state the pair is in: promotes {standbys[0]}",
            }
        )
    return found


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
        does = f"rolls back: {', '.join(undo)}" if undo else "nothing to roll back: seals it"
        found.append({"command": f"drctl abort {run_id}", "does": does})
    found.append(
        {
            "command": f"drctl unlock {environment}",
            "does": "after you checked the environment by hand: releases it, seals the record",
        }
    )
    return found


def commands_sentence(commands: list[dict[str, str]]) -> str:
    """The commands, in one sentence (what each does holds no "; ", the sentence's joint)."""
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
