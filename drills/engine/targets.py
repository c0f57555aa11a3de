"""Roles resolved to nodes, and the executors that reach them.

Roles move: after a switchover the node that was ``primary`` is a standby. So the runner takes a
snapshot of who is what at the start of a run (``discover_roles``), records it, and addresses
every action and check by role through ``Targets`` for the rest of the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drills.executors.http import HttpExecutor
from drills.executors.local import CommandResult, LocalExecutor
from drills.executors.postgres import SqlExecutor
from drills.model.environment import Environment, Node, PostgresAccess
from drills.model.errors import ConnectionFailed, InputError, RefusedError


@dataclass(frozen=True)
class RoleMap:
    roles: dict[str, str]  # role -> node name
    observed: dict[str, str]  # node name -> what the server said (primary/standby/down/n.a.)
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


def observe_postgres_role(name: str, node: Node) -> str:
    if node.postgres is None:
        return "n/a"
    try:
        in_recovery = SqlExecutor.for_node(name, node).scalar(
            "select pg_is_in_recovery()", timeout=3
        )
    except ConnectionFailed:
        return "down"
    return "standby" if in_recovery else "primary"


def discover_roles(env: Environment, roles: list[str]) -> RoleMap:
    """Map the playbook's roles to nodes by asking the servers who is primary now.

    Nodes without a database, and database nodes outside the primary/standby pair, keep their
    configured role. Among the pair's nodes the one that accepts writes is ``primary``; those
    in recovery are ``standby``. A node that is down takes the one database role that no live
    node claims, if there is exactly one.
    """
    problem = required_roles_problem(env, roles)
    if problem:
        raise InputError(problem)
    observed = {name: observe_postgres_role(name, node) for name, node in env.nodes.items()}
    mapping: dict[str, str] = {}
    notes: list[str] = []
    # Only the replicated pair (nodes given role primary or standby) trade roles; any other
    # database node (a migration's source or target, ...) keeps the role it was given.
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
        if (observed[name] == "n/a" or name not in pair) and node.role in roles:
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


class Targets:
    """The Probe of ``verify`` and the executors of actions, addressed by role."""

    def __init__(self, env: Environment, roles: dict[str, str]) -> None:
        self.env = env
        self.roles = roles
        self._sql: dict[str, SqlExecutor] = {}
        self._http: dict[str, HttpExecutor] = {}

    def node(self, role: str) -> tuple[str, Node]:
        try:
            name = self.roles[role]
        except KeyError:
            raise InputError(f"role {role!r} is not mapped to a node in this run") from None
        return name, self.env.nodes[name]

    def postgres(self, role: str) -> tuple[str, Node, PostgresAccess]:
        name, node = self.node(role)
        if node.postgres is None:
            raise InputError(f"node {name} (role {role}) has no postgres section", host=name)
        return name, node, node.postgres

    def sql(self, role: str) -> SqlExecutor:
        name, node = self.node(role)
        if name not in self._sql:
            self._sql[name] = SqlExecutor.for_node(name, node, keep_open=True)
        return self._sql[name]

    def host(self, role: str) -> LocalExecutor:
        name, node = self.node(role)
        if node.executor != "local":
            raise InputError(
                f"node {name}: executor {node.executor!r} is not available yet", host=name
            )
        return LocalExecutor(host=name)

    def run(self, role: str, argv: list[str], *, timeout: float = 30.0) -> CommandResult:
        _, node = self.node(role)
        user = node.postgres.os_user if node.postgres else None
        return self.host(role).run(argv, user=user, timeout=timeout)

    def read_file(self, role: str, path: str) -> str | None:
        _, node = self.node(role)
        user = node.postgres.os_user if node.postgres else None
        return self.host(role).read_file(path, user=user)

    def http(self, role: str) -> HttpExecutor:
        name, node = self.node(role)
        if node.http is None:
            raise InputError(f"node {name} (role {role}) has no http section", host=name)
        if name not in self._http:
            self._http[name] = HttpExecutor(
                node.http.base_url, host=name, timeout=node.http.timeout
            )
        return self._http[name]

    def close(self) -> None:
        for executor in self._sql.values():
            executor.close()
        self._sql.clear()
        for client in self._http.values():
            client.close()
        self._http.clear()
