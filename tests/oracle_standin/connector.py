"""The ``Connector`` for tests on the stand-in: Oracle sessions on ``StandinDatabase``, through
the real executor (``drills.executors.oracle.OracleSession``, its errors translated there).

    state = StandinState.create(tmp_path / "oracle.json", {...}, primary="his-pri")
    connector = StandinConnector(state, env)
    Runner(request, env=env, connector=connector, ...)     # or Targets(env, roles, connector)

Host executors and HTTP come from ``hosts`` and ``http`` when given (the other tests' fakes, or
``LiveConnector().host`` for an SSH lab host running the CLI stand-ins). Without ``hosts`` a node's
host is ``NoHost``: it may be "logged in to" (the runner does that before the first step), and
any command on it fails, naming the node. Without ``http`` asking for HTTP is a test error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from drills.executors.host import CommandResult, HostExecutor, PosixHost
from drills.executors.oracle import OracleSession
from drills.model.environment import Environment, Node
from drills.model.errors import CommandFailed
from tests.oracle_standin.database import StandinDatabase
from tests.oracle_standin.state import StandinState


class NoHost(PosixHost):
    """A host that is not part of the test: logging in works, every command fails."""

    def __init__(self, name: str) -> None:
        self.host = name
        self.commands: list[list[str]] = []

    @property
    def address(self) -> str:
        return f"standin:{self.host}"

    def describe(self, argv: Sequence[str], user: str | None = None) -> str:
        return " ".join(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        timeout: float = 60.0,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        input: str | None = None,
    ) -> CommandResult:
        self.commands.append(list(argv))
        raise CommandFailed(
            f"the SQL stand-in has no host commands ({' '.join(argv)})",
            returncode=127,
            host=self.host,
        )


class StandinConnector:
    def __init__(
        self,
        state: StandinState,
        env: Environment,
        *,
        hosts: Callable[[str, Node], HostExecutor] | None = None,
        http: Callable[[str, Node], Any] | None = None,
    ) -> None:
        self.database = StandinDatabase(state, env)
        self.state, self.env = state, env
        self._hosts, self._http = hosts, http
        self.sessions: dict[str, OracleSession] = {}

    @property
    def connect(self) -> Callable[..., Any]:
        """The stand-in's ``oracledb.connect`` (for ``OracleInstruments(connect=...)``)."""
        return self.database.connect

    @property
    def oracle_connect(self) -> Callable[..., Any]:
        """The same, for the table comparison's thin sessions (``engines.oracle.compare``)."""
        return self.database.connect

    def sql(self, name: str, node: Node) -> OracleSession:
        session = OracleSession.for_node(name, node, connect=self.database.connect)
        self.sessions[name] = session
        return session

    def host(self, name: str, node: Node) -> HostExecutor:
        if self._hosts is None:
            return NoHost(name)
        return self._hosts(name, node)

    def http(self, name: str, node: Node) -> Any:
        if self._http is None:
            raise AssertionError(f"no HTTP in this test (node {name})")
        return self._http(name, node)
