"""The PostgreSQL engine's server actions: stop, start, crash, promote, rejoin, SQL.

Every command runs on the node's host through its executor (local or SSH), as the owner of the
database files; ``describe`` says what would run there, as that host's user, for ``drctl plan``.
"""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import Field

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engine.targets import Targets
from drills.executors.postgres import node_dsn, redact
from drills.model.environment import Node, PostgresAccess, read_password
from drills.model.errors import CommandFailed, DrillError
from verify.postgres import postmaster_state

ENGINE = "postgres"


class StopParams(Params):
    mode: Literal["smart", "fast", "immediate"] = "fast"
    wait: bool = Field(
        default=True,
        description="Wait for pg_ctl to see the server gone; false returns at once and leaves "
        "the waiting to the step's checks, which poll faster than pg_ctl.",
    )


class RejoinParams(Params):
    source: str = Field(description="Role of the node to follow (the new primary).")


class SqlParams(Params):
    statement: str


def _describe(targets: Targets, role: str, argv: list[str]) -> str:
    return targets.describe(role, argv)


def _pg(targets: Targets, role: str) -> tuple[str, Node, PostgresAccess]:
    return targets.postgres(role)


def _log_file(pg: PostgresAccess) -> str:
    return pg.log_file or f"{pg.data_dir.rstrip('/')}.log"


def _argv_stop(pg: PostgresAccess, params: StopParams, timeout: float) -> list[str]:
    wait = ["-w", "-t", str(max(1, int(timeout)))] if params.wait else ["-W"]
    return [f"{pg.bin_dir}/pg_ctl", "stop", "-D", pg.data_dir, "-m", params.mode, *wait]


def _argv_start(pg: PostgresAccess, timeout: float, *, wait: bool = True) -> list[str]:
    waiting = ["-w", "-t", str(max(1, int(timeout)))] if wait else ["-W"]
    return [f"{pg.bin_dir}/pg_ctl", "start", "-D", pg.data_dir, "-l", _log_file(pg), *waiting]


# -- pg.stop ---------------------------------------------------------------------------------


def stop_run(targets: Targets, role: str, params: StopParams, timeout: float) -> ActionResult:
    _, _, pg = _pg(targets, role)
    result = targets.run(role, _argv_stop(pg, params, timeout), timeout=timeout + 5)
    return ActionResult(result.output)


def stop_describe(targets: Targets, role: str, params: StopParams) -> list[str]:
    _, _, pg = _pg(targets, role)
    return [_describe(targets, role, _argv_stop(pg, params, 60))]


# -- pg.start --------------------------------------------------------------------------------


def start_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    _, _, pg = _pg(targets, role)
    return ActionResult(targets.run(role, _argv_start(pg, timeout), timeout=timeout + 5).output)


def start_describe(targets: Targets, role: str, params: Params) -> list[str]:
    _, _, pg = _pg(targets, role)
    return [_describe(targets, role, _argv_start(pg, 60))]


# -- pg.kill (crash injection) ---------------------------------------------------------------


def kill_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _, pg = _pg(targets, role)
    host = targets.host(role)
    instance = host.instance_processes(pg.data_dir, user=pg.os_user)
    if instance.state != "running" or instance.postmaster is None:
        raise CommandFailed(
            f"no postmaster runs in {pg.data_dir} ({instance.state}): nothing to crash",
            returncode=1,
            host=name,
        )
    pid = instance.postmaster.pid
    host.signal([pid], "KILL", user=pg.os_user)
    return ActionResult(
        f"sent SIGKILL to the postmaster of {name} (pid {pid}) on {host.address}",
        {"pid": pid, "host": name, "address": host.address},
    )


def kill_describe(targets: Targets, role: str, params: Params) -> list[str]:
    _, _, pg = _pg(targets, role)
    return [
        _describe(targets, role, ["kill", "-KILL", f"$(head -n 1 {pg.data_dir}/postmaster.pid)"])
    ]


# -- pg.promote ------------------------------------------------------------------------------

PROMOTE_SQL = "select pg_promote(wait => false)"


def promote_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    accepted = targets.sql(role).scalar(PROMOTE_SQL, timeout=timeout)
    if not accepted:
        raise CommandFailed("pg_promote() returned false", returncode=1, host=targets.node(role)[0])
    return ActionResult("promotion requested")


def promote_describe(targets: Targets, role: str, params: Params) -> list[str]:
    name, _ = targets.node(role)
    return [f"SQL on {name}: {PROMOTE_SQL}"]


# -- pg.rejoin_as_standby --------------------------------------------------------------------


def _source_conninfo(targets: Targets, source_role: str, application_name: str) -> str:
    _name, node = targets.node(source_role)
    return redact(node_dsn(node, application_name=application_name))


def _rewind_argv(pg: PostgresAccess, source: str) -> list[str]:
    return [
        f"{pg.bin_dir}/pg_rewind",
        f"--target-pgdata={pg.data_dir}",
        f"--source-server={source}",
    ]


def standby_config(existing: str, port: int, conninfo: str) -> str:
    """postgresql.auto.conf with our port and primary_conninfo: pg_rewind copies the source's."""
    kept = [
        line
        for line in existing.splitlines()
        if not re.match(r"\s*(port|primary_conninfo|primary_slot_name)\s*=", line)
    ]
    quoted = conninfo.replace("'", "''")
    return "\n".join([*kept, f"port = {port}", f"primary_conninfo = '{quoted}'", ""])


