"""Inspection (巡检) checks for PostgreSQL: space, WAL, connections, sessions, backups, settings,
transaction ID age (wraparound), replication slots that retain WAL, and the server log's errors
since the last inspection (the host of the server is inspected by ``verify.host``).

Each check observes one item of the quarterly inspection and judges it against thresholds that are
its parameters: the defaults below, overridden in a playbook's ``with:``. What a check observed is
kept in the record as plain values (bytes, seconds, counts, pids), with the thresholds it was
judged against under ``limits``, so a report can state both in the reader's language.

Nothing here changes the server: every check only reads (catalog views, ``df``, ``find``).
Replication and lag are the existing ``pg.is_primary``, ``pg.streaming`` and ``pg.replay_lag``.

Every item is observed through the node's own executors (``probe``): its SQL session, and its
host executor (local, or SSH) for the filesystem (``disk_usage``) and the backup directory
(``find`` on that host, as the database's OS user). Nothing reads the orchestrator's own files,
processes or ``DRCTL_HOME`` on a node's behalf, so the same inspection runs local or remote.
"""

from __future__ import annotations

import posixpath
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from drills.model.durations import Duration, format_seconds
from drills.model.errors import DrillError, InputError
from verify.host import Since, log_observation, resolve_since, scan_logs
from verify.postgres import NoParams
from verify.result import Observation, Probe

MIB = 1024 * 1024
EXCERPT = 60  # characters of a query shown, after its literals are replaced
LISTED = 5  # sessions named in an observation


def _gib(n: int | float) -> str:
    return f"{n / 1024 / MIB:.1f} GiB" if n >= 1024 * MIB else f"{n / MIB:.1f} MiB"


# -- space -------------------------------------------------------------------------------------


class DiskParams(NoParams):
    max_used_percent: float = Field(
        default=85.0, ge=0, le=100, description="Largest share of the filesystem in use (%)."
    )
    min_free_mib: int = Field(
        default=1024, ge=0, description="Least space left to the server's OS user (MiB)."
    )


# The mount point of a path, as the host sees it: GNU stat, else the last field of POSIX df.
MOUNT_SCRIPT = (
    'stat -c %m -- "$1" 2>/dev/null || '
    "df -P -- \"$1\" 2>/dev/null | awk 'NR > 1 { m = $NF } END { print m }'; exit 0"
)


def mount_point(probe: Probe, role: str, path: str) -> str:
    """Where the filesystem holding ``path`` is mounted on the role's host ("?" if unknown)."""
    result = probe.run(role, ["sh", "-c", MOUNT_SCRIPT, "sh", path], timeout=10)
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else "?"


def filesystem(probe: Probe, role: str, path: str) -> dict[str, Any]:
    """Size, use and free space of the filesystem holding ``path`` on the role's host, through
    its host executor (``disk_usage``, as the database's OS user)."""
    usage = probe.host(role).disk_usage(path, user=probe.os_user(role))
    used, free = usage.used_bytes, usage.free_bytes
    # As df computes its Capacity: of the space usable by ordinary users (root's reserve left out).
    percent = round(100.0 * used / (used + free), 1) if used + free else 0.0
    return {
        "path": path,
        "mount": mount_point(probe, role, path),
        "size_bytes": used + free,
        "used_bytes": used,
        "free_bytes": free,
        "used_percent": percent,
    }


def _data_dir(probe: Probe, role: str) -> str:
    _, _, pg = probe.postgres(role)
    return pg.data_dir


def disk_space(probe: Probe, role: str, params: DiskParams) -> Observation:
    """The filesystem of the data directory has room: use and free space against thresholds."""
    fs = filesystem(probe, role, _data_dir(probe, role))
    min_free = params.min_free_mib * MIB
    held = fs["used_percent"] <= params.max_used_percent and fs["free_bytes"] >= min_free
    expected = f"<= {params.max_used_percent:g}% used and >= {_gib(min_free)} free"
    observed = fs | {
        "limits": {"max_used_percent": params.max_used_percent, "min_free_bytes": min_free}
    }
    detail = f"{fs['used_percent']:g}% used, {_gib(fs['free_bytes'])} free on {fs['mount']}"
    return Observation(observed, expected, held, detail)


