"""The environment: the nodes a playbook acts on, how to reach them, and whether it is protected.

An environment file is YAML::

    name: lab
    protected: false
    nodes:
      pg1:
        role: primary            # the role it was given; the runner reads the live role
        host: 127.0.0.1
        port: 54321
        postgres:
          data_dir: /var/lib/drctl/lab/pg1
          bin_dir: /opt/pg/bin
          os_user: drctl-pg      # run server commands as this user (when drctl runs as root)
          user: postgres
          database: postgres
          password_env: LAB_PG_PASSWORD   # a secret is named, never written here

Secrets are named (an environment variable or a file) and read only when a connection is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drills.errors import InputError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresAccess(Strict):
    data_dir: str = Field(description="The server's data directory on its host.")
    bin_dir: str = Field(description="Directory of pg_ctl, pg_rewind, pg_controldata on its host.")
    os_user: str | None = Field(
        default=None, description="Operating-system user that owns the server's files."
    )
    user: str = Field(default="postgres", description="Database user drctl connects as.")
    database: str = "postgres"
    password_env: str | None = Field(
        default=None, description="Name of the environment variable holding the password."
    )
    password_file: str | None = Field(default=None, description="File holding the password.")
    application_name: str | None = Field(
        default=None, description="Name the node uses when it streams from a primary."
    )
    log_file: str | None = Field(
        default=None, description="Server log for pg_ctl start; default: <data_dir>.log."
    )
    connect_timeout: int = Field(default=3, ge=1, le=60)


class HttpAccess(Strict):
    base_url: str = Field(
        pattern=r"^https?://", description="Where the service answers, e.g. http://127.0.0.1:8080"
    )
    health_path: str = "/health"
    timeout: float = Field(default=3.0, gt=0, le=60)


class Node(Strict):
    role: str = Field(description="The role the node was given (primary, standby, app, ...).")
    host: str = Field(description="Address drctl connects to.")
    port: int = Field(default=5432, ge=1, le=65535)
    executor: Literal["local", "ssh"] = Field(
        default="local", description="How commands reach the host: local process or SSH."
    )
    postgres: PostgresAccess | None = None
    http: HttpAccess | None = None


class Environment(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    protected: bool = Field(
        default=False,
        description="A protected environment is production: drills refuse it, real runs need "
        "an approval.",
    )
    nodes: dict[str, Node]
    objectives: dict[str, str | float | int] = Field(
        default_factory=dict, description="Objective targets that override the playbook's."
    )

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, nodes: dict[str, Node]) -> dict[str, Node]:
        import re

        if not nodes:
            raise ValueError("an environment needs at least one node")
        for name in nodes:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"node name {name!r} must match {NAME_PATTERN}")
        return nodes

    def nodes_with_role(self, role: str) -> list[str]:
        return [name for name, node in self.nodes.items() if node.role == role]


def read_password(access: PostgresAccess) -> str | None:
    """Read a node's password from where the environment names it. Never logged or recorded."""
    if access.password_env:
        value = os.environ.get(access.password_env)
        if value is None:
            raise InputError(f"environment variable {access.password_env} (a password) is not set")
        return value
    if access.password_file:
        try:
            return Path(access.password_file).expanduser().read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read password file {access.password_file}: {exc}") from exc
    return None
