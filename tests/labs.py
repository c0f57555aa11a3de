"""Both labs seen the same way: the one-host lab (`lab`) and the two-site lab over SSH
(`lab-ssh`). Roles and streaming are read through drctl's own executors, so a test asks the
same question of either lab."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drills.engine.loader import load_environment_file
from drills.engine.roles import observe_roles
from drills.engine.targets import Targets
from drills.executors.postgres import node_dsn
from drills.model.environment import Environment, Node
from drills.model.errors import DrillError
from drills.records.store import RecordStore


@dataclass(frozen=True)
class AnyLab:
    home: Path
    env: str  # the environment's name: "lab" or "lab-ssh"

    @property
    def environment_file(self) -> Path:
        return self.home / "environments" / f"{self.env}.yaml"

    @property
    def environment(self) -> Environment:
        # By its file in the lab's home: a module with a DRCTL_HOME of its own still sees it.
        return load_environment_file(self.environment_file)

    @property
    def store(self) -> RecordStore:
        return RecordStore(self.home / "records", self.home / "locks")

    @property
    def over_ssh(self) -> bool:
        return self.env == "lab-ssh"

    @contextlib.contextmanager
    def active(self) -> Iterator[AnyLab]:
        """DRCTL_HOME set to the lab's home while drctl runs (`--env NAME`, records, state),
        put back after: test modules with a private home keep theirs for their other tests."""
        before = os.environ.get("DRCTL_HOME")
        os.environ["DRCTL_HOME"] = str(self.home)
        try:
            yield self
        finally:
            if before is None:
                os.environ.pop("DRCTL_HOME", None)
            else:
                os.environ["DRCTL_HOME"] = before

    def node(self, name: str) -> Node:
        return self.environment.nodes[name]

    def dsn(self, name: str, database: str | None = None) -> str:
        """A libpq DSN of a database node, for the test's own SQL (connect_timeout 3)."""
        overrides: dict[str, Any] = {"dbname": database} if database else {}
        return node_dsn(self.node(name), connect_timeout=3, **overrides)

    def address_of(self, name: str) -> str:
        """How drctl reaches the node's host, as step data name it: ``local``, or
        ``user@host:port`` of its sshd."""
        node = self.node(name)
        if node.ssh is None:
            return "local"
        return f"{node.ssh.user}@{node.ssh.address or node.host}:{node.ssh.port}"

    def work_dir(self, name: str) -> Path:
        """The parent of the node's data directory, where drctl keeps backups and scratch
        servers on that host (the lab's hosts are this machine: a test may look)."""
        pg = self.node(name).postgres
        assert pg is not None
        return Path(posixpath.dirname(pg.data_dir.rstrip("/")))

    def remove_backups(self) -> None:
        """No backup of this environment on any of its hosts (as the hosts' root)."""
        for name, node in self.environment.nodes.items():
            if node.postgres is not None:
                shutil.rmtree(self.work_dir(name) / "drctl-backups" / self.env, ignore_errors=True)

    def role_of(self, role: str) -> str:
        """The node that has ``role`` (primary or standby) now."""
        return next(name for name, now in self.roles_now().items() if now == role)

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
            try:
                roles = self.roles_now()
            except DrillError:  # a site's sshd coming back
                roles = {}
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