class WalParams(NoParams):
    max_wal_mib: int = Field(default=4096, ge=0, description="Largest size of pg_wal (MiB).")
    min_free_mib: int = Field(
        default=1024, ge=0, description="Least free space where pg_wal is (MiB)."
    )
    max_ready: int = Field(
        default=100, ge=0, description="Most WAL segments waiting to be archived (.ready)."
    )


def wal_space(probe: Probe, role: str, params: WalParams) -> Observation:
    """pg_wal's size and segments, WAL waiting to be archived, and free space where it is."""
    sql = probe.sql(role)
    row = sql.query(
        "select coalesce(sum(size), 0)::bigint, count(*) from pg_ls_waldir()"
        " where name ~ '^[0-9A-F]{24}$'",
        timeout=10,
    )[0]
    ready = sql.scalar(
        "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'", timeout=10
    )
    wal_bytes, segments = int(row[0]), int(row[1])
    fs = filesystem(probe, role, f"{_data_dir(probe, role)}/pg_wal/.")
    max_bytes, min_free = params.max_wal_mib * MIB, params.min_free_mib * MIB
    held = (
        wal_bytes <= max_bytes and fs["free_bytes"] >= min_free and int(ready) <= params.max_ready
    )
    observed = {
        "wal_bytes": wal_bytes,
        "segments": segments,
        "ready_to_archive": int(ready),
        "free_bytes": fs["free_bytes"],
        "used_percent": fs["used_percent"],
        "mount": fs["mount"],
        "limits": {
            "max_wal_bytes": max_bytes,
            "min_free_bytes": min_free,
            "max_ready": params.max_ready,
        },
    }
    expected = (
        f"pg_wal <= {_gib(max_bytes)}, >= {_gib(min_free)} free, "
        f"<= {params.max_ready} segments waiting to be archived"
    )
    detail = f"pg_wal {_gib(wal_bytes)} in {segments} segments, {_gib(fs['free_bytes'])} free"
    return Observation(observed, expected, held, detail)


# -- connections and sessions ------------------------------------------------------------------


class ConnectionsParams(NoParams):
    max_used_percent: float = Field(
        default=80.0, ge=0, le=100, description="Largest share of max_connections in use (%)."
    )


def connections(probe: Probe, role: str, params: ConnectionsParams) -> Observation:
    """Client connections against max_connections (less the superuser-reserved ones)."""
    row = probe.sql(role).query(
        "select count(*) filter (where backend_type = 'client backend'),"
        " current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int"
        " from pg_stat_activity",
        timeout=10,
    )[0]
    used, limit, reserved = int(row[0]), int(row[1]), int(row[2])
    percent = round(100.0 * used / limit, 1) if limit else 100.0
    observed = {
        "connections": used,
        "max_connections": limit,
        "superuser_reserved": reserved,
        "used_percent": percent,
        "limits": {"max_used_percent": params.max_used_percent},
    }
    held = percent <= params.max_used_percent
    expected = f"<= {params.max_used_percent:g}% of max_connections"
    return Observation(observed, expected, held, f"{used} of {limit} ({percent:g}%)")


_LITERAL = re.compile(r"'(?:[^']|'')*'|\$\$.*?\$\$|\b\d+(?:\.\d+)?\b", re.DOTALL)


