"""Checks: each answers one question about a target with a typed result.

A check observes a value, states what it expected, and gives a verdict: ``held``, ``deviated``
(the target answered, but not as expected) or ``error`` (the question could not be asked).
Steps use checks as gates (preconditions), convergence conditions and postconditions.
"""

from verify.registry import CHECKS, CheckSpec, run_check
from verify.result import CheckResult, Observation, Probe, Verdict

__all__ = ["CHECKS", "CheckResult", "CheckSpec", "Observation", "Probe", "Verdict", "run_check"]
