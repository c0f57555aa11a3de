"""The restore test: the newest RMAN backup restored as a scratch instance and compared.

    oracle.rman_restore_scratch  the newest backup restored onto the restore host as a scratch
                                 instance, recovered to a named SCN or time, opened read-only
    oracle.reconcile_scratch     the scratch instance's tables against the source's
    oracle.drop_scratch          the scratch instance shut down (ABORT) and its files removed

Everything runs on the node the step names (the restore host: by default the standby's, as for
PostgreSQL), through its executor, as the Oracle OS user, ``rman`` and ``sqlplus`` from
``$ORACLE_HOME/bin`` (:mod:`drills.engines.oracle.tools`). RMAN logs in with ``CONNECT TARGET /``
(OS authentication on the host): no password anywhere.

**The scratch instance.** Its own SID (``scratch_sid``, default ``DRCTLSCR``) and directory
(``scratch_dir``, default ``<parent of backup_dir>/drctl-scratch-<environment>-<node>``, with a
``.drctl-scratch`` marker file: only such a directory is ever removed). A pfile there gives it the
source's ``DB_NAME``, ``DB_UNIQUE_NAME=<scratch_sid>``, its control file and OMF destination in
the scratch directory, and a service of its own (``<scratch_sid>_SVC``) registered with the
restore host's listener (``listener_port``, default the node's port), which is where drctl
connects to compare it. The restore: ``STARTUP NOMOUNT``; ``RESTORE CONTROLFILE FROM`` the newest
control file autobackup in ``backup_dir`` (or ``controlfile``); ``MOUNT``; ``CATALOG START WITH``
``backup_dir``; ``SET NEWNAME FOR DATABASE TO NEW`` (data and temp files into the scratch
directory), ``RESTORE DATABASE``, ``SWITCH DATAFILE ALL``, ``SWITCH TEMPFILE ALL``; then ``SET
UNTIL SCN|TIME``, ``RECOVER DATABASE``; then ``ALTER DATABASE OPEN READ ONLY``. No RESETLOGS, on
purpose: the restored control file still names the source's online redo logs, which on the
restore host may be the standby's own; a read-only open never touches them. Without
``until_scn``/``until_time`` the copy is recovered to the backup's end: one past the SCN that
``RESTORE DATABASE PREVIEW`` says recovery must go beyond. The record keeps the backup's age, the
restore, recovery and open times, the point recovered to, and the comparison per table.

**State.** What ``oracle.rman_restore_scratch`` made is in the run's state file
(``drills.engines.postgres.runstate``, key ``oracle_scratch``), so the comparison and the removal
find it, and a later run removes what a crashed one left.
"""

from __future__ import annotations

import posixpath
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from drills.engine.catalogue import ActionResult, ActionSpec, Params
from drills.engines.oracle import parsers
from drills.engines.oracle.compare import OracleReconcileParams, compare, reconcile_failed
from drills.engines.oracle.rman import rman, rman_script
from drills.engines.oracle.tools import (
    ENGINE,
    OracleNode,
    ToolFailed,
    describe_sqlplus,
    describe_tool,
    instance_state,
    oracle_node,
    sqlplus,
    tool_failed,
)
from drills.engines.postgres.runstate import load_state, update_state
from drills.model.durations import Duration
from drills.model.errors import CommandFailed, InputError

if TYPE_CHECKING:
    from drills.engine.targets import Targets

STATE_KEY = "oracle_scratch"
MARKER = ".drctl-scratch"
TIME_FORMAT = "YYYY-MM-DD HH24:MI:SS"


# -- oracle.rman_restore_scratch -----------------------------------------------------------------