def query_excerpt(query: str | None, limit: int = EXCERPT) -> str:
    """A query's first characters with every literal (strings, numbers) replaced by ``?``: enough
    to recognise the statement, never the patient data it carries."""
    if not query:
        return ""
    text = " ".join(_LITERAL.sub("?", query).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sessions(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {
            "pid": int(pid),
            "user": user or "",
            "application": app or "",
            "client": str(client) if client is not None else "local",
            "seconds": round(float(seconds), 1),
            "query": query_excerpt(query),
        }
        for pid, user, app, client, seconds, query in rows
    ]


class LongSessionsParams(NoParams):
    max: Duration = Field(
        default=300.0, description="Longest an active statement may have been running."
    )


def long_sessions(probe: Probe, role: str, params: LongSessionsParams) -> Observation:
    """Statements running longer than ``max`` (client sessions; pid, user, how long, excerpt)."""
    rows = probe.sql(role).query(
        "select pid, usename, application_name, client_addr,"
        " extract(epoch from clock_timestamp() - query_start), query"
        " from pg_stat_activity"
        " where state = 'active' and backend_type = 'client backend'"
        " and pid <> pg_backend_pid()"
        " and clock_timestamp() - query_start > make_interval(secs => %s)"
        " order by query_start",
        (params.max,),
        timeout=10,
    )
    found = _sessions(rows)
    return _session_observation(found, params.max, "statement(s) running")


class IdleParams(NoParams):
    max: Duration = Field(
        default=60.0, description="Longest a session may sit idle inside an open transaction."
    )


def idle_in_transaction(probe: Probe, role: str, params: IdleParams) -> Observation:
    """Sessions idle in an open transaction longer than ``max`` (they hold locks and snapshots)."""
    rows = probe.sql(role).query(
        "select pid, usename, application_name, client_addr,"
        " extract(epoch from clock_timestamp() - state_change), query"
        " from pg_stat_activity"
        " where state in ('idle in transaction', 'idle in transaction (aborted)')"
        " and backend_type = 'client backend'"
        " and clock_timestamp() - state_change > make_interval(secs => %s)"
        " order by state_change",
        (params.max,),
        timeout=10,
    )
    found = _sessions(rows)
    return _session_observation(found, params.max, "session(s) idle in transaction")


def _session_observation(found: list[dict[str, Any]], limit: float, what: str) -> Observation:
    observed = {
        "count": len(found),
        "longest_seconds": found[0]["seconds"] if found else 0.0,
        "sessions": found[:LISTED],
        "limits": {"max_seconds": limit},
    }
    expected = f"none longer than {format_seconds(limit)}"
    if not found:
        return Observation(observed, expected, True, f"no {what} longer than {limit:g}s")
    named = ", ".join(
        f"pid {s['pid']} ({s['user']}, {format_seconds(s['seconds'])})" for s in found[:LISTED]
    )
    return Observation(observed, expected, False, f"{len(found)} {what}: {named}")


# -- backups -----------------------------------------------------------------------------------


class BackupAgeParams(NoParams):
    max_age: Duration = Field(
        default=86400.0, description="Oldest the newest backup may be (from when it finished)."
    )
    method: Literal["drctl", "archiver"] = Field(
        default="drctl",
        description="drctl: the newest plain-format backup pg.basebackup made (a directory "
        "with a backup_manifest); archiver: the last WAL segment archived (pg_stat_archiver).",
    )
    backup_dir: str | None = Field(
        default=None,
        description="Where the backups are on the node's host, one per subdirectory; default "
        "<parent of postgres.data_dir>/drctl-backups/<environment>/<any node>/base on that host, "
        "where pg.basebackup keeps the backups it takes of a node (beside its data directory).",
    )
    also_on: list[str] = Field(
        default_factory=list,
        description="Roles whose hosts are searched too (the backups of a pair live on the host "
        "that took them, often the standby's); the newest backup anywhere counts.",
    )


BACKUPS_DIR = "drctl-backups"  # as drills.engines.postgres keeps them, beside the data directory


def default_backup_root(probe: Probe, role: str) -> str:
    """``<parent of the data directory>/drctl-backups/<environment>`` on the role's host: under
    it, ``<node>/base`` is where ``pg.basebackup`` puts the backups it takes of a node by default
    (a standby's backups sit beside the standby's data directory)."""
    _, _, pg = probe.postgres(role)
    env = getattr(probe.env, "name", None)
    if not isinstance(env, str):
        raise InputError("pg.backup_age: the environment is not known here; give backup_dir")
    work = posixpath.dirname(pg.data_dir.rstrip("/") or "/") or "/"
    return posixpath.join(work, BACKUPS_DIR, env)


# Each backup is a directory holding a backup_manifest; a missing root is no backup. The host's
# own clock comes first, so that an age is measured on one clock. From / (the OS user may not
# enter the login user's working directory).
FIND_SCRIPT = (
    'cd / && date +%s && { [ -d "$1" ] || exit 0; } && exec find "$1" -mindepth "$2"'
    ' -maxdepth "$2" -type f -path "$1/$3" -printf "%T@ %h\\n"'
)


def newest_backup(
    probe: Probe, role: str, backup_dir: str | None
) -> tuple[str, float, int, str, float]:
    """(path, finished at as epoch, how many were found, where looked, the host's time now) of
    the newest backup, as the role's host sees its backup directory (every node's, by default)."""
    if backup_dir:
        root, depth, pattern = backup_dir.rstrip("/") or "/", "2", "*/backup_manifest"
    else:
        root, depth, pattern = default_backup_root(probe, role), "4", "*/base/*/backup_manifest"
    name, _ = probe.node(role)
    argv = ["sh", "-c", FIND_SCRIPT, "sh", root, depth, pattern]
    out = probe.run(role, argv, timeout=60).stdout
    clock, _, listing = out.partition("\n")
    try:
        now = float(clock.strip())
    except ValueError:
        raise InputError(
            f"cannot read the time on {name} while looking for backups: {clock[:80]!r}", host=name
        ) from None
    found = sorted(
        (float(when), path)
        for when, _, path in (line.partition(" ") for line in listing.splitlines())
        if path
    )
    if not found:
        return "", 0.0, 0, root, now
    return found[-1][1], found[-1][0], len(found), root, now


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def backup_age(probe: Probe, role: str, params: BackupAgeParams) -> Observation:
    """The newest backup is recent: its age against ``max_age``; none found deviates."""
    limits = {"max_age_seconds": params.max_age}
    expected = f"a backup finished within {format_seconds(params.max_age)}"
    if params.method == "archiver":
        return _archiver_age(probe, role, params, limits)
    found = []
    searched: set[tuple[str, str]] = set()
    for asked in dict.fromkeys([role, *params.also_on]):
        name = probe.node(asked)[0]
        path, finished, count, root, now = newest_backup(probe, asked, params.backup_dir)
        where = (probe.host(asked).address, root)
        if where in searched:  # one host holds both nodes (the one-host lab): count it once
            continue
        searched.add(where)
        found.append((finished if path else -1.0, path, count, root, now, name))
    total = sum(f[2] for f in found)
    finished, path, _, _, now, on = max(found, key=lambda f: f[0])
    roots = found[0][3] if len(found) == 1 else ", ".join(f"{f[5]}:{f[3]}" for f in found)
    if not path:
        observed = {"found": 0, "looked_in": roots, "method": "drctl", "limits": limits}
        return Observation(observed, expected, False, f"no backup found in {roots}")
    age = round(max(0.0, now - finished), 1)  # both on that host's clock
    count = total
    observed = {
        "found": count,
        "host": on,
        "path": path,
        "finished_at": _iso(finished),
        "age_seconds": age,
        "method": "drctl",
        "limits": limits,
    }
    detail = f"newest of {count}: {path} on {on}, {format_seconds(age)} old"
    return Observation(observed, expected, age <= params.max_age, detail)


def _archiver_age(
    probe: Probe, role: str, params: BackupAgeParams, limits: dict[str, Any]
) -> Observation:
    row = probe.sql(role).query(
        "select current_setting('archive_mode'), archived_count, last_archived_wal,"
        " extract(epoch from last_archived_time), failed_count,"
        " extract(epoch from last_failed_time), extract(epoch from clock_timestamp())"
        " from pg_stat_archiver",
        timeout=10,
    )[0]
    mode, archived, wal, last, failed, last_failed, server_now = row
    expected = f"WAL archived within {format_seconds(params.max_age)}, no failure since"
    observed: dict[str, Any] = {
        "method": "archiver",
        "archive_mode": mode,
        "archived_count": int(archived or 0),
        "failed_count": int(failed or 0),
        "limits": limits,
    }
    if mode == "off":
        return Observation(observed, expected, False, "archive_mode is off")
    if last is None:
        return Observation(observed, expected, False, "no WAL segment archived yet")
    age = round(max(0.0, float(server_now) - float(last)), 1)  # on the server's clock
    observed |= {"last_archived_wal": wal, "finished_at": _iso(float(last)), "age_seconds": age}
    failing = last_failed is not None and float(last_failed) > float(last)
    if failing:
        observed["last_failed_at"] = _iso(float(last_failed))
    held = age <= params.max_age and not failing
    return Observation(observed, expected, held, f"last archived {wal}, {format_seconds(age)} ago")


# -- settings ----------------------------------------------------------------------------------

DEFAULT_SETTINGS: dict[str, str | list[str]] = {
    "fsync": "on",
    "full_page_writes": "on",
    "wal_level": ["replica", "logical"],
    "data_checksums": "on",
}


class SettingsParams(NoParams):
    expected: dict[str, str | list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_SETTINGS),
        description="Each setting's expected value, or a list of values any of which will do "
        "(compared case-insensitively).",
    )


