"""Both labs seen the same way: the one-host lab (`lab`) and the two-site lab over SSH
(`lab-ssh`). Roles and streaming are read through drctl's own executors, so a test asks the
same question of either lab."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from drills.engine.loader import resolve_environment
from drills.engine.roles import observe_roles
from drills.engine.targets import Targets
from drills.model.environment import Environment
from drills.model.errors import DrillError
from drills.records.store import RecordStore


@dataclass(frozen=True)
class AnyLab:
    home: Path
    env: str  # the environment's name: "lab" or "lab-ssh"

    @property
    def environment(self) -> Environment:
        return resolve_environment(self.env)

    @property
    def store(self) -> RecordStore:
        return RecordStore(self.home / "records", self.home / "locks")

    def roles_now(self) -> dict[str, str]:
        """What each database node says it is now (primary, standby, down)."""
        env = self.environment
        targets = Targets(env, {})
        try:
            observed = observe_roles(targets)
        finally:
            targets.close()
        return {name: role for name, role in observed.items() if env.nodes[name].postgres}

    def wait_streaming(self, deadline: float = 30) -> None:
        """The pair is healthy again: one primary, one standby streaming from it."""
        end = time.monotonic() + deadline
        roles: dict[str, str] = {}
        while time.monotonic() < end:
            roles = self.roles_now()
            if sorted(roles.values()) == ["primary", "standby"]:
                standby = next(name for name, role in roles.items() if role == "standby")
                targets = Targets(self.environment, {})
                try:
                    status = targets.sql_of(standby).scalar(
                        "select status from pg_stat_wal_receiver"
                    )
                except DrillError:
                    status = None
                finally:
                    targets.close()
                if status == "streaming":
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.env} did not become a streaming pair: {roles}")
