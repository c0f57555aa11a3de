"""Who is primary now: the snapshot of roles a run starts from.

Each engine registers how its nodes say what they are (``Catalogue.role_observers``); this
module only decides. Nodes without a database, and database nodes outside the primary/standby
pair, keep their configured role. Among the pair's nodes the one that accepts writes is
``primary``; those in recovery are ``standby``. A node that is down takes the one database role
that no live node claims, if there is exactly one. Two nodes that both accept writes are a split
brain: the run refuses to act.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drills.engine.catalogue import Catalogue, default_catalogue, node_engine
from drills.engine.targets import Targets
from drills.model.environment import Environment
from drills.model.errors import ExecutorError, InputError, RefusedError


@dataclass(frozen=True)
class RoleMap:
    roles: dict[str, str]  # role -> node name
    observed: dict[str, str]  # node name -> what the server said (primary/standby/down/n/a)
    notes: list[str] = field(default_factory=list)


def required_roles_problem(env: Environment, roles: list[str]) -> str | None:
    present = {node.role for node in env.nodes.values()}
    missing = [role for role in roles if role not in present]
    if missing:
        return (
            f"the playbook needs role(s) {', '.join(missing)}, which environment {env.name!r} "
            f"does not have (it has: {', '.join(sorted(present))})"
        )
    return None


def observe_roles(targets: Targets, catalogue: Catalogue | None = None) -> dict[str, str]:
    """What each node says it is now, through its engine's observer ('n/a': no database)."""
    catalogue = catalogue or default_catalogue()
    env = targets.env
    by_name = targets.view({name: name for name in env.nodes})
    observed: dict[str, str] = {}
    for name, node in env.nodes.items():
        engine = node_engine(node)
        observer = catalogue.role_observers.get(engine) if engine else None
        if observer is None:
            observed[name] = "n/a"
            continue
        try:
            observed[name] = observer(by_name, name)
        except ExecutorError:  # unreachable: down. Bad input (a missing secret) is raised.
            observed[name] = "down"
    return observed


def decide_roles(env: Environment, roles: list[str], observed: dict[str, str]) -> RoleMap:
    """The role map from what the nodes said: a pure decision, tested without a database."""
    problem = required_roles_problem(env, roles)
    if problem:
        raise InputError(problem)
    mapping: dict[str, str] = {}
    notes: list[str] = []
    pair = {n for n, node in env.nodes.items() if node.role in ("primary", "standby")}
    primaries = [n for n, seen in observed.items() if seen == "primary" and n in pair]
    standbys = [n for n, seen in observed.items() if seen == "standby" and n in pair]
    downs = [n for n, seen in observed.items() if seen == "down" and n in pair]
    if len(primaries) > 1:
        raise RefusedError(
            f"nodes {', '.join(primaries)} all accept writes: split brain; refusing to act "
            "until one of them is fenced"
        )
    for name, node in env.nodes.items():
        if (observed.get(name) == "n/a" or name not in pair) and node.role in roles:
            mapping.setdefault(node.role, name)
    if primaries and "primary" in roles:
        mapping["primary"] = primaries[0]
    if standbys and "standby" in roles:
        mapping["standby"] = standbys[0]
    unfilled = [r for r in ("primary", "standby") if r in roles and r not in mapping]
    if len(unfilled) == 1 and len(downs) == 1:
        mapping[unfilled[0]] = downs[0]
        notes.append(f"{downs[0]} is down; it takes role {unfilled[0]}, the only one unclaimed")
    missing = [r for r in roles if r not in mapping]
    if missing:
        seen = ", ".join(f"{n}: {s}" for n, s in observed.items())
        raise RefusedError(f"cannot tell which node is {', '.join(missing)} ({seen})")
    return RoleMap(mapping, observed, notes)


def discover_roles(
    targets: Targets, roles: list[str], catalogue: Catalogue | None = None
) -> RoleMap:
    """Ask the nodes through the run's executors, then decide."""
    problem = required_roles_problem(targets.env, roles)
    if problem:
        raise InputError(problem)
    return decide_roles(targets.env, roles, observe_roles(targets, catalogue))