def rejoin_run(targets: Targets, role: str, params: RejoinParams, timeout: float) -> ActionResult:
    name, node, pg = _pg(targets, role)
    deadline = time.monotonic() + timeout
    log: list[str] = []
    if postmaster_state(targets, role) == "running":
        for mode in ("fast", "immediate"):
            try:
                targets.run(role, _argv_stop(pg, StopParams(mode=mode), 30), timeout=35)
                break
            except DrillError:
                if postmaster_state(targets, role) != "running":
                    break
        else:
            raise CommandFailed(
                f"{name} still runs and could not be stopped", returncode=1, host=name
            )
        log.append(f"stopped {name}, which was still running")
    targets.sql(params.source).query("checkpoint", timeout=max(5.0, deadline - time.monotonic()))
    conninfo = _source_conninfo(targets, params.source, pg.application_name or name)
    env: dict[str, str] = {}
    source_node = targets.node(params.source)[1]
    if source_node.postgres is not None:
        password = read_password(source_node.postgres)
        if password is not None:
            env["PGPASSWORD"] = password
    # After a kill -9 the old postmaster's children linger for a second or two and keep its
    # shared memory attached; pg_rewind's crash recovery refuses to start until they are gone.
    while True:
        try:
            rewind = targets.host(role).run(
                _rewind_argv(pg, conninfo),
                user=pg.os_user,
                env=env,
                timeout=max(1.0, deadline - time.monotonic()),
            )
            break
        except CommandFailed as exc:
            # ... and a dead postmaster not yet reaped still "owns" postmaster.pid.
            lingering = any(
                sign in exc.output
                for sign in ("shared memory", "already running", 'postmaster.pid" already exists')
            )
            if not lingering or time.monotonic() > deadline - 1:
                raise
            time.sleep(0.2)
    log.append(rewind.output.splitlines()[-1] if rewind.output else "pg_rewind done")
    auto_conf = f"{pg.data_dir}/postgresql.auto.conf"
    host = targets.host(role)
    existing = host.read_file(auto_conf, user=pg.os_user) or ""
    host.write_file(auto_conf, standby_config(existing, node.port, conninfo), user=pg.os_user)
    host.write_file(f"{pg.data_dir}/standby.signal", "", user=pg.os_user)
    # No waiting in pg_ctl (it checks every 100 ms): the step's checks poll for the standby.
    targets.run(role, _argv_start(pg, 0, wait=False), timeout=30)
    log.append(f"started {name} as a standby of {targets.node(params.source)[0]}")
    return ActionResult("; ".join(log))


def rejoin_describe(targets: Targets, role: str, params: RejoinParams) -> list[str]:
    name, node, pg = _pg(targets, role)
    source_name, _ = targets.node(params.source)
    conninfo = _source_conninfo(targets, params.source, pg.application_name or name)
    return [
        f"if {name} runs: " + _describe(targets, role, _argv_stop(pg, StopParams(), 30)),
        f"SQL on {source_name}: checkpoint",
        _describe(targets, role, _rewind_argv(pg, conninfo)),
        f"write {pg.data_dir}/postgresql.auto.conf: port = {node.port}, "
        f"primary_conninfo = '{conninfo}'; touch {pg.data_dir}/standby.signal",
        _describe(targets, role, _argv_start(pg, 0, wait=False)),
    ]


def sql_run(targets: Targets, role: str, params: SqlParams, timeout: float) -> ActionResult:
    rows = targets.sql(role).query(params.statement, timeout=timeout)
    # The statement is kept in the step's data: a change's update log says what it ran.
    data = {"statement": " ".join(params.statement.split()), "rows": len(rows)}
    return ActionResult("\n".join(" | ".join(str(v) for v in row) for row in rows[:20]), data)


def sql_describe(targets: Targets, role: str, params: SqlParams) -> list[str]:
    name, _ = targets.node(role)
    return [f"SQL on {name}: {params.statement}"]


def postgres_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            "pg.stop",
            StopParams,
            stop_run,
            stop_describe,
            True,
            "Stop the server with pg_ctl (mode fast by default).",
            ENGINE,
        ),
        ActionSpec(
            "pg.start",
            Params,
            start_run,
            start_describe,
            True,
            "Start the server with pg_ctl.",
            ENGINE,
        ),
        ActionSpec(
            "pg.kill",
            Params,
            kill_run,
            kill_describe,
            True,
            "Crash the server: SIGKILL to its postmaster (drill crash injection).",
            ENGINE,
        ),
        ActionSpec(
            "pg.promote",
            Params,
            promote_run,
            promote_describe,
            True,
            "Promote a standby: pg_promote(wait => false); checks poll for the result.",
            ENGINE,
        ),
        ActionSpec(
            "pg.rejoin_as_standby",
            RejoinParams,
            rejoin_run,
            rejoin_describe,
            True,
            "Stop if running, pg_rewind from the source, configure and start as its standby.",
            ENGINE,
        ),
        ActionSpec(
            "sql",
            SqlParams,
            sql_run,
            sql_describe,
            True,
            "Run one SQL statement on the role's database.",
            ENGINE,
        ),
    ]