class ScratchParams(Params):
    backup_dir: str = Field(
        description="Directory on the restore host holding the backup pieces and a control file "
        "autobackup (readable by the Oracle OS user)."
    )
    controlfile: str | None = Field(
        default=None,
        description="The control file backup to restore; default: the newest "
        "autobackup (c-DBID-YYYYMMDD-NN) in backup_dir.",
    )
    source: str = Field(default="primary", description="Role of the database backed up.")
    db_name: str | None = Field(
        default=None, description="The source's DB_NAME; default: asked of the source."
    )
    until_scn: int | None = Field(default=None, ge=1, description="Recover up to this SCN.")
    until_time: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
        description="Recover up to this time, YYYY-MM-DD HH24:MI:SS in the database's time.",
    )
    scratch_sid: str = Field(default="DRCTLSCR", pattern=r"^[A-Za-z][A-Za-z0-9]{0,7}$")
    scratch_dir: str | None = Field(default=None, description="Default: see the module.")
    listener_port: int | None = Field(default=None, ge=1, le=65535)
    memory_mib: int = Field(default=1024, ge=256, description="SGA_TARGET of the scratch copy.")
    max_backup_age: Duration | None = Field(
        default=None, description="An older newest backup fails the drill (its age is recorded)."
    )

    @model_validator(mode="after")
    def _one_point(self) -> ScratchParams:
        if self.until_scn is not None and self.until_time is not None:
            raise ValueError("give until_scn or until_time, not both")
        return self


def scratch_dir(targets: Targets, on: OracleNode, params: ScratchParams) -> str:
    if params.scratch_dir:
        return params.scratch_dir.rstrip("/")
    parent = posixpath.dirname(params.backup_dir.rstrip("/")) or "/"
    return posixpath.join(parent, f"drctl-scratch-{targets.env.name}-{on.name}")


