"""Checks: each answers one question about a target with a typed result.

A check is ``fn(probe, role, params) -> Observation``: it observes a value, states what it
expected, and the runner gives the verdict: ``held``, ``deviated`` (the target answered, but not
as expected) or ``error`` (the question could not be asked). Steps use checks as gates
(preconditions), convergence conditions and postconditions. Engines register the checks they
offer into the catalogue (``drills.engine.catalogue``); this package holds the questions only.
"""
