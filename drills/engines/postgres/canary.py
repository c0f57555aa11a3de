"""Measured, not inferred: the canary writer and the write probe.

While a drill runs, two background writers follow whichever node accepts writes (libpq
multi-host, ``target_session_attrs=read-write``):

* the **canary writer** commits numbered rows; after the drill the acknowledged rows missing on
  the new primary are the lost writes, and the time between the last acknowledged canary and the
  newest one that survived is the RPO;
* the **write probe** commits a tiny write every few milliseconds; the longest stretch without a
  successful write, from the last good write to the first good one after it, is the write outage.

Every write is stamped with the run's clock, so the figures use the same monotonic offsets as the
steps. The analysis functions are pure and tested on their own.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import conninfo

from drills.executors.http import HttpExecutor
from drills.model.clock import Clock, utc_iso
from drills.model.environment import Environment, read_password
from drills.model.errors import ConnectionFailed, DrillError
from drills.model.record import CanaryResult, WriteOutage

SCHEMA_SQL = (
    "create schema if not exists drctl;"
    " create table if not exists drctl.canary (run_id text, seq bigint,"
    " written_at timestamptz not null default clock_timestamp(), primary key (run_id, seq));"
    " create table if not exists drctl.write_probe (run_id text, seq bigint,"
    " written_at timestamptz not null default clock_timestamp(), primary key (run_id, seq))"
)


@dataclass(frozen=True)
class Write:
    seq: int
    offset: float  # run clock, at acknowledgement
    wall: float
    node: str


@dataclass
class WriterLog:
    attempts: int = 0
    failures: int = 0
    acks: list[Write] = field(default_factory=list)
    last_error: str = ""


def writer_dsn(env: Environment, node_names: list[str]) -> tuple[str, dict[int, str]]:
    """A multi-host DSN over the nodes, and a map from port to node name."""
    nodes = [(name, env.nodes[name]) for name in node_names if env.nodes[name].postgres]
    if not nodes:
        raise ValueError("no database nodes to write to")
    first = nodes[0][1].postgres
    assert first is not None
    params: dict[str, Any] = {
        "host": ",".join(n.host for _, n in nodes),
        "port": ",".join(str(n.port) for _, n in nodes),
        "user": first.user,
        "dbname": first.database,
        "target_session_attrs": "read-write",
        "connect_timeout": 1,
        "application_name": "drctl-writer",
    }
    password = read_password(first)
    if password is not None:
        params["password"] = password
    return conninfo.make_conninfo("", **params), {n.port: name for name, n in nodes}


class _Writer(threading.Thread):
    table = ""

    def __init__(
        self, dsn: str, ports: dict[int, str], run_id: str, clock: Clock, interval: float
    ) -> None:
        super().__init__(name=f"drctl-{self.table}", daemon=True)
        self.dsn, self.ports, self.run_id = dsn, ports, run_id
        self.clock, self.interval = clock, interval
        self.log = WriterLog()
        self._stop_event = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._node = "?"

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True)
        port = conn.execute("select inet_server_port()").fetchone()
        self._node = self.ports.get(int(port[0]) if port and port[0] else 0, "?")
        return conn

    def run(self) -> None:
        seq = 0
        while not self._stop_event.is_set():
            seq += 1
            self.log.attempts += 1
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._conn.execute(
                    f"insert into drctl.{self.table} (run_id, seq) values (%s, %s)",
                    (self.run_id, seq),
                )
                mono, wall = time.monotonic(), time.time()
                self.log.acks.append(Write(seq, self.clock.offset_of(mono), wall, self._node))
            except psycopg.Error as exc:
                self.log.failures += 1
                self.log.last_error = str(exc).strip().splitlines()[0] if str(exc) else "error"
                if self._conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._conn.close()
                    self._conn = None
            self._stop_event.wait(self.interval)
        if self._conn is not None:
            self._conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


class ServiceProbe(threading.Thread):
    """Registers a patient through the application every few milliseconds and reads it back:
    the longest stretch without a successful round trip is the service outage."""

    def __init__(
        self, http: HttpExecutor, ports: dict[int, str], clock: Clock, interval: float
    ) -> None:
        super().__init__(name="drctl-service-probe", daemon=True)
        self.http, self.ports, self.clock, self.interval = http, ports, clock, interval
        self.log = WriterLog()
        self._stop_event = threading.Event()

    def run(self) -> None:
        seq = 0
        while not self._stop_event.is_set():
            seq += 1
            self.log.attempts += 1
            try:
                created = self.http.request(
                    "POST",
                    "/registrations",
                    body={"patient_name": f"drctl-probe-{seq}", "department": "drctl"},
                )
                record = created.json() if created.status == 201 else None
                if not isinstance(record, dict):
                    raise ValueError(f"POST answered HTTP {created.status}")
                read = self.http.request("GET", f"/registrations/{record.get('id')}")
                if read.status != 200:
                    raise ValueError(f"GET answered HTTP {read.status}")
                mono, wall = time.monotonic(), time.time()
                node = self.ports.get(int(record.get("served_by_port") or 0), "?")
                self.log.acks.append(Write(seq, self.clock.offset_of(mono), wall, node))
            except (DrillError, ValueError) as exc:
                self.log.failures += 1
                self.log.last_error = str(exc)[:200]
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


class CanaryWriter(_Writer):
    table = "canary"


class WriteProbe(_Writer):
    table = "write_probe"


def prepare(dsn: str) -> None:
    """Create the drctl schema on the current primary (it replicates to the standbys)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA_SQL)
    except psycopg.Error as exc:
        raise ConnectionFailed(
            f"the canary tables could not be made on the primary: {str(exc).strip()[:300]}"
        ) from exc


