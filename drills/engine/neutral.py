"""The engine-neutral actions and checks (``db.*``): one playbook for every database engine.

A playbook that names ``db.failover`` rather than ``pg.promote`` or ``oracle.dg_failover`` runs on
whichever engine the environment's nodes are: each ``db.*`` action or check looks at the engine
of the node its role is on (``Node.engine``) and runs what that engine equated to it in its
``register`` (``Catalogue.equate``), with the role and parameters the engine's ``Equivalent``
makes of the step's. ``drctl plan`` shows the engine's own commands (its action's ``describe``),
the step's record keeps which engine action ran (``data["dispatched"]``), and a check's result is
the engine check's own observation (checks that must all hold are combined into one).

    db.crash                    the drill's crash injection
    db.fence                    fence the old primary before the standby takes over
    db.failover                 the standby becomes the primary (unplanned)
    db.rejoin                   the old primary becomes a standby of the new one (``source``)
    db.record_lag               the standby's lag before the failover (optional: a measurement)
    db.count_lost_transactions  count what the failover lost (optional: a measurement)
    db.is_primary, db.is_standby, db.takes_writes, db.rejects_writes, db.fenced,
    db.replicating (``source``)  checks

An engine that equated nothing to a ``db.*`` name a step uses is an error before the run starts,
naming the step, the node and the engine (``neutral_problems``, asked by ``check_request``); at a
step (``drctl plan`` included) it is an error naming the node and the engine. Only an optional
action, one that measures, may be equated to nothing with a reason (``Equivalent(None, why=…)``):
the step then runs nothing on that engine and its output says why.

These register after every engine (``drills.engine.catalogue.build_catalogue``), so that what
each engine equated can be checked against what it registered: a name nothing registered, an
action equated to several, a required action equated to nothing are errors while the catalogue
is built, not during a drill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from drills.engine.catalogue import (
    ActionResult,
    ActionSpec,
    Catalogue,
    CheckSpec,
    Equivalent,
    Params,
    node_engine,
)
from drills.model.errors import DrillError, InputError, Problem
from verify.result import Observation, Probe

if TYPE_CHECKING:
    from drills.engine.documents import YamlDocument
    from drills.engine.targets import Targets
    from drills.model.environment import Environment
    from drills.model.playbook import Playbook

ENGINE = "neutral"
PREFIX = "db."


class NoParams(Params):
    pass


class SourceParams(Params):
    source: str = Field(description="Role of the new primary (the node followed, or compared).")


@dataclass(frozen=True)
class Neutral:
    """One engine-neutral action or check: its name, parameters and meaning."""

    name: str
    params: type[Params]
    description: str
    changes: bool = False  # an action that changes something (a change playbook's stages)
    optional: bool = False  # an action an engine may have nothing to run for (it measures)


ACTIONS = (
    Neutral(
        "db.crash",
        NoParams,
        "Crash the database server abruptly (the drill's crash injection).",
        changes=True,
    ),
    Neutral(
        "db.fence",
        NoParams,
        "Fence the old primary: make sure it can take no writes before the standby takes over.",
        changes=True,
    ),
    Neutral(
        "db.failover",
        NoParams,
        "Fail over to this standby: it becomes the primary (the old primary fenced first).",
        changes=True,
    ),
    Neutral(
        "db.rejoin",
        SourceParams,
        "Make the old primary a standby of the new primary (the role named by source).",
        changes=True,
    ),
    Neutral(
        "db.record_lag",
        NoParams,
        "Read how far this standby is behind its primary just before the failover, for the "
        "loss accounting afterwards (an engine that counts the loss exactly from the old "
        "primary's log has nothing to read here).",
        optional=True,
    ),
    Neutral(
        "db.count_lost_transactions",
        SourceParams,
        "Count the transactions the failover lost, from the old primary's log, before it "
        "rejoins (source: the new primary).",
        optional=True,
    ),
)

CHECKS = (
    Neutral("db.is_primary", NoParams, "The database is the primary and open for writes."),
    Neutral("db.is_standby", NoParams, "The database is a standby."),
    Neutral("db.takes_writes", NoParams, "A real write commits on the database."),
    Neutral("db.rejects_writes", NoParams, "The database cannot take writes."),
    Neutral("db.fenced", NoParams, "The old primary is fenced: it can take no writes."),
    Neutral(
        "db.replicating",
        SourceParams,
        "The standby receives and applies the changes of the source.",
    ),
)


# -- which engine, which equivalent --------------------------------------------------------------


def engines_with(catalogue: Catalogue, neutral: str) -> list[str]:
    return sorted(catalogue.equivalents.get(neutral, {}))


def lacking(
    catalogue: Catalogue, what: str, neutral: str, node: str, role: str, engine: str
) -> str:
    have = ", ".join(engines_with(catalogue, neutral)) or "none"
    return (
        f"{what} {neutral} on node {node} (role {role}): engine {engine} has no equivalent "
        f"(engines that have one: {have})"
    )


def no_engine(what: str, neutral: str, node: str, role: str) -> str:
    return (
        f"{what} {neutral} on node {node} (role {role}): the node has no database section "
        "(postgres: or oracle:), so no engine to run it on"
    )


def equivalents_of(
    catalogue: Catalogue, probe: Probe, role: str, what: str, neutral: str
) -> tuple[str, str, tuple[Equivalent, ...]]:
    """The node of the role, its engine, and what that engine runs for ``neutral``."""
    name, node = probe.node(role)
    engine = node_engine(node)
    if engine is None:
        raise InputError(no_engine(what, neutral, name, role), host=name)
    found = catalogue.equivalents.get(neutral, {}).get(engine)
    if not found:
        raise InputError(lacking(catalogue, what, neutral, name, role, engine), host=name)
    return name, engine, found


def adapted(
    spec: ActionSpec | CheckSpec, equivalent: Equivalent, role: str, params: BaseModel, neutral: str
) -> tuple[str, Any]:
    """The role and the parameters (validated by the engine's model) the engine's action or
    check runs with."""
    to_role, given = equivalent.adapt(role, params.model_dump())
    try:
        return to_role, spec.params.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(k) for k in first["loc"])
        raise InputError(
            f"{spec.name} (the {spec.engine} equivalent of {neutral}) does not take the "
            f"parameters made for it ({key}: {first['msg']})"
        ) from None


# -- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatched:
    """What a neutral action runs on this run's environment: which engine action, where."""

    neutral: str
    engine: str
    node: str
    role: str
    spec: ActionSpec | None  # None: the engine has nothing to run for it (``why``)
    params: Any
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "neutral": self.neutral,
            "engine": self.engine,
            "action": self.spec.name if self.spec else None,
            "target": self.role,
            "node": self.node,
        }

    def heading(self, role: str) -> str:
        assert self.spec is not None
        where = f" on {self.role} ({self.node})" if self.role != role else ""
        return f"{self.engine}: {self.spec.name}{where}"


