"""Oracle inspection checks on the instance's activity: processes and sessions against their
limits (V$RESOURCE_LIMIT), long-running calls and blocking locks (V$SESSION), redo switches per
hour (V$LOG_HISTORY) and accounts whose passwords expire soon (DBA_USERS). Thresholds are the
checks' parameters, kept under ``limits`` in what they observe (``verify.oracle_inspection``).
"""

from __future__ import annotations

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

# -- processes and sessions against their limits -----------------------------------------------


class ResourceParams(OracleParams):
    max_used_percent: float = Field(
        default=80.0, ge=0, le=100, description="Largest share of a limit in use."
    )
    resources: list[str] = Field(
        default_factory=lambda: ["processes", "sessions"],
        description="V$RESOURCE_LIMIT resources judged.",
    )


def resource_limits(probe: Probe, role: str, params: ResourceParams) -> Observation:
    """Processes and sessions against their limits (V$RESOURCE_LIMIT)."""
    expected = f"<= {params.max_used_percent:g}% of each limit"
    rows = rows_of(
        probe,
        role,
        "SELECT resource_name, current_utilization, max_utilization, limit_value"
        " FROM v$resource_limit",
    )
    if isinstance(rows, Unreadable):
        return not_available("v$resource_limit", expected, params, rows)
    wanted = {r.lower() for r in params.resources}
    found: list[dict[str, Any]] = []
    for name, current, highest, limit in rows:
        if text(name).lower() not in wanted:
            continue
        unlimited = text(limit).upper() in ("UNLIMITED", "")
        cap = number(limit)
        percent = None if unlimited or cap <= 0 else round(100.0 * number(current) / cap, 1)
        found.append(
            {
                "resource": text(name).lower(),
                "current": int(number(current)),
                "max_since_startup": int(number(highest)),
                "limit": "UNLIMITED" if unlimited else int(cap),
                "used_percent": percent,
            }
        )
    over = [
        r
        for r in found
        if r["used_percent"] is not None and r["used_percent"] > params.max_used_percent
    ]
    observed = {
        "resources": found,
        "over": [r["resource"] for r in over],
        "limits": {"max_used_percent": params.max_used_percent},
    }
    detail = (
        ", ".join(f"{r['resource']} {r['current']}/{r['limit']}" for r in found)
        or "no such resource"
    )
    return Observation(observed, expected, not over, detail)


# -- sessions: long-running SQL and blocking locks ---------------------------------------------


class LongSqlParams(OracleParams):
    max: Duration = Field(default=300.0, description="Longest an active call may have run.")


def long_running_sql(probe: Probe, role: str, params: LongSqlParams) -> Observation:
    """User calls active longer than ``max`` (V$SESSION.LAST_CALL_ET; sid, user, sql_id)."""
    expected = f"none longer than {format_seconds(params.max)}"
    rows = rows_of(
        probe,
        role,
        "SELECT sid, serial#, username, sql_id, last_call_et, event, type, status FROM v$session"
        " WHERE type = 'USER' AND status = 'ACTIVE' AND last_call_et > :seconds"
        " AND sid <> SYS_CONTEXT('USERENV', 'SID') ORDER BY last_call_et DESC",
        {"seconds": params.max},
    )
    if isinstance(rows, Unreadable):
        return not_available("v$session", expected, params, rows)
    sessions: list[dict[str, Any]] = [
        {
            "sid": int(number(sid)),
            "serial": int(number(serial)),
            "user": text(user),
            "sql_id": text(sql_id),
            "seconds": number(seconds),
            "event": text(event),
        }
        for sid, serial, user, sql_id, seconds, event, kind, status in rows
        if number(seconds) > params.max and text(kind) == "USER" and text(status) == "ACTIVE"
    ]
    observed = {
        "count": len(sessions),
        "longest_seconds": sessions[0]["seconds"] if sessions else 0.0,
        "sessions": sessions[:LISTED],
        "limits": {"max_seconds": params.max},
    }
    if not sessions:
        return Observation(observed, expected, True, "no long call")
    named = ", ".join(
        f"sid {s['sid']} ({s['user']}, {s['sql_id'] or 'no sql_id'}, "
        f"{format_seconds(s['seconds'])})"
        for s in sessions[:LISTED]
    )
    return Observation(observed, expected, False, f"{len(sessions)} long call(s): {named}")


class BlockingParams(OracleParams):
    max_wait: Duration = Field(
        default=30.0, description="Longest a session may wait on another's lock."
    )


