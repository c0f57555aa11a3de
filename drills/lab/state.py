"""The local lab's record of itself: its nodes as configured, the state file ``lab.json`` and the
environment (``environments/lab.yaml``) it writes for ``--env lab``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from drills.lab.files import atomic_write
from drills.lab.pgconf import CONNECT_TIMEOUT, DATABASE, DB_USER, HOST
from drills.model.environment import Environment
from drills.model.errors import LabError

STATE_FORMAT = 1
PRIMARY = "pg1"
STANDBY = "pg2"


@dataclass(frozen=True)
class LabNode:
    """One server of the lab as it was configured (the live role may differ after a switchover)."""

    name: str
    role: str
    host: str
    port: int
    data_dir: Path
    log_file: Path


@dataclass(frozen=True)
class LabState:
    """What ``lab.json`` records: the binaries, the OS user, whether ``up`` finished, the nodes."""

    pg_bin: Path | None
    os_user: str | None
    ready: bool
    nodes: list[LabNode]


def lab_nodes(lab_dir: Path, ports: tuple[int, int]) -> list[LabNode]:
    """The lab's primary and standby on ``ports``, their files in ``lab_dir``."""
    return [
        LabNode(name, role, HOST, port, lab_dir / name, lab_dir / f"{name}.log")
        for (name, role), port in zip(
            ((PRIMARY, "primary"), (STANDBY, "standby")), ports, strict=True
        )
    ]


def write_state(path: Path, state: LabState) -> None:
    data = {
        "format": STATE_FORMAT,
        "ready": state.ready,
        "pg_bin": str(state.pg_bin) if state.pg_bin else None,
        "os_user": state.os_user,
        "nodes": [
            {
                "name": node.name,
                "role": node.role,
                "host": node.host,
                "port": node.port,
                "data_dir": str(node.data_dir),
                "log_file": str(node.log_file),
            }
            for node in state.nodes
        ],
    }
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def read_state(path: Path, lab_dir: Path) -> LabState:
    """The state in ``path``; its nodes' files must be in ``lab_dir``.

    Raises OSError, ValueError, KeyError or TypeError when the file cannot be read or is wrong.
    """
    data = json.loads(path.read_text())
    nodes = [
        LabNode(
            name=str(item["name"]),
            role=str(item["role"]),
            host=str(item["host"]),
            port=int(item["port"]),
            data_dir=Path(item["data_dir"]),
            log_file=Path(item["log_file"]),
        )
        for item in data["nodes"]
    ]
    for node in nodes:  # down deletes these: never anything outside the lab
        for node_path in (node.data_dir, node.log_file):
            if node_path.parent != lab_dir:
                raise ValueError(f"{node_path} is not in {lab_dir}")
    return LabState(
        pg_bin=Path(data["pg_bin"]) if data.get("pg_bin") else None,
        os_user=data.get("os_user"),
        ready=bool(data.get("ready")),
        nodes=nodes,
    )


def lab_environment(
    name: str,
    nodes: list[LabNode],
    pg_bin: Path,
    os_user: str | None,
    app_port: int | None = None,
) -> Environment:
    """The environment ``name`` for the lab's nodes (and the HIS stand-in on ``app_port``)."""
    data: dict[str, Any] = {
        "name": name,
        "description": "Local lab: PostgreSQL primary pg1, streaming standby pg2 and a HIS "
        "stand-in (app) on "
        "127.0.0.1, made by `drctl lab up`.",
        "protected": False,
        "nodes": {},
    }
    for node in nodes:
        postgres: dict[str, Any] = {"data_dir": str(node.data_dir), "bin_dir": str(pg_bin)}
        if os_user is not None:
            postgres["os_user"] = os_user
        postgres |= {
            "user": DB_USER,
            "database": DATABASE,
            "application_name": node.name,
            "connect_timeout": CONNECT_TIMEOUT,
        }
        data["nodes"][node.name] = {
            "role": node.role,
            "host": node.host,
            "port": node.port,
            "executor": "local",
            "postgres": postgres,
        }
    if app_port is not None:
        data["nodes"]["app"] = {
            "role": "app",
            "host": HOST,
            "port": app_port,
            "executor": "local",
            "http": {"base_url": f"http://{HOST}:{app_port}"},
        }
    try:
        return Environment.model_validate(data)
    except ValidationError as exc:
        raise LabError(f"the lab's environment would be invalid: {exc}") from exc


def write_environment(path: Path, environment: Environment) -> None:
    """Write ``environment`` to ``path`` as YAML, with a header saying who wrote it."""
    data = environment.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    data.pop("objectives", None)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = (
        f"# Written by `drctl lab up` at {stamp}; `drctl lab down` deletes it.\n"
        "# Roles are the roles the nodes were given: drills read the live role.\n"
    )
    text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    atomic_write(path, text)