def dispatch(
    catalogue: Catalogue, neutral: str, targets: Targets, role: str, params: BaseModel
) -> Dispatched:
    name, engine, (equivalent,) = equivalents_of(catalogue, targets, role, "action", neutral)
    if equivalent.name is None:
        return Dispatched(neutral, engine, name, role, None, None, equivalent.why)
    spec = catalogue.actions[equivalent.name]
    to_role, engine_params = adapted(spec, equivalent, role, params, neutral)
    node = targets.node(to_role)[0] if to_role != role else name
    return Dispatched(neutral, engine, node, to_role, spec, engine_params, "")


def run_neutral(
    catalogue: Catalogue, neutral: str, targets: Targets, role: str, params: Any, timeout: float
) -> ActionResult:
    d = dispatch(catalogue, neutral, targets, role, params)
    if d.spec is None:
        return ActionResult(
            f"nothing ran on {d.node} ({d.engine}): {d.why}",
            {"dispatched": d.as_dict(), "not_run": d.why},
        )
    try:
        result = d.spec.run(targets, d.role, d.params, timeout)
    except DrillError as exc:
        # The runner keeps a failed action's ``data`` too: say there which action failed.
        exc.data = {**(getattr(exc, "data", None) or {}), "dispatched": d.as_dict()}  # type: ignore[attr-defined]
        raise
    return ActionResult(result.output, {**result.data, "dispatched": d.as_dict()})


def describe_neutral(
    catalogue: Catalogue, neutral: str, targets: Targets, role: str, params: Any
) -> list[str]:
    d = dispatch(catalogue, neutral, targets, role, params)
    if d.spec is None:
        return [f"{d.engine}: nothing runs on {d.node}: {d.why}"]
    return [d.heading(role), *d.spec.describe(targets, d.role, d.params)]


# -- checks --------------------------------------------------------------------------------------