def surviving_seqs(dsn: str, run_id: str) -> tuple[set[int], str]:
    """Canary sequence numbers present on the node that accepts writes now, and its port."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("select seq from drctl.canary where run_id = %s", (run_id,)).fetchall()
        port = conn.execute("select inet_server_port()").fetchone()
    return {int(r[0]) for r in rows}, str(port[0] if port else "?")


def analyse_canary(
    log: WriterLog, present: set[int] | None, checked_on: str | None
) -> CanaryResult:
    """Lost writes and RPO from the acknowledged canaries and those found on the new primary."""
    acked = log.acks
    if present is None:
        return CanaryResult(
            written=log.attempts,
            acknowledged=len(acked),
            lost=0,
            rpo_seconds=None,
            note="the canaries could not be read back: no node accepts writes",
        )
    lost = [w for w in acked if w.seq not in present]
    if not lost:
        return CanaryResult(
            written=log.attempts,
            acknowledged=len(acked),
            lost=0,
            checked_on=checked_on,
            rpo_seconds=0.0 if acked else None,
            last_acknowledged_at=utc_iso(acked[-1].wall) if acked else None,
            note="" if acked else "no canary write was acknowledged",
        )
    # The writes lost are those of the node that failed; compare within that node's writes.
    node = lost[-1].node
    on_node = [w for w in acked if w.node == node]
    last = max(on_node, key=lambda w: w.offset)
    surviving = [w for w in on_node if w.seq in present]
    if surviving:
        newest = max(surviving, key=lambda w: w.offset)
        rpo = round(last.offset - newest.offset, 3)
        newest_at: str | None = utc_iso(newest.wall)
        note = ""
    else:
        rpo = round(last.offset - on_node[0].offset, 3)
        newest_at = None
        note = f"no canary acknowledged by {node} survived; RPO counted from its first canary"
    return CanaryResult(
        written=log.attempts,
        acknowledged=len(acked),
        lost=len(lost),
        lost_seqs=[w.seq for w in lost][:1000],
        checked_on=checked_on,
        rpo_seconds=rpo,
        last_acknowledged_at=utc_iso(last.wall),
        newest_surviving_at=newest_at,
        note=note,
    )


def analyse_write_outage(log: WriterLog, stopped_offset: float) -> WriteOutage:
    """The outage: from the last good write on the old primary to the first good write on the
    new one (the longest such switch if writes moved more than once).

    If the writes never moved to another node (a rolled-back drill restarts the same primary),
    it is the longest stretch without a successful write, and the note says so. If the writes
    never came back before the probe stopped, the outage is still open and has no end to
    measure: the result says so instead of inventing one.
    """
    acks = log.acks
    if len(acks) < 2:
        return WriteOutage(
            seconds=None,
            attempts=log.attempts,
            failures=log.failures,
            note="fewer than two successful probe writes",
        )
    pairs = list(itertools.pairwise(acks))
    switches = [(a, b) for a, b in pairs if a.node != b.node]
    note = ""
    if not switches:
        note = "the writes never moved to another node: the longest gap between writes"
    worst = max(switches or pairs, key=lambda pair: pair[1].offset - pair[0].offset)
    gap = worst[1].offset - worst[0].offset
    trailing = stopped_offset - acks[-1].offset
    if trailing > gap and trailing > 0.5:
        return WriteOutage(
            seconds=None,
            last_write_at=utc_iso(acks[-1].wall),
            last_write_node=acks[-1].node,
            attempts=log.attempts,
            failures=log.failures,
            note=f"no write succeeded in the last {trailing:.3f}s before the probe stopped: "
            "the outage had not ended",
        )
    return WriteOutage(
        seconds=round(gap, 3),
        last_write_at=utc_iso(worst[0].wall),
        last_write_node=worst[0].node,
        first_write_at=utc_iso(worst[1].wall),
        first_write_node=worst[1].node,
        attempts=log.attempts,
        failures=log.failures,
        note=note,
    )
