"""PostgreSQL checks: role, replication, lag, fencing, writes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from drills.model.durations import Duration
from drills.model.errors import CommandFailed, ConnectionFailed, DrillError
from verify.result import Observation, Probe


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamingParams(NoParams):
    source: str | None = Field(
        default=None, description="Role of the node it must stream from (optional)."
    )


class LagParams(NoParams):
    primary: str = Field(default="primary", description="Role of the primary to compare with.")
    max_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    max: Duration = Field(default=5.0, description="Largest replay lag in time allowed.")


class ReplayedParams(NoParams):
    primary: str = Field(default="primary", description="Role of the stopped old primary.")


def server_role(probe: Probe, role: str) -> str:
    """'primary', 'standby' or 'down', as the server says."""
    try:
        in_recovery = probe.sql(role).scalar("select pg_is_in_recovery()", timeout=3)
    except ConnectionFailed:
        return "down"
    return "standby" if in_recovery else "primary"


def is_primary(probe: Probe, role: str, params: NoParams) -> Observation:
    observed = server_role(probe, role)
    return Observation(observed, "primary", observed == "primary")


def is_standby(probe: Probe, role: str, params: NoParams) -> Observation:
    observed = server_role(probe, role)
    return Observation(observed, "standby", observed == "standby")


def streaming(probe: Probe, role: str, params: StreamingParams) -> Observation:
    row = probe.sql(role).query(
        "select status, sender_host, sender_port from pg_stat_wal_receiver", timeout=3
    )
    if not row:
        return Observation("no WAL receiver", "streaming", False)
    status, host, port = row[0]
    observed = f"{status} from {host}:{port}"
    if params.source is None:
        return Observation(observed, "streaming", status == "streaming")
    _, source = probe.node(params.source)
    expected = f"streaming from {source.host}:{source.port}"
    # Host and port together: two sites may both listen on 5432.
    held = status == "streaming" and port == source.port and same_address(host, source.host)
    return Observation(observed, expected, held)


def same_address(seen: str | None, configured: str) -> bool:
    """Whether the address a server reports is the node's configured host (name or address)."""
    if seen is None:
        return False
    if seen == configured:
        return True
    import socket

    try:
        return socket.gethostbyname(configured) == seen
    except OSError:
        return False


def replay_lag(probe: Probe, role: str, params: LagParams) -> Observation:
    primary_lsn = probe.sql(params.primary).scalar("select pg_current_wal_lsn()::text", timeout=3)
    _name, _ = probe.node(role)
    rows = probe.sql(role).query(
        "select pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()),"
        " coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0),"
        " pg_last_wal_replay_lsn() = pg_last_wal_receive_lsn()",
        (primary_lsn,),
        timeout=3,
    )
    lag_bytes = max(0, int(rows[0][0] or 0))
    # With no write since the last replayed transaction the timestamp ages without any lag:
    # time lag counts only while bytes are outstanding.
    lag_seconds = float(rows[0][1]) if lag_bytes else 0.0
    held = lag_bytes <= params.max_bytes and lag_seconds <= params.max
    return Observation(
        {"bytes": lag_bytes, "seconds": round(lag_seconds, 3)},
        f"<= {params.max_bytes} bytes and <= {params.max:g}s behind the primary",
        held,
    )


def postmaster_state(probe: Probe, role: str) -> str:
    """'running', 'not running', or 'dead, not yet reaped' for the role's server on its host.

    What ``pg_ctl status`` does (the pid in postmaster.pid, alive?), asked of the node's host
    executor in one round trip, with two corrections: a dead postmaster its parent has not
    reaped yet (a zombie) is dead, though kill(pid, 0) still answers for it; and a pid reused by
    another program is not a postmaster. Linux hosts (``/proc``).
    """
    _, _, pg = probe.postgres(role)
    return probe.host(role).instance_processes(pg.data_dir, user=probe.os_user(role)).state


def down(probe: Probe, role: str, params: NoParams) -> Observation:
    """The server is not running on its host (pg_ctl status), not merely unreachable."""
    state = postmaster_state(probe, role)
    return Observation(state, "not running", state != "running")


def rejects_writes(probe: Probe, role: str, params: NoParams) -> Observation:
    """Fencing: the node cannot take writes (unreachable, or read-only)."""
    try:
        in_recovery = probe.sql(role).scalar(
            "select pg_is_in_recovery() or current_setting('default_transaction_read_only')::bool",
            timeout=3,
        )
    except ConnectionFailed as exc:
        return Observation("unreachable", "cannot take writes", True, str(exc))
    if in_recovery:
        return Observation("read-only", "cannot take writes", True)
    return Observation("accepts writes", "cannot take writes", False)


def takes_writes(probe: Probe, role: str, params: NoParams) -> Observation:
    """A real write, committed: a heartbeat row in the drctl schema."""
    name, _ = probe.node(role)
    insert = (
        "insert into drctl.heartbeat values (%s, clock_timestamp())"
        " on conflict (node) do update set at = excluded.at"
    )
    sql = probe.sql(role)
    try:
        try:
            sql.query(insert, (name,), timeout=5)
        except CommandFailed as exc:
            if "does not exist" not in exc.message:
                raise
            sql.query(
                "create schema if not exists drctl; create table if not exists drctl.heartbeat"
                " (node text primary key, at timestamptz not null)",
                timeout=5,
            )
            sql.query(insert, (name,), timeout=5)
    except DrillError as exc:
        return Observation(f"write failed: {exc.message}", "a committed write", False)
    return Observation("committed", "a committed write", True)


def replayed_shutdown_checkpoint(probe: Probe, role: str, params: ReplayedParams) -> Observation:
    """The standby replayed everything the cleanly stopped primary wrote, its shutdown
    checkpoint included (read with pg_controldata on the primary's host)."""
    _, _, old = probe.postgres(params.primary)
    control = probe.run(
        params.primary, [f"{old.bin_dir}/pg_controldata", old.data_dir], timeout=10
    ).stdout
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in control.splitlines())
    )
    state = fields.get("Database cluster state", "?")
    checkpoint = fields.get("Latest checkpoint location", "")
    if state != "shut down":
        return Observation(
            f"primary state {state!r}", "primary shut down and its checkpoint replayed", False
        )
    replayed, replay_lsn = probe.sql(role).query(
        "select pg_last_wal_replay_lsn() > %s::pg_lsn, pg_last_wal_replay_lsn()::text",
        (checkpoint,),
        timeout=3,
    )[0]
    return Observation(
        f"replayed to {replay_lsn}; shutdown checkpoint at {checkpoint}",
        "replay past the primary's shutdown checkpoint",
        bool(replayed),
    )