def settings(probe: Probe, role: str, params: SettingsParams) -> Observation:
    """Key settings have their expected values (fsync, full_page_writes, wal_level, ...)."""
    names = sorted(params.expected)
    rows = probe.sql(role).query(
        "select name, setting from pg_settings where name = any(%s)", (names,), timeout=10
    )
    seen = {str(name): str(value) for name, value in rows}
    wrong: dict[str, str] = {}
    for name in names:
        want = params.expected[name]
        allowed = [want] if isinstance(want, str) else list(want)
        value = seen.get(name)
        if value is None:
            wrong[name] = "unknown setting"
        elif value.lower() not in {a.lower() for a in allowed}:
            wrong[name] = value
    observed = {
        "values": {name: seen.get(name, "unknown setting") for name in names},
        "wrong": wrong,
        "limits": {"expected": {k: params.expected[k] for k in names}},
    }
    expected = ", ".join(
        f"{k}={v if isinstance(v, str) else '|'.join(v)}"
        for k, v in sorted(params.expected.items())
    )
    detail = (
        "; ".join(f"{k} is {v}" for k, v in wrong.items())
        if wrong
        else f"{len(names)} setting(s) as expected"
    )
    return Observation(observed, expected, not wrong, detail)


# -- transaction ID wraparound -----------------------------------------------------------------

