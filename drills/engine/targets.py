"""Roles resolved to nodes, and the executors that reach them.

Roles move: after a switchover the node that was ``primary`` is a standby. So the runner takes a
snapshot of who is what at the start of a run (``drills.engine.roles``), records it, and
addresses every action and check by role through ``Targets`` for the rest of the run.

``Targets`` makes no connection itself: a ``Connector`` does. The live one (``LiveConnector``)
builds a local or SSH host executor, a PostgreSQL session and an HTTP client per node; tests pass
a fake one, so the runner's decisions are tested without a database. One executor per node per
run: an SSH connection is opened once and reused by every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from drills.executors.host import CommandResult, HostExecutor
from drills.model.environment import Environment, Node, PostgresAccess
from drills.model.errors import InputError


class SqlSession(Protocol):
    """A database session on one node, kept for the run (``drills.executors.postgres``)."""

    host: str

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> list[tuple[Any, ...]]: ...

    def scalar(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> Any: ...

    def close(self) -> None: ...


class HttpSession(Protocol):
    host: str

    def request(self, method: str, path: str, *, body: Any = None) -> Any: ...

    def close(self) -> None: ...


class Connector(Protocol):
    """Makes the executors of a node. Each is asked for at most once per node per run."""

    def host(self, name: str, node: Node) -> HostExecutor: ...

    def sql(self, name: str, node: Node) -> SqlSession: ...

    def http(self, name: str, node: Node) -> HttpSession: ...


class LiveConnector:
    """The real executors: local process or SSH, psycopg or oracledb (by the node's engine),
    httpx."""

    def host(self, name: str, node: Node) -> HostExecutor:
        if node.executor == "ssh":
            from drills.executors.ssh import SshExecutor

            assert node.ssh is not None  # the environment model makes sure
            return SshExecutor(name, node.host, node.ssh)
        from drills.executors.local import LocalExecutor

        return LocalExecutor(host=name)

    def sql(self, name: str, node: Node) -> SqlSession:
        if node.oracle is not None:
            from drills.executors.oracle import OracleSession

            return OracleSession.for_node(name, node)
        from drills.executors.postgres import SqlExecutor

        return SqlExecutor.for_node(name, node, keep_open=True)

    def http(self, name: str, node: Node) -> HttpSession:
        from drills.executors.http import HttpExecutor

        assert node.http is not None
        return HttpExecutor(node.http.base_url, host=name, timeout=node.http.timeout)


class Targets:
    """The Probe of ``verify`` and the executors of actions, addressed by role."""

    def __init__(
        self, env: Environment, roles: dict[str, str], connector: Connector | None = None
    ) -> None:
        self.env = env
        self.roles = roles
        self.connector: Connector = connector or LiveConnector()
        # The run these executors serve (the runner sets it): actions name evidence by it.
        self.run_id: str | None = None
        self._hosts: dict[str, HostExecutor] = {}
        self._sql: dict[str, SqlSession] = {}
        self._http: dict[str, HttpSession] = {}

    def view(self, roles: dict[str, str]) -> Targets:
        """The same executors addressed by other roles (e.g. every node by its own name)."""
        other = Targets(self.env, roles, self.connector)
        other.run_id = self.run_id
        other._hosts, other._sql, other._http = self._hosts, self._sql, self._http
        return other

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

    def host_of(self, name: str) -> HostExecutor:
        """The host executor of a node, by node name (one per node per run)."""
        if name not in self._hosts:
            self._hosts[name] = self.connector.host(name, self.env.nodes[name])
        return self._hosts[name]

    def host(self, role: str) -> HostExecutor:
        return self.host_of(self.node(role)[0])

    def sql_of(self, name: str) -> SqlSession:
        if name not in self._sql:
            node = self.env.nodes[name]
            if node.postgres is None and node.oracle is None:
                raise InputError(
                    f"node {name} has no database section (postgres: or oracle:)", host=name
                )
            self._sql[name] = self.connector.sql(name, node)
        return self._sql[name]

    def sql(self, role: str) -> SqlSession:
        return self.sql_of(self.node(role)[0])

    def os_user(self, role: str) -> str | None:
        """The OS user that owns the role's database files (commands on them run as it): the
        ``postgres.os_user``, or an Oracle node's ``oracle.os_user`` (the Oracle home's owner)."""
        _, node = self.node(role)
        if node.oracle is not None:
            return node.oracle.os_user
        return node.postgres.os_user if node.postgres else None

    def run(self, role: str, argv: list[str], *, timeout: float = 30.0) -> CommandResult:
        """A command on the role's host, as the owner of its database."""
        return self.host(role).run(argv, user=self.os_user(role), timeout=timeout)

    def read_file(self, role: str, path: str) -> str | None:
        return self.host(role).read_file(path, user=self.os_user(role))

    def describe(self, role: str, argv: list[str], *, user: str | None = None) -> str:
        """What ``run`` would execute on the role's host, as that host's user (for plan)."""
        name, _ = self.node(role)
        return f"on {name}: " + self.host(role).describe(argv, user or self.os_user(role))

    def http(self, role: str) -> HttpSession:
        name, node = self.node(role)
        if node.http is None:
            raise InputError(f"node {name} (role {role}) has no http section", host=name)
        if name not in self._http:
            self._http[name] = self.connector.http(name, node)
        return self._http[name]

    def close(self) -> None:
        for session in self._sql.values():
            session.close()
        self._sql.clear()
        for client in self._http.values():
            client.close()
        self._http.clear()
        for host in self._hosts.values():
            host.close()
        self._hosts.clear()