def blocking_sessions(probe: Probe, role: str, params: BlockingParams) -> Observation:
    """Sessions blocked by another's lock longer than ``max_wait`` (V$SESSION.BLOCKING_SESSION)."""
    expected = f"no session blocked longer than {format_seconds(params.max_wait)}"
    rows = rows_of(
        probe,
        role,
        "SELECT sid, username, blocking_session, event, seconds_in_wait FROM v$session"
        " WHERE blocking_session IS NOT NULL AND seconds_in_wait > :seconds"
        " ORDER BY seconds_in_wait DESC",
        {"seconds": params.max_wait},
    )
    if isinstance(rows, Unreadable):
        return not_available("v$session", expected, params, rows)
    waits: list[dict[str, Any]] = [
        {
            "sid": int(number(sid)),
            "user": text(user),
            "blocked_by": int(number(blocker)),
            "event": text(event),
            "seconds": number(seconds),
        }
        for sid, user, blocker, event, seconds in rows
        if blocker is not None and number(seconds) > params.max_wait
    ]
    blockers = sorted({w["blocked_by"] for w in waits})
    observed = {
        "blocked": len(waits),
        "blockers": blockers,
        "sessions": waits[:LISTED],
        "limits": {"max_wait_seconds": params.max_wait},
    }
    if not waits:
        return Observation(observed, expected, True, "no blocked session")
    named = ", ".join(
        f"sid {w['sid']} by {w['blocked_by']} ({format_seconds(w['seconds'])}, {w['event']})"
        for w in waits[:LISTED]
    )
    return Observation(observed, expected, False, f"{len(waits)} blocked: {named}")


# -- redo switches -----------------------------------------------------------------------------


class RedoSwitchParams(OracleParams):
    window: Duration = Field(default=86400.0, description="How far back to count (at most 7d).")
    max_per_hour: int = Field(
        default=12, ge=1, description="Most log switches in any one hour (a sign of small logs)."
    )


def redo_switch_rate(probe: Probe, role: str, params: RedoSwitchParams) -> Observation:
    """Redo log switches per hour (V$LOG_HISTORY): the busiest hour against ``max_per_hour``."""
    expected = f"<= {params.max_per_hour} switches in any hour"
    rows = rows_of(
        probe,
        role,
        "SELECT TO_CHAR(TRUNC(first_time, 'HH24'), 'YYYY-MM-DD HH24:MI') AS hour,"
        " COUNT(*) AS switches FROM v$log_history"
        " WHERE first_time > SYSDATE - :seconds / 86400"
        " GROUP BY TRUNC(first_time, 'HH24') ORDER BY 1",
        {"seconds": params.window},
    )
    if isinstance(rows, Unreadable):
        return not_available("v$log_history", expected, params, rows)
    hours: list[dict[str, Any]] = [
        {"hour": text(hour), "switches": int(number(n))} for hour, n in rows
    ]
    busiest = max(hours, key=lambda h: h["switches"], default=None)
    observed = {
        "hours": hours,
        "busiest": busiest,
        "total": sum(h["switches"] for h in hours),
        "limits": {"max_per_hour": params.max_per_hour, "window_seconds": params.window},
    }
    if busiest is None:
        return Observation(observed, expected, True, "no switch in the window")
    held = busiest["switches"] <= params.max_per_hour
    detail = f"busiest hour {busiest['hour']}: {busiest['switches']} switches"
    return Observation(observed, expected, held, detail)


# -- accounts ----------------------------------------------------------------------------------


class ExpiringParams(OracleParams):
    within_days: int = Field(
        default=14, ge=0, le=365, description="Passwords expiring within this many days count."
    )
    users: list[str] = Field(
        default_factory=list, description="Accounts looked at; empty: every open account."
    )


def expiring_accounts(probe: Probe, role: str, params: ExpiringParams) -> Observation:
    """Accounts whose passwords expire soon, or are in their grace period (DBA_USERS)."""
    expected = f"no password expiring within {params.within_days} days"
    rows = rows_of(
        probe,
        role,
        "SELECT username, account_status, TO_CHAR(expiry_date, 'YYYY-MM-DD') AS expires,"
        " ROUND(expiry_date - SYSDATE, 1) AS days_left FROM dba_users"
        " WHERE expiry_date IS NOT NULL AND expiry_date < SYSDATE + :days"
        " AND account_status NOT LIKE '%LOCKED%' ORDER BY expiry_date",
        {"days": params.within_days},
    )
    if isinstance(rows, Unreadable):
        return not_available("dba_users", expected, params, rows)
    wanted = {u.upper() for u in params.users}
    accounts: list[dict[str, Any]] = [
        {
            "user": text(user),
            "status": text(status),
            "expires": text(expires),
            "days_left": number(days),
        }
        for user, status, expires, days in rows
        if (not wanted or text(user) in wanted)
        and "LOCKED" not in text(status)
        and days is not None
        and number(days) < params.within_days
    ]
    observed = {"accounts": accounts, "limits": {"within_days": params.within_days}}
    if not accounts:
        return Observation(observed, expected, True, "none")
    named = ", ".join(f"{a['user']} {a['expires']} ({a['status']})" for a in accounts[:LISTED])
    return Observation(observed, expected, False, f"{len(accounts)} expiring: {named}")