XID_HORIZON = 2**31  # transaction IDs a database may age before wraparound


class XidAgeParams(NoParams):
    max_age_percent: float = Field(
        default=50.0,
        ge=0,
        le=100,
        description="Largest age(datfrozenxid) of any database, as a share of the 2^31 "
        "wraparound horizon (%); autovacuum_freeze_max_age is 200 million (9.3%) by default.",
    )


def xid_age(probe: Probe, role: str, params: XidAgeParams) -> Observation:
    """Transaction ID age: the oldest database's age(datfrozenxid) leaves a wraparound margin."""
    rows = probe.sql(role).query(
        "select datname, age(datfrozenxid)::bigint from pg_database"
        " where datallowconn order by 2 desc, 1",
        timeout=10,
    )
    freeze_max = probe.sql(role).scalar("select current_setting('autovacuum_freeze_max_age')")
    if not rows:
        raise InputError("pg.xid_age: no database answered (pg_database is empty)")
    oldest, age = str(rows[0][0]), int(rows[0][1])
    percent = round(100.0 * age / XID_HORIZON, 4)
    observed = {
        "database": oldest,
        "age": age,
        "age_percent": percent,
        "margin": XID_HORIZON - age,
        "autovacuum_freeze_max_age": int(freeze_max),
        "databases": {str(name): int(value) for name, value in rows[:LISTED]},
        "limits": {"max_age_percent": params.max_age_percent, "horizon": XID_HORIZON},
    }
    expected = f"age(datfrozenxid) <= {params.max_age_percent:g}% of 2^31"
    detail = (
        f"oldest: {oldest}, age {age:,} ({percent:g}% of 2^31, {XID_HORIZON - age:,} left before "
        "wraparound)"
    )
    # Judged on the exact share, not the rounded one: an age of 26 is above a limit of 0%.
    held = 100.0 * age / XID_HORIZON <= params.max_age_percent
    return Observation(observed, expected, held, detail)


# -- replication slots -------------------------------------------------------------------------


class SlotsParams(NoParams):
    max_retained_mib: int = Field(
        default=1024, ge=0, description="Most WAL a replication slot may hold back (MiB)."
    )
    inactive_is_finding: bool = Field(
        default=True,
        description="An inactive slot is a finding (nothing consumes it: it keeps WAL forever).",
    )


SLOTS_SQL = (
    "select slot_name, slot_type, active, coalesce(database, ''), coalesce(wal_status, ''),"
    " pg_wal_lsn_diff(case when pg_is_in_recovery() then pg_last_wal_replay_lsn()"
    " else pg_current_wal_lsn() end, restart_lsn)::bigint"
    " from pg_replication_slots order by 1"
)


