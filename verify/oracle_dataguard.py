"""Oracle Data Guard and backup checks: transport and apply lag (V$DATAGUARD_STATS), archive
gaps (V$ARCHIVE_GAP), Redo Apply (V$DATAGUARD_PROCESS, else V$MANAGED_STANDBY), RMAN's backup
jobs (V$RMAN_BACKUP_JOB_DETAILS) and block corruption (V$DATABASE_BLOCK_CORRUPTION).

The lag metrics are read on the standby; their NAME is compared case-insensitively (older
releases write 'APPLY LAG', newer 'apply lag') and their VALUE, an interval such as
``+00 00:00:03``, is read as seconds (``interval_seconds``). A view missing from the release is
observed as such (``verify.oracle``).
"""

from __future__ import annotations

import re
from datetime import datetime
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

# -- transport and apply (V$DATAGUARD_STATS, V$ARCHIVE_GAP, the apply process) -----------------

_INTERVAL = re.compile(r"^\s*([+-])?\s*(\d+)\s+(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d+)?)\s*$")
STATS_TIME_FORMAT = "%m/%d/%Y %H:%M:%S"  # TIME_COMPUTED and DATUM_TIME


def interval_seconds(value: Any) -> float | None:
    """Seconds in a V$DATAGUARD_STATS value: an interval ``+DD HH:MI:SS[.FF]`` (``+00 00:00:03``
    is 3 s), or a number of seconds; None when not computed (NULL) or unreadable."""
    shown = text(value)
    if not shown:
        return None
    found = _INTERVAL.match(shown)
    if found:
        sign, days, hours, minutes, seconds = found.groups()
        total = int(days) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        return -total if sign == "-" else total
    try:
        return float(shown)
    except ValueError:
        return None


def _stats_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, STATS_TIME_FORMAT)
    except ValueError:
        return None


class LagParams(OracleParams):
    max: Duration = Field(default=30.0, description="Largest lag allowed.")
    max_datum_age: Duration | None = Field(
        default=None,
        description="Oldest DATUM_TIME allowed against TIME_COMPUTED: an unchanging datum means "
        "the standby hears nothing from the primary. None: not checked.",
    )


STATS_SQL = "SELECT name, value, unit, time_computed, datum_time FROM v$dataguard_stats"


def _lag(probe: Probe, role: str, params: LagParams, metric: str) -> Observation:
    expected = f"{metric} <= {format_seconds(params.max)}"
    rows = rows_of(probe, role, STATS_SQL)
    if isinstance(rows, Unreadable):
        return not_available("v$dataguard_stats", expected, params, rows)
    found = [r for r in rows if text(r[0]).lower() == metric]  # 'apply lag' or 'APPLY LAG'
    if not found:
        return Observation(
            f"no {metric} row", expected, False, "v$dataguard_stats has no such row: a primary?"
        )
    _, value, unit, computed, datum = (text(v) for v in found[0])
    seconds = interval_seconds(value)
    observed: dict[str, Any] = {
        "value": value,
        "unit": unit,
        "seconds": seconds,
        "time_computed": computed,
        "datum_time": datum,
        "limits": {"max_seconds": params.max},
    }
    if seconds is None:
        return Observation(observed, expected, False, f"{metric} not computed ({value or 'NULL'})")
    held = seconds <= params.max
    detail = f"{metric} {value} ({format_seconds(seconds)})"
    if params.max_datum_age is not None:
        at, then = _stats_time(computed), _stats_time(datum)
        age = (at - then).total_seconds() if at and then else None
        observed["datum_age_seconds"] = age
        observed["limits"]["max_datum_age_seconds"] = params.max_datum_age
        if age is None or age > params.max_datum_age:
            held = False
            detail += f"; datum {datum} against {computed}: the standby hears nothing new"
    return Observation(observed, expected, held, detail)


def transport_lag(probe: Probe, role: str, params: LagParams) -> Observation:
    """The standby's transport lag (V$DATAGUARD_STATS): redo generated but not yet received."""
    return _lag(probe, role, params, "transport lag")


def apply_lag(probe: Probe, role: str, params: LagParams) -> Observation:
    """The standby's apply lag (V$DATAGUARD_STATS): how far its data is behind the primary's."""
    return _lag(probe, role, params, "apply lag")


def archive_gap(probe: Probe, role: str, params: OracleParams) -> Observation:
    """No archive gap blocks recovery on the standby (V$ARCHIVE_GAP has no row)."""
    expected = "no archive gap"
    rows = rows_of(probe, role, "SELECT thread#, low_sequence#, high_sequence# FROM v$archive_gap")
    if isinstance(rows, Unreadable):
        return not_available("v$archive_gap", expected, params, rows)
    gaps: list[dict[str, Any]] = [
        {"thread": int(t), "low": int(low), "high": int(high)} for t, low, high in rows
    ]
    if not gaps:
        return Observation({"gaps": []}, expected, True, "no gap")
    named = ", ".join(f"thread {g['thread']} {g['low']}-{g['high']}" for g in gaps[:LISTED])
    return Observation({"gaps": gaps}, expected, False, f"missing logs: {named}")


class ApplyParams(OracleParams):
    states: list[str] = Field(
        default_factory=lambda: ["APPLYING_LOG", "WAIT_FOR_LOG", "IDLE"],
        description="States of the MRP0 process that count as applying (WAIT_FOR_GAP does not).",
    )


