"""Restores into a scratch server on the node's host, and its removal.

    pg.restore_scratch       copy the run's physical backup into a scratch server on a free
                             port of the node's own address and recover it exactly to the
                             backup's end, then promote
    pg.restore_dump_scratch  initdb a scratch server there and pg_restore the run's dump into it
    pg.drop_scratch          stop and remove the scratch server (also the rollback step)

"At the backup's point": a physical backup is consistent at its end LSN (the manifest's
WAL-Ranges End-LSN); the scratch server is recovered to exactly that point (``recovery_target =
'immediate'``, or, when the backup's own WAL ends there, to the end of that WAL: see
``recovery_conf``) and the LSN it stopped at is read back from its timeline history and
recorded.

The copy, the configuration, the server, its processes and its removal are all on the host of
the step's target node, through its executor, as its database OS user
(``drills.engines.postgres.scratch``); drctl connects to the scratch server at the node's address.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import Field

from drills.engine.catalogue import Params
from drills.engines.postgres.runstate import load_state, remove_state, state_entry, update_state
from drills.engines.postgres.scratch import (
    MIB,
    SCRATCH_PREFIX,
    ActionFailed,
    Instance,
    ScratchServer,
    action_result,
    drop_leftover,
    init_instance,
    last_line,
    lsn_int,
    new_instance,
    node_of,
    one_line,
    password_env,
    scratch_directory,
    scratch_dsn,
    scratch_hba,
    scratch_of,
    space_check,
    trusted_phrase,
    where,
)
from drills.executors.postgres import SqlExecutor, redact
from drills.model.environment import Node, read_password
from drills.model.errors import CommandFailed, CommandTimeout, ConnectionFailed, ExecutorError

if TYPE_CHECKING:
    from drills.engine.catalogue import ActionResult
    from drills.engine.targets import Targets

DEFAULT_HEADROOM_MIB = 64
CLUSTER_OVERHEAD = 64 * MIB  # what a fresh initdb'd cluster with its first WAL segment takes


class RestoreParams(Params):
    scratch_dir: str | None = Field(
        default=None,
        description="Directory on the node's host under which the scratch server is made (the "
        "node's OS user must be able to write there); default beside the data directory: "
        f"<parent of postgres.data_dir>/{SCRATCH_PREFIX}<environment>-<node>.",
    )
    headroom_mib: int = Field(
        default=DEFAULT_HEADROOM_MIB,
        ge=0,
        description="Free space required beyond the data itself (WAL, logs), in MiB.",
    )


def restore_argv(bin_dir: str, dsn: str, path: str, *, keep_owners: bool) -> list[str]:
    owners = [] if keep_owners else ["--no-owner", "--no-privileges"]
    return [f"{bin_dir}/pg_restore", "--exit-on-error", *owners, "-d", dsn, "--no-password", path]


def _describe_directory(targets: Targets, role: str, scratch_dir: str | None) -> str:
    name, node, _, env = node_of(targets, role)
    return scratch_directory(env, name, node, scratch_dir)


# -- pg.restore_scratch --------------------------------------------------------------------------

_OVERRIDDEN = re.compile(
    r"\s*(port|listen_addresses|unix_socket_directories|primary_conninfo|primary_slot_name|"
    r"restore_command|recovery_target\w*|archive_mode|archive_command|synchronous_standby_names|"
    r"logging_collector|log_directory|log_filename|hba_file|external_pid_file)\s*="
)


def recovery_conf(existing: str, instance: Instance, *, stop_at_consistency: bool) -> str:
    """postgresql.auto.conf of a scratch copy: its own port on the node's address, its own
    pg_hba.conf, no replication, no archiving, and recovery that ends where the backup became
    consistent, then promotes.

    Recovery stops there with ``recovery_target = 'immediate'``, which stops *before* the first
    record after that point; when the backup's own WAL ends exactly there (a backup of an idle
    standby), there is no such record and PostgreSQL would fail ("recovery ended before
    configured recovery target was reached"): then no target is set, and recovery ends at the
    end of that WAL, which is the same point."""
    kept = [line for line in existing.splitlines() if not _OVERRIDDEN.match(line)]
    target = (
        ["recovery_target = 'immediate'", "recovery_target_action = 'promote'"]
        if stop_at_consistency
        else ["# recovery ends at the end of the backup's own WAL: its end point"]
    )
    return "\n".join(
        [
            *kept,
            "# ---- drctl scratch restore ----",
            f"port = {instance.port}",
            f"listen_addresses = '{instance.address}'",
            "unix_socket_directories = ''",
            f"hba_file = '{instance.data_dir}/pg_hba.conf'",
            "primary_conninfo = ''",
            "primary_slot_name = ''",
            "archive_mode = off",
            "synchronous_standby_names = ''",
            "logging_collector = off",
            # Archive recovery needs a restore_command; WAL comes from the backup's own pg_wal.
            "restore_command = 'false'",
            *target,
            "",
        ]
    )


def wal_goes_on(server: ScratchServer, backup: dict[str, Any]) -> bool:
    """Whether the copy's WAL holds a record after the backup's end (pg_waldump, on the host)."""
    argv = [f"{server.instance.bin_dir}/pg_waldump", "-p", f"{server.instance.data_dir}/pg_wal"]
    argv += ["-t", str(backup.get("timeline") or 1), "-s", str(backup["end_lsn"]), "-n", "1"]
    try:
        result = server.run(argv, timeout=60, check=False)
    except ExecutorError:  # no pg_waldump there: 'immediate', which needs a record after the end
        return True
    return result.returncode == 0 and bool(result.stdout.strip())


def _configure_copy(server: ScratchServer, *, stop_at_consistency: bool) -> None:
    """Make the copied data directory a scratch server's: settings, pg_hba, recovery.signal."""
    i = server.instance
    server.run(["chmod", "0700", i.data_dir], timeout=10)
    auto_conf = f"{i.data_dir}/postgresql.auto.conf"
    existing = server.read_file(auto_conf) or ""
    server.write_file(
        auto_conf, recovery_conf(existing, i, stop_at_consistency=stop_at_consistency)
    )
    if server.read_file(f"{i.data_dir}/postgresql.conf") is None:  # kept elsewhere (Debian)
        server.write_file(f"{i.data_dir}/postgresql.conf", "# the backup had none\n")
    # Ours first, then the source's own rules: the copy has the source's roles and passwords,
    # so an orchestrator elsewhere is let in as it is by the source.
    hba = f"{i.data_dir}/pg_hba.conf"
    server.write_file(hba, scratch_hba(i.address, password=False) + (server.read_file(hba) or ""))
    server.run(["rm", "-f", "--", f"{i.data_dir}/standby.signal"], timeout=10)
    server.write_file(f"{i.data_dir}/recovery.signal", "")


def _wait_promoted(node: Node, server: ScratchServer, deadline: float) -> None:
    i = server.instance
    sql = SqlExecutor(scratch_dsn(node, i), host=i.node)
    last = "no answer"
    while True:
        try:
            if sql.scalar("select pg_is_in_recovery()", timeout=5) is False:
                return
            last = "still in recovery"
        except (ConnectionFailed, CommandFailed, CommandTimeout) as exc:
            last = exc.message
        if time.monotonic() > deadline:
            tail = server.log_tail()
            raise ActionFailed(
                f"the scratch server on {i.endpoint} did not finish recovering ({last})"
                + (f"; its log ends: {one_line(tail)}" if tail else ""),
                host=i.node,
            )
        time.sleep(0.05)


def _restored_to(server: ScratchServer) -> str | None:
    """The LSN recovery stopped at, from the newest timeline history file the promotion wrote."""
    listing = server.run(
        ["find", f"{server.instance.data_dir}/pg_wal", "-maxdepth", "1", "-name", "*.history"],
        timeout=10,
        check=False,
    ).stdout.split()
    if not listing:
        return None
    text = server.read_file(sorted(listing)[-1]) or ""
    lines = [line.split("\t") for line in text.splitlines() if line.strip()]
    return lines[-1][1].strip() if lines and len(lines[-1]) > 1 else None


def restore_scratch_run(
    targets: Targets, role: str, params: RestoreParams, timeout: float
) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    backup = state_entry(targets, role, "backup", "pg.basebackup")
    deadline = time.monotonic() + timeout
    notes = drop_leftover(targets, role)
    server = new_instance(targets, role, params.scratch_dir, kind="backup", database=pg.database)
    i = server.instance
    facts = space_check(
        targets,
        role,
        server,
        int(backup["size_bytes"]),
        params.headroom_mib * MIB,
        f"backup {backup['path']}",
    )
    update_state(env, name, scratch=i.as_state())  # first: the rollback must find it
    started = time.monotonic()
    try:
        server.make_directory()
        server.run(["cp", "-a", "--", str(backup["path"]), i.data_dir], timeout=timeout)
        stop_at_consistency = wal_goes_on(server, backup)
        _configure_copy(server, stop_at_consistency=stop_at_consistency)
        copied = time.monotonic()
        server.start(max(1.0, deadline - time.monotonic()))
        _wait_promoted(node, server, deadline)
        ready = time.monotonic()
        restored_to = _restored_to(server)
        end_lsn = str(backup["end_lsn"])
        data: dict[str, Any] = facts | {
            "backup_path": backup["path"],
            "scratch_address": i.address,
            "scratch_port": i.port,
            "scratch_dsn": redact(scratch_dsn(node, i, password=False)),
            "data_dir": i.data_dir,
            "copy_seconds": round(copied - started, 3),
            "recovery_seconds": round(ready - copied, 3),
            "restore_seconds": round(ready - started, 3),
            "backup_end_lsn": end_lsn,
            "recovery_target": "immediate" if stop_at_consistency else "end of the backup's WAL",
            "restored_to_lsn": restored_to,
            "at_backup_end": restored_to is not None and lsn_int(restored_to) == lsn_int(end_lsn),
        }
        if not data["at_backup_end"]:
            raise ActionFailed(
                f"the scratch copy of {backup['path']} on {name} recovered to {restored_to}, not "
                f"to the backup's end {end_lsn}",
                host=name,
                data=data,
            )
    except BaseException:
        server.stop_and_remove()
        update_state(env, name, scratch=None)
        raise
    notes.append(
        f"restored {backup['path']} into a scratch server on {i.endpoint} ({name}) in "
        f"{data['restore_seconds']:g}s (copy {data['copy_seconds']:g}s, recovery "
        f"{data['recovery_seconds']:g}s), recovered to the backup's end {end_lsn}"
    )
    return action_result("; ".join(notes), data)


def restore_scratch_describe(targets: Targets, role: str, params: RestoreParams) -> list[str]:
    name, node, pg, _ = node_of(targets, role)
    at = _describe_directory(targets, role, params.scratch_dir)
    return [
        f"on {name}: check free space for {at} (backup size + {params.headroom_mib} MiB)",
        targets.describe(role, ["cp", "-a", "--", "<the backup>", f"{at}/data"]),
        f"on {name}: {at}/data/postgresql.auto.conf: port = <free port>, listen_addresses = "
        f"'{node.host}', recovery_target = 'immediate' (or none when the backup's WAL ends at "
        "its end point), recovery_target_action = 'promote'; "
        f"pg_hba.conf trusts {trusted_phrase(node.host)}; touch recovery.signal",
        targets.describe(
            role,
            [f"{pg.bin_dir}/pg_ctl", "start", "-D", f"{at}/data", "-l", f"{at}/server.log"],
        ),
        f"wait until it is promoted ({node.host}:<free port>); read the LSN it recovered to "
        "from its timeline history",
    ]


# -- pg.restore_dump_scratch ---------------------------------------------------------------------


def restore_dump_scratch_run(
    targets: Targets, role: str, params: RestoreParams, timeout: float
) -> ActionResult:
    name, node, pg, env = node_of(targets, role)
    dump = state_entry(targets, role, "dump", "pg.dump")
    database = str(dump["database"])
    deadline = time.monotonic() + timeout
    notes = drop_leftover(targets, role)
    server = new_instance(targets, role, params.scratch_dir, kind="dump", database=database)
    i = server.instance
    facts = space_check(
        targets,
        role,
        server,
        int(dump.get("database_size_bytes") or dump["size_bytes"]) + CLUSTER_OVERHEAD,
        params.headroom_mib * MIB,
        f"dump {dump['path']} (database {database})",
    )
    update_state(env, name, scratch=i.as_state())
    started = time.monotonic()
    try:
        init_instance(server, user=pg.user, password=read_password(pg), timeout=timeout)
        initialised = time.monotonic()
        server.start(max(1.0, deadline - time.monotonic()))
        if database != "postgres":
            maintenance = scratch_dsn(node, replace(i, database="postgres"))
            SqlExecutor(maintenance, host=name).query(
                f'create database "{database.replace(chr(34), chr(34) * 2)}"', timeout=60
            )
        up = time.monotonic()
        argv = restore_argv(
            i.bin_dir,
            redact(scratch_dsn(node, i, password=False)),
            str(dump["path"]),
            keep_owners=False,
        )
        result = server.run(
            argv,
            timeout=max(1.0, deadline - time.monotonic()),
            env=password_env(node),
            check=False,
        )
        if result.returncode != 0:
            raise ActionFailed(
                f"pg_restore of {dump['path']} into the scratch server on {i.endpoint} ({name}) "
                f"failed: {last_line(result.output)}",
                host=name,
                data=facts,
            )
        restored = time.monotonic()
    except BaseException:
        server.stop_and_remove()
        update_state(env, name, scratch=None)
        raise
    data = facts | {
        "dump_path": dump["path"],
        "database": database,
        "scratch_address": i.address,
        "scratch_port": i.port,
        "scratch_dsn": redact(scratch_dsn(node, i, password=False)),
        "data_dir": i.data_dir,
        "initdb_seconds": round(initialised - started, 3),
        "start_seconds": round(up - initialised, 3),
        "pg_restore_seconds": round(restored - up, 3),
        "restore_seconds": round(restored - started, 3),
    }
    notes.append(
        f"restored {dump['path']} into database {database} of a scratch server on "
        f"{i.endpoint} ({name}) in {data['restore_seconds']:g}s "
        f"(pg_restore {data['pg_restore_seconds']:g}s)"
    )
    return action_result("; ".join(notes), data)


def restore_dump_scratch_describe(targets: Targets, role: str, params: RestoreParams) -> list[str]:
    name, node, pg, _ = node_of(targets, role)
    at = _describe_directory(targets, role, params.scratch_dir)
    initdb = [f"{pg.bin_dir}/initdb", "-D", f"{at}/data", "-U", pg.user, "-E", "UTF8"]
    return [
        f"on {name}: check free space for {at} (database size + 64 MiB + "
        f"{params.headroom_mib} MiB)",
        targets.describe(role, initdb)
        + f"; port = <free port> on {node.host}; pg_hba.conf trusts {trusted_phrase(node.host)}",
        targets.describe(role, [f"{pg.bin_dir}/pg_ctl", "start", "-D", f"{at}/data"]),
        targets.describe(
            role,
            restore_argv(
                pg.bin_dir, f"<scratch server on {node.host}>", "<the dump>", keep_owners=False
            ),
        ),
    ]


# -- pg.drop_scratch -----------------------------------------------------------------------------


def drop_scratch_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    name, _, _, env = node_of(targets, role)
    state = load_state(env, name)
    done: list[str] = []
    directory: str | None = None
    left: list[int] = []
    still_there = False
    if isinstance(state.get("scratch"), dict):
        server = scratch_of(targets, role, state["scratch"])
        directory = server.instance.directory
        done = server.stop_and_remove()
        left = server.live_pids()
        still_there = server.host.exists(directory, user=server.instance.os_user)
    update_state(env, name, scratch=None, backup=None, dump=None)
    if not load_state(env, name):
        remove_state(env, name)
    data: dict[str, Any] = where(targets, role) | {"removed": directory, "actions": done}
    if left or still_there:
        raise ActionFailed(
            f"the scratch server in {directory} on {name} is not gone (processes {left})",
            host=name,
            data=data | {"directory": directory, "processes": left},
        )
    return action_result("; ".join(done) or "no scratch server to remove", data)


def drop_scratch_describe(targets: Targets, role: str, params: Params) -> list[str]:
    name, _, _, env = node_of(targets, role)
    return [
        f"on {name}: stop the scratch server (pg_ctl stop -m fast, then immediate) and remove "
        f"its directory; forget the run's state $DRCTL_HOME/scratch/{env}/{name}/state.json "
        "(on the orchestrator)"
    ]
