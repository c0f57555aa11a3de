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

An Oracle node has an ``oracle:`` section instead (``OracleAccess``: connect string or service,
user, password_env/password_file or a wallet, os_user for dgmgrl and rman, db_unique_name); its
port defaults to 1521. A node is one database: ``postgres:`` and ``oracle:`` together are
refused. ``Node.engine`` says which it is.

A node with role ``app`` is the application the users see: it must have an ``http:`` section
(``base_url``), since the service probe and the application checks reach it there; without one
the environment is refused, at the node's line. (A playbook whose ``measurements.service_role``
names another role gets the same refusal from the runner, ``check_request``.) The objective
targets are durations, bounded like every other (``drills.model.durations``).

A database node may name its site's own fence (``fence: {command: [...], on: local}``,
``FenceCommand``): a failover runs it when the node's host cannot be reached, and its exit 0 is
the confirmation that the old primary cannot write any more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drills.model.durations import parse_duration
from drills.model.errors import InputError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
APP_ROLE = "app"  # the application node's role: it needs `http`


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


ORACLE_IDENTIFIER = r"^[A-Za-z][A-Za-z0-9_$#.]{0,63}$"
ORACLE_PORT = 1521  # a node with an `oracle:` section and no `port` listens here


class OracleAccess(Strict):
    """How drctl reaches an Oracle database: python-oracledb in thin mode (no Oracle Client on
    drctl's side), and the OS user and homes the server's own tools (dgmgrl, rman) run with on
    the node's host. Secrets are named, never written: ``password_env`` or ``password_file``,
    a wallet's password in ``wallet_password_env``."""

    connect: str | None = Field(
        default=None,
        min_length=1,
        description="EZConnect host:port/service, or a full (DESCRIPTION=...) descriptor; "
        "default <host>:<port>/<service>.",
    )
    service: str | None = Field(
        default=None,
        pattern=ORACLE_IDENTIFIER,
        description="Service name of this database (its db_unique_name service); optional if "
        "`connect` names it.",
    )
    user: str = Field(min_length=1, description="Database user drctl connects as.")
    password_env: str | None = Field(
        default=None, description="Name of the environment variable holding the password."
    )
    password_file: str | None = Field(default=None, description="File holding the password.")
    privilege: Literal["sysdg", "sysdba", "sysbackup"] | None = Field(
        default=None,
        description="Connect AS SYSDG/SYSDBA/SYSBACKUP: a mounted standby (no Active Data "
        "Guard) answers only such sessions.",
    )
    wallet_dir: str | None = Field(
        default=None,
        description="Directory of the wallet (ewallet.pem) and tnsnames.ora for a TCPS "
        "connection, on drctl's machine.",
    )
    wallet_password_env: str | None = Field(
        default=None, description="Environment variable holding the wallet's password."
    )
    os_user: str = Field(
        default="oracle", description="OS user that owns the Oracle home (dgmgrl, rman run as it)."
    )
    oracle_home: str | None = Field(default=None, description="ORACLE_HOME on the node's host.")
    oracle_sid: str | None = Field(
        default=None, pattern=ORACLE_IDENTIFIER, description="ORACLE_SID on the node's host."
    )
    dgmgrl_connect: str | None = Field(
        default=None,
        description="How dgmgrl logs in on the node's host: '/' (OS authentication), "
        "'/@alias' (a wallet), or 'user@alias' with dgmgrl_password_env. Never a password.",
    )
    dgmgrl_password_env: str | None = Field(
        default=None,
        description="Environment variable holding the password for a 'user@alias' "
        "dgmgrl_connect (given to dgmgrl on its standard input, never on its command line).",
    )
    db_unique_name: str | None = Field(
        default=None,
        pattern=ORACLE_IDENTIFIER,
        description="DB_UNIQUE_NAME of this database (Data Guard and the broker name it so).",
    )
    primary_service: str | None = Field(
        default=None,
        pattern=ORACLE_IDENTIFIER,
        description="A role-based service that runs only on the primary: the canary writer "
        "connects to it through every node's address and lands on whichever is primary.",
    )
    connect_timeout: float = Field(default=5.0, gt=0, le=120, description="Seconds.")

    @model_validator(mode="after")
    def _consistent(self) -> OracleAccess:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if not (self.password_env or self.password_file or self.wallet_dir):
            raise ValueError(
                "an `oracle:` section needs password_env or password_file (thin mode logs in "
                "with a password), or wallet_dir"
            )
        if self.wallet_password_env and not self.wallet_dir:
            raise ValueError("wallet_password_env needs wallet_dir")
        if self.connect is None and self.service is None:
            raise ValueError(
                "an `oracle:` section needs `connect` (host:port/service or a descriptor) or "
                "`service` (drctl then connects to <host>:<port>/<service>)"
            )
        if self.dgmgrl_connect is not None:
            problem = dgmgrl_connect_problem(self.dgmgrl_connect)
            if problem:
                raise ValueError(problem)
            if "/" not in self.dgmgrl_connect and not self.dgmgrl_password_env:
                raise ValueError(
                    f"dgmgrl_connect {self.dgmgrl_connect!r} names a user: give its password's "
                    "variable in dgmgrl_password_env (dgmgrl must never prompt)"
                )
        return self

    def dsn(self, host: str, port: int) -> str:
        """What oracledb connects to: ``connect``, or ``host:port/service``."""
        if self.connect is not None:
            return self.connect
        return f"{host}:{port}/{self.service}"


