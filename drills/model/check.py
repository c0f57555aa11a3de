"""The typed result of a check: what was observed, what was expected, and the verdict.

``held``: the expectation was met; ``deviated``: the target answered, but not as expected;
``error``: the question could not be asked (unreachable, refused). Deviated is kept apart from
failed, as in a steady-state hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

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
