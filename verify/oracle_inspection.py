"""Inspection (巡检) checks for Oracle: space, the recovery area, archive destinations, the alert
log, invalid objects, resource limits, sessions and locks, redo switches, expiring accounts,
ASM disk groups, failed scheduler jobs.

As for PostgreSQL (``verify.inspection``), each check observes one item and judges it against
thresholds that are its parameters (overridden in a playbook's ``with:``); the observation keeps
plain values with the thresholds under ``limits``. Nothing here changes the database. A view this
release lacks observes "view not available in this release" (``verify.oracle``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pydantic import Field

from drills.model.durations import Duration, format_seconds
from verify.oracle import (
    LISTED,
    OracleParams,
    Unreadable,
    not_available,
    number,
    rows_of,
    text,
)
from verify.result import Observation, Probe

MIB = 1024 * 1024
ORACLE_OWNERS = ("SYS", "SYSTEM", "PUBLIC")  # not judged unless named in `schemas`
_ORA = re.compile(r"\bORA-\d{5}\b")


def _size(n: float) -> str:
    return f"{n / 1024 / MIB:.1f} GiB" if n >= 1024 * MIB else f"{n / MIB:.1f} MiB"


# -- tablespaces -------------------------------------------------------------------------------


class TablespaceParams(OracleParams):
    max_used_percent: float = Field(
        default=85.0, ge=0, le=100, description="Largest use of a permanent or undo tablespace."
    )
    max_temp_used_percent: float = Field(
        default=90.0, ge=0, le=100, description="Largest use of a temporary tablespace."
    )
    exclude: list[str] = Field(default_factory=list, description="Tablespaces not judged.")


TABLESPACE_SQL = (
    "SELECT m.tablespace_name, t.contents, m.used_percent,"
    " m.used_space * t.block_size AS used_bytes, m.tablespace_size * t.block_size AS max_bytes"
    " FROM dba_tablespace_usage_metrics m"
    " JOIN dba_tablespaces t ON t.tablespace_name = m.tablespace_name"
    " ORDER BY m.used_percent DESC"
)


def tablespace_usage(probe: Probe, role: str, params: TablespaceParams) -> Observation:
    """Tablespace and temp use against their maximum size (DBA_TABLESPACE_USAGE_METRICS)."""
    expected = (
        f"<= {params.max_used_percent:g}% used (temporary <= {params.max_temp_used_percent:g}%)"
    )
    rows = rows_of(probe, role, TABLESPACE_SQL)
    if isinstance(rows, Unreadable):
        return not_available("dba_tablespace_usage_metrics", expected, params, rows)
    excluded = {e.upper() for e in params.exclude}
    spaces: list[dict[str, Any]] = [
        {
            "tablespace": text(name),
            "contents": text(contents),
            "used_percent": round(number(percent), 1),
            "used_bytes": int(number(used)),
            "max_bytes": int(number(size)),
        }
        for name, contents, percent, used, size in rows
        if text(name).upper() not in excluded
    ]

    def limit(space: dict[str, Any]) -> float:
        temporary = space["contents"] == "TEMPORARY"
        return params.max_temp_used_percent if temporary else params.max_used_percent

    over = [s for s in spaces if s["used_percent"] > limit(s)]
    observed = {
        "tablespaces": spaces,
        "over": [s["tablespace"] for s in over],
        "limits": {
            "max_used_percent": params.max_used_percent,
            "max_temp_used_percent": params.max_temp_used_percent,
        },
    }
    if not over:
        fullest = spaces[0] if spaces else None
        detail = (
            f"fullest {fullest['tablespace']} {fullest['used_percent']:g}%" if fullest else "none"
        )
        return Observation(observed, expected, True, detail)
    named = ", ".join(f"{s['tablespace']} {s['used_percent']:g}%" for s in over[:LISTED])
    return Observation(observed, expected, False, f"over the limit: {named}")


# -- the fast recovery area --------------------------------------------------------------------


class RecoveryAreaParams(OracleParams):
    max_used_percent: float = Field(
        default=80.0,
        ge=0,
        le=100,
        description="Largest share of DB_RECOVERY_FILE_DEST_SIZE in use, less what is reclaimable.",
    )
    required: bool = Field(default=True, description="Whether a recovery area must be set.")


def recovery_area(probe: Probe, role: str, params: RecoveryAreaParams) -> Observation:
    """The fast recovery area has room (V$RECOVERY_FILE_DEST: limit, used, reclaimable)."""
    expected = f"<= {params.max_used_percent:g}% used (less reclaimable)"
    rows = rows_of(
        probe,
        role,
        "SELECT name, space_limit, space_used, space_reclaimable, number_of_files"
        " FROM v$recovery_file_dest",
    )
    if isinstance(rows, Unreadable):
        return not_available("v$recovery_file_dest", expected, params, rows)
    if not rows or not text(rows[0][0]) or number(rows[0][1]) <= 0:
        return Observation(
            "no recovery area", expected, not params.required, "DB_RECOVERY_FILE_DEST is not set"
        )
    name, limit, used, reclaimable, files = rows[0]
    limit_b, used_b, free_b = number(limit), number(used), number(reclaimable)
    percent = round(100.0 * (used_b - free_b) / limit_b, 1)
    observed = {
        "name": text(name),
        "space_limit": int(limit_b),
        "space_used": int(used_b),
        "space_reclaimable": int(free_b),
        "files": int(number(files)),
        "used_percent": percent,
        "limits": {"max_used_percent": params.max_used_percent},
    }
    detail = f"{text(name)}: {_size(used_b)} of {_size(limit_b)} ({percent:g}% not reclaimable)"
    return Observation(observed, expected, percent <= params.max_used_percent, detail)


# -- archive destinations ----------------------------------------------------------------------


def archive_destinations(probe: Probe, role: str, params: OracleParams) -> Observation:
    """Every archive destination in use is VALID, without error or gap (V$ARCHIVE_DEST_STATUS)."""
    expected = "every active destination VALID, no error, no gap"
    rows = rows_of(
        probe,
        role,
        "SELECT dest_id, dest_name, status, type, database_mode, error, gap_status"
        " FROM v$archive_dest_status WHERE status <> 'INACTIVE' ORDER BY dest_id",
    )
    if isinstance(rows, Unreadable):
        return not_available("v$archive_dest_status", expected, params, rows)
    dests: list[dict[str, Any]] = [
        {
            "dest_id": int(number(i)),
            "name": text(name),
            "status": text(status),
            "type": text(kind),
            "database_mode": text(mode),
            "error": text(error),
            "gap_status": text(gap),
        }
        for i, name, status, kind, mode, error, gap in rows
        if text(status) != "INACTIVE"
    ]
    bad: list[dict[str, Any]] = [
        d
        for d in dests
        if d["status"] != "VALID" or d["error"] or d["gap_status"] not in ("", "NO GAP")
    ]
    observed = {"destinations": dests, "failing": [d["name"] for d in bad]}
    if not bad:
        return Observation(observed, expected, True, f"{len(dests)} destination(s) VALID")
    named = "; ".join(
        f"{d['name']} {d['status']}"
        + (f" {d['error']}" if d["error"] else "")
        + (f" ({d['gap_status']})" if d["gap_status"] not in ("", "NO GAP") else "")
        for d in bad[:LISTED]
    )
    return Observation(observed, expected, False, named)


# -- the alert log -----------------------------------------------------------------------------


class AlertLogParams(OracleParams):
    since: Duration = Field(
        default=86400.0,
        description="How far back to look: the time since the last inspection (at most 7d).",
    )
    max_errors: int = Field(default=0, ge=0, description="Most ORA- errors allowed in that time.")
    ignore: list[str] = Field(
        default_factory=list, description="ORA- codes not counted (e.g. ORA-00060 deadlocks)."
    )


ALERT_SQL = (
    "SELECT TO_CHAR(originating_timestamp, 'YYYY-MM-DD HH24:MI:SS TZH:TZM') AS at, message_text"
    " FROM v$diag_alert_ext"
    " WHERE originating_timestamp > SYSTIMESTAMP - NUMTODSINTERVAL(:seconds, 'SECOND')"
    " AND message_text LIKE '%ORA-%' ORDER BY originating_timestamp"
)


def alert_log_errors(probe: Probe, role: str, params: AlertLogParams) -> Observation:
    """ORA- errors in the alert log since the last inspection (V$DIAG_ALERT_EXT)."""
    expected = f"<= {params.max_errors} ORA- error(s) in the last {format_seconds(params.since)}"
    rows = rows_of(probe, role, ALERT_SQL, {"seconds": params.since})
    if isinstance(rows, Unreadable):
        return not_available("v$diag_alert_ext", expected, params, rows)
    ignored = {code.upper() for code in params.ignore}
    errors: list[dict[str, Any]] = []
    for at, message in rows:
        codes = [c for c in _ORA.findall(text(message)) if c not in ignored]
        if codes:
            errors.append({"at": text(at), "codes": codes, "message": text(message)[:200]})
    counts = Counter(code for e in errors for code in e["codes"])
    observed = {
        "errors": len(errors),
        "by_code": dict(counts.most_common()),
        "latest": errors[-LISTED:],
        "limits": {"max_errors": params.max_errors, "since_seconds": params.since},
    }
    held = len(errors) <= params.max_errors
    if not errors:
        return Observation(observed, expected, held, "no ORA- error")
    top = ", ".join(f"{code} x{n}" for code, n in counts.most_common(LISTED))
    return Observation(observed, expected, held, f"{len(errors)} error message(s): {top}")


# -- invalid objects ---------------------------------------------------------------------------


class InvalidObjectsParams(OracleParams):
    schemas: list[str] = Field(
        default_factory=list,
        description="Owners looked at; empty: every owner except SYS, SYSTEM and PUBLIC.",
    )
    max_invalid: int = Field(default=0, ge=0, description="Most invalid objects allowed.")


def invalid_objects(probe: Probe, role: str, params: InvalidObjectsParams) -> Observation:
    """Invalid objects, by owner and type (DBA_OBJECTS.STATUS = 'INVALID')."""
    expected = f"<= {params.max_invalid} invalid object(s)"
    rows = rows_of(
        probe,
        role,
        "SELECT owner, object_type, COUNT(*) AS objects FROM dba_objects"
        " WHERE status = 'INVALID' GROUP BY owner, object_type ORDER BY 3 DESC",
    )
    if isinstance(rows, Unreadable):
        return not_available("dba_objects", expected, params, rows)
    wanted = {s.upper() for s in params.schemas}

    def looked_at(owner: str) -> bool:
        return owner in wanted if wanted else owner not in ORACLE_OWNERS

    groups: list[dict[str, Any]] = [
        {"owner": text(owner), "type": text(kind), "count": int(number(n))}
        for owner, kind, n in rows
        if looked_at(text(owner))
    ]
    total = sum(g["count"] for g in groups)
    observed = {
        "invalid": total,
        "groups": groups[:20],
        "limits": {"max_invalid": params.max_invalid},
    }
    held = total <= params.max_invalid
    if not groups:
        return Observation(observed, expected, held, "no invalid object")
    named = ", ".join(f"{g['owner']} {g['type']} x{g['count']}" for g in groups[:LISTED])
    return Observation(observed, expected, held, f"{total} invalid: {named}")


# -- ASM ---------------------------------------------------------------------------------------


class AsmParams(OracleParams):
    max_used_percent: float = Field(
        default=85.0, ge=0, le=100, description="Largest share of a disk group in use."
    )


def asm_diskgroups(probe: Probe, role: str, params: AsmParams) -> Observation:
    """ASM disk groups, where the database uses ASM: mounted, no offline disk, room
    (V$ASM_DISKGROUP; no row: no ASM, which holds)."""
    expected = f"every disk group mounted, no offline disk, <= {params.max_used_percent:g}% used"
    rows = rows_of(
        probe,
        role,
        "SELECT name, state, type, total_mb, free_mb, usable_file_mb, offline_disks"
        " FROM v$asm_diskgroup ORDER BY name",
    )
    if isinstance(rows, Unreadable):
        return not_available("v$asm_diskgroup", expected, params, rows)
    if not rows:
        return Observation("no ASM disk groups", expected, True, "the database does not use ASM")
    groups: list[dict[str, Any]] = []
    for name, state, kind, total, free, usable, offline in rows:
        total_mb = number(total)
        percent = round(100.0 * (total_mb - number(free)) / total_mb, 1) if total_mb else 0.0
        groups.append(
            {
                "name": text(name),
                "state": text(state),
                "redundancy": text(kind),
                "total_mb": int(total_mb),
                "free_mb": int(number(free)),
                "usable_file_mb": int(number(usable)),
                "offline_disks": int(number(offline)),
                "used_percent": percent,
            }
        )
    bad: list[dict[str, Any]] = [
        g
        for g in groups
        if g["state"] not in ("MOUNTED", "CONNECTED")
        or g["offline_disks"]
        or g["used_percent"] > params.max_used_percent
    ]
    observed = {
        "diskgroups": groups,
        "failing": [g["name"] for g in bad],
        "limits": {"max_used_percent": params.max_used_percent},
    }
    detail = ", ".join(
        f"{g['name']} {g['state']} {g['used_percent']:g}%"
        + (f" {g['offline_disks']} offline" if g["offline_disks"] else "")
        for g in (bad or groups)[:LISTED]
    )
    return Observation(observed, expected, not bad, detail)


# -- scheduler jobs ----------------------------------------------------------------------------


class FailedJobsParams(OracleParams):
    since: Duration = Field(default=86400.0, description="How far back to look (at most 7d).")
    max_failed: int = Field(default=0, ge=0, description="Most failed runs allowed.")


def failed_jobs(probe: Probe, role: str, params: FailedJobsParams) -> Observation:
    """Scheduler job runs that failed since the last inspection (DBA_SCHEDULER_JOB_RUN_DETAILS)."""
    expected = f"<= {params.max_failed} failed job run(s) in {format_seconds(params.since)}"
    rows = rows_of(
        probe,
        role,
        "SELECT owner, job_name, TO_CHAR(log_date, 'YYYY-MM-DD HH24:MI:SS') AS at, error#,"
        " status"
        " FROM dba_scheduler_job_run_details"
        " WHERE status = 'FAILED' AND log_date > SYSTIMESTAMP - NUMTODSINTERVAL(:seconds,"
        " 'SECOND') ORDER BY log_date DESC",
        {"seconds": params.since},
    )
    if isinstance(rows, Unreadable):
        return not_available("dba_scheduler_job_run_details", expected, params, rows)
    runs: list[dict[str, Any]] = [
        {"owner": text(o), "job": text(j), "at": text(at), "error": int(number(e))}
        for o, j, at, e, status in rows
        if text(status) == "FAILED"
    ]
    observed = {
        "failed": len(runs),
        "runs": runs[:LISTED],
        "limits": {"max_failed": params.max_failed},
    }
    held = len(runs) <= params.max_failed
    if not runs:
        return Observation(observed, expected, held, "no failed run")
    named = ", ".join(f"{r['owner']}.{r['job']} ORA-{r['error']:05d}" for r in runs[:LISTED])
    return Observation(observed, expected, held, f"{len(runs)} failed: {named}")
