"""Kept for old imports: checks are registered by engines (``drills.engine.catalogue``)."""

from __future__ import annotations

from drills.engine.catalogue import CheckSpec, default_catalogue
from drills.engine.checking import run_check

__all__ = ["CHECKS", "CheckSpec", "run_check"]


def __getattr__(name: str) -> object:
    if name == "CHECKS":
        return default_catalogue().checks
    raise AttributeError(name)
