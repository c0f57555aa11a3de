"""The typed result of a check, and what a check needs from the world (``Probe``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from drills.executors.http import HttpExecutor
    from drills.executors.local import CommandResult
    from drills.executors.postgres import SqlExecutor
    from drills.model.environment import Node

Verdict = Literal["held", "deviated", "error"]


class CheckResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    check: str
    target: str
    node: str
    observed: Any
    expected: str
    verdict: Verdict
    detail: str = ""
    at: str
    offset: float

    @property
    def held(self) -> bool:
        return self.verdict == "held"


@dataclass(frozen=True)
class Observation:
    """What a check function returns: the value it saw and whether it meets the expectation."""

    observed: Any
    expected: str
    held: bool
    detail: str = ""


class Probe(Protocol):
    """The executors a check may use, addressed by role."""

    def node(self, role: str) -> tuple[str, Node]: ...

    def sql(self, role: str) -> SqlExecutor: ...

    def run(self, role: str, argv: list[str], *, timeout: float = 30.0) -> CommandResult: ...

    def read_file(self, role: str, path: str) -> str | None: ...

    def http(self, role: str) -> HttpExecutor: ...
