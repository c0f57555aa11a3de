"""What a check needs from the world (``Probe``), and its typed result (``drills.model.check``).

A check is ``fn(probe, role, params) -> Observation``. The probe is the run's ``Targets``
(``drills.engine.targets``): every node is reached through its own executors, addressed by role.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from drills.model.check import CheckResult, Observation, Verdict

if TYPE_CHECKING:
    from drills.executors.host import CommandResult, HostExecutor
    from drills.model.environment import Node, PostgresAccess

__all__ = ["CheckResult", "Observation", "Probe", "Verdict"]


class SqlLike(Protocol):
    host: str

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> list[tuple[Any, ...]]: ...

    def scalar(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout: float = 10.0
    ) -> Any: ...


class HttpLike(Protocol):
    host: str

    def request(self, method: str, path: str, *, body: Any = None) -> Any: ...


class Probe(Protocol):
    """The executors a check may use, addressed by role."""

    @property
    def env(self) -> Any: ...

    def node(self, role: str) -> tuple[str, Node]: ...

    def postgres(self, role: str) -> tuple[str, Node, PostgresAccess]: ...

    def host(self, role: str) -> HostExecutor: ...

    def os_user(self, role: str) -> str | None: ...

    def sql(self, role: str) -> Any: ...

    def run(self, role: str, argv: list[str], *, timeout: float = 30.0) -> CommandResult: ...

    def read_file(self, role: str, path: str) -> str | None: ...

    def http(self, role: str) -> Any: ...
