"""The one way checks are asked: by name from the catalogue, an error while asking is a verdict."""

from __future__ import annotations

from typing import Any

from drills.engine.catalogue import Catalogue, default_catalogue
from drills.model.check import CheckResult
from drills.model.clock import Clock
from drills.model.errors import DrillError
from verify.result import Probe


def run_check(
    name: str,
    role: str,
    params: dict[str, Any],
    probe: Probe,
    clock: Clock,
    catalogue: Catalogue | None = None,
) -> CheckResult:
    """Ask one check; an error while asking is a verdict (``error``), never an exception."""
    spec = (catalogue or default_catalogue()).check(name)
    node_name = "?"
    try:
        node_name, _ = probe.node(role)
        observation = spec.fn(probe, role, spec.params.model_validate(params))
        verdict = "held" if observation.held else "deviated"
        observed, expected, detail = observation.observed, observation.expected, observation.detail
    except DrillError as exc:
        verdict, observed, expected, detail = "error", None, spec.description, str(exc)
    stamp = clock.now()
    return CheckResult(
        check=name,
        target=role,
        node=node_name,
        observed=observed,
        expected=expected,
        verdict=verdict,
        detail=detail,
        at=stamp.at,
        offset=stamp.offset,
    )
