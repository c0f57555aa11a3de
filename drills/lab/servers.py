"""The local lab's servers on this host: starting and stopping them with pg_ctl as the OS user,
their live status, the DSNs that reach them, and the free 127.0.0.1 ports they listen on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from psycopg import conninfo

from drills.executors.local import LocalExecutor
from drills.executors.postgres import SqlExecutor, node_dsn
from drills.lab.files import describe_error
from drills.lab.pgconf import CONNECT_TIMEOUT, DATABASE, DB_USER, HOST
from drills.lab.processes import process_alive, running_pid, wait_processes_gone
from drills.lab.state import PRIMARY, STANDBY, LabNode
from drills.model.environment import Environment
from drills.model.errors import DrillError, ExecutorError, LabError

START_TIMEOUT = 60  # pg_ctl -t for start
STOP_TIMEOUT = 30  # pg_ctl -t for stop -m fast


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


# ---------------------------------------------------------------------- pg_ctl


def run_in(
    local: LocalExecutor, lab_dir: Path, argv: list[str], user: str | None, *, timeout: float
) -> None:
    """Run ``argv`` as ``user`` from ``lab_dir`` (from / while it does not exist)."""
    cwd = str(lab_dir) if lab_dir.is_dir() else "/"
    local.run(argv, user=user, timeout=timeout, cwd=cwd)


def start_server(
    local: LocalExecutor, lab_dir: Path, node: LabNode, pg_bin: Path, user: str | None
) -> None:
    argv = [str(pg_bin / "pg_ctl"), "-D", str(node.data_dir), "-l", str(node.log_file)]
    run_in(
        local,
        lab_dir,
        [*argv, "-w", "-t", str(START_TIMEOUT), "start"],
        user,
        timeout=START_TIMEOUT + 30,
    )
    # pg_ctl exits 0 when a standby's postmaster fails at once ("server shut down because
    # of recovery target settings"): make sure the server is really there.
    if running_pid(node.data_dir) is None:
        raise LabError(
            f"{node.name} (port {node.port}) stopped right after `pg_ctl start`: "
            f"see {node.log_file}"
        )


def stop_server(
    local: LocalExecutor,
    lab_dir: Path,
    node: LabNode,
    pg_bin: Path | None,
    os_user: str | None,
) -> int | None:
    """Stop one server and wait until all its processes are gone. Returns its pid, if it ran."""
    pid = running_pid(node.data_dir)
    if pid is not None:
        stopped = False
        if pg_bin is not None:
            pg_ctl = [str(pg_bin / "pg_ctl"), "-D", str(node.data_dir), "-w"]
            for mode, wait in (("fast", STOP_TIMEOUT), ("immediate", 10)):
                try:
                    run_in(
                        local,
                        lab_dir,
                        [*pg_ctl, "-t", str(wait), "-m", mode, "stop"],
                        os_user,
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
    wait_processes_gone(node.data_dir, node.name)
    return pid


def node_status(node: LabNode, environment: str) -> NodeStatus:
    """``node`` now: its pid and its live role (``environment``: see :func:`connect_dsn`)."""
    pid = running_pid(node.data_dir)
    role = "down"
    if pid is not None:
        executor = SqlExecutor(connect_dsn(node, environment), host=node.name)
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
        dsn=display_dsn(node),
        pid=pid,
    )


# ---------------------------------------------------------------------- DSNs


def display_dsn(node: LabNode) -> str:
    return conninfo.make_conninfo(
        host=node.host, port=str(node.port), user=DB_USER, dbname=DATABASE
    )


def connect_dsn(node: LabNode, environment: str) -> str:
    """The DSN drctl connects to ``node`` with, as environment ``environment`` would give it."""
    environment_node = Environment.model_validate(
        {
            "name": environment,
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


def his_dsn(nodes: list[LabNode]) -> str:
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


# ---------------------------------------------------------------------- ports


def choose_ports(primary: int | None, standby: int | None) -> tuple[int, int]:
    """The primary's and the standby's ports: those asked for (checked free), else free ones."""
    for name, port in ((PRIMARY, primary), (STANDBY, standby)):
        if port is None:
            continue
        if not 1 <= port <= 65535:
            raise LabError(f"port {port} for {name} is not a TCP port (1-65535)")
        if not port_free(port):
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


def port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on HOST:port (it binds with SO_REUSEADDR, as here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            sock.listen(1)
        except OSError:
            return False
    return True
