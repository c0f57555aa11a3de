"""Moved to drills.model.environment (restructure in progress; this shim goes at the end)."""

from drills.model.environment import *  # noqa: F403
from drills.model.environment import (  # noqa: F401
    Become,
    Environment,
    HttpAccess,
    JumpHost,
    Node,
    PostgresAccess,
    SshAccess,
    read_password,
    read_secret_env,
)