def check_neutral(
    catalogue: Catalogue, neutral: str, probe: Probe, role: str, params: Any
) -> Observation:
    _, _, equivalents = equivalents_of(catalogue, probe, role, "check", neutral)
    seen: list[tuple[str, Observation]] = []
    for equivalent in equivalents:
        assert equivalent.name is not None  # register refuses a check equated to nothing
        spec = catalogue.checks[equivalent.name]
        to_role, engine_params = adapted(spec, equivalent, role, params, neutral)
        seen.append((spec.name, spec.fn(probe, to_role, engine_params)))
    if len(seen) == 1:
        # The engine check's own observation: the record and the report read as its own.
        return seen[0][1]
    return Observation(
        {name: o.observed for name, o in seen},
        "; ".join(f"{name}: {o.expected}" for name, o in seen),
        all(o.held for _, o in seen),
        "; ".join(
            f"{name} {'held' if o.held else 'did not hold'}"
            + (f" ({o.detail})" if o.detail else "")
            for name, o in seen
        ),
    )


# -- registering ---------------------------------------------------------------------------------


def _bound_action(catalogue: Catalogue, item: Neutral) -> ActionSpec:
    def run(targets: Targets, role: str, params: Any, timeout: float) -> ActionResult:
        return run_neutral(catalogue, item.name, targets, role, params, timeout)

    def describe(targets: Targets, role: str, params: Any) -> list[str]:
        return describe_neutral(catalogue, item.name, targets, role, params)

    return ActionSpec(item.name, item.params, run, describe, item.changes, item.description, ENGINE)


def _bound_check(catalogue: Catalogue, item: Neutral) -> CheckSpec:
    def fn(probe: Probe, role: str, params: Any) -> Observation:
        return check_neutral(catalogue, item.name, probe, role, params)

    return CheckSpec(item.name, item.params, fn, item.description, ENGINE)


def equivalence_errors(catalogue: Catalogue) -> list[str]:
    """What the engines equated that cannot be run: unknown names on either side, an action
    equated to several, a required action or a check equated to nothing."""
    actions = {n.name: n for n in ACTIONS}
    checks = {n.name: n for n in CHECKS}
    errors = []
    for neutral, by_engine in catalogue.equivalents.items():
        for engine, equivalents in by_engine.items():
            where = f"engine {engine} equates {neutral}"
            if neutral in actions:
                if len(equivalents) != 1:
                    errors.append(f"{where} to {len(equivalents)} actions: an action runs one")
                for e in equivalents:
                    if e.name is None and not actions[neutral].optional:
                        errors.append(f"{where} to nothing, but {neutral} is required to act")
                    elif e.name is not None and e.name not in catalogue.actions:
                        errors.append(f"{where} to {e.name}, which is no registered action")
                    elif e.name is None and not e.why:
                        errors.append(f"{where} to nothing without saying why")
            elif neutral in checks:
                for e in equivalents:
                    if e.name is None or e.name not in catalogue.checks:
                        errors.append(f"{where} to {e.name}, which is no registered check")
            else:
                errors.append(f"{where}, which is no engine-neutral action or check")
    return errors


def register(catalogue: Catalogue) -> None:
    errors = equivalence_errors(catalogue)
    if errors:
        raise InputError("; ".join(errors))
    catalogue.add_actions(*(_bound_action(catalogue, item) for item in ACTIONS))
    catalogue.add_checks(*(_bound_check(catalogue, item) for item in CHECKS))


# -- before a run: every db.* step has an equivalent on its nodes' engine ------------------------


def neutral_problems(
    playbook: Playbook, doc: YamlDocument, env: Environment, catalogue: Catalogue
) -> list[Problem]:
    """Each ``db.*`` action or check of the playbook whose nodes (the environment's nodes of
    its role) are of an engine that equated nothing to it, located at the step (file, line,
    step id) and naming the node and the engine."""
    problems: list[Problem] = []

    def ask(loc: tuple[str | int, ...], what: str, neutral: str, role: str, step: str) -> None:
        for name in env.nodes_with_role(role):
            engine = node_engine(env.nodes[name])
            if engine is None:
                message = no_engine(what, neutral, name, role)
            elif catalogue.equivalents.get(neutral, {}).get(engine):
                continue
            else:
                message = lacking(catalogue, what, neutral, name, role, engine)
            problems.append(doc.problem(loc, f"{step}{message}"))

    for section in ("steps", "rollback"):
        for index, step in enumerate(getattr(playbook, section)):
            at = f"step {step.id}: "
            if step.action.startswith(PREFIX):
                ask((section, index, "action"), "action", step.action, step.target, at)
            for number, check in enumerate(step.verify):
                if check.check.startswith(PREFIX):
                    role = check.target or step.target
                    ask((section, index, "verify", number, "check"), "check", check.check, role, at)
    for index, check in enumerate(playbook.preconditions):
        if check.check.startswith(PREFIX) and check.target:
            ask(("preconditions", index, "check"), "check", check.check, check.target, "")
    return problems
