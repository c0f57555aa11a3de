"""Moved to drills.model.errors (restructure in progress; this shim goes at the end).

NOTE TO HELPERS: the error tree now lives in drills/model/errors.py; add new classes there."""

from drills.model.errors import *  # noqa: F403
from drills.model.errors import (  # noqa: F401
    CommandFailed,
    CommandTimeout,
    ConnectionFailed,
    DrillError,
    ExecutorError,
    InputError,
    LabError,
    Problem,
    RefusedError,
    ValidationFailed,
)
