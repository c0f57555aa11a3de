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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drills.model.errors import InputError

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


class Become(Strict):
    """Run the database owner's commands as another user, the way Ansible users expect."""

    method: Literal["sudo", "su"] = Field(
        default="sudo", description="sudo -n (never prompts) or su (only as root)."
    )
    user: str = Field(description="The user commands run as, e.g. postgres.")


class JumpHost(Strict):
    """One bastion on the way to a node (ProxyJump style); listed outermost first."""

    host: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str
    key_file: str | None = None
    passphrase_env: str | None = None
    known_hosts: str | None = Field(
        default=None, description="known_hosts for this bastion; default: the node's."
    )


class SshAccess(Strict):
    """How drctl reaches a node's host over SSH (paramiko, host keys checked strictly)."""

    user: str = Field(description="The user drctl logs in as.")
    port: int = Field(default=22, ge=1, le=65535)
    address: str | None = Field(
        default=None, description="Where sshd listens; default: the node's host."
    )
    key_file: str | None = Field(default=None, description="Private key; else agent/defaults.")
    passphrase_env: str | None = Field(
        default=None, description="Environment variable holding the key's passphrase."
    )
    use_agent: bool = Field(default=True, description="Offer the keys of a running ssh-agent.")
    known_hosts: str | None = Field(
        default=None, description="known_hosts file; default ~/.ssh/known_hosts. Never updated."
    )
    jump: list[JumpHost] = Field(default_factory=list, description="Bastions, outermost first.")
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    keepalive: float = Field(default=10.0, ge=0, le=600, description="Seconds; 0: none.")
    become: Become | None = Field(
        default=None, description="How to run commands as the database owner (sudo or su)."
    )


class Node(Strict):
    role: str = Field(description="The role the node was given (primary, standby, app, ...).")
    host: str = Field(description="Address drctl connects to.")
    port: int = Field(default=5432, ge=1, le=65535)
    executor: Literal["local", "ssh"] = Field(
        default="local", description="How commands reach the host: local process or SSH."
    )
    ssh: SshAccess | None = Field(default=None, description="For executor: ssh.")
    postgres: PostgresAccess | None = None
    http: HttpAccess | None = None

    @model_validator(mode="after")
    def _reachable(self) -> Node:
        if self.executor == "ssh" and self.ssh is None:
            raise ValueError("executor ssh needs an `ssh:` section (user, known_hosts, ...)")
        if self.executor == "local" and self.ssh is not None:
            raise ValueError("an `ssh:` section needs `executor: ssh`")
        return self

    @property
    def endpoint(self) -> str:
        """The node's database address, host and port together (never the port alone)."""
        return f"{self.host}:{self.port}"


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


def read_secret_env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise InputError(f"environment variable {name} ({what}) is not set")
    return value


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
