"""PostgreSQL checks: role, replication, lag, fencing, writes."""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from drills.executors.host import InstanceProcesses, ProcessInfo, parse_stat
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
    executor, with two corrections: a dead postmaster its parent has not reaped yet (a zombie)
    is dead, though kill(pid, 0) still answers for it; and a pid reused by another program is not
    a postmaster. Linux hosts (``/proc``).

    Two file reads, not the host's whole ``instance_processes``: that also lists every process
    of the instance, which this question does not need and which costs a process per /proc entry
    on a host reached over SSH (about 100 ms a poll). A stopped server costs one read (no pid
    file), in-process on the local host and one round trip over SSH.
    """
    _, _, pg = probe.postgres(role)
    host, user = probe.host(role), probe.os_user(role)
    pid_text = host.read_file(f"{pg.data_dir}/postmaster.pid", user=user)
    pid_file_pid: int | None = None
    postmaster: ProcessInfo | None = None
    if pid_text is not None:
        first = pid_text.split("\n", 1)[0].strip()
        if first.isdigit():
            pid_file_pid = int(first)
            stat = host.read_file(f"/proc/{pid_file_pid}/stat", user=user)
            postmaster = parse_stat(stat) if stat else None
        elif first:  # being written by a postmaster that is starting
            pid_file_pid, postmaster = -1, ProcessInfo(-1, "R", "postgres")
    return InstanceProcesses(pg.data_dir, pid_file_pid, postmaster, ()).state


DOWN = "not running, no process of its instance left"


def members_left(state: str, pids: list[int]) -> str:
    """What ``down`` observes when processes of a stopped postmaster's instance remain."""
    shown = ", ".join(str(p) for p in pids[:10]) + (", ..." if len(pids) > 10 else "")
    return f"{state}; {len(pids)} process(es) of its instance left (pids {shown})"


def down(probe: Probe, role: str, params: NoParams) -> Observation:
    """The server is not running on its host and no process of its instance is left, not
    merely unreachable.

    After a ``kill -9`` of the postmaster alone its backends live on for a moment and can still
    commit on sessions already open, so the postmaster being gone (pg_ctl status) is not enough:
    every process working in the data directory counts (the host's ``instance_processes``).
    While the postmaster runs, one cheap look at it answers (``postmaster_state``)."""
    state = postmaster_state(probe, role)
    if state == "running":
        return Observation(state, DOWN, False)
    _, _, pg = probe.postgres(role)
    left = probe.host(role).instance_processes(pg.data_dir, user=probe.os_user(role)).live_pids
    if left:
        return Observation(members_left(state, left), DOWN, False)
    return Observation(state, DOWN, True)


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


# How long a cleanly shut down primary's control data is reused by the next poll of
# ``replayed_shutdown_checkpoint``, provided that server is still not running when asked again.
# A start creates postmaster.pid at once and a start and a clean stop together take far longer
# than this, so within it the control file cannot have changed unseen.
CONTROL_REUSE_WITHIN = 0.25


@dataclass
class _ShutDown:
    data_dir: str
    checkpoint: str
    seen: float  # monotonic: when the server was last confirmed not running


# Per probe (one run's Targets) and node: the shutdown checkpoint read from pg_controldata.
_shut_down: weakref.WeakKeyDictionary[object, dict[str, _ShutDown]] = weakref.WeakKeyDictionary()
_shut_down_lock = threading.Lock()


def _control_fields(probe: Probe, role: str) -> dict[str, str]:
    _, _, pg = probe.postgres(role)
    control = probe.run(role, [f"{pg.bin_dir}/pg_controldata", pg.data_dir], timeout=10).stdout
    return dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in control.splitlines())
    )


def _remembered(probe: Probe) -> dict[str, _ShutDown] | None:
    with _shut_down_lock:
        try:
            return _shut_down.setdefault(probe, {})
        except TypeError:  # a probe that cannot be weakly referenced: no reuse
            return None


def shutdown_checkpoint(probe: Probe, role: str) -> tuple[str, str]:
    """(cluster state, latest checkpoint location) of the role's server, from pg_controldata.

    pg_controldata is a process of its own on the host. Polled again and again while a standby
    catches up, it would be most of the check's cost: so once the server is found shut down, the
    next poll (within ``CONTROL_REUSE_WITHIN``) only asks the host whether it still is not running
    (in-process on the local host) and keeps the checkpoint it read. Anything else reads the
    control file again.
    """
    name, _, pg = probe.postgres(role)
    remembered = _remembered(probe)
    known = remembered.get(name) if remembered is not None else None
    if (
        known is not None
        and known.data_dir == pg.data_dir
        and time.monotonic() - known.seen <= CONTROL_REUSE_WITHIN
        and postmaster_state(probe, role) == "not running"
    ):
        known.seen = time.monotonic()
        return "shut down", known.checkpoint
    if remembered is not None:
        remembered.pop(name, None)
    fields = _control_fields(probe, role)
    state = fields.get("Database cluster state", "?")
    checkpoint = fields.get("Latest checkpoint location", "")
    if remembered is not None and state == "shut down" and checkpoint:
        remembered[name] = _ShutDown(pg.data_dir, checkpoint, time.monotonic())
    return state, checkpoint


def replayed_shutdown_checkpoint(probe: Probe, role: str, params: ReplayedParams) -> Observation:
    """The standby replayed everything the cleanly stopped primary wrote, its shutdown
    checkpoint included (read with pg_controldata on the primary's host)."""
    state, checkpoint = shutdown_checkpoint(probe, params.primary)
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