def apply_running(probe: Probe, role: str, params: ApplyParams) -> Observation:
    """Redo Apply runs: an MRP0 process (V$DATAGUARD_PROCESS, 12.2+; else V$MANAGED_STANDBY)."""
    states = [s.upper() for s in params.states]
    expected = f"MRP0 {' or '.join(states)}"
    rows = rows_of(
        probe,
        role,
        "SELECT name, action, thread#, sequence# FROM v$dataguard_process WHERE name LIKE 'MRP%'",
    )
    view = "v$dataguard_process"
    if isinstance(rows, Unreadable):
        view = "v$managed_standby"
        rows = rows_of(
            probe,
            role,
            "SELECT process, status, thread#, sequence# FROM v$managed_standby"
            " WHERE process LIKE 'MRP%'",
        )
        if isinstance(rows, Unreadable):
            return not_available(
                "v$dataguard_process and v$managed_standby", expected, params, rows
            )
    processes: list[dict[str, Any]] = [
        {"process": text(p), "state": text(s), "thread": t, "sequence": q}
        for p, s, t, q in rows
        if text(p).startswith("MRP")
    ]
    observed = {"view": view, "processes": processes}
    if not processes:
        return Observation(observed, expected, False, "no MRP0 process: Redo Apply is off")
    first = processes[0]
    held = first["state"] in states
    detail = f"{first['process']} {first['state']} (thread {first['thread']}, "
    detail += f"sequence {first['sequence']}) in {view}"
    return Observation(observed, expected, held, detail)


# -- backups and corruption (V$RMAN_BACKUP_JOB_DETAILS, V$DATABASE_BLOCK_CORRUPTION) -----------


class RmanParams(OracleParams):
    input_types: list[str] = Field(
        default_factory=lambda: ["DB FULL", "DB INCR"],
        description="INPUT_TYPE values a backup counts for (DB FULL, DB INCR, ARCHIVELOG...).",
    )
    max_age: Duration = Field(
        default=26 * 3600.0, description="Oldest the newest good backup may be (from its end)."
    )
    accept_warnings: bool = Field(
        default=False, description="Whether COMPLETED WITH WARNINGS counts as good."
    )
    max_failures: int = Field(
        default=0, ge=0, description="Most FAILED jobs allowed after the newest good one."
    )


RMAN_SQL = (
    "SELECT session_key, input_type, status, TO_CHAR(start_time, 'YYYY-MM-DD HH24:MI:SS')"
    " AS started, TO_CHAR(end_time, 'YYYY-MM-DD HH24:MI:SS') AS ended, output_bytes,"
    " ROUND((SYSDATE - end_time) * 86400) AS age_seconds"
    " FROM v$rman_backup_job_details"
    " WHERE start_time > SYSDATE - 30 ORDER BY start_time DESC"
)


def rman_backup(probe: Probe, role: str, params: RmanParams) -> Observation:
    """The newest good RMAN backup job is recent enough, with no failed job since
    (V$RMAN_BACKUP_JOB_DETAILS, the last 30 days)."""
    types = [t.upper() for t in params.input_types]
    good = ["COMPLETED", "COMPLETED WITH WARNINGS"] if params.accept_warnings else ["COMPLETED"]
    expected = (
        f"a {'/'.join(types)} backup {' or '.join(good)} within {format_seconds(params.max_age)}"
    )
    rows = rows_of(probe, role, RMAN_SQL)
    if isinstance(rows, Unreadable):
        return not_available("v$rman_backup_job_details", expected, params, rows)
    jobs: list[dict[str, Any]] = [
        {
            "session_key": key,
            "input_type": text(kind),
            "status": text(status),
            "started": text(started),
            "ended": text(ended),
            "output_bytes": int(number(size)),
            "age_seconds": number(age) if age is not None else None,
        }
        for key, kind, status, started, ended, size, age in rows
    ]
    ours = [j for j in jobs if j["input_type"] in types]
    newest = next((j for j in ours if j["status"] in good), None)
    failed = [j for j in ours if j["status"] == "FAILED"]
    if newest is not None:
        failed = [j for j in failed if j["started"] > newest["started"]]
    observed: dict[str, Any] = {
        "newest": newest,
        "failed_since": failed[:LISTED],
        "jobs": len(ours),
        "limits": {"max_age_seconds": params.max_age, "max_failures": params.max_failures},
    }
    if newest is None:
        return Observation(observed, expected, False, f"no good {'/'.join(types)} job in 30 days")
    age = newest["age_seconds"] if newest["age_seconds"] is not None else float("inf")
    held = age <= params.max_age and len(failed) <= params.max_failures
    detail = f"{newest['input_type']} {newest['status']} at {newest['ended']}"
    detail += f" ({format_seconds(age)} ago)" if age != float("inf") else ""
    if failed:
        detail += f"; {len(failed)} failed since"
    return Observation(observed, expected, held, detail)


def block_corruption(probe: Probe, role: str, params: OracleParams) -> Observation:
    """No corrupt block is known (V$DATABASE_BLOCK_CORRUPTION, filled by RMAN's VALIDATE)."""
    expected = "no corrupt block"
    rows = rows_of(
        probe,
        role,
        "SELECT file#, block#, blocks, corruption_type FROM v$database_block_corruption"
        " ORDER BY file#, block#",
    )
    if isinstance(rows, Unreadable):
        return not_available("v$database_block_corruption", expected, params, rows)
    found: list[dict[str, Any]] = [
        {"file": int(f), "block": int(b), "blocks": int(n), "type": text(kind)}
        for f, b, n, kind in rows
    ]
    total = sum(r["blocks"] for r in found)
    observed = {"ranges": found[:LISTED], "blocks": total}
    if not found:
        return Observation(observed, expected, True, "none")
    named = ", ".join(f"file {r['file']} block {r['block']} ({r['type']})" for r in found[:LISTED])
    return Observation(observed, expected, False, f"{total} corrupt block(s): {named}")
