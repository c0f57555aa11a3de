"""The catalogue of actions a playbook step may name.

Each action has typed parameters, a ``describe`` that says what it would run (for ``drctl plan``)
and a ``run`` that does it through the executors of ``Targets``. Actions do not judge success
beyond their own command: the step's checks do that.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drills.engine.human import human_actions
from drills.engine.targets import Targets
from drills.engines.postgres.backup import backup_actions
from drills.engines.postgres.migrate import migration_actions
from drills.executors.local import describe as describe_argv
from drills.executors.postgres import node_dsn, redact
from drills.model.durations import Duration
from drills.model.environment import Node, PostgresAccess, read_password
from drills.model.errors import CommandFailed, DrillError
from verify.postgres import postmaster_state


@dataclass(frozen=True)
class ActionResult:
    output: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StopParams(Params):
    mode: Literal["smart", "fast", "immediate"] = "fast"
    wait: bool = Field(
        default=True,
        description="Wait for pg_ctl to see the server gone; false returns at once and leaves "
        "the waiting to the step's checks, which poll faster than pg_ctl.",
    )


class RejoinParams(Params):
    source: str = Field(description="Role of the node to follow (the new primary).")


class ShellParams(Params):
    command: list[str] | str = Field(
        description="The command: a list of arguments, or a string "
        "split like a shell would (no shell runs it)."
    )
    as_user: str | None = None


class SqlParams(Params):
    statement: str


class WaitParams(Params):
    seconds: Duration


RunFn = Callable[[Targets, str, Any, float], ActionResult]
DescribeFn = Callable[[Targets, str, Any], list[str]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    params: type[BaseModel]
    run: RunFn
    describe: DescribeFn
    changes: bool
    description: str


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
    return [describe_argv(_argv_stop(pg, params, 60), pg.os_user)]


# -- pg.start --------------------------------------------------------------------------------


def start_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    _, _, pg = _pg(targets, role)
    return ActionResult(targets.run(role, _argv_start(pg, timeout), timeout=timeout + 5).output)


def start_describe(targets: Targets, role: str, params: Params) -> list[str]:
    _, _, pg = _pg(targets, role)
    return [describe_argv(_argv_start(pg, 60), pg.os_user)]


# -- pg.kill (crash injection) ---------------------------------------------------------------


def _postmaster_pid(targets: Targets, role: str) -> int:
    _, _, pg = _pg(targets, role)
    out = targets.run(role, ["head", "-n", "1", f"{pg.data_dir}/postmaster.pid"], timeout=10)
    return int(out.stdout.strip())


def kill_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _, _ = _pg(targets, role)
    pid = _postmaster_pid(targets, role)
    targets.run(role, ["kill", "-KILL", str(pid)], timeout=10)
    return ActionResult(f"sent SIGKILL to the postmaster of {name} (pid {pid})", {"pid": pid})


def kill_describe(targets: Targets, role: str, params: Params) -> list[str]:
    _, _, pg = _pg(targets, role)
    return [f"kill -KILL $(head -n 1 {pg.data_dir}/postmaster.pid)"]


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
    existing = targets.run(role, ["cat", auto_conf], timeout=10).stdout
    targets.host(role).run(
        ["sh", "-c", 'cat > "$1"', "sh", auto_conf],
        user=pg.os_user,
        timeout=10,
        input=standby_config(existing, node.port, conninfo),
    )
    targets.run(role, ["touch", f"{pg.data_dir}/standby.signal"], timeout=10)
    # No waiting in pg_ctl (it checks every 100 ms): the step's checks poll for the standby.
    targets.run(role, _argv_start(pg, 0, wait=False), timeout=30)
    log.append(f"started {name} as a standby of {targets.node(params.source)[0]}")
    return ActionResult("; ".join(log))


def rejoin_describe(targets: Targets, role: str, params: RejoinParams) -> list[str]:
    name, node, pg = _pg(targets, role)
    source_name, _ = targets.node(params.source)
    conninfo = _source_conninfo(targets, params.source, pg.application_name or name)
    return [
        f"if {name} runs: " + describe_argv(_argv_stop(pg, StopParams(), 30), pg.os_user),
        f"SQL on {source_name}: checkpoint",
        describe_argv(_rewind_argv(pg, conninfo), pg.os_user),
        f"write {pg.data_dir}/postgresql.auto.conf: port = {node.port}, "
        f"primary_conninfo = '{conninfo}'; touch {pg.data_dir}/standby.signal",
        describe_argv(_argv_start(pg, 0, wait=False), pg.os_user),
    ]


# -- generic actions -------------------------------------------------------------------------


def _shell_argv(params: ShellParams) -> list[str]:
    return shlex.split(params.command) if isinstance(params.command, str) else params.command


def shell_run(targets: Targets, role: str, params: ShellParams, timeout: float) -> ActionResult:
    result = targets.host(role).run(_shell_argv(params), user=params.as_user, timeout=timeout)
    return ActionResult(result.output)


def shell_describe(targets: Targets, role: str, params: ShellParams) -> list[str]:
    name, _ = targets.node(role)
    return [f"on {name}: {describe_argv(_shell_argv(params), params.as_user)}"]


def sql_run(targets: Targets, role: str, params: SqlParams, timeout: float) -> ActionResult:
    rows = targets.sql(role).query(params.statement, timeout=timeout)
    return ActionResult("\n".join(" | ".join(str(v) for v in row) for row in rows[:20]))


def sql_describe(targets: Targets, role: str, params: SqlParams) -> list[str]:
    name, _ = targets.node(role)
    return [f"SQL on {name}: {params.statement}"]


def wait_run(targets: Targets, role: str, params: WaitParams, timeout: float) -> ActionResult:
    time.sleep(min(params.seconds, timeout))
    return ActionResult(f"waited {params.seconds:g}s")


def wait_describe(targets: Targets, role: str, params: WaitParams) -> list[str]:
    return [f"wait {params.seconds:g}s"]


def observe_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    return ActionResult()


def observe_describe(targets: Targets, role: str, params: Params) -> list[str]:
    return ["(no action: the step's checks are the point)"]


ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in [
        ActionSpec(
            "pg.stop",
            StopParams,
            stop_run,
            stop_describe,
            True,
            "Stop the server with pg_ctl (mode fast by default).",
        ),
        ActionSpec(
            "pg.start", Params, start_run, start_describe, True, "Start the server with pg_ctl."
        ),
        ActionSpec(
            "pg.kill",
            Params,
            kill_run,
            kill_describe,
            True,
            "Crash the server: SIGKILL to its postmaster (drill crash injection).",
        ),
        ActionSpec(
            "pg.promote",
            Params,
            promote_run,
            promote_describe,
            True,
            "Promote a standby: pg_promote(wait => false); checks poll for the result.",
        ),
        ActionSpec(
            "pg.rejoin_as_standby",
            RejoinParams,
            rejoin_run,
            rejoin_describe,
            True,
            "Stop if running, pg_rewind from the source, configure and start as its standby.",
        ),
        ActionSpec(
            "shell",
            ShellParams,
            shell_run,
            shell_describe,
            True,
            "Run a command on the role's host.",
        ),
        ActionSpec(
            "sql",
            SqlParams,
            sql_run,
            sql_describe,
            True,
            "Run one SQL statement on the role's database.",
        ),
        ActionSpec("wait", WaitParams, wait_run, wait_describe, False, "Wait a while."),
        ActionSpec(
            "observe",
            Params,
            observe_run,
            observe_describe,
            False,
            "Do nothing; the step exists for its checks (a gate such as fencing).",
        ),
        *backup_actions(),
        *migration_actions(),
        *human_actions(),
    ]
}