def replication_slots(probe: Probe, role: str, params: SlotsParams) -> Observation:
    """Replication slots do not hold back WAL: each slot's retained WAL (pg_wal_lsn_diff to its
    restart_lsn) within the threshold, none lost, none inactive."""
    rows = probe.sql(role).query(SLOTS_SQL, timeout=10)
    limit = params.max_retained_mib * MIB
    slots: list[dict[str, Any]] = []
    for name, kind, active, database, status, retained in rows:
        bad = (retained is not None and int(retained) > limit) or status == "lost"
        bad = bad or (params.inactive_is_finding and not active)
        slots.append(
            {
                "slot": str(name),
                "type": str(kind),
                "active": bool(active),
                "database": str(database) or None,
                "wal_status": str(status) or None,
                "retained_bytes": None if retained is None else int(retained),
                "finding": bad,
            }
        )
    found = [s for s in slots if s["finding"]]
    retained_values = [s["retained_bytes"] for s in slots if s["retained_bytes"] is not None]
    observed = {
        "count": len(slots),
        "slots": slots[:LISTED],
        "findings": [s["slot"] for s in found],
        "retained_bytes": max(retained_values) if retained_values else 0,
        "limits": {
            "max_retained_bytes": limit,
            "inactive_is_finding": params.inactive_is_finding,
        },
    }
    expected = f"no slot retaining more than {_gib(limit)} of WAL" + (
        ", none inactive" if params.inactive_is_finding else ""
    )
    if not slots:
        return Observation(observed, expected, True, "no replication slot")
    named = ", ".join(
        f"{s['slot']} ({'active' if s['active'] else 'inactive'}, "
        f"{_gib(s['retained_bytes'] or 0)} retained)"
        for s in (found or slots)[:LISTED]
    )
    return Observation(observed, expected, not found, f"{len(slots)} slot(s): {named}")


# -- the server log ----------------------------------------------------------------------------


class PgLogParams(NoParams):
    patterns: list[str] = Field(
        default_factory=lambda: ["ERROR:", "FATAL:", "PANIC:"],
        min_length=1,
        description="Extended regular expressions (grep -E) of the lines that count.",
    )
    max_lines: int = Field(default=0, ge=0, description="Matching lines that are not a finding.")
    since: str | None = Field(
        default=None,
        description="From when: an ISO time with its zone, or a duration ago (3d); default: "
        "the end of the previous inspection, else `lookback` ago.",
    )
    lookback: Duration = Field(
        default=7 * 86400.0, description="How far back when nothing says since when."
    )
    log_file: str | None = Field(
        default=None,
        description="The server log on the node's host; default: pg_current_logfile() when the "
        "logging collector runs, else postgres.log_file, else <data_dir>.log.",
    )


def server_log(probe: Probe, role: str, configured: str | None) -> str:
    """Where the server writes its log on its host."""
    _, _, pg = probe.postgres(role)
    if configured:
        return configured
    try:
        current = probe.sql(role).scalar("select pg_current_logfile()", timeout=10)
    except DrillError:  # not allowed to ask (no superuser, no pg_monitor): the configured file
        current = None
    if current:
        return str(current) if str(current).startswith("/") else f"{pg.data_dir}/{current}"
    return pg.log_file or f"{pg.data_dir.rstrip('/')}.log"


def log_errors(
    probe: Probe, role: str, params: PgLogParams, previous: Since | None = None
) -> Observation:
    """Errors in the server log since the last inspection (ERROR, FATAL, PANIC lines), read on
    the node's host as the database's OS user."""
    since = resolve_since(params.since, previous, params.lookback)
    path = server_log(probe, role, params.log_file)
    # The log's timestamps are in log_timezone: the moment as the log shows it.
    shown = probe.sql(role).scalar(
        "select to_char(to_timestamp(%s) at time zone current_setting('log_timezone'),"
        " 'YYYY-MM-DD HH24:MI:SS')",
        (since.epoch,),
        timeout=10,
    )
    scan = scan_logs(
        probe,
        role,
        [path],
        list(params.patterns),
        since,
        since_text=str(shown or ""),
        user=probe.os_user(role),
    )
    return log_observation(scan, params.max_lines, "error")
