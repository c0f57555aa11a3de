"""The lab's replication link through the link proxy (:mod:`drills.lab.linkproxy`).

``drctl lab up --link-proxy`` (or :func:`route_standby`, which the fault suite calls after a
drill swapped the roles) starts the lab's proxy when it does not run, points it at the primary
of now, and sets the standby's ``primary_conninfo`` to the proxy (``ALTER SYSTEM``, then a
reload: PostgreSQL restarts its WAL receiver on the new value), then waits until the standby
streams through it. The same for both labs: the one-host lab's standby and the two-site lab's
site B reach the proxy on 127.0.0.1, which forwards to the primary's address.

The proxy's pid and ports are in ``linkproxy.json`` in the lab's directory; ``drctl lab down``
stops it by that pid. A drill's rejoin (``pg_rewind``) writes a direct ``primary_conninfo``
again: the link goes through the proxy only until the roles change, and
:func:`standby_route` says which way it goes now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from drills.executors.postgres import SqlExecutor, node_dsn
from drills.lab import linkproxy
from drills.lab.linkproxy import LinkProxy
from drills.lab.pgconf import DB_USER, HOST
from drills.model.environment import Environment, Node
from drills.model.errors import DrillError, LabError

STATE_FILE = "linkproxy.json"
LOG_FILE = "linkproxy.log"
ROUTE_TIMEOUT = 30.0  # seconds for the standby to stream through the proxy


@dataclass(frozen=True)
class Route:
    primary: str
    standby: str
    proxy: LinkProxy
    message: str


def state_file(lab_dir: Path) -> Path:
    return lab_dir / STATE_FILE


def proxy_of(lab_dir: Path) -> LinkProxy | None:
    """The lab's link proxy, if it runs."""
    return linkproxy.running(state_file(lab_dir))


def stop_proxy(lab_dir: Path) -> int | None:
    """Stop the lab's link proxy by its recorded pid; the pid, or None when none ran."""
    pid = linkproxy.stop(state_file(lab_dir))
    (lab_dir / LOG_FILE).unlink(missing_ok=True)
    return pid


def ensure_proxy(lab_dir: Path, target: tuple[str, int]) -> tuple[LinkProxy, bool]:
    """The lab's proxy, started (on the port it had, if it had one) when it does not run;
    (proxy, whether it was started now)."""
    proxy = proxy_of(lab_dir)
    if proxy is not None:
        return proxy, False
    before = linkproxy.recorded(state_file(lab_dir))
    listen = (HOST, before.port if before is not None else 0)
    try:
        return linkproxy.start(state_file(lab_dir), lab_dir / LOG_FILE, target, listen), True
    except (RuntimeError, OSError) as exc:
        if before is None:
            raise LabError(f"could not start the link proxy: {exc}") from exc
    try:  # its old port is taken: a new one (the standby is pointed at it below)
        return linkproxy.start(state_file(lab_dir), lab_dir / LOG_FILE, target), True
    except (RuntimeError, OSError) as exc:
        raise LabError(f"could not start the link proxy: {exc}") from exc


def _roles(environment: Environment) -> dict[str, str]:
    roles: dict[str, str] = {}
    for name, node in environment.nodes.items():
        if node.postgres is None:
            continue
        try:
            in_recovery = SqlExecutor(node_dsn(node), host=name).scalar(
                "select pg_is_in_recovery()", timeout=5
            )
            roles[name] = "standby" if in_recovery else "primary"
        except DrillError:
            roles[name] = "down"
    return roles


def _pair(environment: Environment) -> tuple[str, str]:
    roles = _roles(environment)
    primaries = [n for n, r in roles.items() if r == "primary"]
    standbys = [n for n, r in roles.items() if r == "standby"]
    if len(primaries) != 1 or len(standbys) != 1:
        raise LabError(
            "the replication link goes from one standby to one primary; the lab's nodes are "
            + ", ".join(f"{n} {r}" for n, r in roles.items())
        )
    return primaries[0], standbys[0]