def pfile_text(db_name: str, sid: str, directory: str, host: str, port: int, memory: int) -> str:
    lines = {
        "db_name": db_name,
        "db_unique_name": sid,
        "instance_name": sid,
        "service_names": f"{sid}_SVC",
        "control_files": f"'{directory}/control01.ctl'",
        "db_create_file_dest": f"'{directory}/data'",
        "db_recovery_file_dest": f"'{directory}/fra'",
        "db_recovery_file_dest_size": "20G",
        "audit_file_dest": f"'{directory}/adump'",
        "diagnostic_dest": f"'{directory}'",
        "sga_target": f"{memory}M",
        "pga_aggregate_target": "256M",
        "local_listener": f"'(ADDRESS=(PROTOCOL=TCP)(HOST={host})(PORT={port}))'",
        "job_queue_processes": "0",
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


_NEWEST = (
    'set -e; cd -- "$1"; for f in $(ls -1t); do case "$f" in c-*-*-*) '
    'printf "%s\\t%s\\n" "$f" "$(stat -c %Y -- "$f")"; exit 0;; esac; done; exit 5'
)
_MAKE = (
    'set -e; umask 077; mkdir -p -- "$1/data" "$1/fra" "$1/adump"; : > "$1/.drctl-scratch"; '
    'cat > "$1/init$2.ora"'
)
_REMOVE = 'test -f "$1/.drctl-scratch" || exit 7; rm -rf -- "$1"'


def newest_autobackup(on: OracleNode, params: ScratchParams) -> tuple[str, float]:
    """The control file backup restored, and its modification time (the backup's age)."""
    if params.controlfile:
        path = params.controlfile
        stat = on.host.run(
            ["stat", "-c", "%Y", "--", path], user=on.os_user, timeout=15, check=False
        )
        if stat.returncode != 0:
            raise InputError(
                f"node {on.name}: control file backup {path} is not there on {on.host.address}",
                host=on.name,
            )
        return path, float(stat.stdout.strip() or 0)
    found = on.host.run(
        ["sh", "-c", _NEWEST, "sh", params.backup_dir], user=on.os_user, timeout=30, check=False
    )
    if found.returncode != 0 or "\t" not in found.stdout:
        raise InputError(
            f"node {on.name}: no control file autobackup (c-DBID-YYYYMMDD-NN) in "
            f"{params.backup_dir} on {on.host.address} ({found.output[-200:] or 'empty'}); "
            "back up with CONFIGURE CONTROLFILE AUTOBACKUP ON into that directory, or give "
            "`controlfile`",
            host=on.name,
        )
    name, mtime = found.stdout.strip().split("\t", 1)
    return posixpath.join(params.backup_dir, name), float(mtime)


def source_db_name(targets: Targets, params: ScratchParams) -> str:
    if params.db_name:
        return params.db_name
    try:
        value = targets.sql(params.source).scalar("SELECT name FROM v$database", timeout=10)
    except CommandFailed as exc:
        raise InputError(f"cannot ask {params.source} its DB_NAME ({exc}); give `db_name`") from exc
    if not value:
        raise InputError(f"{params.source} gave no DB_NAME; give `db_name`")
    return str(value).strip()


def _until(params: ScratchParams, beyond: int | None) -> tuple[str, dict[str, Any]]:
    if params.until_scn is not None:
        return f"SET UNTIL SCN {params.until_scn};", {"until_scn": params.until_scn}
    if params.until_time is not None:
        return (
            f"SET UNTIL TIME \"TO_DATE('{params.until_time}','{TIME_FORMAT}')\";",
            {"until_time": params.until_time},
        )
    if beyond is None:
        raise InputError(
            "RESTORE DATABASE PREVIEW named no SCN to recover beyond; give until_scn or until_time"
        )
    return f"SET UNTIL SCN {beyond + 1};", {"until_scn": beyond + 1, "until": "backup end"}


def restore_scratch_run(
    targets: Targets, role: str, params: ScratchParams, timeout: float
) -> ActionResult:
    on = oracle_node(targets, role)
    deadline = time.monotonic() + timeout
    left: list[str] = drop_leftover(targets, on)
    directory = scratch_dir(targets, on, params)
    sid = params.scratch_sid.upper()
    port = params.listener_port or on.node.port
    controlfile, mtime = newest_autobackup(on, params)
    age = max(0.0, time.time() - mtime)
    data: dict[str, Any] = {
        "host": on.name,
        "address": on.host.address,
        "scratch_dir": directory,
        "scratch_sid": sid,
        "service": f"{sid}_SVC",
        "listener": f"{on.node.host}:{port}",
        "controlfile": controlfile,
        "backup_at": datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds"),
        "backup_age_seconds": round(age, 1),
        "left_over_removed": left,
    }
    if params.max_backup_age is not None and age > params.max_backup_age:
        raise ToolFailed(
            f"node {on.name}: the newest backup ({controlfile}) is {age / 3600:.1f} h old, "
            f"older than max_backup_age {params.max_backup_age / 3600:.1f} h; nothing restored",
            host=on.name,
            data=data,
        )
    db_name = source_db_name(targets, params)
    state = {
        "dir": directory,
        "sid": sid,
        "service": f"{sid}_SVC",
        "port": port,
        "source": params.source,
    }
    on.host.run(
        ["sh", "-c", _MAKE, "sh", directory, sid],
        user=on.os_user,
        timeout=30,
        input=pfile_text(db_name, sid, directory, on.node.host, port, params.memory_mib),
    )
    update_state(targets.env.name, on.name, **{STATE_KEY: state})
    started = time.monotonic()
    nomount = sqlplus(
        on, f"STARTUP NOMOUNT PFILE='{directory}/init{sid}.ora'", timeout=300, sid=sid
    )
    if "ORACLE instance started" not in nomount.output:
        raise tool_failed(
            nomount, "STARTUP NOMOUNT", parsers.parse_sqlplus(nomount.output).errors, data
        )
    restore_run, restore = rman(
        on,
        rman_script(
            f"RESTORE CONTROLFILE FROM '{controlfile}';",
            "ALTER DATABASE MOUNT;",
            f"CATALOG START WITH '{params.backup_dir.rstrip('/')}/' NOPROMPT;",
            "RESTORE DATABASE PREVIEW SUMMARY;",
            "RUN {",
            "  SET NEWNAME FOR DATABASE TO NEW;",
            "  RESTORE DATABASE;",
            "  SWITCH DATAFILE ALL;",
            "  SWITCH TEMPFILE ALL;",
            "}",
        ),
        timeout=max(60.0, deadline - time.monotonic()),
        sid=sid,
    )
    restored = time.monotonic()
    beyond = parsers.parse_restore_preview(restore_run.output).recovery_beyond_scn
    until, point = _until(params, beyond)
    recover_run, recover = rman(
        on,
        rman_script("RUN {", f"  {until}", "  RECOVER DATABASE;", "}"),
        timeout=max(60.0, deadline - time.monotonic()),
        sid=sid,
    )
    recovered = time.monotonic()
    opened = sqlplus(on, "ALTER DATABASE OPEN READ ONLY;", timeout=300, sid=sid)
    if "Database altered" not in opened.output:
        raise tool_failed(
            opened,
            "ALTER DATABASE OPEN READ ONLY",
            parsers.parse_sqlplus(opened.output).errors,
            data,
        )
    done = time.monotonic()
    state.update(point)
    update_state(targets.env.name, on.name, **{STATE_KEY: state})
    data.update(
        point,
        db_name=db_name,
        restore_seconds=round(restored - started, 3),
        recovery_seconds=round(recovered - restored, 3),
        open_seconds=round(done - recovered, 3),
        pieces=list(restore.pieces),
        recovered_with=list(recover.finished),
    )
    return ActionResult(
        f"restored {controlfile} (backup age {age / 3600:.1f} h) onto {sid} in {directory}, "
        f"recovered to {point}, opened read-only; restore {data['restore_seconds']}s, "
        f"recovery {data['recovery_seconds']}s\n{recover_run.excerpt(1200)}",
        data,
    )


def restore_scratch_describe(targets: Targets, role: str, params: ScratchParams) -> list[str]:
    on = oracle_node(targets, role)
    directory = scratch_dir(targets, on, params)
    sid = params.scratch_sid.upper()
    until = (
        f"SET UNTIL SCN {params.until_scn};"
        if params.until_scn
        else f"SET UNTIL TIME \"TO_DATE('{params.until_time}','{TIME_FORMAT}')\";"
        if params.until_time
        else "SET UNTIL SCN <one past PREVIEW's 'beyond' SCN>;"
    )
    return [
        f"on {on.name}: "
        + (
            f"the control file backup {params.controlfile}"
            if params.controlfile
            else f"the newest control file autobackup (c-DBID-YYYYMMDD-NN) in {params.backup_dir}"
        ),
        f"on {on.name}: mkdir {directory}/{{data,fra,adump}}, write {directory}/init{sid}.ora "
        f"(db_name of {params.source}, service {sid}_SVC)",
        *describe_sqlplus(
            targets, role, f"STARTUP NOMOUNT PFILE='{directory}/init{sid}.ora'", sid=sid
        ),
        *describe_tool(
            targets,
            role,
            "rman",
            [],
            rman_script(
                "RESTORE CONTROLFILE FROM '<autobackup>';",
                "ALTER DATABASE MOUNT;",
                f"CATALOG START WITH '{params.backup_dir.rstrip('/')}/' NOPROMPT;",
                "RESTORE DATABASE PREVIEW SUMMARY;",
                "RUN { SET NEWNAME FOR DATABASE TO NEW; RESTORE DATABASE; SWITCH DATAFILE ALL; "
                "SWITCH TEMPFILE ALL; }",
            ),
            sid=sid,
        ),
        *describe_tool(
            targets, role, "rman", [], rman_script(f"RUN {{ {until} RECOVER DATABASE; }}"), sid=sid
        ),
        *describe_sqlplus(targets, role, "ALTER DATABASE OPEN READ ONLY;", sid=sid),
    ]


# -- oracle.reconcile_scratch --------------------------------------------------------------------


def reconcile_scratch_run(
    targets: Targets, role: str, params: OracleReconcileParams, timeout: float
) -> ActionResult:
    on = oracle_node(targets, role)
    state = load_state(targets.env.name, on.name).get(STATE_KEY)
    if not state:
        raise InputError(
            f"node {on.name}: no scratch copy to compare (oracle.rman_restore_scratch first)",
            host=on.name,
        )
    source = oracle_node(targets, state.get("source", "primary"))
    scratch_connect = f"{on.node.host}:{state['port']}/{state['service']}"
    data = compare(
        targets,
        (source.name, source.node, None),
        (on.name, on.node, scratch_connect),
        params,
    )
    data["scratch"] = scratch_connect
    if data["tables_differing"]:
        raise reconcile_failed(data, source.name, f"the scratch copy on {on.name}", on.name)
    return ActionResult(
        f"{data['tables_compared']} table(s), {data['rows_compared']} row(s) of {source.name} "
        f"match the scratch copy ({scratch_connect}): {data['summary']}",
        {"reconcile": data},
    )


def reconcile_scratch_describe(
    targets: Targets, role: str, params: OracleReconcileParams
) -> list[str]:
    on = oracle_node(targets, role)
    what = ", ".join(params.tables or []) or "schemas " + ", ".join(params.schemas)
    return [
        f"SQL (thin mode, read-only) on the source and on the scratch copy at "
        f"{on.node.host}:<listener port>/<scratch_sid>_SVC: count and hash rows per key range "
        f"({what}), bisect the ranges that differ"
    ]


# -- oracle.drop_scratch -------------------------------------------------------------------------


def drop_leftover(targets: Targets, on: OracleNode) -> list[str]:
    """Shut down and remove the scratch copy this node's state names, if any."""
    state = load_state(targets.env.name, on.name).get(STATE_KEY)
    if not state:
        return []
    done: list[str] = []
    sid, directory = state["sid"], state["dir"]
    if instance_state(on, sid=sid) != "down":
        sqlplus(on, "SHUTDOWN ABORT", timeout=120, sid=sid)
        done.append(f"shut down {sid} (ABORT)")
    removed = on.host.run(
        ["sh", "-c", _REMOVE, "sh", directory], user=on.os_user, timeout=600, check=False
    )
    if removed.returncode == 7:
        done.append(f"{directory} has no {MARKER} marker: left in place")
    elif removed.returncode != 0:
        raise CommandFailed(
            f"node {on.name}: cannot remove {directory}: {removed.output[-300:]}",
            returncode=removed.returncode,
            host=on.name,
        )
    else:
        done.append(f"removed {directory}")
    update_state(targets.env.name, on.name, **{STATE_KEY: None})
    return done


def drop_scratch_run(targets: Targets, role: str, params: Params, timeout: float) -> ActionResult:
    on = oracle_node(targets, role)
    done = drop_leftover(targets, on)
    return ActionResult("; ".join(done) or "no scratch copy to remove", {"removed": done})


def drop_scratch_describe(targets: Targets, role: str, params: Params) -> list[str]:
    on = oracle_node(targets, role)
    return [
        f"on {on.name}: if the run made a scratch copy: SHUTDOWN ABORT of its SID, then rm -rf "
        f"its directory (only one holding {MARKER})",
    ]


def restore_actions() -> list[ActionSpec]:
    from drills.engines.oracle.compare import compare_actions

    spec = ActionSpec
    return [
        spec(
            "oracle.rman_restore_scratch",
            ScratchParams,
            restore_scratch_run,
            restore_scratch_describe,
            True,
            "Restore the newest backup as a scratch instance, recover to an SCN/time, open "
            "read-only.",
            ENGINE,
        ),
        spec(
            "oracle.reconcile_scratch",
            OracleReconcileParams,
            reconcile_scratch_run,
            reconcile_scratch_describe,
            False,
            "Reconcile the scratch copy's tables with the source's, row by row.",
            ENGINE,
        ),
        spec(
            "oracle.drop_scratch",
            Params,
            drop_scratch_run,
            drop_scratch_describe,
            True,
            "Shut down and remove the scratch instance (its marked directory only).",
            ENGINE,
        ),
        *compare_actions(),
    ]