def dgmgrl_connect_problem(text: str) -> str | None:
    """Why a dgmgrl connect identifier is refused (it holds a password), or None.

    Accepted: ``/`` (OS authentication), ``/@alias`` (the wallet's credentials for the alias),
    ``user@alias`` (the password then comes from ``dgmgrl_password_env``)."""
    value = text.strip()
    if not value or any(c.isspace() for c in value):
        return f"dgmgrl_connect {text!r} must be one word: '/', '/@alias' or 'user@alias'"
    credentials, _, alias = value.partition("@")
    if not credentials:
        return f"dgmgrl_connect {text!r} names no user: write '/@{alias}' to use a wallet"
    if "@" in value and not alias:
        return f"dgmgrl_connect {text!r} names no connect identifier after '@'"
    if credentials == "/" or (credentials and "/" not in credentials):
        return None
    return (
        "dgmgrl_connect must not hold a password: write '/' (OS authentication), '/@alias' "
        "(a wallet) or 'user@alias' with dgmgrl_password_env"
    )


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


FENCE_LOCAL = "local"  # a fence command's `on:` for drctl's own machine


class FenceCommand(Strict):
    """A site's own fence for a node (IPMI or a PDU powering it off, a cloud API stopping it, a
    storage lock): a command whose exit status 0 means the node is fenced.

    drctl runs it only when it cannot fence the node itself, that is when the node's host
    executor cannot be reached (``pg.fence``). It runs through an executor: ``on: local`` on
    drctl's own machine, or ``on: <node>`` on that other node's host (a management host listed
    in the environment). Secrets it needs come from that machine's environment or files, never
    from this file."""

    command: list[str] = Field(
        min_length=1, description="The command and its arguments (no shell), e.g. fence_ipmilan."
    )
    on: str = Field(
        default=FENCE_LOCAL,
        pattern=NAME_PATTERN,
        description="Where it runs: `local` (drctl's machine) or another node of the environment.",
    )
    user: str | None = Field(default=None, description="Run it as this user on that machine.")
    timeout: float = Field(default=60.0, gt=0, le=600, description="Seconds.")


class Node(Strict):
    role: str = Field(
        pattern=NAME_PATTERN,
        description="The role the node was given (primary, standby, app, ...).",
    )
    host: str = Field(description="Address drctl connects to.")
    port: int = Field(default=5432, ge=1, le=65535)
    executor: Literal["local", "ssh"] = Field(
        default="local", description="How commands reach the host: local process or SSH."
    )
    ssh: SshAccess | None = Field(default=None, description="For executor: ssh.")
    postgres: PostgresAccess | None = None
    oracle: OracleAccess | None = Field(
        default=None, description="An Oracle database (its port defaults to 1521)."
    )
    http: HttpAccess | None = None
    fence: FenceCommand | None = Field(
        default=None,
        description="The site's own fence command for this node, run when its host cannot be "
        "reached (its exit 0 confirms the fence).",
    )

    @model_validator(mode="before")
    @classmethod
    def _oracle_port(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("oracle") is not None and "port" not in data:
            return {**data, "port": ORACLE_PORT}
        return data

    @model_validator(mode="after")
    def _reachable(self) -> Node:
        if self.executor == "ssh" and self.ssh is None:
            raise ValueError("executor ssh needs an `ssh:` section (user, known_hosts, ...)")
        if self.executor == "local" and self.ssh is not None:
            raise ValueError("an `ssh:` section needs `executor: ssh`")
        if self.postgres is not None and self.oracle is not None:
            raise ValueError(
                "a node is one database: it has a `postgres:` or an `oracle:` section, not both"
            )
        if self.role == APP_ROLE and self.http is None:
            raise ValueError(
                f"a node with role {APP_ROLE} needs an `http:` section "
                "(base_url: where the application answers)"
            )
        return self

    @property
    def engine(self) -> str | None:
        """The node's database engine, from the section it has: postgres, oracle, or None."""
        if self.postgres is not None:
            return "postgres"
        if self.oracle is not None:
            return "oracle"
        return None

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

    @field_validator("objectives")
    @classmethod
    def _targets_are_durations(
        cls, objectives: dict[str, str | float | int]
    ) -> dict[str, str | float | int]:
        for name, target in objectives.items():
            try:
                parse_duration(target)
            except ValueError as exc:
                raise ValueError(f"objective {name}: {exc}") from None
        return objectives

    @model_validator(mode="after")
    def _fences_run_somewhere_else(self) -> Environment:
        for name, node in self.nodes.items():
            if node.fence is None or node.fence.on == FENCE_LOCAL:
                continue
            if node.fence.on == name:
                raise ValueError(
                    f"node {name}: its fence command cannot run on {name} itself (it runs when "
                    "that host cannot be reached): use `on: local` or another node"
                )
            if node.fence.on not in self.nodes:
                raise ValueError(
                    f"node {name}: fence `on: {node.fence.on}` names no node of the environment "
                    f"(nodes: {', '.join(self.nodes)}; or `local`)"
                )
        return self

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