def _application_name(name: str, node: Node) -> str:
    return (node.postgres.application_name if node.postgres else None) or name


def standby_route(environment: Environment, lab_dir: Path) -> str:
    """Which way the standby streams now: ``proxy`` (through the lab's link proxy),
    ``direct``, or ``none`` (no standby streams)."""
    proxy = proxy_of(lab_dir)
    for name, node in environment.nodes.items():
        if node.postgres is None:
            continue
        try:
            row = SqlExecutor(node_dsn(node), host=name).query(
                "select status, sender_port from pg_stat_wal_receiver", timeout=5
            )
        except DrillError:
            continue
        if row and row[0][0] == "streaming":
            return "proxy" if proxy is not None and row[0][1] == proxy.port else "direct"
    return "none"


def _set_conninfo(executor: SqlExecutor, conninfo: str) -> None:
    """ALTER SYSTEM, then a reload: PostgreSQL restarts its WAL receiver on the new value."""
    statement = sql.SQL("alter system set primary_conninfo = {}").format(sql.Literal(conninfo))
    executor.query(statement.as_string(), timeout=10)
    executor.query("select pg_reload_conf()", timeout=10)


def _wait_sender(executor: SqlExecutor, port: int, timeout: float) -> str:
    """Wait until the WAL receiver streams from ``port``; "" then, else what it last was."""
    deadline = time.monotonic() + timeout
    while True:
        rows = executor.query("select status, sender_port from pg_stat_wal_receiver", timeout=5)
        if rows and rows[0][0] == "streaming" and rows[0][1] == port:
            return ""
        if time.monotonic() > deadline:
            return f"{rows[0][0]} from port {rows[0][1]}" if rows else "no WAL receiver"
        time.sleep(0.05)


def route_standby(environment: Environment, lab_dir: Path, timeout: float = ROUTE_TIMEOUT) -> Route:
    """Put the lab's link proxy between its standby and its primary of now, and wait until the
    standby streams through it."""
    primary, standby = _pair(environment)
    target = environment.nodes[primary]
    proxy, started = ensure_proxy(lab_dir, (target.host, target.port))
    try:
        proxy.restore()
        proxy.retarget(target.host, target.port)
    except RuntimeError as exc:
        raise LabError(str(exc)) from exc
    node = environment.nodes[standby]
    conninfo = (
        f"host={proxy.host} port={proxy.port} user={DB_USER} "
        f"application_name={_application_name(standby, node)}"
    )
    executor = SqlExecutor(node_dsn(node), host=standby)
    _set_conninfo(executor, conninfo)
    last = _wait_sender(executor, proxy.port, timeout)
    if last:
        raise LabError(
            f"{standby} did not stream from {primary} through the link proxy "
            f"{proxy.listen} within {timeout:g}s (its WAL receiver: {last})"
        )
    what = "started the link proxy" if started else "the link proxy"
    message = (
        f"{what} on {proxy.listen} (pid {proxy.pid}, control {proxy.control}): {standby} "
        f"streams from {primary} ({target.host}:{target.port}) through it"
    )
    return Route(primary, standby, proxy, message)


def route_direct(environment: Environment, lab_dir: Path, timeout: float = ROUTE_TIMEOUT) -> str:
    """The standby streams straight from the primary again, and the proxy is stopped."""
    primary, standby = _pair(environment)
    target, node = environment.nodes[primary], environment.nodes[standby]
    conninfo = (
        f"host={target.host} port={target.port} user={DB_USER} "
        f"application_name={_application_name(standby, node)}"
    )
    executor = SqlExecutor(node_dsn(node), host=standby)
    _set_conninfo(executor, conninfo)
    pid = stop_proxy(lab_dir)
    last = _wait_sender(executor, target.port, timeout)
    if last:
        raise LabError(
            f"{standby} did not stream straight from {primary} within {timeout:g}s "
            f"(its WAL receiver: {last})"
        )
    stopped = f"; stopped the link proxy (pid {pid})" if pid is not None else ""
    return f"{standby} streams straight from {primary} ({target.host}:{target.port}){stopped}"
